import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import * as tr from "../lib/training";
import { fromEncoded, maxRelativeError, readFixture } from "./helpers";
import { modelPath, optionsFor, referenceDataset, refs, settledTensorCount, weights } from "./helpers/training";

const values = (t: td.Tensor) => Array.from(t.toFloat32Array());
const refValues = (e: { values: number[] }) => Array.from(Float32Array.from(e.values));

describe("objectives equal PyTorch/diffusers", () => {
  const o = refs.objectives;

  for (const [schedule, r] of Object.entries(o.schedules)) {
    it(`DDPM targets with ${schedule} betas`, () => {
      const ac = tr.alphasCumprodFor({ betaSchedule: schedule as "linear", betaStart: r.beta_start, betaEnd: r.beta_end });
      expect(o.timesteps.map((t) => ac[t])).toEqual(r.alphas_cumprod_at);
      const x0 = fromEncoded(o.x0);
      const noise = fromEncoded(o.noise);
      for (const objective of ["epsilon", "v_prediction", "sample"] as const) {
        const { noisy, target, modelTimesteps } = td.tidy(() => tr.ddpmTargets(objective, x0, noise, o.timesteps, ac));
        expect(values(noisy)).toEqual(refValues(r.noisy));
        expect(values(target)).toEqual(refValues(r[objective]));
        expect(modelTimesteps.dtype).toBe("int64");
        expect(modelTimesteps.toArray()).toEqual(o.timesteps);
      }
    });
  }

  it("flow matching: x_t = (1-t)·x0 + t·noise, target noise - x0, model timestep t·1000", () => {
    const { noisy, target, modelTimesteps } = tr.flowTargets(fromEncoded(o.x0), fromEncoded(o.noise), td.tensor(o.sigmas));
    expect(values(noisy)).toEqual(refValues(o.flow.noisy));
    expect(values(target)).toEqual(refValues(o.flow.target));
    expect(values(modelTimesteps)).toEqual(Array.from(Float32Array.from(o.flow.model_timesteps)));
  });

  it("logit-normal timesteps equal torch.normal + sigmoid with the same generator", () => {
    const l = o.logit_normal;
    const t = tr.logitNormalTimes(l.t.length, { mean: l.mean, std: l.std, generator: new td.Generator(l.seed) });
    expect(values(t)).toEqual(refValues({ values: l.t }));
  });

  it("rejects timesteps outside the schedule", () => {
    const ac = tr.alphasCumprodFor();
    expect(() => tr.ddpmTargets("epsilon", td.zeros([1, 1, 2, 2]), td.zeros([1, 1, 2, 2]), [1000], ac)).toThrow(
      "Expected integer timestep in [0, 1000) for timesteps but received 1000 of type number",
    );
  });
});

interface MinSnrCase { name: string; schedule: Record<string, unknown>; objective: "epsilon" | "v_prediction" | "sample"; gamma: number; shape: number[]; prediction: number[]; target: number[]; timesteps: number[]; loss: number; probe_timesteps: number[]; probe_weights: number[] }
const minSnrRef = readFixture<{ cases: MinSnrCase[] }>("min_snr_ref.json");
const trainerSchedule = (s: Record<string, unknown>): td.TrainNoiseSchedule => (s.beta_schedule === "linear"
  ? { betaSchedule: "linear", betaStart: s.beta_start as number, betaEnd: s.beta_end as number, numTrainTimesteps: 1000 }
  : { betaSchedule: "squaredcos_cap_v2", numTrainTimesteps: 1000 });

