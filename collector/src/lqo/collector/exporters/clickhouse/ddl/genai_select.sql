-- The GenAI calls among the spans, as typed columns: the SELECT of the materialized view that
-- feeds the GenAI table, and of the backfill from spans stored before it existed. Every
-- conversion falls back (…OrZero / …OrNull, JSONExtract's empty default) instead of throwing,
-- so no attribute value a producer sends can fail the insert into the spans table. A span that
-- records an LLM call another span records too (lqo.genai.duplicate_of, set by genai_normalize)
-- is left out: the call is counted once, by the other.
SELECT
    Timestamp, TraceId, SpanId, ParentSpanId, ServiceName, SpanName,
    A['gen_ai.operation.name'] AS Operation,
    if(A['gen_ai.provider.name'] != '', A['gen_ai.provider.name'],
       A['gen_ai.system']) AS Provider,
    A['gen_ai.request.model'] AS RequestModel,
    A['gen_ai.response.model'] AS ResponseModel,
    A['gen_ai.response.id'] AS ResponseId,
    A['gen_ai.conversation.id'] AS ConversationId,
    if(A['user.id'] != '', A['user.id'], A['enduser.id']) AS UserId,
    A['gen_ai.agent.name'] AS AgentName,
    A['server.address'] AS ServerAddress,
    multiIf(startsWith(A['gen_ai.response.finish_reasons'], '['),
            JSONExtract(A['gen_ai.response.finish_reasons'], 'Array(String)'),
            A['gen_ai.response.finish_reasons'] = '', [],
            [A['gen_ai.response.finish_reasons']]) AS FinishReasons,
    toUInt64OrZero(A['gen_ai.usage.input_tokens']) AS InputTokens,
    toUInt64OrZero(A['gen_ai.usage.output_tokens']) AS OutputTokens,
    toUInt64OrZero(A['gen_ai.usage.cache_read.input_tokens']) AS CacheReadInputTokens,
    toUInt64OrZero(A['gen_ai.usage.cache_creation.input_tokens']) AS CacheCreationInputTokens,
    toUInt64OrZero(A['gen_ai.usage.reasoning.output_tokens']) AS ReasoningOutputTokens,
    Duration,
    toFloat64OrNull(A['gen_ai.response.time_to_first_chunk']) AS TimeToFirstChunk,
    StatusCode,
    A['error.type'] AS ErrorType,
    toFloat64OrNull(A['lqo.cost.usd']) AS CostUsd,
    toFloat64OrNull(A['lqo.cost.input_usd']) AS CostInputUsd,
    toFloat64OrNull(A['lqo.cost.output_usd']) AS CostOutputUsd,
    A['lqo.cost.source'] AS CostSource,
    toUInt32OrZero(A['lqo.pii.count']) AS PiiCount,
    arrayFilter(e -> e != '', splitByChar(',', A['lqo.pii.entities'])) AS PiiEntities,
    A['lqo.pii.action'] AS PiiAction,
    toFloat32OrNull(A['lqo.toxicity.score']) AS ToxicityScore,
    toFloat32OrNull(A['lqo.hallucination.score']) AS HallucinationScore,
    toFloat32OrNull(A['lqo.injection.score']) AS InjectionScore,
    JSONExtract(A['lqo.flags'], 'Array(String)') AS Flags
FROM (
    SELECT Timestamp, TraceId, SpanId, ParentSpanId, ServiceName, SpanName, Duration, StatusCode,
           CAST(SpanAttributes, 'Map(String, String)') AS A
    FROM $database.$table
    WHERE (SpanAttributes['gen_ai.operation.name'] != '' OR SpanAttributes['gen_ai.provider.name'] != ''
           OR SpanAttributes['gen_ai.system'] != '')
          AND SpanAttributes['lqo.genai.duplicate_of'] = ''$also
)
