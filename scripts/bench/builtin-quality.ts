/**
 * Quality of the built-in model, judged by the Fashion-MNIST classifier
 * (scripts/train-classifier.ts): for each guidance scale × step count, `--per-class` images of
 * each class prompt ("a photo of a sneaker", ...), then
 *   - conditional accuracy: the fraction the classifier assigns to the prompt's class;
 *   - FD: the Fréchet distance between Gaussian fits of the classifier's 64-d features of the
 *     generated images and of `--real` real test images (an FID with a domain classifier).
 *   - per-class FD: the mean over classes of the FD between one class's generated images and
 *     that class's real test images;
 *   - diversity: the mean pairwise distance between the features of one class's images,
 *     averaged over classes, over the same for real images (1 = as varied as the data);
 *   - dark share: the fraction of images whose mean intensity is below the 25th percentile of
 *     real training images' (real data: about 25%).
 * The real-data baseline line gives the classifier's accuracy on real test images and the
 * measures of real train images (as many as are generated) against the same real test images:
 * the floor a perfect generator would reach at these sample sizes.
 * Each class uses the same seeded noise at every setting, so settings differ only by sampler.
 *
 *   npx tsx scripts/bench/builtin-quality.ts [--model models/builtin] [--per-class 50]
 *       [--guidance 1,3,5] [--steps 20,50] [--real 2000] [--batch 50] [--seed 0] [--json out.json]
 *       [--guidance-interval low,high]   (guide only timesteps in [low, high]: ClassifierFreeGuidance)
 *       [--scheduler DPMSolverMultistepScheduler]   (default: the model's)
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../../lib";
import { accuracy, CLASSIFIER_PATH, classify, classifyDataset, toClassifierInput } from "./classifier";
import { frechetDistance, frechetDistanceOf, gaussianFit, type GaussianFit } from "./frechet";

const root = path.resolve(__dirname, "..", "..");
const BUILTIN = path.join(root, "models", "builtin");
const FALLBACK = path.join(root, "test", "fixtures", "models", "tiny-sd");
const NUM_CLASSES = td.FASHION_MNIST_CLASSES.length;
const shown = (file: string) => (path.resolve(file).startsWith(root + path.sep) ? path.relative(root, path.resolve(file)) : file);

interface Setting {
  guidance: number;
  steps: number;
  accuracy: number;
  perClassAccuracy: number[];
  fd: number;
  perClassFD: number;
  /** Within-class pairwise feature distance over real test images'. */
  diversity: number;
  darkShare: number;
  secondsPerImage: number;
}

const numberList = (text: string, name: string): number[] => {
  const list = text.split(",").map(Number);
  if (list.some((v) => !Number.isFinite(v))) throw new Error(`--${name}: expected comma-separated numbers but received "${text}"`);
  return list;
};

/** Generates `perClass` images per class prompt and returns the classifier's predictions and features. */
async function measure(pipe: td.Text2ImagePipeline, classifier: td.Module, o: { guidance: number; steps: number; perClass: number; batch: number; seed: number; interval?: [number, number]; scheduler?: string }) {
  const predictions: number[] = [];
  const labels: number[] = [];
  const features: td.Tensor[] = [];
  const intensities: number[] = [];
  for (let label = 0; label < NUM_CLASSES; label++) {
    const prompt = td.fashionMnistCaption(label, "a photo of {a} {name}");
    const generator = new td.Generator(o.seed + label); // the same noise for this class at every setting
    for (let done = 0; done < o.perClass; done += o.batch) {
      const count = Math.min(o.batch, o.perClass - done);
      const out = await td.tidyAsync(async () => {
        const { images } = await pipe.generate({ prompt, numImagesPerPrompt: count, guidanceScale: o.guidance, guidanceInterval: o.interval, numInferenceSteps: o.steps, generator, scheduler: o.scheduler && pipe.model.newScheduler(o.scheduler) });
        intensities.push(...meanIntensities(images));
        return classify(classifier, toClassifierInput(images));
      });
      predictions.push(...out.predictions);
      labels.push(...Array(count).fill(label));
      features.push(out.features);
    }
  }
  const all = td.cat(features); // (10 · perClass, 64)
  features.forEach((f) => f.dispose());
  return { predictions, labels, features: all, intensities };
}

