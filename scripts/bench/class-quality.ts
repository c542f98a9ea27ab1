/**
 * Sample quality of Fashion-MNIST models against their compute, for the DiT FD-versus-compute
 * study and the Simple Diffusion ablation (README "Transformer diffusion"): for each model
 * directory, `--per-class` images of each of the 10 classes — class-conditional models (DiT,
 * U-ViT) by label, text-conditioned ones (the built-in U-Net) by the prompt "a photo of {a} {name}"
 * — judged by our Fashion-MNIST classifier (scripts/bench/classifier.ts) at 32×32 (64×64 samples
 * are downsampled, bilinear with antialiasing):
 *   - accuracy: the fraction the classifier assigns to the requested class;
 *   - FD: the Fréchet distance of the classifier's 64-d features to `--real` real test images.
 * Each model's row carries its forward Gflops per image (compute.json, else counted by
 * scripts/model_flops.py), parameters and training steps (recipe.json). Every model draws the
 * same seeded noise per class.
 *
 *   npx tsx scripts/bench/class-quality.ts --models runs/dit-S,runs/dit-M,models/builtin [--per-class 100]
 *       [--steps N] [--guidance S] [--scheduler NAME] [--real 2000] [--batch 50] [--seed 0]
 *       [--json out.json] [--markdown out.md] [--plot fd-vs-gflops.png]
 *
 * `--steps`, `--guidance` and `--scheduler` default to each model's own defaults.
 *
 *   npx tsx scripts/bench/class-quality.ts --from-json a.json,b.json [--markdown out.md] [--plot out.png]
 *
 * writes the table and plot of earlier runs' `--json` files together (e.g. models measured in
 * separate processes as their training finished), measuring nothing; the real-data rows come from
 * the first file.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import * as td from "../../lib";
import { schedulerClassName } from "../../lib/cli/args";
import { accuracy, CLASSIFIER_PATH, classify, classifyDataset, toClassifierInput } from "./classifier";
import { frechetDistance, gaussianFit, type GaussianFit } from "./frechet";

const root = path.resolve(__dirname, "..", "..");
const NUM_CLASSES = td.FASHION_MNIST_CLASSES.length;
const shown = (file: string) => (path.resolve(file).startsWith(root + path.sep) ? path.relative(root, path.resolve(file)) : file);

export interface QualityRow {
  model: string;
  kind: string;
  parameters: number;
  gflops: number;
  trainSteps: number | null;
  trainingGflops: number | null;
  steps: number;
  guidance: number;
  scheduler: string;
  accuracy: number;
  fd: number;
  secondsPerImage: number;
}

/** Forward Gflops and parameters: the model's compute.json, else scripts/model_flops.py. */
export function modelCompute(dir: string): { gflops: number; parameters: number; class: string } {
  const file = path.join(dir, "compute.json");
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, "utf8"));
  const run = spawnSync("/usr/bin/python3", [path.join(root, "scripts", "model_flops.py"), dir, "--json"], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`model_flops.py ${dir}: ${run.stderr}`);
  return JSON.parse(run.stdout.trim().split("\n").at(-1)!);
}

function disposeFit(fit: GaussianFit): void {
  fit.mean.dispose();
  fit.cov.dispose();
}

/** Generates `perClass` images of every class and returns the classifier's predictions and features. */
async function measure(model: td.DiffusionModel, classifier: td.Module, o: { perClass: number; batch: number; seed: number; steps: number; guidance: number; scheduler: td.Scheduler }) {
  const classPipe = model.transformer ? new td.ClassConditionalPipeline(model) : null;
  const textPipe = classPipe ? null : new td.Text2ImagePipeline(model);
  const predictions: number[] = [];
  const labels: number[] = [];
  const features: td.Tensor[] = [];
  for (let label = 0; label < NUM_CLASSES; label++) {
    const generator = new td.Generator(o.seed + label);
    for (let done = 0; done < o.perClass; done += o.batch) {
      const count = Math.min(o.batch, o.perClass - done);
      const common = { numInferenceSteps: o.steps, guidanceScale: o.guidance, scheduler: o.scheduler, generator };
      const out = await td.tidyAsync(async () => {
        const { images } = classPipe
          ? await classPipe.generate({ classLabels: [label], numImagesPerLabel: count, ...common })
          : await textPipe!.generate({ prompt: td.fashionMnistCaption(label, "a photo of {a} {name}"), numImagesPerPrompt: count, ...common });
        return classify(classifier, toClassifierInput(images));
      });
      predictions.push(...out.predictions);
      labels.push(...Array(count).fill(label));
      features.push(out.features);
    }
  }
  const all = td.cat(features); // (10 · perClass, 64)
  features.forEach((f) => f.dispose());
  return { predictions, labels, features: all };
}

