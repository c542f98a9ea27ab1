/**
 * Data-parallel training for the Trainer — what PyTorch's DistributedDataParallel and
 * DistributedSampler do, over a {@link ProcessGroup}: every rank holds the whole model, trains
 * on its shard of each batch, and applies the same averaged gradient, so the ranks' weights
 * stay equal.
 *
 * The contract (`batchSize` is the GLOBAL batch of a micro-step, split evenly over the ranks):
 * 1. Data: every rank walks the same seeded global order (the DataLoader's `randperm` of epoch
 *    e); of each global batch, rank r takes positions r, r + W, r + 2W, ... — PyTorch's
 *    DistributedSampler order (rank r takes every W-th index of the permutation), batch by batch.
 * 2. Randomness: every rank draws the noise, timesteps and condition-dropout mask of the whole
 *    global batch from the same Generator and keeps its rows, so each sample gets what it gets
 *    in one process and the Generator's state is the same on every rank.
 * 3. Gradients: after the micro-batches of an optimizer step, one all-reduce ("avg") of one flat
 *    bucket holding every gradient, a has-gradient flag per parameter, the loss and a stop flag.
 *    It does not overlap with backward (backward is one synchronous call here). With a loss
 *    that is a per-sample mean (MSE), or each rank's share of the global batch's loss times W
 *    (DreamBooth's prior loss normalized by the global batch's counts), the averaged gradient
 *    is the one-process gradient of the global batch, up to float summation order.
 * 4. Start: rank 0's parameters, buffers and EMA weights are broadcast to all; ranks check that
 *    they resumed from the same step. Checkpoints and model files are written by rank 0 while
 *    the others wait for its result; checkpoints must be where every rank can read them.
 * 5. Resume on any world size: a checkpoint holds the global position (epoch, global batch),
 *    the Generator, optimizer and EMA state — nothing per rank. A run resumed on W' ranks
 *    continues the same global batches with the same draws, so it equals an uninterrupted run
 *    on W' ranks: bit for bit when W' equals the world size it was saved at, within float
 *    summation order otherwise. Only the global CPU generator (dropout inside the model) is
 *    per rank: rank 0's is saved and restored, the others keep their own stream.
 * 6. Stopping: an abort on any rank is carried in the step's all-reduce, so every rank stops
 *    after the same step; a rank that dies fails the others' next collective with a
 *    DistributedError (at once when its sockets close, after the group's timeout when it hangs).
 */
import { isProcessGroup, type ProcessGroup } from "../distributed";
import { assertInteger, invalid } from "../errors";
import { Generator, randperm, tensor, tidy, zerosLike, type Tensor } from "../tensor";
import { collate, type Batch, type DataLoader } from "./data";

/**
 * PyTorch's `torch.utils.data.DistributedSampler`: each epoch the same seeded permutation on
 * every rank (`randperm(n)` from a Generator seeded `seed + epoch`), padded by wrapping (or cut
 * with `dropLast`) to a multiple of the world size; rank r takes every `worldSize`-th index
 * starting at r.
 * @example new DistributedSampler(10, { rank: 1, worldSize: 2, seed: 0 }).indices(0) // 5 indices
 */
export class DistributedSampler {
  readonly rank: number;
  readonly worldSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;

  constructor(readonly length: number, options: { rank: number; worldSize: number; shuffle?: boolean; seed?: number; dropLast?: boolean }) {
    assertInteger(length, "DistributedSampler length", 1);
    assertInteger(options?.worldSize, "DistributedSampler worldSize", 1);
    if (!Number.isInteger(options.rank) || options.rank < 0 || options.rank >= options.worldSize) throw invalid(`integer in [0, ${options.worldSize})`, "DistributedSampler rank", options.rank);
    this.rank = options.rank;
    this.worldSize = options.worldSize;
    this.shuffle = options.shuffle ?? true;
    this.seed = options.seed ?? 0;
    assertInteger(this.seed, "DistributedSampler seed", 0);
    this.dropLast = options.dropLast ?? false;
  }

