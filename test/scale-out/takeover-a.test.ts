import { takeoverSuite } from "./takeover-trials.ts";

// The other half of the seeds is in the sibling file, so the trials run on both cores.
takeoverSuite([2101, 2102, 2103, 2104, 2105, 2106, 2107, 2108, 2109, 2110]);