/** Mean pixel intensity in [0, 1] of each image of (B, C, H, W) in [0, 1]. */
function meanIntensities(images: td.Tensor): number[] {
  return td.tidy(() => Array.from(images.reshape([images.shape[0], -1]).mean(1).toFloat64Array()));
}

/** The rows of `features` (N, 64) whose label is `label`. */
function rowsOf(features: td.Tensor, labels: number[], label: number): td.Tensor {
  const indices = labels.flatMap((l, i) => (l === label ? [i] : []));
  return td.tidy(() => features.indexSelect(0, td.tensor(Float64Array.from(indices), [indices.length], { dtype: "int64" })));
}

/** Mean Euclidean distance over all pairs of rows of (N, D). */
function meanPairwiseDistance(x: td.Tensor): number {
  return td.tidy(() => {
    const n = x.shape[0];
    const squared = x.mul(x).sum(1, true); // (N, 1)
    const d2 = squared.add(squared.transpose(0, 1)).sub(x.matmul(x.transpose(0, 1)).mul(2)).clamp(0); // (N, N)
    return d2.sqrt().sum().item() / (n * (n - 1)); // the diagonal is 0
  });
}

interface ClassMeasures {
  perClassFD: number;
  /** Mean within-class pairwise feature distance. */
  pairwise: number;
}

/** Per-class FD against the real test images of each class, and within-class spread. */
function classMeasures(features: td.Tensor, labels: number[], real: { features: td.Tensor; labels: number[] }): ClassMeasures {
  let fd = 0;
  let pairwise = 0;
  for (let c = 0; c < NUM_CLASSES; c++) {
    const mine = rowsOf(features, labels, c);
    const theirs = rowsOf(real.features, real.labels, c);
    fd += frechetDistanceOf(mine, theirs) / NUM_CLASSES;
    pairwise += meanPairwiseDistance(mine) / NUM_CLASSES;
    mine.dispose();
    theirs.dispose();
  }
  return { perClassFD: fd, pairwise };
}

/** The mean intensities of the first `count` images of a Fashion-MNIST split. */
function realIntensities(split: "train" | "test", count: number): number[] {
  const data = new td.FashionMNIST({ split, pad32: true });
  return Array.from({ length: Math.min(count, data.length) }, (_, i) => td.tidy(() => data.get(i).image.add(1).div(2).mean().item()));
}