  /** Indices per rank and epoch. */
  get numSamples(): number {
    return this.dropLast ? Math.floor(this.length / this.worldSize) : Math.ceil(this.length / this.worldSize);
  }

  /** This rank's indices of `epoch`. */
  indices(epoch: number): number[] {
    assertInteger(epoch, "DistributedSampler epoch", 0);
    const n = this.length;
    let order = this.shuffle ? tidy(() => Array.from(randperm(n, { generator: new Generator(this.seed + epoch) }).toFloat64Array())) : Array.from({ length: n }, (_, i) => i);
    const total = this.numSamples * this.worldSize;
    if (total <= n) order = order.slice(0, total);
    else while (order.length < total) order = order.concat(order.slice(0, total - order.length));
    return order.filter((_, i) => i % this.worldSize === this.rank);
  }
}

/**
 * Where rank `rank`'s samples sit in a global batch of `batchSize`: rank, rank + W, rank + 2W, ...
 * (a multiple of the world size W), so over an epoch each rank sees DistributedSampler's indices.
 * @example localPositions(8, 1, 2) // [1, 3, 5, 7]
 */
export function localPositions(batchSize: number, rank: number, worldSize: number): number[] {
  assertInteger(worldSize, "localPositions worldSize", 1);
  assertInteger(batchSize, "localPositions batchSize", 1);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw invalid(`integer in [0, ${worldSize})`, "localPositions rank", rank);
  if (batchSize % worldSize !== 0) throw new Error(`localPositions: the global batch of ${batchSize} must be a multiple of the world size ${worldSize}`);
  return Array.from({ length: batchSize / worldSize }, (_, j) => rank + j * worldSize);
}

/**
 * One rank's side of data-parallel training; the Trainer makes one from `options.distributed`.
 * @example const dp = new DataParallel(group, 8); dp.localItems([0, 1, 2, 3, 4, 5, 6, 7]) // rank 1 of 2: [1, 3, 5, 7]
 */
export class DataParallel {
  /** Set once a step's all-reduce carried a stop request from any rank. */
  stopped = false;
  private readonly positions: number[];

  constructor(readonly group: ProcessGroup, readonly batchSize: number) {
    if (!isProcessGroup(group) || group.isDestroyed) throw invalid("live ProcessGroup from initProcessGroup()", "options.distributed", group);
    if (batchSize % group.worldSize !== 0) {
      throw new Error(`Trainer: options.batchSize ${batchSize} is the global batch and must be a multiple of the world size ${group.worldSize} (each rank trains on batchSize / worldSize samples)`);
    }
    this.positions = localPositions(batchSize, group.rank, group.worldSize);
  }

  get rank(): number {
    return this.group.rank;
  }

  get worldSize(): number {
    return this.group.worldSize;
  }

  /** This rank's items of a global batch's list: positions rank, rank + W, ... */
  localItems<T>(items: T[]): T[] {
    if (items.length !== this.batchSize) throw new Error(`DataParallel: a global batch has ${this.batchSize} items, not ${items.length}`);
    return this.positions.map((i) => items[i]);
  }

  /** This rank's rows of a global batch's tensor ((B, ...) -> (B / W, ...)), as a new tensor. */
  localRows(t: Tensor): Tensor {
    if (t.shape[0] !== this.batchSize) throw new Error(`DataParallel: a global batch has ${this.batchSize} rows, not ${t.shape[0]}`);
    return tidy(() => t.indexSelect(0, tensor(BigInt64Array.from(this.positions, BigInt), [this.positions.length], { device: t.device })));
  }

  /** This rank's part of the next global batch of `loader` (which keeps the global position). */
  async nextBatch(loader: DataLoader): Promise<Batch> {
    const indices = this.localItems(loader.nextIndices());
    const samples = await Promise.all(indices.map((i) => loader.dataset.get(i)));
    return collate(samples, indices);
  }

