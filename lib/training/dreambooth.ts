/**
 * The training side of DreamBooth (Ruiz et al., "DreamBooth: Fine Tuning Text-to-Image
 * Diffusion Models for Subject-Driven Generation", CVPR 2023):
 *
 * 1. a unique identifier [V] for the subject: rare tokens of the model's own tokenizer (§4.2),
 *    drawn uniformly by seed ({@link rareTokenIdentifier});
 * 2. class-specific prior preservation (§4.3): N images of "a [class noun]" sampled from the
 *    frozen model, cached on disk with their seeds so a rerun reuses them ({@link ensureClassImages});
 * 3. batches of instance examples ("a [V] [class noun]") followed by as many class examples,
 *    as diffusers' `train_dreambooth.py` builds them ({@link dreamBoothDataset});
 * 4. the loss L = L_instance + λ·L_prior, each the mean over its own examples
 *    ({@link priorPreservationLoss}). The generic MSE over such a batch would be
 *    (L_instance + L_prior) / 2: half the gradient, and no λ.
 *
 * Everything here is a pure function of (seed, sample index), so the Trainer's checkpoints
 * (which hold the loader's position) resume to the same batches. The sampling loop that makes
 * the class images lives with the pipelines (lib/pipelines/dreambooth.ts), which pass it in.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { assertInteger, assertNumber, invalid } from "../errors";
import { interpolate } from "../functional";
import { readImage, writeImage } from "../image";
import { writeFileAtomic } from "../serialize";
import { Generator, randperm, tensor, tidy, type Tensor } from "../tensor";
import type { CLIPTokenizer } from "../tokenizers";
import type { Dataset, Sample } from "./data";
import type { LossFn } from "./options";

// ---- 1. the identifier ------------------------------------------------------------------

/**
 * The id range identifiers are drawn from: the latest fifth of the tokenizer's BPE merges,
 * `[512 + ⌊0.8·M⌋, 512 + M)` for M merges after CLIP's 512 byte tokens (SD's CLIP:
 * 39,627–49,405; `sks`, the identifier diffusers' examples use, is 48,136). BPE adds merges in
 * order of their frequency in the tokenizer's training text, so these are its rarest tokens:
 * the analogue of the paper's T5 ids 5,000–10,000, whose vocabulary is ordered differently.
 * @example rareTokenRange(CLIPTokenizer.fromBuiltin()) // [39627, 49406]
 */
export function rareTokenRange(tokenizer: CLIPTokenizer): [number, number] {
  const specials = Math.min(tokenizer.bosTokenId, tokenizer.eosTokenId);
  const firstMerge = 512;
  const merges = specials - firstMerge;
  if (merges < 10) throw new Error(`rareTokenRange: the tokenizer has ${merges} merges; an identifier needs a BPE vocabulary`);
  return [firstMerge + Math.floor(0.8 * merges), specials];
}

/**
 * Candidate identifier tokens in `range`: ids whose text is 1–3 lowercase letters or digits
 * (the paper's "≤ 3 characters without spaces"; letters and digits keep prompts and command
 * lines plain) and that the tokenizer maps back to that single id when written as a word.
 * @example rareTokenCandidates(tokenizer).length
 */
export function rareTokenCandidates(tokenizer: CLIPTokenizer, range: [number, number] = rareTokenRange(tokenizer)): { id: number; text: string }[] {
  const [lo, hi] = range;
  const out: { id: number; text: string }[] = [];
  for (let id = lo; id < hi; id++) {
    const text = tokenizer.decode([id]);
    if (!/^[a-z0-9]{1,3}$/.test(text)) continue;
    const ids = tokenizer.encode(text, { padding: "none" }).inputIds[0];
    if (ids.length === 3 && ids[1] === id) out.push({ id, text });
  }
  return out;
}

/**
 * A unique identifier [V]: `count` rare tokens drawn uniformly without replacement by a
 * Generator seeded `seed` ({@link rareTokenCandidates}), joined by spaces.
 * @example const { identifier } = rareTokenIdentifier(model.tokenizer!, { seed: 0 }); // e.g. "nyj"
 */
export function rareTokenIdentifier(tokenizer: CLIPTokenizer, options: { seed?: number; count?: number; range?: [number, number] } = {}): { identifier: string; tokenIds: number[] } {
  const seed = options.seed ?? 0;
  const count = options.count ?? 1;
  assertInteger(seed, "rareTokenIdentifier seed", 0);
  assertInteger(count, "rareTokenIdentifier count", 1);
  const candidates = rareTokenCandidates(tokenizer, options.range);
  if (candidates.length < count) throw new Error(`rareTokenIdentifier: ${candidates.length} candidate tokens in ids [${options.range ?? rareTokenRange(tokenizer)}), fewer than ${count}`);
  const order = tidy(() => Array.from(randperm(candidates.length, { generator: new Generator(seed) }).toFloat64Array()));
  const chosen = order.slice(0, count).map((i) => candidates[i]);
  return { identifier: chosen.map((c) => c.text).join(" "), tokenIds: chosen.map((c) => c.id) };
}

