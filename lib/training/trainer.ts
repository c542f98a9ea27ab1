/**
 * The generic denoising trainer: any TorchScript denoiser, any Dataset, one of four
 * objectives, AdamW with a warmup schedule, clipping, accumulation, EMA, CFG condition
 * dropout, bf16 mixed precision and exact resume from atomic checkpoints.
 *
 * Determinism: one Generator draws, per micro-batch and in this order, the noise
 * (`randn(x0.shape)`), the timesteps and the condition-dropout mask (`rand([B]) < p`, only
 * when p > 0); the data order comes from the DataLoader's seeded shuffle. A checkpoint holds
 * all of it, so a resumed run's losses equal an uninterrupted run's bit for bit.
 *
 * With `options.distributed` the same run is split over the processes of a group: each rank
 * trains on its shard of every global batch with the global batch's draws, and the gradients
 * are averaged before the step (the contract, and resume across world sizes: ./ddp.ts).
 */
import * as fs from "node:fs";
import { noGrad } from "../autograd";
import { mseLoss } from "../functional";
import type { Module } from "../module";
import { AdamW, clipGradNorm } from "../optim";
import { defaultGenerator } from "../random";
import { Generator, isTensor, rand, randn, tidy, tidyAsync, type Tensor } from "../tensor";
import {
  checkpointFile, disposeCheckpoint, latestCheckpoint, loadCheckpoint, pruneCheckpoints, removeStaleTempFiles, saveCheckpoint, CHECKPOINT_FORMAT, type TrainCheckpoint,
} from "./checkpoint";
import { conditionArgs, placeCondition } from "./conditioning";
import { DataLoader, type Dataset } from "./data";
import { DataParallel } from "./ddp";
import { EMA } from "./ema";
import { lrSchedule } from "./lr";
import { alphasCumprodFor, noisedBatch, sampleTimes } from "./objectives";
import { resolveOptions, type ResolvedOptions, type StepInfo, type TrainBatch, type TrainerOptions } from "./options";

export interface TrainResult {
  /** Optimizer steps done (counting those before a resume). */
  step: number;
  /** Loss of every step. */
  losses: number[];
  /** True when `signal` stopped the run early. */
  aborted: boolean;
  /** The last checkpoint written, if any. */
  checkpoint: string | null;
}

/**
 * Training diverged: a step's loss or gradient norm is NaN or infinite. The step was not
 * applied; `lastCheckpoint` (if any) holds the last good state.
 * @example try { await trainer.run(); } catch (e) { if (e instanceof NonFiniteLossError) console.log(e.step); }
 */
export class NonFiniteLossError extends Error {
  constructor(readonly step: number, readonly what: string, readonly lr: number, readonly lastCheckpoint: string | null) {
    super(
      `training diverged at step ${step}: ${what} (learning rate ${lr}); the step was not applied` +
        (lastCheckpoint ? `, and ${lastCheckpoint} holds the last good state` : "") +
        "; try a lower learning rate",
    );
    this.name = "NonFiniteLossError";
  }
}

/** The default model call: `model.forwardSync(x_t, t, ...cond)`. */
const defaultForward = (model: Module, x: Tensor, t: Tensor, batch: TrainBatch): unknown => model.forwardSync(x, t, ...conditionArgs(batch.cond));

function predictionOf(output: unknown): Tensor {
  if (isTensor(output)) return output;
  if (Array.isArray(output) && isTensor(output[0])) return output[0];
  const sample = (output as { sample?: unknown } | null)?.sample;
  if (isTensor(sample)) return sample;
  throw new Error("Trainer: the forward call must return a Tensor, a tuple starting with one, or { sample: Tensor }");
}

/**
 * `model.copy()` whose parameters are leaves of their own: the native clone records autograd
 * history from the original's parameters, so gradients on the copy would flow back into them.
 * @example const copy = independentCopy(unet.module, () => true);
 */
export function independentCopy(model: Module, requiresGrad: (name: string) => boolean): Module {
  const copy = model.copy();
  tidy(() => {
    for (const [n, p] of Object.entries(copy.namedParameters() as Record<string, Tensor>)) copy.setParameter(n, p.detach().requiresGrad_(requiresGrad(n)));
  });
  return copy;
}

