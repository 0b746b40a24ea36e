-- GenAI evaluation results sent as OTLP log records (gen_ai.evaluation.result): a user's
-- feedback, an offline judge's score, any evaluator's verdict on one call, whenever it comes
-- (usually after the call, often from another request). A row names its call by ResponseId
-- (gen_ai.response.id, which joins the GenAI table's ResponseId) or, without one, by
-- TraceId/SpanId (the record's span context). Written by the collector (lqo.collector.evaluations), not
-- by a view: the call's span may have been stored long before, or may come later. Each insert
-- carries a token of its rows (insert_deduplication_token): rows sent again after a reply was lost
-- or a kill came between the insert and the deletion of their spool file are stored once.
-- Replicated tables remember the last inserts' tokens by default; others, with the setting below.
CREATE TABLE IF NOT EXISTS $database.$evaluations_table $on_cluster (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ResponseId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Name LowCardinality(String) CODEC(ZSTD(1)),
    ScoreValue Nullable(Float64) CODEC(ZSTD(1)),
    ScoreLabel LowCardinality(String) CODEC(ZSTD(1)),
    Explanation String CODEC(ZSTD(1)),
    Attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_span_id SpanId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_response_id ResponseId TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = $engine
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, Name, toDateTime(Timestamp))
$ttl
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = $dedup_window
