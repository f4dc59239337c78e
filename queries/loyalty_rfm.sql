-- Loyalty per customer, daily over the trailing 365 days (RFM): recency,
-- frequency and monetary value, their 1-5 scores and the segment, as the
-- shared view views/rfm_segments.sql computes them (see it for the rules).
-- Keyed by customer_id alone (not the window): a compacted output topic holds
-- each customer's current profile.
-- @key customer_id WITHOUT WINDOW
SELECT window_start, window_end, customer_id, recency_days, frequency, monetary,
       r_score, f_score, m_score, segment, repeat_customer
FROM rfm_segments