/**
 * Trains a denoiser in place.
 * @example
 * const model = td.load("tiny_unet.pt");
 * const trainer = new Trainer(model, new FashionMNIST({ pad32: true }), {
 *   objective: "epsilon", steps: 1000, batchSize: 32, lr: 1e-3,
 *   lrSchedule: { kind: "cosine", warmupSteps: 100 }, ema: { decay: 0.999 },
 *   condition: labelCondition({ nullLabel: 10 }), conditionDropout: 0.1,
 *   checkpoint: { dir: "runs/fmnist", every: 200 }, resume: true,
 *   onStep: ({ step, loss }) => step % 50 === 0 && console.log(step, loss),
 * });
 * await trainer.run();
 * trainer.dispose();
 */
export class Trainer {
  readonly options: ResolvedOptions;
  readonly optimizer: AdamW;
  readonly ema: EMA | null;
  readonly generator: Generator;
  readonly loader: DataLoader;
  readonly lrAt: (step: number) => number;
  /** Optimizer steps done. */
  step = 0;
  losses: number[] = [];
  /** The last checkpoint written or loaded. */
  lastCheckpoint: string | null = null;
  private readonly params: Record<string, Tensor>;
  /** False when `options.parameters` gave the trained tensors: the caller owns them. */
  private readonly ownsParams: boolean;
  private readonly alphasCumprod: number[];
  private readonly device: string;
  /** Mixed precision: the bf16 module that runs forward/backward, and its trainable parameters in `params` order. */
  private readonly compute: { module: Module; params: Tensor[] } | null;
  /** Data-parallel training: this rank's side (null in one process). */
  private readonly ddp: DataParallel | null;

  constructor(readonly model: Module, readonly dataset: Dataset, options: TrainerOptions) {
    this.options = resolveOptions(options);
    const o = this.options;
    this.ddp = o.distributed ? new DataParallel(o.distributed, o.batchSize) : null;
    this.loader = new DataLoader(dataset, { batchSize: o.batchSize, shuffle: o.shuffle, seed: o.dataSeed, dropLast: true });
    this.alphasCumprod = o.objective === "flow_matching" ? [] : alphasCumprodFor(o.noiseSchedule);
    this.lrAt = lrSchedule({ lr: o.lr, kind: o.lrSchedule.kind, warmupSteps: o.lrSchedule.warmupSteps, numCycles: o.lrSchedule.numCycles, totalSteps: o.steps });
    this.generator = new Generator(o.seed);

    // Frozen parameters stop requiring grad so backward does not compute what nobody uses.
    this.ownsParams = !o.parameters;
    if (o.parameters) {
      this.params = { ...o.parameters };
    } else {
      const all = model.namedParameters() as Record<string, Tensor>;
      this.params = {};
      for (const [name, p] of Object.entries(all)) {
        if (!o.trainable || o.trainable(name)) this.params[name] = p;
        else {
          p.requiresGrad = false;
          p.dispose();
        }
      }
    }
    const names = Object.keys(this.params);
    const problem =
      names.length === 0 ? "Trainer: options.trainable selects no parameter of the model"
      : o.mixedPrecision === "bf16" && Object.values(this.params).some((p) => p.dtype !== "float32") ? 'Trainer: options.mixedPrecision "bf16" needs a float32 model (the master weights)'
      : o.parameters && Object.entries(this.params).some(([, p]) => !p.isLeaf || !p.requiresGrad) ? "Trainer: options.parameters must be leaf tensors that require grad (e.g. from lora.parameters())"
      : null;
    if (problem) {
      if (this.ownsParams) for (const p of Object.values(this.params)) p.dispose();
      throw new Error(problem);
    }
    this.device = this.params[names[0]].device;
    this.optimizer = new AdamW(Object.values(this.params), { ...o.optimizer, lr: o.lr });
    this.ema = o.ema ? new EMA(this.params, o.ema) : null;
    if (o.mixedPrecision === "bf16") {
      const module = independentCopy(model, (name) => name in this.params).moveTo({ dtype: "bfloat16" });
      const lowp = module.namedParameters() as Record<string, Tensor>;
      this.compute = { module, params: names.map((n) => lowp[n]) };
      for (const [n, p] of Object.entries(lowp)) if (!(n in this.params)) p.dispose();
    } else {
      this.compute = null;
    }
    if (o.resume) {
      try {
        this.resume(o.resume);
      } catch (error) {
        this.dispose();
        throw error;
      }
    }
  }

