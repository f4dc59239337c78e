-- Who is satisfied, daily per channel: Pearson correlation of age (as of the
-- window end) with rating and with nps, and point-biserial correlation of
-- gender (1 for female, 0 for male, as gender_code reads them) with rating
-- and with nps. Each is null when it rests on fewer than 30 pairs.
-- uncoded_gender counts the answers whose customer's gender is written in a
-- way gender_code does not know.
-- @key channel
SELECT window_start, window_end, channel,
       CASE WHEN count(age + rating) >= 30 THEN corr(age, rating) END       AS corr_age_rating,
       CASE WHEN count(age + nps) >= 30 THEN corr(age, nps) END             AS corr_age_nps,
       CASE WHEN count(female + rating) >= 30 THEN corr(female, rating) END AS corr_female_rating,
       CASE WHEN count(female + nps) >= 30 THEN corr(female, nps) END       AS corr_female_nps,
       count(*) FILTER (WHERE gender = 'uncoded')                           AS uncoded_gender
FROM (
    SELECT f.window_start, f.window_end, f.channel,
           CAST(f.rating AS DOUBLE)                                         AS rating,
           CAST(f.nps AS DOUBLE)                                            AS nps,
           CAST(date_part('year', f.window_end) - c.birth_year AS DOUBLE)   AS age,
           gender_code(c.gender)                                            AS gender,
           CASE gender_code(c.gender) WHEN 'f' THEN 1.0 WHEN 'm' THEN 0.0 END AS female
    FROM TUMBLE(feedback, ts, INTERVAL '1 day') f
    LEFT JOIN customers c ON f.customer_id = c.customer_id
) AS enriched
GROUP BY window_start, window_end, channel