  /**
   * Before the first step: checks every rank is at the same step, then gives every rank rank
   * 0's values of `tensors` (parameters, buffers, EMA weights).
   */
  async start(step: number, tensors: Tensor[]): Promise<void> {
    const steps = tensor(Float64Array.of(step, -step));
    try {
      await this.group.allReduce(steps, "max");
      const [max, negMin] = steps.toFloat64Array();
      if (max !== -negMin) throw new Error(`distributed training: the ranks are at different steps (${-negMin} to ${max}): each resumed from the checkpoints it sees; put them where every rank reads the same files`);
    } finally {
      steps.dispose();
    }
    if (tensors.length > 0) await this.group.broadcast(tensors, 0);
  }

  /**
   * The optimizer step's all-reduce: averages the gradients of `params` in place (a parameter
   * without a gradient here gets one if any rank has one), and returns the ranks' mean of
   * `loss`; records whether any rank asked to stop.
   */
  async reduceStep(params: Tensor[], loss: number, stop: boolean): Promise<number> {
    const grads = params.map((p) => p.grad);
    const buffers = grads.map((g, i) => g ?? zerosLike(params[i]));
    const meta = tensor(Float64Array.from([...grads.map((g) => (g ? 1 : 0)), loss, stop ? 1 : 0])); // (P + 2,)
    try {
      await this.group.allReduce([...buffers, meta], "avg");
      const m = meta.toFloat64Array();
      grads.forEach((g, i) => {
        if (!g && m[i] > 0) params[i].grad = buffers[i];
      });
      this.stopped = this.stopped || m[params.length + 1] > 0;
      return m[params.length];
    } finally {
      for (const b of buffers) b.dispose();
      meta.dispose();
    }
  }

  /**
   * Runs `write` on rank 0 only; every rank waits for it and learns whether it failed (the
   * others throw too, so no rank trains on past a missing checkpoint).
   */
  async onMain<T>(write: () => T | Promise<T>): Promise<T | undefined> {
    return this.settle(this.rank === 0 ? write : null, "rank 0 failed to write its files (rank 0's error says why)");
  }

  /**
   * Runs `work` on every rank and waits for all of them; when it failed on any rank, every rank
   * throws (its own error, or one saying another rank failed).
   */
  async onEvery<T>(work: () => T | Promise<T>): Promise<T> {
    return (await this.settle(work, "another rank failed (its own error says why)")) as T;
  }

  /** Runs `work` (if any) here, then agrees with the other ranks on whether any failed. */
  private async settle<T>(work: (() => T | Promise<T>) | null, othersFailed: string): Promise<T | undefined> {
    let failure: unknown = null;
    let result: T | undefined;
    if (work) {
      try {
        result = await work();
      } catch (error) {
        failure = error;
      }
    }
    const flag = tensor(Float64Array.of(failure === null ? 0 : 1));
    try {
      await this.group.allReduce(flag, "max");
      if (failure !== null) throw failure;
      if (flag.toFloat64Array()[0] > 0) throw new Error(`distributed training: ${othersFailed}; rank ${this.rank} stops too`);
    } finally {
      flag.dispose();
    }
    return result;
  }
}

/**
 * Runs `write` on rank 0 of `group` (every rank waits and fails with it), or just runs it
 * without a group.
 * @example await writeOnMainRank(options.distributed, () => fs.writeFileSync(file, data));
 */
export async function writeOnMainRank<T>(group: ProcessGroup | undefined, write: () => T | Promise<T>): Promise<T | undefined> {
  if (!group) return write();
  return new DataParallel(group, group.worldSize).onMain(write);
}

/**
 * Runs `work` on every rank of `group` and waits for all (each rank's share of a task whose
 * results they all read next, e.g. DreamBooth's class images); a failure on any rank fails
 * every rank. Without a group it just runs `work`.
 * @example const files = await onEveryRank(group, () => ensureClassImages(dir, { ...o, shard: { rank, worldSize } }));
 */
export async function onEveryRank<T>(group: ProcessGroup | undefined, work: () => T | Promise<T>): Promise<T> {
  if (!group) return work();
  return new DataParallel(group, group.worldSize).onEvery(work);
}
