-- Shopping sessions per customer: a session ends after 10 minutes without orders.
-- @key customer_id
SELECT window_start, window_end, customer_id, count(*) AS orders, sum(amount) AS spent
FROM SESSION(transactions, ts, INTERVAL '10 minutes', customer_id)
GROUP BY window_start, window_end, customer_id