/** An SVG scatter of FD against forward Gflops (log x), one labelled point per row, rendered to PNG with sharp. */
export async function writePlot(rows: QualityRow[], file: string, title: string): Promise<void> {
  const W = 720;
  const H = 440;
  const m = { left: 70, right: 30, top: 40, bottom: 60 };
  const xs = rows.map((r) => Math.log10(r.gflops));
  const ys = rows.map((r) => r.fd);
  const [x0, x1] = [Math.min(...xs) - 0.15, Math.max(...xs) + 0.15];
  const [y0, y1] = [0, Math.max(...ys) * 1.15 || 1];
  const px = (x: number) => m.left + ((x - x0) / (x1 - x0)) * (W - m.left - m.right);
  const py = (y: number) => H - m.bottom - ((y - y0) / (y1 - y0)) * (H - m.top - m.bottom);
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const ticks: string[] = [];
  for (let e = Math.floor(x0); e <= Math.ceil(x1); e++) {
    for (const k of [1, 2, 5]) {
      const v = Math.log10(k) + e;
      if (v < x0 || v > x1) continue;
      ticks.push(`<line x1="${px(v)}" y1="${H - m.bottom}" x2="${px(v)}" y2="${H - m.bottom + 5}" stroke="#333"/><text x="${px(v)}" y="${H - m.bottom + 20}" font-size="12" text-anchor="middle">${(k * 10 ** e).toPrecision(1)}</text>`);
    }
  }
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4;
    ticks.push(`<line x1="${m.left - 5}" y1="${py(v)}" x2="${m.left}" y2="${py(v)}" stroke="#333"/><text x="${m.left - 8}" y="${py(v) + 4}" font-size="12" text-anchor="end">${v.toFixed(v < 10 ? 2 : 0)}</text>`);
  }
  const points = rows.map((r, i) => {
    const color = r.kind === "UNet2DConditionModel" ? "#d62728" : r.kind === "UViT2DModel" ? "#2ca02c" : "#1f77b4";
    return `<circle cx="${px(xs[i])}" cy="${py(ys[i])}" r="5" fill="${color}"/><text x="${px(xs[i]) + 8}" y="${py(ys[i]) - 6}" font-size="12">${esc(path.basename(r.model))}</text>`;
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="22" font-size="15" text-anchor="middle">${esc(title)}</text>
<line x1="${m.left}" y1="${H - m.bottom}" x2="${W - m.right}" y2="${H - m.bottom}" stroke="#333"/>
<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${H - m.bottom}" stroke="#333"/>
${ticks.join("\n")}
<text x="${(W + m.left - m.right) / 2}" y="${H - 15}" font-size="13" text-anchor="middle">forward Gflops per image (multiply-accumulates, log scale)</text>
<text x="18" y="${(H - m.bottom + m.top) / 2}" font-size="13" text-anchor="middle" transform="rotate(-90 18 ${(H - m.bottom + m.top) / 2})">FD (classifier features)</text>
${points.join("\n")}
</svg>`;
  await sharp(Buffer.from(svg)).png().toFile(file);
}

interface Baseline { realTestAccuracy: number; fdRealTrainVsTest: number }

function tableHeader(caption: string, baseline: Baseline): string[] {
  return [
    caption,
    "",
    "| model | denoiser | params | Gflops/image | train steps | sampler | guidance | accuracy | FD | s/image |",
    "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    `| real train images | – | – | – | – | – | – | ${(baseline.realTestAccuracy * 100).toFixed(1)}% (real test) | ${baseline.fdRealTrainVsTest.toFixed(3)} | – |`,
  ];
}

function tableRow(row: QualityRow): string {
  return `| ${row.model} | ${row.kind} | ${(row.parameters / 1e6).toFixed(2)}M | ${row.gflops.toFixed(3)} | ${row.trainSteps ?? "–"} | ${row.scheduler} ${row.steps} | ${row.guidance} | ${(row.accuracy * 100).toFixed(1)}% | ${row.fd.toFixed(3)} | ${row.secondsPerImage.toFixed(3)} |`;
}

/** `--from-json`: the table and plot of saved runs, one after another. */
async function writeSaved(files: string[], values: { markdown?: string; json?: string; plot?: string; title?: string }): Promise<void> {
  const saved = files.map((file) => JSON.parse(fs.readFileSync(file.trim(), "utf8")) as { perClass: number; real: number; seed: number; baseline: Baseline; rows: QualityRow[] });
  const first = saved[0];
  const rows = saved.flatMap((run) => run.rows);
  const lines = [...tableHeader(`${first.perClass} images per class, FD against ${first.real} real test images, seed ${first.seed} (from ${files.map(shown).join(", ")})`, first.baseline), ...rows.map(tableRow)];
  console.log(lines.join("\n"));
  if (values.markdown) fs.writeFileSync(values.markdown, lines.join("\n") + "\n");
  if (values.json) td.writeFileAtomic(values.json, JSON.stringify({ ...first, rows, from: files }, null, 2) + "\n");
  if (values.plot) {
    await writePlot(rows, values.plot, values.title!);
    console.log(`wrote ${values.plot}`);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      models: { type: "string" },
      classifier: { type: "string", default: CLASSIFIER_PATH },
      "per-class": { type: "string", default: "50" },
      steps: { type: "string" },
      guidance: { type: "string" },
      scheduler: { type: "string" },
      real: { type: "string", default: "2000" },
      batch: { type: "string", default: "50" },
      seed: { type: "string", default: "0" },
      json: { type: "string" },
      markdown: { type: "string" },
      plot: { type: "string" },
      title: { type: "string", default: "Fashion-MNIST: FD against forward compute" },
      "from-json": { type: "string" },
    },
  });
  if (values["from-json"]) return writeSaved(values["from-json"].split(","), values);
  if (!values.models) throw new Error("--models DIR[,DIR...] is required");
  if (!fs.existsSync(values.classifier!)) throw new Error(`${values.classifier} is missing: run scripts/build_classifier_init.py and scripts/train-classifier.ts first`);
  const dirs = values.models.split(",").map((d) => td.resolveModelPath(d.trim()));
  const perClass = Number(values["per-class"]);
  const batch = Number(values.batch);
  const seed = Number(values.seed);
  const classifier = td.load(values.classifier!);
  const test = await classifyDataset(classifier, new td.FashionMNIST({ split: "test", pad32: true }), { count: Number(values.real), seed });
  const testFit = gaussianFit(test.features);
  const train = await classifyDataset(classifier, new td.FashionMNIST({ split: "train", pad32: true }), { count: perClass * NUM_CLASSES, seed });
  const trainFit = gaussianFit(train.features);
  const baseline = { realTestAccuracy: accuracy(test.predictions, test.labels), fdRealTrainVsTest: frechetDistance(trainFit, testFit) };
  [test.features, train.features].forEach((f) => f.dispose());
  disposeFit(trainFit);

  const header = tableHeader(`classifier ${shown(values.classifier!)}, ${perClass} images per class, FD against ${values.real} real test images, seed ${seed}, ${td.getNumThreads()} thread(s)`, baseline);
  const lines = [...header];
  console.log(header.join("\n"));
  const rows: QualityRow[] = [];
  for (const dir of dirs) {
    const model = td.loadModel(dir);
    if (values.scheduler) model.scheduler = model.newScheduler(schedulerClassName(values.scheduler, Object.keys(td.SCHEDULERS)));
    const compute = modelCompute(dir);
    const recipeFile = path.join(dir, "recipe.json");
    const recipe = fs.existsSync(recipeFile) ? JSON.parse(fs.readFileSync(recipeFile, "utf8")) : {};
    const steps = values.steps ? Number(values.steps) : (model.defaults.numInferenceSteps ?? 50);
    const guidance = values.guidance ? Number(values.guidance) : (model.defaults.guidanceScale ?? 1);
    const scheduler = model.newScheduler();
    const started = Date.now();
    const out = await measure(model, classifier, { perClass, batch, seed, steps, guidance, scheduler });
    const fit = gaussianFit(out.features);
    const row: QualityRow = {
      model: shown(dir), kind: model.denoiser.className, parameters: compute.parameters, gflops: compute.gflops,
      trainSteps: recipe.steps ?? null, trainingGflops: recipe.trainingGflops ?? (recipe.steps && recipe.batchSize ? 3 * compute.gflops * recipe.batchSize * recipe.steps : null),
      steps, guidance, scheduler: scheduler.className, accuracy: accuracy(out.predictions, out.labels), fd: frechetDistance(fit, testFit),
      secondsPerImage: (Date.now() - started) / 1000 / (perClass * NUM_CLASSES),
    };
    disposeFit(fit);
    out.features.dispose();
    scheduler.dispose();
    model.dispose();
    rows.push(row);
    const line = tableRow(row);
    lines.push(line);
    console.log(line);
  }
  disposeFit(testFit);
  if (values.markdown) fs.writeFileSync(values.markdown, lines.join("\n") + "\n");
  if (values.json) td.writeFileAtomic(values.json, JSON.stringify({ classifier: values.classifier, perClass, real: Number(values.real), seed, baseline, rows, libtorch: td.buildInfo.torchVersion }, null, 2) + "\n");
  if (values.plot) {
    await writePlot(rows, values.plot, values.title!);
    console.log(`wrote ${values.plot}`);
  }
}

if (require.main === module) {
  main().catch((error) => {
    console.error(`class-quality: ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  });
}
