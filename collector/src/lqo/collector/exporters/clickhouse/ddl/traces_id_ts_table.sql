-- Trace id → time range lookup, fed by the materialized view below (contrib schema).
CREATE TABLE IF NOT EXISTS $database.$lookup_table $on_cluster (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = $engine
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
$ttl
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = $dedup_window