describe("min-SNR-γ loss weighting equals diffusers' --snr_gamma", () => {
  it.each(minSnrRef.cases.map((c) => [c.name, c] as const))("%s", (_, c) => {
    const loss = td.minSnrLoss({ objective: c.objective, gamma: c.gamma, noiseSchedule: trainerSchedule(c.schedule) });
    // Both start from the same float32 ᾱ_t; diffusers takes √ᾱ_t, √(1 − ᾱ_t) and the SNR in float32, ours in float64: where 1 − ᾱ_t is small (t < 100) that rounding alone is up to ~1e-3 relative.
    c.probe_timesteps.forEach((t, i) => expect(Math.abs(loss.weights[t] - c.probe_weights[i]), `weight at t = ${t}`).toBeLessThanOrEqual((t < 100 ? 2e-3 : 1e-5) * c.probe_weights[i] + 1e-9));
    td.tidy(() => {
      const batch = { timesteps: c.timesteps } as unknown as td.TrainBatch;
      const value = loss(td.tensor(c.prediction, c.shape), td.tensor(c.target, c.shape), batch).item();
      expect(Math.abs(value - c.loss) / c.loss).toBeLessThan(1e-5);
    });
  });

  it("names a bad γ, objective, shape or timestep", () => {
    expect(() => td.minSnrLoss({ objective: "epsilon", gamma: 0 })).toThrow("minSnrLoss: gamma must be > 0 but got 0");
    expect(() => td.minSnrLoss({ objective: "flow_matching" as never })).toThrow('minSnrLoss: objective must be "epsilon", "v_prediction" or "sample" but got "flow_matching"');
    const loss = td.minSnrLoss({ objective: "epsilon" });
    td.tidy(() => {
      const x = td.zeros([2, 1, 2, 2]);
      expect(() => loss(x, td.zeros([2, 1, 2, 3]), { timesteps: [1, 2] } as unknown as td.TrainBatch)).toThrow("minSnrLoss: prediction [2,1,2,2] and target [2,1,2,3] differ");
      expect(() => loss(x, x, { timesteps: [1, 1000] } as unknown as td.TrainBatch)).toThrow("minSnrLoss: timestep 1000 is outside the schedule's 0..999");
      expect(() => loss(x, x, {} as td.TrainBatch)).toThrow("minSnrLoss: the batch has no timesteps");
      expect(() => loss(x, x, { timesteps: [1] } as unknown as td.TrainBatch)).toThrow("minSnrLoss: 1 timesteps for a batch of 2");
    });
  });
});

describe("learning-rate schedules equal diffusers' lambdas through LambdaLR", () => {
  for (const r of refs.lr) {
    it(`${r.kind}, warmup ${r.warmup}, total ${r.total}`, () => {
      const lrAt = tr.lrSchedule({ lr: r.lr, kind: r.kind, warmupSteps: r.warmup, totalSteps: r.total });
      r.values.forEach((v, step) => expect(Math.abs(lrAt(step) - v)).toBeLessThanOrEqual(1e-18));
    });
  }
  it("validates", () => {
    expect(() => tr.lrSchedule({ lr: 1e-4, kind: "cosine" })).toThrow("Expected positive integer for lrSchedule totalSteps but received 0 of type number");
    expect(() => tr.lrSchedule({ lr: 1e-4, kind: "step" as "cosine" })).toThrow('Expected one of constant, cosine, linear for lrSchedule kind but received "step" of type string');
  });
});

