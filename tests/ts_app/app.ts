// A TypeScript RAG app traced with OpenInference's JS packages: a CHAIN root holding the question and the
// answer, a RETRIEVER span with the documents it used, exported over OTLP/HTTP (protobuf) to a collector.
//
//   node dist/app.js COLLECTOR_URL QUESTION ANSWER   -> prints {"trace_id", "root_span_id"} as hex
import { getRetrieverAttributes, traceChain, traceRetriever } from "@arizeai/openinference-core";
import { SEMRESATTRS_PROJECT_NAME } from "@arizeai/openinference-semantic-conventions";
import { trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";

const [collector, question, answer] = process.argv.slice(2);

const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": "ts-rag-app", [SEMRESATTRS_PROJECT_NAME]: "ts-rag" }),
  spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url: `${collector}/v1/traces` }))],
});
provider.register();

const documents = [
  { id: "ts-1", content: "The Eiffel Tower was completed on 31 March 1889.", score: 0.92 },
  { id: "ts-2", content: "It was built for the 1889 World's Fair in Paris.", score: 0.81 },
];

const retrieve = traceRetriever(async (query: string) => documents, {
  name: "retrieve",
  processOutput: (docs) => getRetrieverAttributes({ documents: docs }),
});

const rag = traceChain(
  async (q: string) => {
    await retrieve(q);
    const root = trace.getActiveSpan()?.spanContext();
    return { answer, root };
  },
  { name: "rag", processOutput: (out) => ({ "output.value": out.answer }) },
);

async function main(): Promise<void> {
  const { root } = await rag(question);
  await provider.shutdown();
  console.log(JSON.stringify({ trace_id: root?.traceId, root_span_id: root?.spanId }));
}

void main();
