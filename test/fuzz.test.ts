/**
 * Random calls, seeded and reproducible, in child processes (a crash must not take the test
 * runner with it): the typed API (Tensor methods, functional.ts, creation.ts, attention) and
 * the whole op surface of td.op with arguments of each schema's kinds. Every call that kills
 * its process is reported by index and name; the next child goes on from the call after it.
 *
 * The suite runs FUZZ_CALLS (default 2,000) calls of each; the long run is
 * `FUZZ_CALLS=10000 npx vitest run test/fuzz.test.ts`. Replay one call with
 * `FUZZ_VERBOSE=1 node --import tsx test/helpers/fuzz-child.ts <typed|ops> <seed> <index> 1`.
 */
import { describe, expect, it } from "vitest";
import { fuzz, summarize } from "./helpers/fuzz-runner";

const calls = Number(process.env.FUZZ_CALLS ?? 2000);
const seed = Number(process.env.FUZZ_SEED ?? 1);
const timeout = Math.max(60_000, calls * 30);

describe("fuzzing: no call crashes the process", () => {
  it(`typed API, ${calls} calls`, async () => {
    const report = await fuzz("typed", calls, seed);
    console.log(summarize(report));
    expect(report.crashes).toEqual([]);
    expect(report.bad).toEqual([]);
    expect(report.ok + report.threw).toBe(calls);
    expect(report.ok).toBeGreaterThan(calls * 0.2); // calls get past argument checking into the kernels
  }, timeout);

  it(`op surface (td.op), ${calls} calls`, async () => {
    const report = await fuzz("ops", calls, seed);
    console.log(summarize(report));
    expect(report.crashes).toEqual([]);
    expect(report.bad).toEqual([]);
    expect(report.ok + report.threw).toBe(calls);
  }, timeout);
});
