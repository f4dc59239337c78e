-- Need per customer segment, daily: orders and revenue per category, age band
-- (age as of the window end, from customers.birth_year) and gender (as
-- gender_code reads it: f, m, x, unknown, or uncoded for a coding it does
-- not know), and the category's share of the segment's orders and revenue.
-- Age bands: 18-24 (and younger), 25-34, 35-44, 45-54, 55-64, 65+, unknown.
-- @key category, age_band, gender
SELECT window_start, window_end, category, age_band, gender,
       count(*)                                                             AS orders,
       sum(amount)                                                          AS revenue,
       count(*) * 1.0 / sum(count(*)) OVER (PARTITION BY age_band, gender)  AS order_share,
       sum(amount) / sum(sum(amount)) OVER (PARTITION BY age_band, gender)  AS revenue_share
FROM (
    SELECT t.window_start, t.window_end, t.category, t.amount,
           gender_code(c.gender) AS gender,
           CASE
               WHEN c.birth_year IS NULL THEN 'unknown'
               WHEN date_part('year', t.window_end) - c.birth_year < 25 THEN '18-24'
               WHEN date_part('year', t.window_end) - c.birth_year < 35 THEN '25-34'
               WHEN date_part('year', t.window_end) - c.birth_year < 45 THEN '35-44'
               WHEN date_part('year', t.window_end) - c.birth_year < 55 THEN '45-54'
               WHEN date_part('year', t.window_end) - c.birth_year < 65 THEN '55-64'
               ELSE '65+'
           END AS age_band
    FROM TUMBLE(transactions, ts, INTERVAL '1 day') t
    LEFT JOIN customers c ON t.customer_id = c.customer_id
) AS enriched
GROUP BY window_start, window_end, category, age_band, gender
