-- Revenue per category in 10-minute windows, waiting 2 minutes for late events.
-- @key category
-- @lateness 2m
-- @gauge orders, revenue BY category
SELECT window_start, window_end, category, count(*) AS orders, sum(amount) AS revenue
FROM TUMBLE(transactions, ts, INTERVAL '10 minutes')
GROUP BY window_start, window_end, category