function disposeFit(fit: GaussianFit): void {
  fit.mean.dispose();
  fit.cov.dispose();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: "string" },
      classifier: { type: "string", default: CLASSIFIER_PATH },
      "per-class": { type: "string", default: "50" },
      guidance: { type: "string", default: "1,3,5" },
      steps: { type: "string", default: "20,50" },
      real: { type: "string", default: "2000" },
      batch: { type: "string", default: "50" },
      seed: { type: "string", default: "0" },
      json: { type: "string" },
      "guidance-interval": { type: "string" },
      scheduler: { type: "string" },
    },
  });
  const modelDir = values.model ?? (fs.existsSync(BUILTIN) ? BUILTIN : FALLBACK);
  if (path.resolve(modelDir) === FALLBACK) console.warn(`builtin-quality: using ${shown(FALLBACK)} (random RGB weights, output grayed and resized): the numbers only show that the script runs`);
  if (!fs.existsSync(values.classifier!)) throw new Error(`${values.classifier} is missing: run scripts/build_classifier_init.py and scripts/train-classifier.ts first`);
  const perClass = Number(values["per-class"]);
  const real = Number(values.real);
  const batch = Number(values.batch);
  const seed = Number(values.seed);
  const guidances = numberList(values.guidance!, "guidance");
  const stepCounts = numberList(values.steps!, "steps");
  const interval = values["guidance-interval"] === undefined ? undefined : numberList(values["guidance-interval"], "guidance-interval");
  if (interval && interval.length !== 2) throw new Error(`--guidance-interval: expected low,high but received "${values["guidance-interval"]}"`);
  const classifier = td.load(values.classifier!);
  const pipe = td.Text2ImagePipeline.fromPretrained(modelDir);

  // Real-data baseline: accuracy on real test images; FD of real train (as many as generated) vs real test.
  const test = await classifyDataset(classifier, new td.FashionMNIST({ split: "test", pad32: true }), { count: real, seed });
  const train = await classifyDataset(classifier, new td.FashionMNIST({ split: "train", pad32: true }), { count: perClass * NUM_CLASSES, seed });
  const testFit = gaussianFit(test.features);
  const trainFit = gaussianFit(train.features);
  // Dark: below the 25th percentile of real training images' mean intensity.
  const trainIntensity = realIntensities("train", 5000).sort((a, b) => a - b);
  const darkBelow = trainIntensity[Math.floor(0.25 * trainIntensity.length)];
  const darkShare = (xs: number[]) => xs.filter((v) => v < darkBelow).length / xs.length;
  const realClasses = classMeasures(train.features, train.labels, test);
  const testPairwise = classMeasures(test.features, test.labels, test).pairwise;
  const baseline = {
    realTestAccuracy: accuracy(test.predictions, test.labels), fdRealTrainVsTest: frechetDistance(trainFit, testFit),
    perClassFD: realClasses.perClassFD, diversity: realClasses.pairwise / testPairwise, darkShare: darkShare(realIntensities("test", 5000)), darkBelow,
  };
  train.features.dispose();
  disposeFit(trainFit);

  const rows = [
    `model ${shown(modelDir)}, classifier ${shown(values.classifier!)}, ${perClass} images per class, FD against ${real} real test images, seed ${seed}, ${td.getNumThreads()} thread(s)${interval ? `, guidance only at timesteps ${interval[0]}–${interval[1]}` : ""}${values.scheduler ? `, ${values.scheduler}` : ""}`,
    "",
    "| guidance | steps | accuracy | FD | per-class FD | diversity | dark share | s/image |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|",
    `| real train | – | ${(baseline.realTestAccuracy * 100).toFixed(1)}% (real test) | ${baseline.fdRealTrainVsTest.toFixed(3)} | ${baseline.perClassFD.toFixed(2)} | ${baseline.diversity.toFixed(2)} | ${(100 * baseline.darkShare).toFixed(1)}% (real test) | – |`,
  ];
  console.log(rows.join("\n"));
  const settings: Setting[] = [];
  for (const guidance of guidances) {
    for (const steps of stepCounts) {
      const started = Date.now();
      const out = await measure(pipe, classifier, { guidance, steps, perClass, batch, seed, interval: interval as [number, number] | undefined, scheduler: values.scheduler });
      const fit = gaussianFit(out.features);
      const classes = classMeasures(out.features, out.labels, test);
      const setting: Setting = {
        guidance,
        steps,
        accuracy: accuracy(out.predictions, out.labels),
        perClassAccuracy: Array.from({ length: NUM_CLASSES }, (_, c) => out.predictions.slice(c * perClass, (c + 1) * perClass).filter((p) => p === c).length / perClass),
        fd: frechetDistance(fit, testFit),
        perClassFD: classes.perClassFD,
        diversity: classes.pairwise / testPairwise,
        darkShare: darkShare(out.intensities),
        secondsPerImage: (Date.now() - started) / 1000 / (perClass * NUM_CLASSES),
      };
      disposeFit(fit);
      out.features.dispose();
      settings.push(setting);
      console.log(`| ${guidance} | ${steps} | ${(setting.accuracy * 100).toFixed(1)}% | ${setting.fd.toFixed(3)} | ${setting.perClassFD.toFixed(2)} | ${setting.diversity.toFixed(2)} | ${(100 * setting.darkShare).toFixed(1)}% | ${setting.secondsPerImage.toFixed(3)} |`);
    }
  }
  disposeFit(testFit);
  test.features.dispose();

  if (values.json) {
    const report = { model: modelDir, classifier: values.classifier, perClass, real, seed, prompt: "a photo of {a} {name}", guidanceInterval: interval ?? null, scheduler: values.scheduler ?? null, baseline, settings, libtorch: td.buildInfo.torchVersion };
    td.writeFileAtomic(values.json, JSON.stringify(report, null, 2) + "\n");
    console.log(`\nwrote ${values.json}`);
  }
}

main().catch((error) => {
  console.error(`builtin-quality: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
