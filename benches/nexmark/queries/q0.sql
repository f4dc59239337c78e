-- Nexmark q0: pass-through. Measures the cost of reading, decoding and
-- writing every bid, with no query work.
SELECT auction, bidder, price, date_time, extra FROM bid
