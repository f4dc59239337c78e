-- Need: what customers buy, per category and hour.
-- Early results every minute; the final row replaces them (same key).
-- @key   category
-- @emit  every 1m
-- @gauge orders, revenue, order_share, revenue_share BY category
SELECT window_start, window_end, category,
       count(*)                                     AS orders,
       count(DISTINCT customer_id)                  AS customers,
       sum(amount)                                  AS revenue,
       avg(amount)                                  AS avg_basket,
       count(*) * 1.0 / sum(count(*)) OVER ()       AS order_share,
       sum(amount) / sum(sum(amount)) OVER ()       AS revenue_share
FROM TUMBLE(transactions, ts, INTERVAL '1 hour')
GROUP BY window_start, window_end, category
