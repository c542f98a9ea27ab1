/**
 * InstructPix2Pix's trade-off (the paper's Fig. 5/8, at our scale): on real Fashion-MNIST test
 * images, which the built-in instruct model never saw (it trained on generated pairs only),
 * edit each image with an instruction toward another class, over a grid of image guidance s_I
 * × text guidance s_T, and measure
 *   - edit success: the fraction the Fashion-MNIST classifier assigns to the instructed class
 *     (the paper: CLIP text-image direction similarity);
 *   - faithfulness: cosine similarity of the classifier's features of input and output (the
 *     paper: CLIP image similarity), and mean |Δ| of the pixels.
 * Image k is edited toward class (label + 1 + k mod 9) mod 10 with an instruction template
 * chosen by k, so every class pair and template is covered evenly. The reference for
 * faithfulness: the base text-to-image model's image of the edited caption from the same noise,
 * which ignores the input.
 *
 *   npx tsx scripts/bench/instruct.ts [--model models/builtin-instruct] [--images 50] [--steps 20]
 *       [--image-guidance 1,1.5,2] [--guidance 1.5,3,5,7.5] [--chart docs/instruct-tradeoff.png]
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../../lib";
import { writeLineChart, type Series } from "./chart";
import { CLASSIFIER_PATH, classify, toClassifierInput } from "./classifier";

const root = path.resolve(__dirname, "..", "..");

const numberList = (text: string, name: string): number[] => {
  const list = text.split(",").map(Number);
  if (list.some((v) => !Number.isFinite(v))) throw new Error(`--${name}: expected comma-separated numbers but received "${text}"`);
  return list;
};

function featureCosines(a: td.Tensor, b: td.Tensor): number[] {
  return td.tidy(() => Array.from(a.mul(b).sum(1).div(a.norm(2, [1]).mul(b.norm(2, [1]))).toFloat64Array()));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: "string", default: path.join(root, "models", "builtin-instruct") },
      images: { type: "string", default: "50" },
      steps: { type: "string", default: "20" },
      "image-guidance": { type: "string", default: "1,1.5,2" },
      guidance: { type: "string", default: "1.5,3,5,7.5" },
      seed: { type: "string", default: "0" },
      chart: { type: "string", default: path.join(root, "docs", "instruct-tradeoff.png") },
      grid: { type: "string" },
      base: { type: "string", default: path.join(root, "models", "builtin") },
    },
  });
  const count = Number(values.images);
  const steps = Number(values.steps);
  const imageScales = numberList(values["image-guidance"]!, "image-guidance");
  const textScales = numberList(values.guidance!, "guidance");
  const pipe = new td.InstructPix2PixPipeline(td.loadModel(values.model!));
  const classifier = td.load(CLASSIFIER_PATH);
  classifier.eval();

  const test = new td.FashionMNIST({ split: "test", pad32: true });
  const indices = Array.from({ length: count }, (_, k) => Math.floor((k * test.length) / count)); // spread over the test set
  const labels = indices.map((i) => test.label(i));
  const targets = labels.map((label, k) => (label + 1 + (k % 9)) % 10);
  const instructions = targets.map((target, k) =>
    td.fillEditTemplate(td.INSTRUCTION_TEMPLATES[k % td.INSTRUCTION_TEMPLATES.length], td.FASHION_MNIST_NOUNS[target], td.FASHION_MNIST_NOUNS[labels[k]]),
  );
  const inputs = td.keep(td.tidy(() => td.cat(indices.map((i) => test.get(i).image.unsqueeze(0))).add(1).div(2))); // (N, 1, 32, 32) in [0, 1]
  const before = classify(classifier, td.tidy(() => toClassifierInput(inputs)));
  const inputAccuracy = before.predictions.filter((p, k) => p === labels[k]).length / count;
  console.log(`${count} real test images; the classifier names their own class on ${(100 * inputAccuracy).toFixed(1)}%, the instructed one on ${(100 * before.predictions.filter((p, k) => p === targets[k]).length / count).toFixed(1)}%`);

  // What faithfulness means here: text-to-image of the edited caption from the same noise ignores the input altogether.
  const base = new td.Text2ImagePipeline(td.loadModel(values.base!));
  const captions = targets.map((target) => td.fashionMnistCaption(target, "a photo of {a} {name}"));
  const ignored = (await base.generate({ prompt: captions, guidanceScale: 2, numInferenceSteps: steps, generator: new td.Generator(Number(values.seed)) })).images;
  const ignoredOut = classify(classifier, td.tidy(() => toClassifierInput(ignored)));
  const ignoredRow = {
    success: ignoredOut.predictions.filter((p, k) => p === targets[k]).length / count,
    similarity: featureCosines(before.features, ignoredOut.features).reduce((a, b) => a + b, 0) / count,
    pixel: td.tidy(() => ignored.sub(inputs).abs().mean().item()),
  };
  ignoredOut.features.dispose();
  ignored.dispose();
  console.log(`text2img of the edited caption (input ignored): success ${(100 * ignoredRow.success).toFixed(1)}%, feature similarity ${ignoredRow.similarity.toFixed(3)}, |Δ| ${ignoredRow.pixel.toFixed(3)}`);

  const rows: { sI: number; sT: number; success: number; similarity: number; pixel: number; seconds: number }[] = [];
  const series: Series[] = [];
  for (const sI of imageScales) {
    const points: Series["points"] = [];
    for (const sT of textScales) {
      const started = Date.now();
      const { images } = await pipe.edit({ image: inputs, instruction: instructions, imageGuidanceScale: sI, guidanceScale: sT, numInferenceSteps: steps, generator: new td.Generator(Number(values.seed)) });
      const seconds = (Date.now() - started) / 1000;
      const out = classify(classifier, td.tidy(() => toClassifierInput(images)));
      const success = out.predictions.filter((p, k) => p === targets[k]).length / count;
      const similarities = featureCosines(before.features, out.features);
      const similarity = similarities.reduce((a, b) => a + b, 0) / count;
      const pixel = td.tidy(() => images.sub(inputs).abs().mean().item());
      if (values.grid && sI === imageScales[Math.floor(imageScales.length / 2)] && sT === textScales[Math.floor(textScales.length / 2)]) {
        const grid = td.tidy(() => td.imageGrid(td.cat([inputs.narrow(0, 0, 10), images.narrow(0, 0, 10)], 0), 10));
        await td.writeImage(grid, values.grid);
        grid.dispose();
      }
      out.features.dispose();
      images.dispose();
      rows.push({ sI, sT, success, similarity, pixel, seconds });
      points.push({ x: similarity, y: 100 * success, label: `s_T ${sT}` });
      console.log(`s_I ${sI} s_T ${sT}: success ${(100 * success).toFixed(1)}%, feature similarity ${similarity.toFixed(3)}, |Δ| ${pixel.toFixed(3)}, ${seconds.toFixed(1)} s`);
    }
    series.push({ name: `s_I = ${sI}`, points });
  }
  series.push({ name: "input ignored", points: [{ x: ignoredRow.similarity, y: 100 * ignoredRow.success, label: "text2img" }] });
  await writeLineChart(values.chart!, series, {
    title: `InstructPix2Pix on ${count} real test images (${steps} DDIM steps)`,
    xLabel: "faithfulness: classifier-feature similarity to the input", yLabel: "edit success (%)",
  });
  console.log(`\nchart: ${values.chart}\n`);
  console.log("| s_I | s_T | edit success | feature similarity | mean \\|Δ\\| |");
  console.log("|---:|---:|---:|---:|---:|");
  console.log(`| input unchanged | – | ${(100 * before.predictions.filter((p, k) => p === targets[k]).length / count).toFixed(1)}% | 1 | 0 |`);
  console.log(`| text2img of the edited caption (input ignored) | – | ${(100 * ignoredRow.success).toFixed(1)}% | ${ignoredRow.similarity.toFixed(3)} | ${ignoredRow.pixel.toFixed(3)} |`);
  for (const r of rows) console.log(`| ${r.sI} | ${r.sT} | ${(100 * r.success).toFixed(1)}% | ${r.similarity.toFixed(3)} | ${r.pixel.toFixed(3)} |`);
  before.features.dispose();
  inputs.dispose();
}

main().catch((error) => {
  console.error(`bench/instruct: ${error instanceof Error ? error.stack : error}`);
  process.exit(1);
});
