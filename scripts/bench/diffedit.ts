/**
 * DiffEdit against SDEdit on real Fashion-MNIST test images with the built-in model, judged by
 * the Fashion-MNIST classifier (scripts/train-classifier.ts), plus the DDIM inversion round trip.
 *
 * For each source class, the first `--per-pair` test images of that class are edited toward
 * each of the other 9 classes ("a photo of {a} {source}" -> "a photo of {a} {target}"):
 *   - DiffEdit (DiffEditPipeline: inferred mask, inversion under the source text, decoding
 *     under the target text with guidance) and SDEdit (Img2ImagePipeline) at the same strength,
 *     steps (DDIM) and guidance;
 *   - success: the fraction the classifier assigns to the target class;
 *   - outside / inside: mean |Δ| (pixels in [0, 1]) outside / inside DiffEdit's inferred mask,
 *     for both methods (SDEdit has no mask: its change is measured over the same regions);
 *   - mask: the fraction of the image the inferred mask covers.
 * The inversion round trip inverts `--round-trip` test images under their own caption (guidance
 * 1, strength 1) and denoises them back with DDIM (η = 0, guidance 1) over the same timesteps:
 * mean and max |Δ| against the input, at each step count of `--round-trip-steps` and each count of
 * fixed-point refinements per step of `--fixed-point-iterations` (the model calls are steps × (1 + that)).
 * `--inversion-iterations` sets the refinements of DiffEdit's own inversion in the edits.
 *
 * `--mask-ratio` sets DiffEdit's maskThresholdingRatio (diffusers' 3 by default; lower = larger
 * masks); `--negative-source` decodes with the source text as the negative prompt (as diffusers'
 * DiffEdit example does).
 *
 *   npx tsx scripts/bench/diffedit.ts [--per-pair 2] [--steps 20] [--strength 0.8] [--guidance 2,5]
 *       [--round-trip 100] [--round-trip-steps 20,50] [--seed 0] [--sources 0,...,9]
 *       [--mask-ratio 3] [--negative-source] [--fixed-point-iterations 0,1,2] [--inversion-iterations 0]
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../../lib";
import { CLASSIFIER_PATH, classify, toClassifierInput } from "./classifier";

const root = path.resolve(__dirname, "..", "..");
const BUILTIN = path.join(root, "models", "builtin");
const NUM_CLASSES = td.FASHION_MNIST_CLASSES.length;
const TEMPLATE = "a photo of {a} {name}";
const caption = (label: number) => td.fashionMnistCaption(label, TEMPLATE);

const numberList = (text: string, name: string): number[] => {
  const list = text.split(",").map(Number);
  if (list.some((v) => !Number.isFinite(v))) throw new Error(`--${name}: expected comma-separated numbers but received "${text}"`);
  return list;
};

/** The first `count` test images of each class, in [0, 1] (count, 1, 32, 32). */
function imagesByClass(dataset: td.FashionMNIST, count: number): td.Tensor[] {
  const found: number[][] = Array.from({ length: NUM_CLASSES }, () => []);
  for (let i = 0; i < dataset.length && found.some((f) => f.length < count); i++) {
    const label = dataset.label(i);
    if (found[label].length < count) found[label].push(i);
  }
  return found.map((indices) => td.keep(td.tidy(() => td.cat(indices.map((i) => dataset.get(i).image.unsqueeze(0))).add(1).div(2))));
}

interface Tally {
  success: number;
  outside: number;
  inside: number;
  count: number;
}

/** Mean |a − b| over the pixels where `region` (B, 1, H, W of 0/1) is 1, per image. */
function regionChange(a: td.Tensor, b: td.Tensor, region: td.Tensor): number[] {
  return td.tidy(() => {
    const diff = a.sub(b).abs().mean(1, true).mul(region).reshape([a.shape[0], -1]).sum(1); // (B)
    const area = region.reshape([a.shape[0], -1]).sum(1).clamp(1); // (B)
    return Array.from(diff.div(area).toFloat32Array());
  });
}