// ---- 2. class images ----------------------------------------------------------------------

/** `class_images.json`: what the cached class images were sampled with. */
export interface ClassImagesRecord {
  prompt: string;
  /** Image i was sampled from seed `seed + i`. */
  seed: number;
  /** What else determines the images (model, sampler, steps, guidance...). */
  settings: Record<string, unknown>;
}

export const CLASS_IMAGES_RECORD = "class_images.json";

/** The file of class image `index` (its seed in the name). @example classImageFile("out/class_images", 3, 103) */
export function classImageFile(dir: string, index: number, seed: number): string {
  return path.join(dir, `class-${String(index).padStart(5, "0")}-seed-${seed}.png`);
}

export interface ClassImagesOptions {
  prompt: string;
  count: number;
  /** Image i is sampled from seed `seed + i`. Default 0. */
  seed?: number;
  /** What else determines the images; a rerun with other settings is refused. */
  settings?: Record<string, unknown>;
  /** Images sampled per call of `sample`. Default 4. */
  batchSize?: number;
  /** Samples images (n, C, H, W) in [0, 1] of `prompt`, image k from a generator seeded `seeds[k]`. */
  sample: (prompt: string, seeds: number[]) => Promise<Tensor>;
  signal?: AbortSignal;
  /** Progress over the images this call is responsible for (its shard's, with `shard`). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Data-parallel sampling: make only the missing images i with i mod worldSize = rank (each
   * image depends on its seed alone, so which rank makes it does not matter). The other ranks'
   * images exist once they all returned (see onEveryRank). Default: all of them.
   */
  shard?: { rank: number; worldSize: number };
}

/**
 * Makes sure `dir` holds `count` class images of `prompt` and returns their files: images
 * already there (from an earlier or interrupted run with the same settings) are reused, the
 * missing ones sampled. Each is written atomically as soon as it is made.
 * @example const files = await ensureClassImages("out/class_images", { prompt: "a sneaker", count: 200, sample });
 */
export async function ensureClassImages(dir: string, o: ClassImagesOptions): Promise<string[]> {
  if (typeof o?.prompt !== "string") throw invalid("string", "ensureClassImages prompt", o?.prompt);
  assertInteger(o.count, "ensureClassImages count", 0);
  const seed = o.seed ?? 0;
  assertInteger(seed, "ensureClassImages seed", 0);
  const batchSize = o.batchSize ?? 4;
  assertInteger(batchSize, "ensureClassImages batchSize", 1);
  if (typeof o.sample !== "function") throw invalid("function (prompt, seeds) => images", "ensureClassImages sample", o.sample);
  fs.mkdirSync(dir, { recursive: true });
  const record: ClassImagesRecord = { prompt: o.prompt, seed, settings: o.settings ?? {} };
  const recordFile = path.join(dir, CLASS_IMAGES_RECORD);
  if (fs.existsSync(recordFile)) {
    const saved = fs.readFileSync(recordFile, "utf8");
    if (saved.trim() !== JSON.stringify(record, null, 2)) {
      throw new Error(`ensureClassImages: ${dir} holds class images made with other settings (${recordFile}); use another folder or delete it`);
    }
  } else {
    writeFileAtomic(recordFile, `${JSON.stringify(record, null, 2)}\n`);
  }
  const shard = o.shard ?? { rank: 0, worldSize: 1 };
  assertInteger(shard.worldSize, "ensureClassImages shard.worldSize", 1);
  if (!Number.isInteger(shard.rank) || shard.rank < 0 || shard.rank >= shard.worldSize) throw invalid(`integer in [0, ${shard.worldSize})`, "ensureClassImages shard.rank", shard.rank);
  const files = Array.from({ length: o.count }, (_, i) => classImageFile(dir, i, seed + i));
  const mine = files.map((_, i) => i).filter((i) => i % shard.worldSize === shard.rank);
  const missing = mine.filter((i) => !fs.existsSync(files[i]));
  let done = mine.length - missing.length;
  o.onProgress?.(done, mine.length);
  for (let start = 0; start < missing.length; start += batchSize) {
    if (o.signal?.aborted) {
      const error = new Error("ensureClassImages: aborted");
      error.name = "AbortError";
      throw error;
    }
    const indices = missing.slice(start, start + batchSize);
    const images = await o.sample(o.prompt, indices.map((i) => seed + i)); // (n, C, H, W) in [0, 1]
    try {
      if (images.ndim !== 4 || images.shape[0] !== indices.length) throw new Error(`ensureClassImages: sample returned shape [${images.shape}] for ${indices.length} seeds`);
      for (const [k, i] of indices.entries()) {
        const image = images.index(k);
        await writeImage(image, files[i]).finally(() => image.dispose());
      }
    } finally {
      images.dispose();
    }
    done += indices.length;
    o.onProgress?.(done, mine.length);
  }
  return files;
}

