CREATE MATERIALIZED VIEW IF NOT EXISTS $database.$view $on_cluster
TO $database.$lookup_table
AS SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM $database.$table
WHERE TraceId != ''
GROUP BY TraceId
