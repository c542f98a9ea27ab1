/**
 * DreamBooth on the built-in model (32×32 gray Fashion-MNIST), measured as the paper does
 * (Ruiz et al. 2023, §4.1 and Table 3) with our Fashion-MNIST classifier's 64-d features in
 * place of DINO and CLIP (cosines of features centered on the mean feature of 2,000 real test
 * images: the classifier's features are ReLU outputs, whose raw cosines all sit near 1):
 *   - subject fidelity: the mean pairwise cosine similarity of the features of "a [V] sneaker"
 *     samples and of the subject's images (the paper's DINO score);
 *   - prompt fidelity: the fraction of "a [V] sneaker" samples the classifier calls a sneaker
 *     (in place of CLIP-T);
 *   - prior preservation: for "a sneaker" samples, the fraction called a sneaker, their feature
 *     diversity (mean pairwise 1 − cosine; the paper's DIV uses LPIPS) and their similarity to
 *     the subject (the paper's PRES: higher = the class collapsed onto the subject); and the
 *     accuracy of the other nine classes' prompts, before vs after.
 * The subject is one real test sneaker (the most atypical the classifier calls a sneaker: the
 * lowest feature cosine to the mean sneaker), made into 4 images by the script with shifts and
 * scales. Trained several ways from the same start (`--rows`, default the four of full
 * fine-tuning or LoRA, each with and without the prior-preservation loss; a "+te" row also trains
 * the text encoder, diffusers' --train_text_encoder), class images sampled once and shared
 * through their cache. Every configuration samples from the same seeds. Writes a PNG grid (rows:
 * subject images and class images, then each configuration's "a [V] sneaker" and "a sneaker" samples).
 *
 *   npx tsx scripts/bench/dreambooth.ts [--steps 300] [--batch 2] [--lr-full 5e-5] [--lr-lora 5e-4] [--rank 4]
 *       [--class-images 200] [--samples 32] [--others 8] [--sampling-steps 20] [--guidance 2]
 *       [--rows full,full+prior,lora,lora+prior] (also full+te, full+prior+te, lora+te, lora+prior+te)
 *       [--model models/builtin] [--png docs/dreambooth-builtin.png] [--work DIR] [--json out.json]
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../../lib";
import { CLASSIFIER_PATH, classify, classifyDataset, toClassifierInput } from "./classifier";

const root = path.resolve(__dirname, "..", "..");
const BUILTIN = path.join(root, "models", "builtin");
const SNEAKER = 7;

/** Rows scaled to unit length. */
const normalized = (f: td.Tensor) => td.tidy(() => f.div(f.square().sum(1, true).sqrt()));
/** The mean feature of real test images, set in main(): features are centered on it before cosines. */
let center: td.Tensor;
/** Mean cosine similarity of centered features over all pairs (a_i, b_j); `distinct` skips i = j (a = b). */
function meanCosine(a: td.Tensor, b: td.Tensor, distinct = false): number {
  return td.tidy(() => {
    const sims = normalized(a.sub(center)).matmul(normalized(b.sub(center)).transpose(0, 1)); // (n, m)
    const n = a.shape[0];
    if (!distinct) return sims.mean().item();
    return (sims.sum().item() - n) / (n * (n - 1)); // the diagonal is 1
  });
}

/** (1, H, W) -> scaled by `scale` and placed on a 32×32 black canvas `dx`, `dy` pixels off center. */
function place(item: td.Tensor, scale: number, dx: number, dy: number): td.Tensor {
  return td.tidy(() => {
    const size = Math.round(28 * scale);
    const small = td.interpolate(item.unsqueeze(0), { size: [size, size], mode: "bilinear", antialias: true }).squeeze(0); // (1, s, s)
    const top = Math.floor((32 - size) / 2) + dy;
    const left = Math.floor((32 - size) / 2) + dx;
    const rows = td.cat([td.full([1, top, size], -1), small, td.full([1, 32 - top - size, size], -1)], 1); // (1, 32, s)
    return td.cat([td.full([1, 32, left], -1), rows, td.full([1, 32, 32 - left - size], -1)], 2).clamp(-1, 1); // (1, 32, 32)
  });
}

