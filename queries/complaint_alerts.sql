-- High-severity and escalated complaints, routed to an alert topic as they
-- arrive, with the customer's segment from the customers lookup table.
-- Stateless: runs on every micro-batch, keeps no state.
-- @key complaint_id
SELECT c.complaint_id,
       c.customer_id,
       c.ts,
       c.status,
       c.severity,
       c.category,
       c.channel,
       p.segment
FROM complaints c
LEFT JOIN customers p ON c.customer_id = p.customer_id
WHERE c.severity IN ('high', 'critical') OR c.status = 'escalated'