function addTally(tally: Tally, predictions: number[], targets: number[], outside: number[], inside: number[]): void {
  tally.success += predictions.filter((p, i) => p === targets[i]).length;
  tally.outside += outside.reduce((a, b) => a + b, 0);
  tally.inside += inside.reduce((a, b) => a + b, 0);
  tally.count += predictions.length;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: "string", default: BUILTIN },
      classifier: { type: "string", default: CLASSIFIER_PATH },
      "per-pair": { type: "string", default: "2" },
      steps: { type: "string", default: "20" },
      strength: { type: "string", default: "0.8" },
      guidance: { type: "string", default: "2,5" },
      "round-trip": { type: "string", default: "100" },
      "round-trip-steps": { type: "string", default: "20,50" },
      sources: { type: "string", default: "0,1,2,3,4,5,6,7,8,9" },
      seed: { type: "string", default: "0" },
      "mask-ratio": { type: "string", default: "3" },
      "negative-source": { type: "boolean", default: false },
      "fixed-point-iterations": { type: "string", default: "0,1,2" },
      "inversion-iterations": { type: "string", default: "0" },
    },
  });
  if (!fs.existsSync(values.classifier!)) throw new Error(`${values.classifier} is missing: run scripts/build_classifier_init.py and scripts/train-classifier.ts first`);
  const perPair = Number(values["per-pair"]);
  const steps = Number(values.steps);
  const strength = Number(values.strength);
  const seed = Number(values.seed);
  const guidances = numberList(values.guidance!, "guidance");
  const sources = numberList(values.sources!, "sources");
  const classifier = td.load(values.classifier!);
  const model = td.loadModel(values.model!);
  const diffedit = new td.DiffEditPipeline(model);
  const sdedit = new td.Img2ImagePipeline(model);
  const test = new td.FashionMNIST({ split: "test", pad32: true });
  const started = Date.now();

  // 1. Edits: every (source, target) pair of the chosen sources, `perPair` images each.
  const inputs = imagesByClass(test, perPair);
  const tallies = new Map<string, Tally>();
  const tally = (key: string) => tallies.get(key) ?? tallies.set(key, { success: 0, outside: 0, inside: 0, count: 0 }).get(key)!;
  let maskArea = 0;
  let maskCount = 0;
  for (const source of sources) {
    const targets = Array.from({ length: NUM_CLASSES }, (_, c) => c).filter((c) => c !== source);
    // Rows target-major: row ti·k + j edits image j toward targets[ti].
    const rowTargets = targets.flatMap((t) => Array<number>(perPair).fill(t));
    const images = td.keep(td.cat(targets.map(() => inputs[source]))); // (9k, 1, 32, 32)
    const sourcePrompt = caption(source);
    const targetPrompts = rowTargets.map(caption);
    // The inversion depends on the image and the source text only: invert the k images once, reuse it for all 9 targets.
    const inversion = await diffedit.invert({
      image: inputs[source], prompt: sourcePrompt, numInferenceSteps: steps, inpaintStrength: strength, fixedPointIterations: Number(values["inversion-iterations"]),
    });
    const repeated = inversion.latents.map((l) => td.keep(td.cat(targets.map(() => l)))); // (9k, 1, 32, 32) each
    const shared: td.Inversion = { ...inversion, latents: repeated, dispose: () => repeated.forEach((l) => l.dispose()) };
    const { mask, imageMask, map } = await diffedit.generateMask({
      image: images, sourcePrompt, targetPrompt: targetPrompts, numInferenceSteps: steps, maskThresholdingRatio: Number(values["mask-ratio"]), generator: new td.Generator(seed + source),
    });
    maskArea += td.tidy(() => imageMask.sum().item());
    maskCount += imageMask.numel;
    const outsideRegion = td.keep(td.tidy(() => imageMask.mul(-1).add(1)));
    for (const guidance of guidances) {
      const negativePrompt = values["negative-source"] ? targetPrompts.map(() => sourcePrompt) : undefined;
      const edited = await diffedit.edit({ image: images, targetPrompt: targetPrompts, negativePrompt, mask, inversion: shared, guidanceScale: guidance });
      const sd = await sdedit.edit({
        image: images, prompt: targetPrompts, strength, guidanceScale: guidance, numInferenceSteps: steps,
        scheduler: model.newScheduler("DDIMScheduler"), generator: new td.Generator(seed + source),
      });
      for (const [name, out] of [["DiffEdit", edited.images], ["SDEdit", sd.images]] as const) {
        const predictions = td.tidy(() => {
          const x = toClassifierInput(out);
          const { predictions: p, features } = classify(classifier, x);
          features.dispose();
          return p;
        });
        addTally(tally(`${name}|${guidance}`), predictions, rowTargets, regionChange(out, images, outsideRegion), regionChange(out, images, imageMask));
      }
      for (const t of [edited.images, edited.mask, edited.imageMask, sd.images]) t.dispose();
    }
    for (const t of [mask, imageMask, map, outsideRegion, images]) t.dispose();
    inversion.dispose();
    shared.dispose();
    process.stderr.write(`source ${td.FASHION_MNIST_CLASSES[source]} done (${((Date.now() - started) / 1000).toFixed(0)} s)\n`);
  }
  inputs.forEach((t) => t.dispose());
  const editSeconds = (Date.now() - started) / 1000;

  // 2. The inversion round trip on real test images.
  const roundTrip: string[] = [];
  const count = Number(values["round-trip"]);
  const roundTripSteps = count > 0 ? numberList(values["round-trip-steps"]!, "round-trip-steps") : [];
  const samples = Array.from({ length: count }, (_, i) => test.get(i));
  const real = td.keep(td.tidy(() => td.cat(samples.map((s) => s.image.unsqueeze(0)).concat(count > 0 ? [] : [td.zeros([1, 1, 32, 32])])).add(1).div(2))); // (N, 1, 32, 32)
  const prompts = samples.map((s) => caption(s.label as number));
  const iterationCounts = numberList(values["fixed-point-iterations"]!, "fixed-point-iterations");
  for (const [n, fixedPointIterations] of roundTripSteps.flatMap((n) => iterationCounts.map((k) => [n, k]))) {
    const t0 = Date.now();
    const inversion = await td.invert(model, { image: real, prompt: prompts, numInferenceSteps: n, strength: 1, fixedPointIterations });
    const everywhere = td.ones([1, 1, 32, 32]);
    const back = await diffedit.edit({ image: real, targetPrompt: prompts, mask: everywhere, inversion, guidanceScale: 1 });
    const { mean, max } = td.tidy(() => {
      const diff = back.images.sub(real).abs();
      return { mean: diff.mean().item(), max: diff.max().item() };
    });
    roundTrip.push(`| ${n} | ${fixedPointIterations} | ${n * (2 + fixedPointIterations)} | ${count} | ${mean.toFixed(4)} | ${max.toFixed(3)} | ${((Date.now() - t0) / 1000).toFixed(0)} s |`);
    for (const t of [back.images, back.mask, back.imageMask, everywhere]) t.dispose();
    inversion.dispose();
  }
  real.dispose();

  const pairs = sources.length * (NUM_CLASSES - 1);
  console.log([
    `model ${path.relative(root, values.model!) || values.model}, classifier ${path.relative(root, values.classifier!)}, ${pairs} (source, target) pairs × ${perPair} test images,`,
    `${steps} DDIM steps, strength ${strength}, seed ${seed}, ${td.getNumThreads()} thread(s); edits took ${editSeconds.toFixed(0)} s`,
    `DiffEdit: mask from 10 noise draws at strength 0.5, threshold ratio ${values["mask-ratio"]} (mean mask area ${((100 * maskArea) / maskCount).toFixed(1)}%), inversion under the source text with guidance 1 and ${values["inversion-iterations"]} fixed-point refinements${values["negative-source"] ? ", decoding with the source text as negative prompt" : ""}`,
    "",
    "| method | guidance | edit success | mean \\|Δ\\| outside mask | mean \\|Δ\\| inside mask |",
    "|---|---:|---:|---:|---:|",
    ...[...tallies.entries()].map(([key, t]) => {
      const [name, guidance] = key.split("|");
      return `| ${name} | ${guidance} | ${((100 * t.success) / t.count).toFixed(1)}% | ${(t.outside / t.count).toFixed(4)} | ${(t.inside / t.count).toFixed(4)} |`;
    }),
    "",
    "DDIM inversion round trip (guidance 1, strength 1, each image under its own caption), pixels in [0, 1]:",
    "",
    "| steps | refinements per step | model calls (inversion + decoding) | images | mean \\|Δ\\| | max \\|Δ\\| | time |",
    "|---:|---:|---:|---:|---:|---:|---:|",
    ...roundTrip,
  ].join("\n"));
}

main().catch((error) => {
  console.error(`diffedit bench: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