describe("EMA equals diffusers' EMAModel", () => {
  const e = refs.ema;
  for (const c of e.cases) {
    it(JSON.stringify(c.options), () => {
      const params = { a: fromEncoded(e.init[0]), b: fromEncoded(e.init[1]) };
      const opt = c.options as { decay: number; update_after_step?: number; use_ema_warmup?: boolean; power?: number };
      const ema = new tr.EMA(params, { decay: opt.decay, updateAfterStep: opt.update_after_step, warmup: opt.use_ema_warmup ? { power: opt.power! } : true });
      e.deltas.forEach((delta, step) => {
        params.a.add_(fromEncoded(delta[0]));
        params.b.add_(fromEncoded(delta[1]));
        ema.update();
        const shadow = ema.namedParameters();
        expect(values(shadow.a)).toEqual(refValues({ values: c.trace[step][0] }));
        expect(values(shadow.b)).toEqual(refValues({ values: c.trace[step][1] }));
      });
      ema.dispose();
    });
  }
  it("decay warmup", () => {
    expect(tr.emaDecay(1, { decay: 0.999 })).toBe(0);
    expect(tr.emaDecay(11, { decay: 0.999 })).toBe(11 / 20);
    expect(tr.emaDecay(1e6, { decay: 0.999 })).toBe(0.999);
    expect(tr.emaDecay(1, { decay: 0.9, warmup: false })).toBe(0.9);
  });
  it("copyTo fills a module copy with the averaged weights", () => {
    const model = td.load(modelPath);
    const ema = new tr.EMA(model.namedParameters() as Record<string, td.Tensor>, { decay: 0.5 });
    td.noGrad(() => (ema.namedParameters()["conv_in.bias"] as td.Tensor).fill_(3));
    const copy = model.copy();
    ema.copyTo(copy);
    expect(values(copy.namedParameters()["conv_in.bias"] as td.Tensor).every((v) => v === 3)).toBe(true);
    expect(values(model.namedParameters()["conv_in.bias"] as td.Tensor).every((v) => v === 3)).toBe(false);
    ema.dispose();
  });
});