interface Metrics {
  subjectFidelity: number;
  promptFidelity: number;
  classAccuracy: number;
  classDiversity: number;
  classToSubject: number;
  othersAccuracy: number;
  trainSeconds: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      steps: { type: "string", default: "300" },
      batch: { type: "string", default: "2" },
      "lr-full": { type: "string", default: "5e-5" },
      "lr-lora": { type: "string", default: "5e-4" },
      rank: { type: "string", default: "4" },
      "class-images": { type: "string", default: "200" },
      samples: { type: "string", default: "32" },
      others: { type: "string", default: "8" },
      "sampling-steps": { type: "string", default: "20" },
      guidance: { type: "string", default: "2" },
      seed: { type: "string", default: "0" },
      rows: { type: "string", default: "full,full+prior,lora,lora+prior" },
      model: { type: "string", default: BUILTIN },
      png: { type: "string", default: path.join(root, "docs", "dreambooth-builtin.png") },
      work: { type: "string" },
      json: { type: "string" },
    },
  });
  const n = Number(values.samples);
  const others = Number(values.others);
  const seed = Number(values.seed);
  const sampling = { steps: Number(values["sampling-steps"]), guidanceScale: Number(values.guidance) };
  const work = values.work ?? fs.mkdtempSync(path.join(os.tmpdir(), "td-dreambooth-bench-"));
  const classifier = td.load(CLASSIFIER_PATH);
  classifier.eval();
  const started = Date.now();

  // The subject: the most atypical test sneaker the classifier still calls a sneaker.
  const test = new td.FashionMNIST({ split: "test", pad32: true });
  const real = await classifyDataset(classifier, test, { count: 2000, seed });
  center = td.keep(td.tidy(() => real.features.mean(0, true))); // (1, 64)
  real.features.dispose();
  const sneakers = Array.from({ length: 2000 }, (_, i) => i).filter((i) => test.get(i).label === SNEAKER);
  const stacked = td.tidy(() => td.stack(sneakers.map((i) => test.get(i).image))); // (S, 1, 32, 32) in [-1, 1]
  const all = classify(classifier, stacked);
  const mean = td.tidy(() => all.features.mean(0, true));
  const sims = td.tidy(() => Array.from(normalized(all.features.sub(center)).matmul(normalized(mean.sub(center)).transpose(0, 1)).flatten().toFloat64Array()));
  const pick = sneakers.map((index, k) => ({ index, sim: sims[k], ok: all.predictions[k] === SNEAKER })).filter((c) => c.ok).sort((a, b) => a.sim - b.sim)[0];
  [stacked, all.features, mean].forEach((t) => t.dispose());
  const item = td.tidy(() => test.get(pick.index).image.narrow(1, 2, 28).narrow(2, 2, 28)); // (1, 28, 28) without the padding
  const variants: [number, number, number][] = [[1, 0, 0], [0.85, -2, 1], [0.75, 3, -2], [0.9, 1, 2]];
  const subject = td.tidy(() => td.stack(variants.map(([s, dx, dy]) => place(item, s, dx, dy))).add(1).div(2)); // (4, 1, 32, 32) in [0, 1]
  item.dispose();
  // The subject's images, for trying the command line on them: torch-diffusion dreambooth --images <work>/subject ...
  fs.mkdirSync(path.join(work, "subject"), { recursive: true });
  for (let i = 0; i < 4; i++) await td.tidyAsync(() => td.writeImage(subject.index(i), path.join(work, "subject", `sneaker-${i}.png`)));
  const subjectFeatures = classify(classifier, toClassifierInput(subject)).features; // (4, 64)

  const base = td.loadModel(values.model!).requireTextToImage("bench");
  const identifier = td.rareTokenIdentifier(base.tokenizer, { seed }).identifier;
  const instancePrompt = `a ${identifier} sneaker`;
  const classPrompt = "a sneaker";
  const seeds = Array.from({ length: n }, (_, i) => 1000 + i);
  const otherLabels = Array.from({ length: 10 }, (_, c) => c).filter((c) => c !== SNEAKER);
  console.log(`subject: test image ${pick.index} (cosine to the mean sneaker ${pick.sim.toFixed(3)}); identifier "${identifier}"; ${td.getNumThreads()} thread(s); work folder ${work}`);

  async function evaluate(model: td.TextToImageModel): Promise<{ metrics: Omit<Metrics, "trainSeconds">; shown: td.Tensor }> {
    const instance = await td.sampleSeeds(model, instancePrompt, seeds, sampling);
    const cls = await td.sampleSeeds(model, classPrompt, seeds, sampling);
    const a = classify(classifier, toClassifierInput(instance));
    const b = classify(classifier, toClassifierInput(cls));
    let correct = 0;
    for (const label of otherLabels) {
      const images = await td.sampleSeeds(model, td.fashionMnistCaption(label, "a photo of {a} {name}"), seeds.slice(0, others), sampling);
      const out = classify(classifier, toClassifierInput(images));
      correct += out.predictions.filter((p) => p === label).length;
      images.dispose();
      out.features.dispose();
    }
    const metrics = {
      subjectFidelity: meanCosine(a.features, subjectFeatures),
      promptFidelity: a.predictions.filter((p) => p === SNEAKER).length / n,
      classAccuracy: b.predictions.filter((p) => p === SNEAKER).length / n,
      classDiversity: 1 - meanCosine(b.features, b.features, true),
      classToSubject: meanCosine(b.features, subjectFeatures),
      othersAccuracy: correct / (others * otherLabels.length),
    };
    const shown = td.tidy(() => td.cat([instance.narrow(0, 0, 4), cls.narrow(0, 0, 4)])); // (8, 1, 32, 32)
    [instance, cls, a.features, b.features].forEach((t) => t.dispose());
    return { metrics, shown };
  }

  const rows: { name: string; metrics: Metrics }[] = [];
  const gridRows: td.Tensor[] = [];
  const before = await evaluate(base);
  rows.push({ name: "base model", metrics: { ...before.metrics, trainSeconds: 0 } });
  const classDir = path.join(work, "class_images");
  const configs = values.rows!.split(",").map((row) => {
    const parts = row.trim().split("+");
    if (!["full", "lora"].includes(parts[0]) || parts.slice(1).some((p) => p !== "prior" && p !== "te")) throw new Error(`--rows: "${row}" is not full or lora with optional +prior and +te`);
    const prior = parts.includes("prior");
    const trainTextEncoder = parts.includes("te");
    const lora = parts[0] === "lora" ? { rank: Number(values.rank) } : undefined;
    const name = `${lora ? `LoRA r${values.rank}` : "full"}${prior ? " + prior" : ", no prior"}${trainTextEncoder ? " + text encoder" : ""}`;
    return { name, lora, prior, trainTextEncoder };
  });
  let classImages: string[] = [];
  let classSeconds = 0;
  for (const [k, config] of configs.entries()) {
    const model = td.loadModel(values.model!).requireTextToImage("bench");
    const t0 = Date.now();
    let t1 = t0;
    const result = await td.dreambooth({
      model, instanceImages: subject, classNoun: "sneaker", identifier, out: path.join(work, `run-${k}`), classDir, seed,
      steps: Number(values.steps), batchSize: Number(values.batch), lr: Number(config.lora ? values["lr-lora"] : values["lr-full"]), lora: config.lora, trainTextEncoder: config.trainTextEncoder,
      priorPreservation: config.prior, numClassImages: Number(values["class-images"]), sampling, checkpointEvery: 1000, resume: false,
      onStep: ({ step }) => { if (step === 1) t1 = Date.now(); },
      log: (line) => console.log(`  ${config.name}: ${line}`),
    });
    if (config.prior && classImages.length === 0) {
      classImages = result.classImages;
      classSeconds = (t1 - t0) / 1000;
    }
    const trainSeconds = (Date.now() - (config.prior ? t1 : t0)) / 1000;
    const { metrics, shown } = await evaluate(model);
    rows.push({ name: config.name, metrics: { ...metrics, trainSeconds } });
    gridRows.push(shown);
    model.dispose();
    console.log(`  ${config.name}: ${result.step} steps, final loss (mean of 50) ${result.meanLoss.toFixed(4)}, ${trainSeconds.toFixed(0)} s`);
  }

  const pct = (v: number) => `${(v * 100).toFixed(0)}%`;
  const table = [
    `subject: Fashion-MNIST test image ${pick.index} in 4 shifted/scaled copies; identifier "${identifier}"; ${values.steps} steps of ${values.batch} subject (+ ${values.batch} class) images,`,
    `lr ${values["lr-full"]} (full) / ${values["lr-lora"]} (LoRA rank ${values.rank}); ${values["class-images"]} class images (sampled in ${classSeconds.toFixed(0)} s); ${n} samples per prompt, ${others} per other class;`,
    `DDIM ${sampling.steps} steps, guidance ${sampling.guidanceScale}; ${td.getNumThreads()} thread(s), ${((Date.now() - started) / 60000).toFixed(1)} min in all`,
    "",
    "| model | subject fidelity ↑ | prompt fidelity ↑ | \"a sneaker\": accuracy ↑ | diversity ↑ | similarity to subject | other classes' accuracy ↑ | train s |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
    ...rows.map(({ name, metrics: m }) =>
      `| ${name} | ${m.subjectFidelity.toFixed(3)} | ${pct(m.promptFidelity)} | ${pct(m.classAccuracy)} | ${m.classDiversity.toFixed(3)} | ${m.classToSubject.toFixed(3)} | ${pct(m.othersAccuracy)} | ${m.trainSeconds.toFixed(0)} |`),
  ];
  console.log(`\n${table.join("\n")}`);

  // The grid: subject images + 4 class images, then per model 4 "a [V] sneaker" + 4 "a sneaker" samples; 2× nearest upscaling.
  const classShown = await Promise.all(classImages.slice(0, 4).map((f) => td.readImage(f, { channels: 1 })));
  const header = td.tidy(() => td.cat([subject, ...(classShown.length ? classShown : [td.zeros([4, 1, 32, 32])])]));
  const grid = td.tidy(() => td.interpolate(td.imageGrid(td.cat([header, before.shown, ...gridRows]), 8).unsqueeze(0), { scaleFactor: 2, mode: "nearest" }).squeeze(0));
  fs.mkdirSync(path.dirname(values.png!), { recursive: true });
  await td.writeImage(grid, values.png!);
  console.log(`\nwrote ${path.relative(process.cwd(), values.png!)} (rows: subject | class images; then ${["base", ...configs.map((c) => c.name)].join("; ")}: 4 × "${instancePrompt}" | 4 × "${classPrompt}")`);
  if (values.json) td.writeFileAtomic(values.json, `${JSON.stringify({ subject: pick.index, identifier, options: values, rows }, null, 2)}\n`);
  for (const t of [grid, header, subject, subjectFeatures, center, before.shown, ...gridRows, ...classShown]) t.dispose();
  base.dispose();
}

main().catch((error) => {
  console.error(`dreambooth bench: ${error instanceof Error ? error.stack : error}`);
  process.exit(1);
});
