-- GenAI calls per minute by service, provider, operation and model: counts, tokens, cost,
-- flags and latency sketches, fed by rollup_view.sql from the GenAI table. Rows of one key are
-- merged in the background; queries aggregate (sum(Calls), quantileTDigestMerge(0.95)(Duration…)).
-- Kept as long as rollup_ttl says, which may outlive the spans.
CREATE TABLE IF NOT EXISTS $database.$rollup_table $on_cluster (
    Minute DateTime CODEC(Delta(4), ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Provider LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    RequestModel LowCardinality(String) CODEC(ZSTD(1)),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CacheReadInputTokens SimpleAggregateFunction(sum, UInt64),
    CacheCreationInputTokens SimpleAggregateFunction(sum, UInt64),
    ReasoningOutputTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Float64),
    PricedCalls SimpleAggregateFunction(sum, UInt64),
    UnpricedCalls SimpleAggregateFunction(sum, UInt64),
    FlaggedCalls SimpleAggregateFunction(sum, UInt64),
    PiiCalls SimpleAggregateFunction(sum, UInt64),
    ToxicityCalls SimpleAggregateFunction(sum, UInt64),
    HallucinationCalls SimpleAggregateFunction(sum, UInt64),
    InjectionCalls SimpleAggregateFunction(sum, UInt64),
    DurationMax SimpleAggregateFunction(max, UInt64),
    DurationQuantiles AggregateFunction(quantileTDigest, UInt64),
    TimeToFirstChunkQuantiles AggregateFunction(quantileTDigest, Float64)
) ENGINE = $engine
PARTITION BY toYYYYMM(Minute)
ORDER BY (ServiceName, Provider, Operation, RequestModel, Minute)
$ttl
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = $dedup_window
