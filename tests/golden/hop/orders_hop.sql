-- Orders in 10-minute windows every 5 minutes, with early results every second.
-- @emit every 1s
SELECT window_start, window_end, count(*) AS orders, sum(amount) AS revenue, max(amount) AS largest
FROM HOP(transactions, ts, INTERVAL '5 minutes', INTERVAL '10 minutes')
GROUP BY window_start, window_end
