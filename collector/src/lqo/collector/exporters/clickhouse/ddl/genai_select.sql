-- The GenAI calls among the spans, as typed columns: the SELECT of the materialized view that
-- feeds the GenAI table, and of the backfill from spans stored before it existed. Every
-- conversion falls back (…OrZero / …OrNull, JSONExtract's empty default) instead of throwing,
-- so no attribute value a producer sends can fail the insert into the spans table.
SELECT
    Timestamp, TraceId, SpanId, ParentSpanId, ServiceName, SpanName,
    SpanAttributes['gen_ai.operation.name'] AS Operation,
    if(SpanAttributes['gen_ai.provider.name'] != '', SpanAttributes['gen_ai.provider.name'],
       SpanAttributes['gen_ai.system']) AS Provider,
    SpanAttributes['gen_ai.request.model'] AS RequestModel,
    SpanAttributes['gen_ai.response.model'] AS ResponseModel,
    SpanAttributes['gen_ai.response.id'] AS ResponseId,
    SpanAttributes['gen_ai.conversation.id'] AS ConversationId,
    SpanAttributes['gen_ai.agent.name'] AS AgentName,
    SpanAttributes['server.address'] AS ServerAddress,
    multiIf(startsWith(SpanAttributes['gen_ai.response.finish_reasons'], '['),
            JSONExtract(SpanAttributes['gen_ai.response.finish_reasons'], 'Array(String)'),
            SpanAttributes['gen_ai.response.finish_reasons'] = '', [],
            [SpanAttributes['gen_ai.response.finish_reasons']]) AS FinishReasons,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.input_tokens']) AS InputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens']) AS OutputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_read.input_tokens']) AS CacheReadInputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_creation.input_tokens']) AS CacheCreationInputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.reasoning.output_tokens']) AS ReasoningOutputTokens,
    Duration,
    toFloat64OrNull(SpanAttributes['gen_ai.response.time_to_first_chunk']) AS TimeToFirstChunk,
    StatusCode,
    SpanAttributes['error.type'] AS ErrorType,
    toFloat64OrNull(SpanAttributes['lqo.cost.usd']) AS CostUsd,
    toFloat64OrNull(SpanAttributes['lqo.cost.input_usd']) AS CostInputUsd,
    toFloat64OrNull(SpanAttributes['lqo.cost.output_usd']) AS CostOutputUsd,
    SpanAttributes['lqo.cost.source'] AS CostSource,
    toUInt32OrZero(SpanAttributes['lqo.pii.count']) AS PiiCount,
    arrayFilter(e -> e != '', splitByChar(',', SpanAttributes['lqo.pii.entities'])) AS PiiEntities,
    SpanAttributes['lqo.pii.action'] AS PiiAction,
    toFloat32OrNull(SpanAttributes['lqo.toxicity.score']) AS ToxicityScore,
    toFloat32OrNull(SpanAttributes['lqo.hallucination.score']) AS HallucinationScore,
    toFloat32OrNull(SpanAttributes['lqo.injection.score']) AS InjectionScore,
    JSONExtract(SpanAttributes['lqo.flags'], 'Array(String)') AS Flags
FROM $database.$table
WHERE (SpanAttributes['gen_ai.operation.name'] != '' OR SpanAttributes['gen_ai.provider.name'] != ''
       OR SpanAttributes['gen_ai.system'] != '')
