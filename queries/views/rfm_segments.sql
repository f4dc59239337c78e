-- RFM scores and segments per customer, daily over the trailing 365 days,
-- shared by loyalty_rfm (one row per customer) and loyalty_summary (counts
-- per segment).
--   recency_days  whole days from the last purchase to the window end
--   frequency     purchases; monetary: amount spent, rounded to the cent
--                 (so that a score never depends on the order in which
--                 the engine happened to add the amounts up)
--   r/f/m_score   1-5 by quintile among the window's customers: ceil(5 x the
--                 cumulative distribution), so ties share a score; 5 = most
--                 recent, most frequent, highest spend
--   segment       first rule that matches:
--                 Champions          R >= 4 and F >= 4 and M >= 4
--                 Loyal              R >= 3 and F >= 4
--                 New                R >= 4 and one purchase
--                 Potential loyalist R >= 3
--                 At risk            R <= 2 and F >= 3
--                 Hibernating        R = 2
--                 Lost               otherwise (R = 1)
--   repeat_customer  more than one purchase
CREATE VIEW rfm_segments AS
SELECT window_start, window_end, customer_id, recency_days, frequency, monetary,
       r_score, f_score, m_score,
       CASE
           WHEN r_score >= 4 AND f_score >= 4 AND m_score >= 4 THEN 'Champions'
           WHEN r_score >= 3 AND f_score >= 4                  THEN 'Loyal'
           WHEN r_score >= 4 AND frequency = 1                 THEN 'New'
           WHEN r_score >= 3                                   THEN 'Potential loyalist'
           WHEN r_score <= 2 AND f_score >= 3                  THEN 'At risk'
           WHEN r_score = 2                                    THEN 'Hibernating'
           ELSE 'Lost'
       END                                                     AS segment,
       frequency > 1                                           AS repeat_customer
FROM (
    SELECT window_start, window_end, customer_id, recency_days, frequency, monetary,
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