  /** Trains until `options.steps` (or an abort); checkpoints as configured. */
  async run(): Promise<TrainResult> {
    const { steps, checkpoint, signal, onStep } = this.options;
    this.model.train();
    this.compute?.module.train();
    if (checkpoint && (this.ddp?.rank ?? 0) === 0) removeStaleTempFiles(checkpoint.dir);
    if (this.ddp) await this.startReplicas(this.ddp);
    // In a group every rank stops after the same step: an abort travels in the step's all-reduce.
    const stopRequested = () => (this.ddp ? this.ddp.stopped : signal?.aborted === true);
    let aborted = false;
    while (this.step < steps) {
      if (stopRequested()) {
        aborted = true;
        break;
      }
      const info = await this.trainStep();
      if (onStep) await onStep(info);
      if (checkpoint && this.step % checkpoint.every === 0) await this.checkpointNow();
      // Yield to the event loop so timers and abort events can land between steps.
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (stopRequested() && this.step < steps) aborted = true;
    if (checkpoint && this.step > 0 && this.lastCheckpoint !== checkpointFile(checkpoint.dir, this.step)) await this.checkpointNow();
    return { step: this.step, losses: [...this.losses], aborted, checkpoint: this.lastCheckpoint };
  }

  /**
   * One optimizer step over `gradientAccumulation` micro-batches. A non-finite loss or
   * gradient norm throws {@link NonFiniteLossError} before the update, so the weights,
   * optimizer state and checkpoints stay those of the last good step.
   */
  async trainStep(): Promise<StepInfo> {
    const o = this.options;
    const lr = this.lrAt(this.step);
    let total = 0;
    for (let micro = 0; micro < o.gradientAccumulation; micro++) total += await this.microStep();
    const master = Object.values(this.params);
    if (this.compute) this.moveGradsToMaster(master);
    if (this.ddp) total = await this.ddp.reduceStep(master, total, o.signal?.aborted === true);
    const gradNorm = o.maxGradNorm === null ? null : clipGradNorm(master, o.maxGradNorm);
    const bad = !Number.isFinite(total) ? `loss ${total / o.gradientAccumulation}` : gradNorm !== null && !Number.isFinite(gradNorm) ? `gradient norm ${gradNorm}` : null;
    if (bad !== null) {
      this.optimizer.zeroGrad();
      if (this.compute) for (const p of this.compute.params) p.grad = null;
      throw new NonFiniteLossError(this.step + 1, bad, lr, this.lastCheckpoint);
    }
    this.optimizer.lr = lr;
    this.optimizer.update();
    this.optimizer.zeroGrad();
    if (this.compute) this.syncCompute();
    this.ema?.update();
    this.step += 1;
    const loss = total / o.gradientAccumulation;
    this.losses.push(loss);
    return { step: this.step, loss, lr, gradNorm, epoch: this.loader.state().epoch };
  }

  /** Forward and backward of one micro-batch; returns its loss. */
  private microStep(): Promise<number> {
    const o = this.options;
    return tidyAsync(async () => {
      const ddp = this.ddp;
      const batch = ddp ? await ddp.nextBatch(this.loader) : await this.loader.next();
      const x0 = batch.images.to({ device: this.device, dtype: "float32" }); // (B, C, H, W); B / W rows per rank
      // The draws cover the global batch (ranks keep their rows), so every rank's Generator stays in step.
      const n = ddp ? o.batchSize : x0.shape[0];
      const noise = (ddp ? ddp.localRows(randn([n, ...x0.shape.slice(1)], { generator: this.generator })) : randn(x0.shape, { generator: this.generator })).to({ device: this.device }); // (B, C, H, W)
      const drawn = sampleTimes(o.objective, n, o.timestepSampling, this.alphasCumprod.length, this.generator);
      const times = ddp ? { discrete: drawn.discrete && ddp.localItems(drawn.discrete), continuous: drawn.continuous && ddp.localRows(drawn.continuous) } : drawn;
      const threshold = Math.fround(o.conditionDropout); // torch compares float32 draws with a float32 p
      // Without dropout nothing is drawn (the stream stays as it was) and every draw reads 1: above any threshold.
      const drawsAll = o.conditionDropout > 0 ? Array.from(rand([n], { generator: this.generator }).toFloat32Array()) : new Array<number>(n).fill(1);
      const dropDraws = ddp ? ddp.localItems(drawsAll) : drawsAll;
      const drop = dropDraws.map((u) => u < threshold);
      const computeDtype = this.compute ? "bfloat16" : "float32";
      const cond = o.condition ? placeCondition(await o.condition(batch, drop, dropDraws), this.device, computeDtype) : undefined;
      const { noisy, target, modelTimesteps } = noisedBatch(o.objective, x0, noise, times, { alphasCumprod: this.alphasCumprod, flowTimestepScale: o.flowTimestepScale });
      const input = this.compute ? noisy.to("bfloat16") : noisy;
      const forward = o.forward ?? defaultForward;
      const trainBatch = { ...batch, cond, drop, dropDraws, x0, noisy, timesteps: times.discrete };
      const pred = predictionOf(await forward(this.compute?.module ?? this.model, input, modelTimesteps.to({ device: this.device }), trainBatch));
      const loss = o.loss ? o.loss(pred.float(), target.float(), trainBatch) : mseLoss(pred.float(), target.float());
      if (loss.ndim !== 0) throw new Error(`Trainer: options.loss must return a 0-d tensor but returned shape [${loss.shape}]`);
      (o.gradientAccumulation > 1 ? loss.div(o.gradientAccumulation) : loss).backward();
      return loss.item();
    });
  }

  /** Mixed precision: the bf16 gradients become the float32 master weights' gradients. */
  private moveGradsToMaster(master: Tensor[]): void {
    tidy(() =>
      this.compute!.params.forEach((low, i) => {
        const grad = low.grad;
        if (grad) master[i].grad = grad.float();
        low.grad = null;
      }),
    );
  }

  /** Mixed precision: the bf16 copy takes the updated master weights. */
  private syncCompute(): void {
    const master = Object.values(this.params);
    noGrad(() => this.compute!.params.forEach((low, i) => low.copy_(master[i])));
  }

  /** A checkpoint of this step: written by rank 0 while the other ranks wait for it. */
  private async checkpointNow(): Promise<void> {
    if (!this.ddp) {
      this.saveCheckpoint();
      return;
    }
    await this.ddp.onMain(() => this.saveCheckpoint());
    this.lastCheckpoint = checkpointFile(this.options.checkpoint!.dir, this.step);
  }

  /** Before the first step in a group: every rank takes rank 0's weights, buffers and EMA weights (and the bf16 copy follows). */
  private async startReplicas(ddp: DataParallel): Promise<void> {
    const buffers = Object.values(this.model.namedBuffers() as Record<string, Tensor>);
    try {
      await ddp.start(this.step, [...Object.values(this.params), ...buffers, ...Object.values(this.ema?.namedParameters() ?? {})]);
    } finally {
      for (const b of buffers) b.dispose();
    }
    if (this.compute) this.syncCompute();
  }

  /** The run's state; `generator`, `globalGenerator` and `buffers` are fresh handles the caller disposes. */
  private snapshot(): TrainCheckpoint {
    const o = this.options;
    return {
      format: CHECKPOINT_FORMAT,
      step: this.step,
      model: this.params,
      buffers: this.model.namedBuffers() as Record<string, Tensor>,
      ema: this.ema ? this.ema.stateDict() : null,
      optimizer: this.optimizer.stateDict(),
      generator: this.generator.getState(),
      globalGenerator: defaultGenerator.getState(),
      data: this.loader.state(),
      losses: [...this.losses],
      config: { objective: o.objective, batchSize: o.batchSize, gradientAccumulation: o.gradientAccumulation },
    };
  }

  /**
   * Writes a checkpoint atomically (default: `<checkpoint.dir>/checkpoint-<step>.pt`) and prunes old ones.
   * @example trainer.saveCheckpoint("backup.pt")
   */
  saveCheckpoint(file?: string): string {
    const dir = this.options.checkpoint?.dir;
    if (!file && !dir) throw new Error("Trainer.saveCheckpoint: give a file or options.checkpoint.dir");
    const target = file ?? checkpointFile(dir!, this.step);
    const state = this.snapshot();
    try {
      saveCheckpoint(state, target);
    } finally {
      for (const t of [state.generator, state.globalGenerator, ...Object.values(state.buffers)]) t.dispose();
    }
    if (!file && this.options.checkpoint?.keep) pruneCheckpoints(dir!, this.options.checkpoint.keep);
    this.lastCheckpoint = target;
    return target;
  }

  /** Restores a checkpoint written by `saveCheckpoint` (same model, objective and batch size). */
  loadCheckpoint(file: string): void {
    const ckpt = loadCheckpoint(file);
    try {
      this.restore(ckpt, file);
    } finally {
      disposeCheckpoint(ckpt);
    }
    this.lastCheckpoint = file;
  }

  private resume(resume: string | true): void {
    const target = resume === true ? this.options.checkpoint!.dir : resume;
    if (fs.existsSync(target) && fs.statSync(target).isDirectory()) {
      const latest = latestCheckpoint(target);
      if (!latest) return; // a fresh run: nothing saved yet
      try {
        this.restore(latest.checkpoint, latest.file);
      } finally {
        disposeCheckpoint(latest.checkpoint);
      }
      this.lastCheckpoint = latest.file;
    } else if (resume === true) {
      return;
    } else {
      this.loadCheckpoint(target);
    }
  }

  private restore(ckpt: TrainCheckpoint, file: string): void {
    const o = this.options;
    const where = `Trainer.loadCheckpoint("${file}")`;
    const { config } = ckpt;
    if (config.objective !== o.objective || config.batchSize !== o.batchSize) {
      throw new Error(`${where}: the checkpoint was trained with objective ${config.objective} and batchSize ${config.batchSize}, not ${o.objective} and ${o.batchSize}`);
    }
    const saved = Object.keys(ckpt.model);
    const mine = Object.keys(this.params);
    const missing = mine.filter((n) => !(n in ckpt.model));
    if (missing.length > 0 || saved.length !== mine.length) throw new Error(`${where}: its parameters differ from the trainable ones (missing: ${missing.join(", ") || "none"}; saved ${saved.length}, trainable ${mine.length})`);
    for (const name of mine) {
      if (ckpt.model[name].shape.join() !== this.params[name].shape.join()) throw new Error(`${where}: "${name}" has shape [${ckpt.model[name].shape}] but the model's is [${this.params[name].shape}]`);
    }
    if (this.ema && !ckpt.ema) throw new Error(`${where}: the checkpoint has no EMA weights but options.ema is on`);
    const buffers = this.model.namedBuffers() as Record<string, Tensor>;
    noGrad(() => {
      for (const name of mine) this.params[name].copy_(ckpt.model[name]);
      for (const [name, b] of Object.entries(buffers)) if (ckpt.buffers?.[name]) b.copy_(ckpt.buffers[name]);
    });
    for (const b of Object.values(buffers)) b.dispose();
    this.optimizer.dispose();
    this.optimizer.loadStateDict(ckpt.optimizer);
    if (this.ema && ckpt.ema) this.ema.loadStateDict(ckpt.ema);
    this.generator.setState(ckpt.generator);
    if ((this.ddp?.rank ?? 0) === 0) defaultGenerator.setState(ckpt.globalGenerator); // other ranks keep their own dropout stream
    this.loader.setState(ckpt.data);
    this.step = ckpt.step;
    this.losses = [...ckpt.losses];
    if (this.compute) this.syncCompute();
  }

  /** Frees the optimizer state, EMA weights and parameter handles (the model keeps its weights; `options.parameters` stay the caller's). */
  dispose(): void {
    this.optimizer.dispose();
    this.ema?.dispose();
    if (this.ownsParams) for (const p of Object.values(this.params)) p.dispose();
    for (const p of this.compute?.params ?? []) p.dispose();
  }
}

/**
 * Trains `model` in place and returns the losses; a shorthand for `new Trainer(...).run()`.
 * The EMA weights (if any) are copied into `model.copy()` as `emaModel` (null with
 * `options.parameters`: use a Trainer and its `ema.namedParameters()` there).
 * @example const { losses, emaModel } = await train(model, dataset, { objective: "v_prediction", steps: 500, batchSize: 8, ema: {} });
 */
export async function train(model: Module, dataset: Dataset, options: TrainerOptions): Promise<TrainResult & { emaModel: Module | null }> {
  const trainer = new Trainer(model, dataset, options);
  try {
    const result = await trainer.run();
    let emaModel: Module | null = null;
    if (trainer.ema && !options.parameters) {
      emaModel = independentCopy(model, () => true);
      trainer.ema.copyTo(emaModel);
    }
    return { ...result, emaModel };
  } finally {
    trainer.dispose();
  }
}
