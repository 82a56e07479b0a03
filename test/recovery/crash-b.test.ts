import { crashSuite } from "./crash-trials.ts";

// The other half of the seeds is in the sibling file, so the trials run on both cores.
crashSuite([201, 202, 203, 204, 205, 206, 207, 208, 209, 210]);
