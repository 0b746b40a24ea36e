// A non-Python OTLP producer: the openai npm client instrumented by
// @opentelemetry/instrumentation-openai, exporting with @opentelemetry/sdk-node.
// Env: LQO_TRANSPORT=grpc|http, LQO_OTLP_URL (grpc: http://host:port, http: .../v1/traces),
//      OPENAI_BASE_URL (a local replay of a recording); LQO_OTLP_LOGS_URL (grpc: http://host:port,
//      http: .../v1/logs), optional: the instrumentation's message events, which it records as
//      log records, are exported there too, and the user's feedback on the answer (a
//      gen_ai.evaluation.result log record naming the answer's response id).
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { OTLPTraceExporter: GrpcExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');
const { OTLPTraceExporter: ProtoExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { OTLPLogExporter: GrpcLogExporter } = require('@opentelemetry/exporter-logs-otlp-grpc');
const { OTLPLogExporter: ProtoLogExporter } = require('@opentelemetry/exporter-logs-otlp-proto');
const { BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { OpenAIInstrumentation } = require('@opentelemetry/instrumentation-openai');

const transport = process.env.LQO_TRANSPORT;
const url = process.env.LQO_OTLP_URL;
const logsUrl = process.env.LQO_OTLP_LOGS_URL;
const traceExporter = transport === 'grpc' ? new GrpcExporter({ url }) : new ProtoExporter({ url });
const logProcessor = logsUrl && new BatchLogRecordProcessor({
  exporter: transport === 'grpc' ? new GrpcLogExporter({ url: logsUrl }) : new ProtoLogExporter({ url: logsUrl }),
});
const sdk = new NodeSDK({
  serviceName: `node-producer-${transport}`,
  traceExporter,
  logRecordProcessors: logProcessor ? [logProcessor] : [],
  instrumentations: [new OpenAIInstrumentation({ captureMessageContent: true })],
});
sdk.start();

const OpenAI = require('openai'); // after start(): the instrumentation hooks the require

async function main() {
  const client = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: 'test-key', maxRetries: 0 });
  const reply = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Say this is a test' }],
  });
  console.log(reply.choices[0].message.content);
  if (logProcessor) {
    // the user liked the answer: semconv's evaluation event, through the global Logs API
    const { logs } = require('@opentelemetry/api');
    logs.getLogger('support-feedback').emit({
      eventName: 'gen_ai.evaluation.result',
      attributes: {
        'gen_ai.evaluation.name': 'user_feedback',
        'gen_ai.evaluation.score.label': 'thumbs_up',
        'gen_ai.evaluation.score.value': 1,
        'gen_ai.response.id': reply.id,
      },
    });
    await logProcessor.forceFlush(); // the events first, as the default schedules do
  }
  await sdk.shutdown(); // flushes the exporters
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
