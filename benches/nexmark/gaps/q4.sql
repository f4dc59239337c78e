-- Nexmark q4: average price per category. Joins auction and bid (each bid
-- within its auction's lifetime): a gap, cxpulse has no stream-stream join.
SELECT Q.category, AVG(Q.final) AS avg_final
FROM (
  SELECT MAX(B.price) AS final, A.category
  FROM auction A, bid B
  WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
  GROUP BY A.id, A.category
) Q
GROUP BY Q.category
