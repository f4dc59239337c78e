-- Loyalty overview, daily over the trailing 365 days: customers per RFM
-- segment (same scores and rules as loyalty_rfm), their share of all
-- customers, and two window-wide figures repeated on every row: the repeat
-- purchase rate (customers with more than one purchase) and the share of
-- customers at risk.
-- @key   segment
-- @gauge customers, customer_share, repeat_rate, at_risk_share BY segment
SELECT window_start, window_end, segment,
       count(*)                                                         AS customers,
       count(*) * 1.0 / sum(count(*)) OVER ()                           AS customer_share,
       sum(sum(CASE WHEN frequency > 1 THEN 1 ELSE 0 END)) OVER () * 1.0
           / sum(count(*)) OVER ()                                      AS repeat_rate,
       sum(sum(CASE WHEN segment = 'At risk' THEN 1 ELSE 0 END)) OVER () * 1.0
           / sum(count(*)) OVER ()                                      AS at_risk_share
FROM (
    SELECT window_start, window_end, frequency,
           CASE
               WHEN r_score >= 4 AND f_score >= 4 AND m_score >= 4 THEN 'Champions'
               WHEN r_score >= 3 AND f_score >= 4                  THEN 'Loyal'
               WHEN r_score >= 4 AND frequency = 1                 THEN 'New'
               WHEN r_score >= 3                                   THEN 'Potential loyalist'
               WHEN r_score <= 2 AND f_score >= 3                  THEN 'At risk'
               WHEN r_score = 2                                    THEN 'Hibernating'
               ELSE 'Lost'
           END AS segment
    FROM (
        SELECT window_start, window_end, frequency,
               CAST(ceil(5 * cume_dist() OVER (ORDER BY recency_days DESC)) AS INT) AS r_score,
               CAST(ceil(5 * cume_dist() OVER (ORDER BY frequency)) AS INT)         AS f_score,
               CAST(ceil(5 * cume_dist() OVER (ORDER BY monetary)) AS INT)          AS m_score
        FROM (
            SELECT window_start, window_end, customer_id,
                   (CAST(window_end AS BIGINT) - CAST(max(ts) AS BIGINT)) / 86400000 AS recency_days,
                   count(*)                                                       AS frequency,
                   round(sum(amount), 2)                                          AS monetary
            FROM HOP(transactions, ts, INTERVAL '1 day', INTERVAL '365 days')
            GROUP BY window_start, window_end, customer_id
        ) AS rfm
    ) AS scored
) AS segmented
GROUP BY window_start, window_end, segment
