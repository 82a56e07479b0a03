// Run with: npx tsx examples/serve.ts   (PORT and FLOWD_DB apply as usual)
import { serve } from "flowd";
import greeter from "./greeter.ts";

const server = await serve({ workflows: [greeter] });
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => void server.close().then(() => process.exit(0)));
}
