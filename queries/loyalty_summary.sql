-- Loyalty overview, daily over the trailing 365 days: customers per RFM
-- segment (the scores and rules of views/rfm_segments.sql, shared with
-- loyalty_rfm), their share of all customers, and two window-wide figures
-- repeated on every row: the repeat purchase rate (customers with more than
-- one purchase) and the share of customers at risk.
-- @key   segment
-- @gauge customers, customer_share, repeat_rate, at_risk_share BY segment
SELECT window_start, window_end, segment,
       count(*)                                                         AS customers,
       count(*) * 1.0 / sum(count(*)) OVER ()                           AS customer_share,
       sum(sum(CASE WHEN frequency > 1 THEN 1 ELSE 0 END)) OVER () * 1.0
           / sum(count(*)) OVER ()                                      AS repeat_rate,
       sum(sum(CASE WHEN segment = 'At risk' THEN 1 ELSE 0 END)) OVER () * 1.0
           / sum(count(*)) OVER ()                                      AS at_risk_share
FROM rfm_segments
GROUP BY window_start, window_end, segment
