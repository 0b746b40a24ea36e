-- GenAI calls: one typed row per GenAI span of the spans table, fed by the materialized view
-- in genai_view.sql. The columns most questions about LLM calls need (model, tokens, cost,
-- latency, safety results) as numbers and arrays, so queries and dashboards need not parse
-- SpanAttributes' strings row by row. TraceId/SpanId join back to the spans table.
CREATE TABLE IF NOT EXISTS $database.$genai_table $on_cluster (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    Provider LowCardinality(String) CODEC(ZSTD(1)),
    RequestModel LowCardinality(String) CODEC(ZSTD(1)),
    ResponseModel LowCardinality(String) CODEC(ZSTD(1)),
    ResponseId String CODEC(ZSTD(1)),
    ConversationId String CODEC(ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    AgentName LowCardinality(String) CODEC(ZSTD(1)),
    ServerAddress LowCardinality(String) CODEC(ZSTD(1)),
    FinishReasons Array(LowCardinality(String)) CODEC(ZSTD(1)),
    InputTokens UInt64 CODEC(T64, ZSTD(1)),
    OutputTokens UInt64 CODEC(T64, ZSTD(1)),
    CacheReadInputTokens UInt64 CODEC(T64, ZSTD(1)),
    CacheCreationInputTokens UInt64 CODEC(T64, ZSTD(1)),
    ReasoningOutputTokens UInt64 CODEC(T64, ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    TimeToFirstChunk Nullable(Float64) CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    ErrorType LowCardinality(String) CODEC(ZSTD(1)),
    CostUsd Nullable(Float64) CODEC(ZSTD(1)),
    CostInputUsd Nullable(Float64) CODEC(ZSTD(1)),
    CostOutputUsd Nullable(Float64) CODEC(ZSTD(1)),
    CostSource LowCardinality(String) CODEC(ZSTD(1)),
    PiiCount UInt32 CODEC(ZSTD(1)),
    PiiEntities Array(LowCardinality(String)) CODEC(ZSTD(1)),
    PiiAction LowCardinality(String) CODEC(ZSTD(1)),
    ToxicityScore Nullable(Float32) CODEC(ZSTD(1)),
    HallucinationScore Nullable(Float32) CODEC(ZSTD(1)),
    InjectionScore Nullable(Float32) CODEC(ZSTD(1)),
    Flags Array(LowCardinality(String)) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_conversation_id ConversationId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_user_id UserId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_flags Flags TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = $engine
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, RequestModel, toDateTime(Timestamp), Timestamp)
$ttl
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = $dedup_window
