// Serve with: npx flowd serve --workflows ./examples/greeter.ts
import { Parallel, Step, Workflow, customEvent } from "flowd";

export default Workflow({
  id: "greeter",
  name: "Greeter",
  steps: [
    Step({ name: "shout", executor: async (input) => input.message.toUpperCase() }),
    Parallel({
      name: "both",
      steps: [
        Step({ name: "count", executor: (input) => String(input.previousOutput).length }),
        Step({
          name: "stream",
          executor: async function* (input) {
            yield "Hello, ";
            yield customEvent("progress", { half: true });
            yield String(input.outputs["shout"]);
          },
        }),
      ],
    }),
  ],
});
