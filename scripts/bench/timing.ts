/**
 * What the benchmarks share: the median of a sample, and the median over repeats of a
 * call's mean time.
 */

/** The middle value (the upper one of an even count). @example median([3, 1, 2]) // 2 */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Median over `repeats` runs of the mean microseconds per call of `body`, after
 * min(iterations, 200) warm-up calls.
 * @example timeUs(20000, () => a.add(b).dispose())
 */
export function timeUs(iterations: number, body: () => void, repeats = 7): number {
  for (let i = 0; i < Math.min(iterations, 200); i++) body();
  const runs: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) body();
    runs.push(Number(process.hrtime.bigint() - start) / 1e3 / iterations);
  }
  return median(runs);
}

/**
 * timeUs for calls that leave work to the event loop: each run ends by yielding to it, inside the
 * timed window, so the FinalizationRegistry callbacks (the tensors' GC safety net) run and count.
 * @example await timeSettledUs(20000, () => a.add(b).dispose())
 */
export async function timeSettledUs(iterations: number, body: () => void, repeats = 7): Promise<number> {
  for (let i = 0; i < Math.min(iterations, 200); i++) body();
  const runs: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) body();
    await new Promise((resolve) => setImmediate(resolve));
    runs.push(Number(process.hrtime.bigint() - start) / 1e3 / iterations);
  }
  return median(runs);
}
