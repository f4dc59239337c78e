-- Need trend per category: 28-day windows, updated daily. The slope of daily
-- orders (orders per day, per day, over the days with orders) and the orders
-- of the last 7 days against the 7 days before (null when there were none).
-- @key   category
-- @gauge daily_orders_slope, change_7d BY category
SELECT window_start, window_end, category,
       sum(orders)                                                     AS orders,
       regr_slope(orders, day_number)                                  AS daily_orders_slope,
       sum(orders) FILTER (WHERE day >= window_end - INTERVAL '7 days') AS last_7d,
       sum(orders) FILTER (WHERE day >= window_end - INTERVAL '14 days'
                             AND day <  window_end - INTERVAL '7 days') AS prior_7d,
       CAST(sum(orders) FILTER (WHERE day >= window_end - INTERVAL '7 days') AS DOUBLE)
         / NULLIF(sum(orders) FILTER (WHERE day >= window_end - INTERVAL '14 days'
                                        AND day <  window_end - INTERVAL '7 days'), 0)
         - 1.0                                                         AS change_7d
FROM (
    SELECT window_start, window_end, category,
           date_trunc('day', ts)                                       AS day,
           CAST(date_part('epoch', date_trunc('day', ts)) AS DOUBLE) / 86400.0 AS day_number,
           CAST(count(*) AS DOUBLE)                                    AS orders
    FROM HOP(transactions, ts, INTERVAL '1 day', INTERVAL '28 days')
    GROUP BY window_start, window_end, category, date_trunc('day', ts)
) AS daily
GROUP BY window_start, window_end, category
