/**
 * The recipe of the built-in InstructPix2Pix model (`npm run train:builtin-instruct`), the
 * paper's four parts at our scale:
 *
 * (a) edit captions from templates over the built-in model's captions ("a photo of a shirt" →
 *     "turn it into a dress" → "a photo of a dress"), every ordered class pair;
 * (b) image pairs from the built-in model through Prompt-to-Prompt, one seed each, with a
 *     random injection fraction p ~ U(0.1, 0.9);
 * (c) filtered with our Fashion-MNIST classifier in place of CLIP: the classifier must name the
 *     input caption's class on the input image and the edited caption's class on the edited
 *     image; its penultimate features stand in for CLIP's image embeddings in the paper's
 *     image-image similarity and directional similarity (the change between the two images'
 *     features against the change between the two classes' mean features on real images,
 *     where the paper takes the change between the captions' text embeddings). Both scores
 *     are stored in each row and thresholded when training reads the data;
 * (d) the built-in model's U-Net widened by one zero-initialized input channel (the input
 *     image) and fine-tuned through fineTune with the paper's condition dropout, its text
 *     encoder with it (it has seen captions, never instructions).
 *
 *   npx tsx scripts/train-builtin-instruct.ts [--stage data|train|all] [--steps N] [--minutes M]
 *
 * Data goes to build/instruct-data (resumable), training to build/builtin-instruct-train (rerun to
 * resume from its checkpoints); the result, without checkpoints, is models/builtin-instruct, its
 * training.json the recipe record (data settings, filter, counts, the base model's recipe).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../lib";
import { CLASSIFIER_PATH, classify, classifyDataset, toClassifierInput } from "./bench/classifier";

const root = path.resolve(__dirname, "..");

/** Class of a caption: the longest class noun it ends with ("a t-shirt" is a t-shirt, not a shirt). */
export function captionClass(caption: string): number {
  let best = -1;
  td.FASHION_MNIST_NOUNS.forEach((noun, label) => {
    if (caption.endsWith(noun) && (best < 0 || noun.length > td.FASHION_MNIST_NOUNS[best].length)) best = label;
  });
  if (best < 0) throw new Error(`no Fashion-MNIST class noun at the end of "${caption}"`);
  return best;
}

/** Mean unit-normalized classifier features per class over real training images: the "text embeddings" of the directional score. */
async function classCentroids(classifier: td.Module): Promise<number[][]> {
  const real = await classifyDataset(classifier, new td.FashionMNIST({ split: "train", pad32: true }), { count: 5000, seed: 1 });
  const features = td.tidy(() => real.features.div(real.features.norm(2, [1], true)).toFloat64Array());
  real.features.dispose();
  const dim = features.length / real.labels.length;
  const sums = Array.from({ length: 10 }, () => new Array<number>(dim).fill(0));
  const counts = new Array<number>(10).fill(0);
  real.labels.forEach((label, i) => {
    counts[label]++;
    for (let d = 0; d < dim; d++) sums[label][d] += features[i * dim + d];
  });
  return sums.map((s, c) => s.map((v) => v / counts[c]));
}

function cosine(a: number[], b: number[]): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}

export const DATA_SETTINGS = {
  editsPerClassPair: 3,
  candidatesPerEdit: 4,
  crossReplaceRange: [0.1, 0.9] as [number, number],
  numInferenceSteps: 20,
  guidanceScale: 2,
  seed: 0,
};

/** The thresholds training applies to the stored scores (chosen from their distribution; see recipe.json). */
export const FILTER = { minSimilarity: 0.75, minDirectional: 0.5 };