/**
 * Image files as a Dataset of `{ image: (C, size, size) in [-1, 1] }`, read at `size` × `size`
 * with `channels` channels (the class images, written at the model's size).
 * @example const classes = imageFilesDataset(files, 32, 1);
 */
export function imageFilesDataset(files: string[], size: number, channels: 1 | 3): Dataset {
  return {
    length: files.length,
    async get(index: number): Promise<Sample> {
      const image = await readImage(files[index], { channels, width: size, height: size });
      return { image: tidy(() => image.squeeze(0).mul(2).sub(1)) };
    },
  };
}

// ---- 3. batches ---------------------------------------------------------------------------

/** Labels that mark a sample's half of a DreamBooth batch. */
export const DREAMBOOTH_INSTANCE = 0;
export const DREAMBOOTH_CLASS = 1;

export interface DreamBoothDataOptions {
  instancePrompt: string;
  classPrompt?: string;
  /** Instance examples per batch (as many class examples follow them). */
  batchSize: number;
  /** Batches the run draws in all (the dataset is that long; the Trainer walks it in order). */
  batches: number;
  /** Model resolution: images are resized (shorter side) and cropped to it. */
  size: number;
  /** Image channels of the model (gray ↔ RGB are converted). */
  channels: number;
  /** Center crop instead of a random crop (diffusers' `--center_crop`). Default false. */
  centerCrop?: boolean;
  /** Mirror each example left-right with probability 1/2. Default false. */
  randomFlip?: boolean;
  /** Seed of the example order and augmentation. Default 0. */
  seed?: number;
}

