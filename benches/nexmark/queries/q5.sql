-- Nexmark q5: hot items. Every 2 seconds, the auctions with the most bids
-- over the last 10 seconds.
--
-- The standard text joins two aggregates of the same HOP windows (the bids
-- per auction, and their maximum per window); cxpulse allows one window per
-- query, so the maximum is taken over each fired window's rows with a
-- window function instead. Same result: tests/nexmark.rs checks it against
-- the standard text run by DataFusion in batch mode.
SELECT window_start, window_end, auction, num
FROM (
  SELECT window_start, window_end, auction, count(*) AS num,
         max(count(*)) OVER (PARTITION BY window_start, window_end) AS maxn
  FROM HOP(bid, date_time, INTERVAL '2 seconds', INTERVAL '10 seconds')
  GROUP BY auction, window_start, window_end
)
WHERE num >= maxn
