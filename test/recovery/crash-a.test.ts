import { crashSuite } from "./crash-trials.ts";

// The other half of the seeds is in the sibling file, so the trials run on both cores.
crashSuite([101, 102, 103, 104, 105, 106, 107, 108, 109, 110]);