async function makeData(dir: string, signal: AbortSignal): Promise<Record<string, unknown>> {
  const model = td.loadModel(path.join(root, "models", "builtin"));
  const classifier = td.load(CLASSIFIER_PATH);
  classifier.eval();
  const centroids = await classCentroids(classifier);
  const nouns = [...td.FASHION_MNIST_NOUNS];
  const edits = td.templateEditCaptions({ nouns, captionTemplates: td.FASHION_MNIST_TEMPLATES, count: DATA_SETTINGS.editsPerClassPair * nouns.length * (nouns.length - 1), seed: DATA_SETTINGS.seed });
  const pipe = new td.PromptToPromptPipeline(model);
  const started = Date.now();
  const report = await td.makeEditTriplets(pipe, edits, {
    out: dir, candidatesPerEdit: DATA_SETTINGS.candidatesPerEdit, crossReplaceRange: DATA_SETTINGS.crossReplaceRange, batchSize: 16,
    numInferenceSteps: DATA_SETTINGS.numInferenceSteps, guidanceScale: DATA_SETTINGS.guidanceScale, seed: DATA_SETTINGS.seed, signal,
    accept: ({ edit, input, edited }) => {
      const source = captionClass(edit.input);
      const target = captionClass(edit.edited);
      const x = td.tidy(() => toClassifierInput(td.cat([input, edited], 0)));
      const out = classify(classifier, x);
      x.dispose();
      const f = td.tidy(() => Array.from(out.features.toFloat64Array()));
      out.features.dispose();
      if (out.predictions[0] !== source || out.predictions[1] !== target) return false;
      const dim = f.length / 2;
      const fIn = f.slice(0, dim);
      const fEd = f.slice(dim);
      const unit = (v: number[]) => {
        const norm = Math.hypot(...v);
        return v.map((x) => x / norm);
      };
      const [uIn, uEd] = [unit(fIn), unit(fEd)];
      const change = uEd.map((v, d) => v - uIn[d]);
      const classChange = centroids[target].map((v, d) => v - centroids[source][d]);
      return { similarity: cosine(fIn, fEd), directional: cosine(change, classChange) };
    },
    onProgress: ({ edits: done, total, candidates, kept }) => console.log(`data: ${done}/${total} edits, ${kept}/${candidates} pairs kept, ${((Date.now() - started) / 1000).toFixed(0)} s`),
  });
  model.dispose();
  classifier.dispose();
  const total = { edits: edits.length, ...report, seconds: Math.round((Date.now() - started) / 1000) };
  fs.writeFileSync(path.join(dir, DATA_REPORT), `${JSON.stringify(total, null, 2)}\n`);
  return total;
}

/**
 * The sampling the shipped model recommends (model_index.json's torch_diffusion.defaults), in
 * place of the base model's: scripts/bench/instruct.ts samples with DDIM at 20 steps, where text
 * guidance 3 (with the CLI's image guidance 1.5) edited every one of its 50 images (README,
 * "InstructPix2Pix"). The base's guidance interval is for text-to-image and is dropped.
 */
const RECOMMENDED = { guidance_scale: 3, num_inference_steps: 20, scheduler: "DDIMScheduler" };

/**
 * Finishes the shipped directory: the recommended sampling, the base model's path relative to
 * the repository in the record, and the checksums of the files as they now are.
 */
export function finishExport(out: string): void {
  const indexFile = path.join(out, "model_index.json");
  const index = JSON.parse(fs.readFileSync(indexFile, "utf8"));
  index.torch_diffusion.defaults = RECOMMENDED;
  fs.writeFileSync(indexFile, `${JSON.stringify(index, null, 2)}\n`);
  const recordFile = path.join(out, "training.json");
  const record = JSON.parse(fs.readFileSync(recordFile, "utf8"));
  if (typeof record.from === "string" && path.isAbsolute(record.from)) record.from = path.relative(root, record.from);
  fs.writeFileSync(recordFile, `${JSON.stringify(record, null, 2)}\n`);
  td.writeDirectoryChecksums(out);
}

/** The data stage's counts (edits, pairs generated and kept), for the training record. */
const DATA_REPORT = "report.json";

/** Augmentation of both images of a triplet alike, so what it changes must carry from input to edit. */
export const AUGMENT = { copies: 2, intensity: [0.25, 0.8] as [number, number], mirror: 0.5 };

/**
 * The triplets and `AUGMENT.copies − 1` augmented copies: input and edited image darkened by one
 * factor (the object's intensity scaled toward the black background) and mirrored together.
 * The generated pairs are mostly light items, as the built-in model draws them; real inputs
 * are often dark, and a model that never saw a dark input turns every edit light. Each copy's
 * draws are a function of its index, so batches (and resume) stay reproducible.
 */
