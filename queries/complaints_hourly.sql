-- Complaints per category and severity, hourly.
--   opened, resolved, escalated    events of each status in the hour
--   opened_per_1000_tx             1000 x opened / all transactions of the hour
--   median/p90_resolution_hours    resolved events of the hour, measured from
--                                  the complaint's first `opened` event (at
--                                  most 30 days before); percentile_cont, i.e.
--                                  linear interpolation between ranks
--   still_open                     complaints of this category and severity
--                                  open at the window end: opened before it,
--                                  and whose last event before it is not
--                                  `resolved` and at most 30 days old
-- @key   category, severity
-- @gauge opened, escalated, still_open BY category, severity
SELECT g.window_start, g.window_end, g.category, g.severity,
       g.opened, g.resolved, g.escalated,
       1000.0 * g.opened / NULLIF(g.window_transactions, 0)     AS opened_per_1000_tx,
       g.median_resolution_hours, g.p90_resolution_hours,
       count(h.complaint_id)                                     AS still_open
FROM (
    SELECT window_start, window_end, is_transaction, category, severity,
           opened, resolved, escalated, median_resolution_hours, p90_resolution_hours,
           sum(transactions) OVER ()                             AS window_transactions,
           -- once per group, not once per (group, history row) in the join
           window_end - INTERVAL '30 days'                       AS open_since
    FROM (
        SELECT window_start, window_end, is_transaction, category, severity,
               count(*) FILTER (WHERE status = 'opened')         AS opened,
               count(*) FILTER (WHERE status = 'resolved')       AS resolved,
               count(*) FILTER (WHERE status = 'escalated')      AS escalated,
               count(*) FILTER (WHERE is_transaction)            AS transactions,
               median(resolution_hours)                          AS median_resolution_hours,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY resolution_hours)
                                                                 AS p90_resolution_hours
        FROM (
            SELECT e.window_start, e.window_end, e.kind = 'transaction' AS is_transaction,
                   e.category, e.severity, e.status,
                   CASE WHEN e.status = 'resolved' AND e.ts >= s.opened_ts
                             AND e.ts <= s.opened_ts + INTERVAL '30 days'
                        THEN (CAST(e.ts AS BIGINT) - CAST(s.opened_ts AS BIGINT)) / 3600000.0
                   END                                           AS resolution_hours
            FROM TUMBLE((SELECT ts, 'complaint' AS kind, complaint_id, category, severity, status
                         FROM complaints
                         UNION ALL
                         SELECT ts, 'transaction', NULL, NULL, NULL, NULL
                         FROM transactions), ts, INTERVAL '1 hour') e
            LEFT JOIN complaint_status s ON e.complaint_id = s.complaint_id
        ) AS events
        GROUP BY window_start, window_end, is_transaction, category, severity
    ) AS per_group
) AS g
LEFT JOIN complaint_history h
       ON (h.category IS NOT DISTINCT FROM g.category)
      AND (h.severity IS NOT DISTINCT FROM g.severity)
      AND h.opened_ts < g.window_end
      AND h.valid_from < g.window_end
      AND (h.valid_until IS NULL OR h.valid_until >= g.window_end)
      AND h.valid_from >= g.open_since
      AND h.status <> 'resolved'
WHERE NOT g.is_transaction
GROUP BY g.window_start, g.window_end, g.category, g.severity, g.opened, g.resolved,
         g.escalated, g.window_transactions, g.median_resolution_hours, g.p90_resolution_hours
