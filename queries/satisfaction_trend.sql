-- Satisfaction trend per channel: 28-day windows, updated daily. Slopes of
-- daily NPS and daily CSAT (points per day, over days with answers), and NPS
-- and CSAT of the last 7 days minus those of the 7 days before.
-- @key   channel
-- @gauge nps_slope, csat_slope, nps_change_7d, csat_change_7d BY channel
SELECT window_start, window_end, channel,
       regr_slope(nps, day_number)                                           AS nps_slope,
       regr_slope(csat, day_number)                                          AS csat_slope,
       100.0 * (sum(promoters) FILTER (WHERE recent) - sum(detractors) FILTER (WHERE recent))
             / NULLIF(sum(nps_answers) FILTER (WHERE recent), 0)
     - 100.0 * (sum(promoters) FILTER (WHERE prior) - sum(detractors) FILTER (WHERE prior))
             / NULLIF(sum(nps_answers) FILTER (WHERE prior), 0)              AS nps_change_7d,
       sum(rating_sum) FILTER (WHERE recent) / NULLIF(sum(ratings) FILTER (WHERE recent), 0)
     - sum(rating_sum) FILTER (WHERE prior) / NULLIF(sum(ratings) FILTER (WHERE prior), 0)
                                                                             AS csat_change_7d
FROM (
    SELECT window_start, window_end, channel,
           CAST(date_part('epoch', date_trunc('day', ts)) AS DOUBLE) / 86400.0 AS day_number,
           date_trunc('day', ts) >= window_end - INTERVAL '7 days'           AS recent,
           date_trunc('day', ts) >= window_end - INTERVAL '14 days'
             AND date_trunc('day', ts) < window_end - INTERVAL '7 days'      AS prior,
           100.0 * (count(*) FILTER (WHERE nps >= 9) - count(*) FILTER (WHERE nps <= 6))
                 / NULLIF(count(nps), 0)                                     AS nps,
           avg(rating)                                                       AS csat,
           count(*) FILTER (WHERE nps >= 9)                                  AS promoters,
           count(*) FILTER (WHERE nps <= 6)                                  AS detractors,
           count(nps)                                                        AS nps_answers,
           CAST(sum(rating) AS DOUBLE)                                       AS rating_sum,
           count(rating)                                                     AS ratings
    FROM HOP(feedback, ts, INTERVAL '1 day', INTERVAL '28 days')
    GROUP BY window_start, window_end, channel, date_trunc('day', ts)
) AS daily
GROUP BY window_start, window_end, channel