function augmented(dataset: td.Dataset): td.Dataset {
  const n = dataset.length;
  return {
    length: n * AUGMENT.copies,
    async get(index: number): Promise<td.Sample> {
      const sample = await dataset.get(index % n);
      if (index < n) return sample;
      const [u, v] = td.tidy(() => Array.from(td.rand([2], { generator: new td.Generator(index) }).toFloat64Array()));
      const [lo, hi] = AUGMENT.intensity;
      const factor = lo + (hi - lo) * u;
      const change = (x: td.Tensor) => td.tidy(() => {
        const darker = x.add(1).mul(factor).sub(1); // (C, H, W) in [-1, 1], background -1 kept
        return v < AUGMENT.mirror ? darker.flip(2) : darker;
      });
      return { ...sample, image: change(sample.image), conditionImage: change(sample.conditionImage!) };
    },
  };
}

function keep(row: td.EditTripletRow): boolean {
  return (row.similarity as number) >= FILTER.minSimilarity && (row.directional as number) >= FILTER.minDirectional;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      stage: { type: "string", default: "all" },
      data: { type: "string", default: path.join(root, "build", "instruct-data") },
      work: { type: "string", default: path.join(root, "build", "builtin-instruct-train") },
      out: { type: "string", default: path.join(root, "models", "builtin-instruct") },
      steps: { type: "string", default: "1000" },
      batch: { type: "string", default: "32" },
      lr: { type: "string", default: "1e-4" },
      minutes: { type: "string" },
      threads: { type: "string" },
      "min-similarity": { type: "string", default: String(FILTER.minSimilarity) },
    },
  });
  FILTER.minSimilarity = Number(values["min-similarity"]);
  if (values.threads) td.setNumThreads(Number(values.threads));
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  const deadline = values.minutes ? Date.now() + Number(values.minutes) * 60_000 : Infinity;
  const timer = setInterval(() => Date.now() > deadline && controller.abort(), 5000);
  try {
    const stage = values.stage!;
    if (stage === "data" || stage === "all") await makeData(values.data!, controller.signal);
    if (stage !== "train" && stage !== "all") return;
    const reportFile = path.join(values.data!, DATA_REPORT);
    const data = fs.existsSync(reportFile) ? (JSON.parse(fs.readFileSync(reportFile, "utf8")) as Record<string, unknown>) : null;
    const all = new td.EditTripletDataset(values.data!, { size: 32, channels: 1 });
    const triplets = new td.EditTripletDataset(values.data!, { size: 32, channels: 1, filter: keep });
    console.log(`train: ${triplets.length} of ${all.length} class-checked triplets pass the similarity filter`);
    const dataset = augmented(triplets);
    const base = td.loadModel(path.join(root, "models", "builtin"));
    const model = td.widenInputChannels(base, 1);
    const started = Date.now();
    const steps = Number(values.steps);
    const result = await td.fineTune(model, dataset, {
      // The text encoder trains too: the built-in one has seen captions ("a photo of a shirt"), never instructions.
      out: values.work!, steps, batchSize: Number(values.batch), lr: Number(values.lr), seed: 0, conditioningDropout: 0.05, trainTextEncoder: true,
      emaDecay: 0.999, checkpointEvery: 100, signal: controller.signal,
      onStep: ({ step, loss }) => step % 25 === 0 && console.log(`step ${step}/${steps} loss ${loss.toFixed(4)} ${((Date.now() - started) / 1000).toFixed(0)} s`),
      record: {
        recipe: "scripts/train-builtin-instruct.ts", data: path.relative(root, values.data!), triplets: triplets.length, classCheckedTriplets: all.length, filter: FILTER, augment: AUGMENT,
        dataSettings: DATA_SETTINGS, ...(data ? { dataRun: data } : {}),
      },
    });
    if (result.aborted) {
      console.log(`stopped at step ${result.step}: rerun to continue`);
      return;
    }
    // The shipped model: the trained directory without its checkpoints.
    fs.rmSync(values.out!, { recursive: true, force: true });
    fs.cpSync(values.work!, values.out!, { recursive: true, filter: (source) => path.basename(source) !== "checkpoints" });
    finishExport(values.out!);
    console.log(`wrote ${values.out} (step ${result.step}, loss avg50 ${result.meanLoss.toFixed(4)})`);
  } finally {
    clearInterval(timer);
  }
}

if (require.main === module) {
  main().catch((error) => {
    console.error(`train-builtin-instruct: ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  });
}