describe("Trainer", () => {
  const dataset = referenceDataset();

  // PyTorch's numbers were made on one CPU; another CPU's kernels (AVX2, AVX-512, none)
  // round reductions differently by a few float32 ulps, which six optimizer steps grow to
  // ~1e-6 relative. So: PyTorch within 1e-5 (relative to max(1, |ref|)), and bit for bit
  // only between two runs on the same machine, which is what resume and determinism promise.
  const CROSS_CPU_TOLERANCE = 1e-5;
  const runOnce = async (config: (typeof refs.runs)[string]["config"]) => {
    const model = td.load(modelPath);
    const lrs: number[] = [];
    const trainer = new tr.Trainer(model, dataset, { ...optionsFor(config), onStep: ({ lr }) => void lrs.push(lr) });
    const { losses } = await trainer.run();
    const result = { losses, lrs, final: weights(model.namedParameters() as Record<string, td.Tensor>, true), ema: weights(trainer.ema!.namedParameters()) };
    trainer.dispose();
    model.dispose();
    return result;
  };
  const expectNear = (got: Record<string, number[]>, ref: Record<string, number[]>) => {
    expect(Object.keys(got).sort()).toEqual(Object.keys(ref).sort());
    for (const name of Object.keys(ref)) expect(maxRelativeError(got[name], ref[name]), name).toBeLessThanOrEqual(CROSS_CPU_TOLERANCE);
  };

  for (const [name, run] of Object.entries(refs.runs)) {
    it(`replays PyTorch's training loop (within float32 rounding across CPUs), bit for bit run to run: ${name}`, async () => {
      const first = await runOnce(run.config);
      expect(first.lrs).toEqual(run.lrs);
      expect(maxRelativeError(first.losses, run.losses)).toBeLessThanOrEqual(CROSS_CPU_TOLERANCE);
      expectNear(first.final, run.final);
      expectNear(first.ema, run.ema);
      expect(await runOnce(run.config)).toEqual(first);
    });
  }

  it("lowers the loss over a few dozen steps and leaks no tensors", async () => {
    const model = td.load(modelPath);
    const baseline = await settledTensorCount();
    const { losses, emaModel } = await tr.train(model, dataset, {
      objective: "sample", steps: 40, batchSize: 4, lr: 1e-2, seed: 1, ema: { decay: 0.9 },
      condition: tr.labelCondition({ nullLabel: 10 }), conditionDropout: 0.1,
    });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(losses.slice(-10))).toBeLessThan(0.7 * mean(losses.slice(0, 10)));
    expect(emaModel).not.toBeNull();
    // The EMA model is independent: its parameters are leaves, not views through the original's.
    expect(Object.values(emaModel!.namedParameters() as Record<string, td.Tensor>).map((p) => { const leaf = p.isLeaf; p.dispose(); return leaf; })).not.toContain(false);
    expect(await settledTensorCount()).toBe(baseline);
  });

  it("stops on a non-finite loss before applying the step, leaving the weights and checkpoints of the last good step", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-nan-"));
    const model = td.load(modelPath);
    let calls = 0;
    // The 5th forward returns NaN, as a diverging run does.
    const forward = (m: td.Module, x: td.Tensor, t: td.Tensor, batch: tr.TrainBatch) => {
      const out = m.forwardSync(x, t, ...(batch.cond === undefined ? [] : [batch.cond])) as td.Tensor;
      return ++calls === 5 ? out.mul(NaN) : out;
    };
    const trainer = new tr.Trainer(model, dataset, {
      objective: "epsilon", steps: 10, batchSize: 4, lr: 1e-2, condition: tr.labelCondition({ nullLabel: 10 }), forward, checkpoint: { dir, every: 2 },
    });
    const error = await trainer.run().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(tr.NonFiniteLossError);
    expect((error as tr.NonFiniteLossError).step).toBe(5);
    expect((error as Error).message).toBe(`training diverged at step 5: loss NaN (learning rate 0.01); the step was not applied, and ${tr.checkpointFile(dir, 4)} holds the last good state; try a lower learning rate`);
    expect(trainer.step).toBe(4);
    expect(tr.listCheckpoints(dir).map((c) => c.step)).toEqual([2, 4]);
    const saved = tr.loadCheckpoint(tr.checkpointFile(dir, 4));
    const now = weights(model.namedParameters() as Record<string, td.Tensor>, true);
    expect(now).toEqual(weights(saved.model));
    tr.disposeCheckpoint(saved);
    trainer.dispose();
  });

  it("trains only the selected parameters", async () => {
    const model = td.load(modelPath);
    const before = weights(model.namedParameters() as Record<string, td.Tensor>, true);
    const trainer = new tr.Trainer(model, dataset, { objective: "epsilon", steps: 2, batchSize: 4, lr: 1e-2, trainable: (n) => n.startsWith("conv_out.") });
    await trainer.run();
    trainer.dispose();
    const after = weights(model.namedParameters() as Record<string, td.Tensor>, true);
    for (const name of Object.keys(before)) {
      if (name.startsWith("conv_out.")) expect(after[name]).not.toEqual(before[name]);
      else expect(after[name]).toEqual(before[name]);
    }
  });

  it("takes a custom forward call and a caption condition with dropout", async () => {
    const model = td.load(modelPath);
    const seen: { captions: string[]; drop: boolean[] }[] = [];
    const captioned = tr.tensorDataset(td.keep(fromEncoded(refs.data.images)), { captions: refs.data.labels.map((l) => `class ${l}`) });
    const trainer = new tr.Trainer(model, captioned, {
      objective: "v_prediction", steps: 3, batchSize: 4, conditionDropout: 0.5,
      condition: tr.captionCondition((captions) => {
        seen.push({ captions, drop: [] });
        return td.tensor(Float64Array.from(captions.map((c) => (c === "" ? 10 : Number(c.split(" ")[1])))), [captions.length], { dtype: "int64" });
      }),
      forward: (m, x, t, batch) => {
        seen[seen.length - 1].drop = batch.drop;
        return [m.forwardSync(x, t, batch.cond)];
      },
    });
    await trainer.run();
    trainer.dispose();
    expect(seen).toHaveLength(3);
    const all = seen.flatMap((s) => s.captions.map((c, i) => ({ c, dropped: s.drop[i] })));
    expect(all.some((x) => x.dropped)).toBe(true);
    for (const { c, dropped } of all) expect(c === "").toBe(dropped);
  });

  it("mixed precision (bf16): float32 master weights, bf16 compute copy, the loss goes down", async () => {
    const model = td.load(modelPath);
    const initial = weights(model.namedParameters() as Record<string, td.Tensor>, true);
    const trainer = new tr.Trainer(model, dataset, { objective: "sample", steps: 30, batchSize: 4, lr: 1e-2, mixedPrecision: "bf16", ema: { decay: 0.9 } });
    const { losses } = await trainer.run();
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses.slice(-5).reduce((a, b) => a + b)).toBeLessThan(0.8 * losses.slice(0, 5).reduce((a, b) => a + b));
    const params = model.namedParameters() as Record<string, td.Tensor>;
    expect(Object.values(params).every((p) => p.dtype === "float32")).toBe(true);
    // The master weights moved by more than bf16 rounding could explain.
    expect(weights(params)["conv_out.weight"]).not.toEqual(initial["conv_out.weight"]);
    expect(Object.values(trainer.ema!.namedParameters()).every((p) => p.dtype === "float32")).toBe(true);
    trainer.dispose();
  });

  it("rejects bad options with errors that name them", () => {
    const model = td.load(modelPath);
    const base = { objective: "epsilon", steps: 2, batchSize: 4 } as const;
    const make = (o: Record<string, unknown>) => () => new tr.Trainer(model, dataset, { ...base, ...o } as tr.TrainerOptions);
    expect(make({ objective: "eps" })).toThrow('Expected one of epsilon, v_prediction, sample, flow_matching for options.objective but received "eps" of type string');
    expect(make({ steps: 0 })).toThrow("Expected positive integer for options.steps but received 0 of type number");
    expect(make({ batchSize: 2.5 })).toThrow("Expected positive integer for options.batchSize but received 2.5 of type number");
    expect(make({ batchSize: 13 })).toThrow("DataLoader: the dataset has 12 samples, fewer than batchSize 13, and dropLast is on");
    expect(make({ lr: -1 })).toThrow("Expected non-negative number for options.lr but received -1 of type number");
    expect(make({ conditionDropout: 1.5 })).toThrow("Expected number in [0, 1] for options.conditionDropout but received 1.5 of type number");
    expect(make({ conditionDropout: 0.1 })).toThrow("Trainer: options.conditionDropout needs options.condition (what to drop)");
    expect(make({ mixedPrecision: "fp16" })).toThrow('Expected one of no, bf16 for options.mixedPrecision but received "fp16" of type string');
    expect(make({ timestepSampling: { kind: "logit_normal", std: 0 } })).toThrow("Expected positive number for options.timestepSampling.std but received 0 of type number");
    expect(make({ lrSchedule: { kind: "cosine", warmupSteps: -1 } })).toThrow("Expected non-negative integer for options.lrSchedule.warmupSteps but received -1 of type number");
    expect(make({ checkpoint: { dir: "/tmp/x", every: 0 } })).toThrow("Expected positive integer for options.checkpoint.every but received 0 of type number");
    expect(make({ gradientAccumulation: 0 })).toThrow("Expected positive integer for options.gradientAccumulation but received 0 of type number");
    expect(make({ maxGradNorm: 0 })).toThrow("Expected positive number or null for options.maxGradNorm but received 0 of type number");
    expect(make({ ema: { decay: 2 } })).toThrow("Expected number in [0, 1] for EMA decay but received 2 of type number");
    expect(make({ learningRate: 1 })).toThrow('Trainer: unknown option "learningRate"');
    expect(make({ resume: true })).toThrow("Trainer: options.resume = true needs options.checkpoint.dir");
    expect(make({ trainable: () => false })).toThrow("Trainer: options.trainable selects no parameter of the model");
    expect(() => new tr.Trainer(model, { length: 0, get: () => ({ image: td.zeros([1]) }) }, base)).toThrow("Expected positive integer for dataset.length but received 0 of type number");
  });

  it("gives a clear error when the forward call returns no tensor", async () => {
    const trainer = new tr.Trainer(td.load(modelPath), dataset, { objective: "epsilon", steps: 1, batchSize: 4, forward: () => 42 });
    await expect(trainer.run()).rejects.toThrow("Trainer: the forward call must return a Tensor, a tuple starting with one, or { sample: Tensor }");
    trainer.dispose();
  });
});
