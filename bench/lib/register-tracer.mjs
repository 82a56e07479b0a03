// Preloaded into the benchmark's server (NODE_OPTIONS=--import) for B16: an OpenTelemetry
// SDK that records every span flowd makes and hands them in batches to an exporter that
// drops them, which is what tracing costs flowd short of the network.
import { trace } from "@opentelemetry/api";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";

const discard = { export: (_spans, done) => done({ code: 0 }), shutdown: async () => {} };
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(discard)] }));
