-- Satisfaction per channel and topic, hourly: CSAT (1-5), CSAT % (share of
-- ratings 4-5), NPS (% promoters 9-10 minus % detractors 0-6, among nps
-- answers) and CES (effort, 1-7). A measure nobody answered is null.
-- @key   channel, topic
-- @emit  every 1m
-- @gauge csat, csat_pct, nps, ces BY channel, topic
SELECT window_start, window_end, channel, topic,
       count(*)                                                   AS responses,
       avg(rating)                                                AS csat,
       100.0 * count(*) FILTER (WHERE rating >= 4)
             / NULLIF(count(rating), 0)                           AS csat_pct,
       100.0 * (count(*) FILTER (WHERE nps >= 9) - count(*) FILTER (WHERE nps <= 6))
             / NULLIF(count(nps), 0)                              AS nps,
       avg(effort)                                                AS ces
FROM TUMBLE(feedback, ts, INTERVAL '1 hour')
GROUP BY window_start, window_end, channel, topic