/** murmur3's 32-bit finalizer over a few integers: stateless seeded choices per example. */
function hash32(...values: number[]): number {
  let h = 0x9e3779b1;
  for (const v of values) {
    h = Math.imul(h ^ (v >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

/** (C, H, W) in [-1, 1] -> (channels, size, size): shorter side to `size` (bilinear, antialiased), then a crop at (top, left) fractions, optionally mirrored. */
function fitExample(image: Tensor, size: number, channels: number, crop: { top: number; left: number }, flip: boolean): Tensor {
  return tidy(() => {
    if (image.ndim !== 3) throw new Error(`dreamBoothDataset: expected (C, H, W) images but received shape [${image.shape}]`);
    const [c, h, w] = image.shape;
    let x = image;
    if (Math.min(h, w) !== size) {
      const scale = size / Math.min(h, w);
      const resized = [Math.max(size, Math.round(h * scale)), Math.max(size, Math.round(w * scale))];
      x = interpolate(x.unsqueeze(0), { size: resized, mode: "bilinear", antialias: true }).squeeze(0);
    }
    const [, rh, rw] = x.shape;
    x = x.narrow(1, Math.round(crop.top * (rh - size)), size).narrow(2, Math.round(crop.left * (rw - size)), size);
    if (c === 1 && channels === 3) x = x.expand([3, size, size]);
    else if (c === 3 && channels === 1) x = x.mean(0, true);
    else if (c !== channels) throw new Error(`dreamBoothDataset: the model works on ${channels}-channel images but an example has ${c}`);
    if (flip) x = x.flip([2]);
    return x.clamp(-1, 1).contiguous();
  });
}

/**
 * DreamBooth's training examples as one Dataset the Trainer walks in order (`shuffle: false`,
 * `batchSize` = B, or 2B with class images): batch b holds B instance examples, then (with
 * `classes`) B class examples. As in diffusers' `DreamBoothDataset`, example i of an epoch
 * pairs instance image i mod n_inst with class image i mod n_class over
 * L = max(n_inst, n_class) examples per epoch, in a `randperm(L)` order seeded `seed + epoch`.
 * Captions are the instance and class prompts; labels mark the halves (DREAMBOOTH_INSTANCE,
 * DREAMBOOTH_CLASS). Crops and flips are seeded by the example's position, so every index
 * always gives the same example.
 * @example const data = dreamBoothDataset(instances, classes, { instancePrompt: "a sks sneaker", classPrompt: "a sneaker", batchSize: 1, batches: 400, size: 512, channels: 3 });
 */
export function dreamBoothDataset(instances: Dataset, classes: Dataset | null, o: DreamBoothDataOptions): Dataset {
  if (typeof instances?.get !== "function") throw invalid("Dataset", "dreamBoothDataset instances", instances);
  assertInteger(instances.length, "dreamBoothDataset instances.length", 1);
  if (classes !== null) assertInteger(classes?.length, "dreamBoothDataset classes.length", 1);
  if (typeof o?.instancePrompt !== "string") throw invalid("string", "dreamBoothDataset instancePrompt", o?.instancePrompt);
  if (classes !== null && typeof o.classPrompt !== "string") throw invalid("string", "dreamBoothDataset classPrompt", o.classPrompt);
  for (const key of ["batchSize", "batches", "size", "channels"] as const) assertInteger(o[key], `dreamBoothDataset ${key}`, 1);
  const seed = o.seed ?? 0;
  assertInteger(seed, "dreamBoothDataset seed", 0);
  const B = o.batchSize;
  const halves = classes ? 2 : 1;
  const perEpoch = Math.max(instances.length, classes?.length ?? 0);
  let cached: { epoch: number; order: number[] } | null = null;
  const orderOf = (epoch: number): number[] => {
    if (cached?.epoch !== epoch) cached = { epoch, order: tidy(() => Array.from(randperm(perEpoch, { generator: new Generator(seed + epoch) }).toFloat64Array())) };
    return cached.order;
  };
  return {
    length: o.batches * B * halves,
    async get(index: number): Promise<Sample> {
      if (!Number.isInteger(index) || index < 0 || index >= o.batches * B * halves) throw invalid(`integer index in [0, ${o.batches * B * halves})`, "index", index);
      const batch = Math.floor(index / (B * halves));
      const slot = index % (B * halves);
      const isClass = slot >= B;
      const q = batch * B + (slot % B); // the example's place in the run
      const i = orderOf(Math.floor(q / perEpoch))[q % perEpoch];
      const source = isClass ? await classes!.get(i % classes!.length) : await instances.get(i % instances.length);
      const h = hash32(seed, q, isClass ? 1 : 0);
      const crop = o.centerCrop ? { top: 0.5, left: 0.5 } : { top: (h & 0xffff) / 0xffff, left: (h >>> 16) / 0xffff };
      const flip = o.randomFlip === true && hash32(seed, q, isClass ? 3 : 2) % 2 === 1;
      try {
        const image = fitExample(source.image, o.size, o.channels, crop, flip);
        return { image, caption: isClass ? o.classPrompt! : o.instancePrompt, label: isClass ? DREAMBOOTH_CLASS : DREAMBOOTH_INSTANCE };
      } finally {
        source.image.dispose();
      }
    },
  };
}

// ---- 4. the loss --------------------------------------------------------------------------

/**
 * L = L_instance + λ·L_prior: the MSE over the instance examples of the batch plus λ times the
 * MSE over its class examples (told apart by their labels), as diffusers'
 * `train_dreambooth.py` computes it with `--with_prior_preservation`. A batch without class
 * examples gives the plain MSE.
 *
 * Data-parallel, each rank sees part of the global batch (rank r: positions r, r + W, ...), so
 * with B instance then B class examples and odd B its part is not half and half. Given
 * `{ perHalf: B, worldSize: W }` the means are taken over the global batch's B examples of each
 * half and scaled by W: each rank's loss is W times its share of the global loss, so the ranks'
 * averaged gradient (and loss) is the one-process one. With W = 1 it equals the default.
 * @example new Trainer(unet.module, data, { ...objective, loss: priorPreservationLoss(1), shuffle: false });
 * @example priorPreservationLoss(1, { perHalf: 1, worldSize: group.worldSize }) // 1 instance + 1 class example per step, over the group
 */
export function priorPreservationLoss(priorLossWeight = 1, options: { perHalf?: number; worldSize?: number } = {}): LossFn {
  assertNumber(priorLossWeight, "priorPreservationLoss priorLossWeight");
  const worldSize = options.worldSize ?? 1;
  assertInteger(worldSize, "priorPreservationLoss worldSize", 1);
  if (options.perHalf !== undefined) assertInteger(options.perHalf, "priorPreservationLoss perHalf", 1);
  return (prediction, target, batch) => {
    const labels = batch.labels;
    if (!labels || labels.length !== prediction.shape[0]) throw new Error("priorPreservationLoss: the batch needs a label per example (DREAMBOOTH_INSTANCE or DREAMBOOTH_CLASS)");
    const instances = options.perHalf ?? labels.filter((l) => l === DREAMBOOTH_INSTANCE).length;
    const priors = options.perHalf ?? labels.length - instances;
    // Per-example weights: W/n_inst for instance examples, W·λ/n_prior for class examples (W = 1 in one process).
    const weights = labels.map((l) => (l === DREAMBOOTH_INSTANCE ? worldSize / instances : (priorLossWeight * worldSize) / priors));
    const dims = Array.from({ length: prediction.ndim - 1 }, (_, i) => i + 1);
    const perExample = prediction.sub(target).square().mean(dims); // (B,)
    return perExample.mul(tensor(Float32Array.from(weights), [labels.length], { device: prediction.device })).sum();
  };
}
