/**
 * Datasets and batching for training. A `Dataset` is random access by index; the
 * `DataLoader` walks it in a seeded order, epoch after epoch, and its position
 * (`{ epoch, batch }`) is all a checkpoint needs to continue the same order.
 */
import { assertInteger, invalid } from "../errors";
import { Generator, randperm, stack, tidy, type Tensor } from "../tensor";

/** One training example. */
export interface Sample {
  /** [C, H, W] float, values in [-1, 1]. */
  image: Tensor;
  caption?: string;
  label?: number;
  /** [C, H, W] in [-1, 1]: an image the model is conditioned on (InstructPix2Pix's input image). */
  conditionImage?: Tensor;
}

/**
 * Random-access training data. `get` may create tensors (the training step disposes them) or
 * return views of stored ones.
 */
export interface Dataset {
  readonly length: number;
  get(index: number): Sample | Promise<Sample>;
}

/** A collated batch. */
export interface Batch {
  /** [B, C, H, W]. */
  images: Tensor;
  /** Present when every sample had a caption. */
  captions?: string[];
  /** Present when every sample had a label. */
  labels?: number[];
  /** [B, C, H, W]; present when every sample had a condition image. */
  conditionImages?: Tensor;
  /** Dataset indices of the samples. */
  indices: number[];
}

export interface DataLoaderOptions {
  batchSize: number;
  /** Seeded shuffle per epoch (default true); false walks the dataset in order. */
  shuffle?: boolean;
  /** Seed of the shuffle; epoch e uses `randperm(n)` from a Generator seeded `seed + e`. Default 0. */
  seed?: number;
  /** Drop the last incomplete batch of each epoch (default true, so every batch has the same size). */
  dropLast?: boolean;
}

/** Where a DataLoader is: the epoch and the next batch within it. */
export interface LoaderPosition {
  epoch: number;
  batch: number;
}

/**
 * Stacks samples into a batch.
 * @example const batch = collate([await ds.get(0), await ds.get(1)], [0, 1]);
 */
export function collate(samples: Sample[], indices: number[]): Batch {
  if (samples.length === 0) throw new Error("collate: no samples");
  const shape = samples[0].image.shape;
  samples.forEach((s, i) => {
    if (s.image.shape.join() !== shape.join()) throw new Error(`collate: sample ${indices[i]} has image shape [${s.image.shape}] but sample ${indices[0]} has [${shape}]`);
  });
  const batch: Batch = { images: stack(samples.map((s) => s.image)), indices };
  if (samples.every((s) => typeof s.caption === "string")) batch.captions = samples.map((s) => s.caption as string);
  if (samples.every((s) => typeof s.label === "number")) batch.labels = samples.map((s) => s.label as number);
  if (samples.every((s) => s.conditionImage !== undefined)) {
    const conditionShape = samples[0].conditionImage!.shape;
    samples.forEach((s, i) => {
      if (s.conditionImage!.shape.join() !== conditionShape.join()) throw new Error(`collate: sample ${indices[i]} has condition image shape [${s.conditionImage!.shape}] but sample ${indices[0]} has [${conditionShape}]`);
    });
    batch.conditionImages = stack(samples.map((s) => s.conditionImage!));
  }
  return batch;
}

/**
 * Batches a dataset in a seeded order. The same seed gives PyTorch's
 * `torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))` order.
 * @example
 * const loader = new DataLoader(dataset, { batchSize: 16, seed: 0 });
 * const batch = await loader.next(); // ... batch.images.dispose()
 */
export class DataLoader {
  readonly dataset: Dataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  private position: LoaderPosition = { epoch: 0, batch: 0 };
  private cachedOrder: { epoch: number; order: number[] } | null = null;

  constructor(dataset: Dataset, options: DataLoaderOptions) {
    if (typeof dataset !== "object" || dataset === null || typeof dataset.get !== "function") throw invalid("Dataset with length and get(i)", "dataset", dataset);
    assertInteger(dataset.length, "dataset.length", 1);
    if (typeof options !== "object" || options === null) throw invalid("options object", "DataLoader options", options);
    assertInteger(options.batchSize, "batchSize", 1);
    this.dataset = dataset;
    this.batchSize = options.batchSize;
    this.shuffle = options.shuffle ?? true;
    this.seed = options.seed ?? 0;
    assertInteger(this.seed, "seed", 0);
    this.dropLast = options.dropLast ?? true;
    if (this.dropLast && dataset.length < this.batchSize) {
      throw new Error(`DataLoader: the dataset has ${dataset.length} samples, fewer than batchSize ${this.batchSize}, and dropLast is on`);
    }
  }

