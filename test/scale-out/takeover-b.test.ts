import { takeoverSuite } from "./takeover-trials.ts";

// The other half of the seeds is in the sibling file, so the trials run on both cores.
takeoverSuite([2111, 2112, 2113, 2114, 2115, 2116, 2117, 2118, 2119, 2120]);
