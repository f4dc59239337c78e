-- Nexmark q3: local item suggestion. Joins two event streams (auction and
-- person) without a window: a gap, cxpulse has no stream-stream join.
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'or' OR P.state = 'id' OR P.state = 'ca')
