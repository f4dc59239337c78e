-- Who buys what, daily per category: Pearson correlation of age (as of the
-- window end) with amount and with items, and the point-biserial correlation
-- of gender with amount (corr with 1 for female, 0 for male, as gender_code
-- reads them; other genders are left out). Each is null when it rests on
-- fewer than 30 pairs. uncoded_gender counts the transactions whose
-- customer's gender is written in a way gender_code does not know.
-- @key category
SELECT window_start, window_end, category,
       count(age)                                                         AS age_pairs,
       CASE WHEN count(age) >= 30 THEN corr(age, amount) END              AS corr_age_amount,
       CASE WHEN count(age + items) >= 30 THEN corr(age, items) END       AS corr_age_items,
       CASE WHEN count(female) >= 30 THEN corr(female, amount) END        AS corr_female_amount,
       count(*) FILTER (WHERE gender = 'uncoded')                         AS uncoded_gender
FROM (
    SELECT t.window_start, t.window_end, t.category, t.amount,
           CAST(t.items AS DOUBLE)                                        AS items,
           CAST(date_part('year', t.window_end) - c.birth_year AS DOUBLE) AS age,
           gender_code(c.gender)                                          AS gender,
           CASE gender_code(c.gender) WHEN 'f' THEN 1.0 WHEN 'm' THEN 0.0 END AS female
    FROM TUMBLE(transactions, ts, INTERVAL '1 day') t
    LEFT JOIN customers c ON t.customer_id = c.customer_id
) AS enriched
GROUP BY window_start, window_end, category
