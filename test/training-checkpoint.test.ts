import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import * as tr from "../lib/training";
import { modelPath, referenceDataset, settledTensorCount, tempDir, weights } from "./helpers/training";

const dataset = referenceDataset();

/** Everything a resume must reproduce: accumulation, EMA, CFG dropout, warmup + cosine, clipping, epoch wrap. */
const options: tr.TrainerOptions = {
  objective: "v_prediction", steps: 10, batchSize: 4, seed: 3, lr: 5e-3, gradientAccumulation: 2,
  lrSchedule: { kind: "cosine", warmupSteps: 3 }, maxGradNorm: 0.5, ema: { decay: 0.95 },
  condition: tr.labelCondition({ nullLabel: 10 }), conditionDropout: 0.3,
};

async function uninterrupted(): Promise<{ losses: number[]; params: Record<string, number[]>; ema: Record<string, number[]> }> {
  const model = td.load(modelPath);
  const trainer = new tr.Trainer(model, dataset, options);
  const { losses } = await trainer.run();
  const result = { losses, params: weights(model.namedParameters() as Record<string, td.Tensor>, true), ema: weights(trainer.ema!.namedParameters()) };
  trainer.dispose();
  return result;
}

describe("checkpoints and resume", () => {
  it("a run resumed from a checkpoint equals an uninterrupted run bit for bit", async () => {
    const reference = await uninterrupted();
    const dir = tempDir();

    // First half: stop after step 5 (abort writes a checkpoint).
    const controller = new AbortController();
    const first = new tr.Trainer(td.load(modelPath), dataset, {
      ...options, checkpoint: { dir, every: 4 }, signal: controller.signal,
      onStep: ({ step }) => void (step === 5 && controller.abort()),
    });
    const stopped = await first.run();
    first.dispose();
    expect(stopped).toMatchObject({ step: 5, aborted: true, checkpoint: tr.checkpointFile(dir, 5) });
    expect(tr.listCheckpoints(dir).map((c) => c.step)).toEqual([4, 5]);

    // Second half: a fresh model from the original file, resumed from the folder.
    const model = td.load(modelPath);
    const baseline = await settledTensorCount();
    const second = new tr.Trainer(model, dataset, { ...options, checkpoint: { dir, every: 4 }, resume: true });
    expect(second.step).toBe(5);
    const finished = await second.run();
    expect(finished.losses).toEqual(reference.losses);
    expect(weights(model.namedParameters() as Record<string, td.Tensor>, true)).toEqual(reference.params);
    expect(weights(second.ema!.namedParameters())).toEqual(reference.ema);
    expect(finished.checkpoint).toBe(tr.checkpointFile(dir, 10));
    second.dispose();
    expect(await settledTensorCount()).toBe(baseline);
  });

  it("a killed run loses only the steps since its last checkpoint; crash leftovers are ignored", async () => {
    const reference = await uninterrupted();
    const dir = tempDir();
    const crashing = new tr.Trainer(td.load(modelPath), dataset, {
      ...options, checkpoint: { dir, every: 3 },
      onStep: ({ step }) => {
        if (step === 7) throw new Error("killed");
      },
    });
    await expect(crashing.run()).rejects.toThrow("killed");
    crashing.dispose();
    expect(tr.listCheckpoints(dir).map((c) => c.step)).toEqual([3, 6]);
    // What a process killed inside writeFileAtomic leaves: a partial temp file (of a pid that is gone).
    const leftover = path.join(dir, `.${path.basename(tr.checkpointFile(dir, 9))}.999999999.1700000000000.tmp`);
    fs.writeFileSync(leftover, fs.readFileSync(tr.checkpointFile(dir, 6)).subarray(0, 100));

    const model = td.load(modelPath);
    const resumed = new tr.Trainer(model, dataset, { ...options, checkpoint: { dir, every: 3 }, resume: dir });
    expect(resumed.step).toBe(6);
    const { losses } = await resumed.run();
    expect(losses).toEqual(reference.losses);
    expect(weights(model.namedParameters() as Record<string, td.Tensor>, true)).toEqual(reference.params);
    expect(fs.existsSync(leftover)).toBe(false);
    resumed.dispose();
  });

  it("skips a damaged newest checkpoint and loads the last good one; keep prunes old ones", async () => {
    const dir = tempDir();
    const trainer = new tr.Trainer(td.load(modelPath), dataset, { ...options, steps: 4, checkpoint: { dir, every: 1, keep: 2 } });
    await trainer.run();
    trainer.dispose();
    expect(tr.listCheckpoints(dir).map((c) => c.step)).toEqual([3, 4]);
    const newest = tr.checkpointFile(dir, 4);
    fs.writeFileSync(newest, fs.readFileSync(newest).subarray(0, 500));
    const latest = tr.latestCheckpoint(dir)!;
    expect(latest.file).toBe(tr.checkpointFile(dir, 3));
    expect(latest.checkpoint.step).toBe(3);
    expect(latest.checkpoint.losses).toHaveLength(3);
    expect(Object.keys(latest.checkpoint.model)).toContain("conv_in.weight");
    tr.disposeCheckpoint(latest.checkpoint);
    expect(() => tr.loadCheckpoint(newest)).toThrow(/loadCheckpoint\(".*checkpoint-00000004.pt"\): .*checkpoint-00000004.pt does not match its recorded SHA-256/);
    expect(() => tr.loadCheckpoint(newest, { verify: false })).toThrow(/loadValue\(".*checkpoint-00000004.pt"\)/);
    fs.writeFileSync(tr.checkpointFile(dir, 3), "garbage");
    expect(() => tr.latestCheckpoint(dir)).toThrow(/latestCheckpoint\(".*"\): no checkpoint loads/);
    expect(tr.latestCheckpoint(tempDir())).toBeNull();
  });

  it("refuses a checkpoint of another objective, batch size or parameter set", async () => {
    const dir = tempDir();
    const trainer = new tr.Trainer(td.load(modelPath), dataset, { objective: "epsilon", steps: 1, batchSize: 4, checkpoint: { dir, every: 1 } });
    await trainer.run();
    trainer.dispose();
    const file = tr.checkpointFile(dir, 1);
    const other = td.load(modelPath);
    const baseline = await settledTensorCount();
    expect(() => new tr.Trainer(other, dataset, { objective: "epsilon", steps: 2, batchSize: 8, ema: {}, resume: file })).toThrow("not epsilon and 8");
    expect(await settledTensorCount()).toBe(baseline);
    expect(() => new tr.Trainer(td.load(modelPath), dataset, { objective: "sample", steps: 2, batchSize: 4, resume: file })).toThrow(
      `Trainer.loadCheckpoint("${file}"): the checkpoint was trained with objective epsilon and batchSize 4, not sample and 4`,
    );
    expect(() => new tr.Trainer(td.load(modelPath), dataset, { objective: "epsilon", steps: 2, batchSize: 4, trainable: (n) => n.startsWith("conv"), resume: file })).toThrow(
      /its parameters differ from the trainable ones \(missing: none; saved 7, trainable 4\)/,
    );
    expect(() => new tr.Trainer(td.load(modelPath), dataset, { objective: "epsilon", steps: 2, batchSize: 4, resume: path.join(dir, "nope.pt") })).toThrow(
      /loadValue: no such file ".*nope.pt"/,
    );
  });
});

