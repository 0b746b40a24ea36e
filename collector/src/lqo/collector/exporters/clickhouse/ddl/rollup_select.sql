-- The roll-ups' view: the GenAI calls of an insert, per minute and key.
-- Source columns are qualified (g.…): several sums keep their column's name.
SELECT
    toStartOfMinute(g.Timestamp) AS Minute,
    g.ServiceName AS ServiceName, g.Provider AS Provider, g.Operation AS Operation,
    g.RequestModel AS RequestModel,
    count() AS Calls,
    countIf(g.StatusCode = 'Error' OR g.ErrorType != '') AS Errors,
    sum(g.InputTokens) AS InputTokens,
    sum(g.OutputTokens) AS OutputTokens,
    sum(g.CacheReadInputTokens) AS CacheReadInputTokens,
    sum(g.CacheCreationInputTokens) AS CacheCreationInputTokens,
    sum(g.ReasoningOutputTokens) AS ReasoningOutputTokens,
    sum(ifNull(g.CostUsd, 0)) AS CostUsd,
    countIf(g.CostUsd IS NOT NULL) AS PricedCalls,
    countIf(g.CostSource = 'unknown_model') AS UnpricedCalls,
    countIf(notEmpty(g.Flags)) AS FlaggedCalls,
    countIf(has(g.Flags, 'pii')) AS PiiCalls,
    countIf(has(g.Flags, 'toxicity')) AS ToxicityCalls,
    countIf(has(g.Flags, 'hallucination')) AS HallucinationCalls,
    countIf(has(g.Flags, 'prompt_injection')) AS InjectionCalls,
    max(g.Duration) AS DurationMax,
    quantileTDigestState(g.Duration) AS DurationQuantiles,
    quantileTDigestStateIf(ifNull(g.TimeToFirstChunk, 0), g.TimeToFirstChunk IS NOT NULL) AS TimeToFirstChunkQuantiles
FROM $database.$genai_table AS g
GROUP BY Minute, ServiceName, Provider, Operation, RequestModel
