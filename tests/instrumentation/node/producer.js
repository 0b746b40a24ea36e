// A non-Python OTLP producer: the openai npm client instrumented by
// @opentelemetry/instrumentation-openai, exporting with @opentelemetry/sdk-node.
// Env: LQO_TRANSPORT=grpc|http, LQO_OTLP_URL (grpc: http://host:port, http: .../v1/traces),
//      OPENAI_BASE_URL (a local replay of a recording).
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { OTLPTraceExporter: GrpcExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');
const { OTLPTraceExporter: ProtoExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { OpenAIInstrumentation } = require('@opentelemetry/instrumentation-openai');

const transport = process.env.LQO_TRANSPORT;
const url = process.env.LQO_OTLP_URL;
const traceExporter = transport === 'grpc' ? new GrpcExporter({ url }) : new ProtoExporter({ url });
const sdk = new NodeSDK({
  serviceName: `node-producer-${transport}`,
  traceExporter,
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
  await sdk.shutdown(); // flushes the exporter
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