describe("abort", () => {
  it("stops after the step in flight and writes a checkpoint", async () => {
    const dir = tempDir();
    const controller = new AbortController();
    let calls = 0;
    const trainer = new tr.Trainer(td.load(modelPath), dataset, {
      objective: "epsilon", steps: 50, batchSize: 4, signal: controller.signal, checkpoint: { dir, every: 100 },
      // Abort while step 3's forward is running: step 3 still completes, step 4 never starts.
      forward: async (m, x, t) => {
        calls += 1;
        if (calls === 3) setImmediate(() => controller.abort());
        await new Promise((resolve) => setImmediate(resolve));
        return m.forwardSync(x, t);
      },
    });
    const result = await trainer.run();
    trainer.dispose();
    expect(result.step).toBe(3);
    expect(result.aborted).toBe(true);
    expect(calls).toBe(3);
    expect(tr.listCheckpoints(dir).map((c) => c.step)).toEqual([3]);
  });

  it("an already aborted signal runs no step", async () => {
    const trainer = new tr.Trainer(td.load(modelPath), dataset, { objective: "epsilon", steps: 5, batchSize: 4, signal: AbortSignal.abort() });
    expect(await trainer.run()).toMatchObject({ step: 0, aborted: true, losses: [] });
    trainer.dispose();
  });
});