  /** Batches per epoch. */
  get batchesPerEpoch(): number {
    const n = this.dataset.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** The sample order of `epoch`. */
  order(epoch: number): number[] {
    if (this.cachedOrder?.epoch === epoch) return this.cachedOrder.order;
    const n = this.dataset.length;
    const order = this.shuffle
      ? tidy(() => Array.from(randperm(n, { generator: new Generator(this.seed + epoch) }).toFloat64Array()))
      : Array.from({ length: n }, (_, i) => i);
    this.cachedOrder = { epoch, order };
    return order;
  }

  /** Where the next batch comes from. */
  state(): LoaderPosition {
    return { ...this.position };
  }

  /** Continues from a position saved by `state()`. */
  setState(position: LoaderPosition): void {
    assertInteger(position?.epoch, "position.epoch", 0);
    assertInteger(position.batch, "position.batch", 0);
    this.position = { ...position };
  }

  /** The indices of the next batch; advances the position (wrapping to the next epoch). */
  nextIndices(): number[] {
    if (this.position.batch >= this.batchesPerEpoch) this.position = { epoch: this.position.epoch + 1, batch: 0 };
    const { epoch, batch } = this.position;
    const start = batch * this.batchSize;
    const indices = this.order(epoch).slice(start, start + this.batchSize);
    this.position = { epoch, batch: batch + 1 };
    return indices;
  }

  /** Loads and collates the next batch. The caller owns `images`. */
  async next(): Promise<Batch> {
    const indices = this.nextIndices();
    const samples = await Promise.all(indices.map((i) => this.dataset.get(i)));
    return collate(samples, indices);
  }
}

/**
 * A dataset over stacked images (and optional labels / captions) already in memory.
 * @example const ds = tensorDataset(images, { labels: [3, 1, 4] }); // images: [N, C, H, W]
 */
export function tensorDataset(images: Tensor, extra: { labels?: number[]; captions?: string[] } = {}): Dataset {
  if (images?.ndim !== 4) throw invalid("[N, C, H, W] Tensor", "tensorDataset images", images);
  const n = images.shape[0];
  if (extra.labels && extra.labels.length !== n) throw new Error(`tensorDataset: ${extra.labels.length} labels for ${n} images`);
  if (extra.captions && extra.captions.length !== n) throw new Error(`tensorDataset: ${extra.captions.length} captions for ${n} images`);
  return {
    length: n,
    get(i: number): Sample {
      const sample: Sample = { image: images.index(i) };
      if (extra.labels) sample.label = extra.labels[i];
      if (extra.captions) sample.caption = extra.captions[i];
      return sample;
    },
  };
}

/**
 * A dataset whose samples are `fn(sample, index)` of another's — resizing, channel changes,
 * VAE encoding. `fn` owns the sample it is given: the source image is disposed after `fn`
 * unless `fn` returns it.
 * @example const rgb = mapDataset(gray, ({ image, ...rest }) => ({ ...rest, image: image.expand([3, -1, -1]).contiguous() }));
 */
export function mapDataset(dataset: Dataset, fn: (sample: Sample, index: number) => Sample | Promise<Sample>): Dataset {
  if (typeof dataset !== "object" || dataset === null || typeof dataset.get !== "function") throw invalid("Dataset with length and get(i)", "mapDataset dataset", dataset);
  if (typeof fn !== "function") throw invalid("function (sample, index) => sample", "mapDataset fn", fn);
  return {
    length: dataset.length,
    async get(index: number): Promise<Sample> {
      const sample = await dataset.get(index);
      try {
        const mapped = await fn(sample, index);
        if (mapped.image !== sample.image) sample.image.dispose();
        return mapped;
      } catch (error) {
        sample.image.dispose();
        throw error;
      }
    },
  };
}
