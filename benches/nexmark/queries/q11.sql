-- Nexmark q11: user sessions. Bids per bidder per session, a session
-- ending after 10 seconds without a bid. (The standard text names the
-- session bounds starttime and endtime; cxpulse outputs always carry
-- window_start and window_end.)
SELECT window_start, window_end, bidder, count(*) AS bid_count
FROM SESSION(bid, date_time, INTERVAL '10 seconds', bidder)
GROUP BY bidder, window_start, window_end
