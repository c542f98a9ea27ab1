/**
 * Imagic on the built-in model, measured as the paper does (its Figure 7: editability vs
 * fidelity as η grows), with our Fashion-MNIST classifier in place of CLIP: for real test
 * images and target classes other than their own, run stages 1–2 once per (image, target),
 * then for each η of the sweep, from one seed,
 *   - success: the classifier names the target class;
 *   - distance to the input: mean |Δ| of the pixels (in [0, 1]) and L2 of the classifier's
 *     64-d features, the paper's fidelity axis.
 * η = 0 shows how well stage 2 reconstructs the input.
 *
 *   npx tsx scripts/bench/imagic.ts [--images 6] [--targets 2] [--embedding-steps 100] [--embedding-lr 1e-3]
 *       [--train-steps 200] [--lr 1e-4] [--steps 20] [--guidance 2] [--etas 0,0.4,...,1]
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../../lib";
import { CLASSIFIER_PATH, classify, toClassifierInput } from "./classifier";

const root = path.resolve(__dirname, "..", "..");

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      images: { type: "string", default: "6" },
      targets: { type: "string", default: "2" },
      "embedding-steps": { type: "string", default: "100" },
      "embedding-lr": { type: "string", default: "1e-3" },
      "train-steps": { type: "string", default: "200" },
      lr: { type: "string", default: "1e-4" },
      steps: { type: "string", default: "20" },
      guidance: { type: "string", default: "2" },
      etas: { type: "string", default: "0,0.4,0.5,0.6,0.7,0.8,0.9,1" },
      seed: { type: "string", default: "0" },
    },
  });
  const etas = values.etas!.split(",").map(Number);
  const model = td.loadModel(path.join(root, "models", "builtin"));
  const classifier = td.load(CLASSIFIER_PATH);
  classifier.eval();
  const test = new td.FashionMNIST({ split: "test", pad32: true });
  const names = td.FASHION_MNIST_CLASSES;
  const rows = etas.map(() => ({ success: 0, pixel: 0, feature: 0, n: 0 }));
  const started = Date.now();
  for (let i = 0; i < Number(values.images); i++) {
    const index = i * 97; // spread over the test set (and its classes)
    const sample = test.get(index);
    const image = td.tidy(() => sample.image.unsqueeze(0).add(1).div(2)); // (1, 1, 32, 32) in [0, 1]
    const input = classify(classifier, toClassifierInput(image));
    for (let k = 1; k <= Number(values.targets); k++) {
      const target = (sample.label! + k * 3) % names.length;
      const result = await td.imagic({
        model, image, targetPrompt: td.fashionMnistCaption(target, "a photo of {a} {name}"), seed: Number(values.seed),
        embeddingSteps: Number(values["embedding-steps"]), embeddingLr: Number(values["embedding-lr"]),
        fineTuneSteps: Number(values["train-steps"]), fineTuneLr: Number(values.lr),
      });
      for (const [j, eta] of etas.entries()) {
        const { images } = await result.generate({ eta, guidanceScale: Number(values.guidance), numInferenceSteps: Number(values.steps), generator: new td.Generator(Number(values.seed)) });
        const out = classify(classifier, toClassifierInput(images));
        rows[j].success += out.predictions[0] === target ? 1 : 0;
        rows[j].pixel += td.tidy(() => images.sub(image).abs().mean().item());
        rows[j].feature += td.tidy(() => out.features.sub(input.features).norm().item());
        rows[j].n += 1;
        out.features.dispose();
        images.dispose();
      }
      result.dispose();
      process.stderr.write(`image ${i + 1}/${values.images} (${names[sample.label!]}) -> ${names[target]}: ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    }
    input.features.dispose();
    image.dispose();
  }
  const n = rows[0].n;
  console.log(`Imagic on the built-in model: ${values.images} test images × ${values.targets} targets = ${n} edits; stage 1 ${values["embedding-steps"]} steps at ${values["embedding-lr"]}, stage 2 ${values["train-steps"]} steps at ${values.lr}; DDIM ${values.steps} steps, guidance ${values.guidance}; ${((Date.now() - started) / 1000 / n).toFixed(1)} s per edit (libtorch ${td.buildInfo.torchVersion}, ${td.getNumThreads()} threads)\n`);
  console.log("| η | edit success | mean abs pixel change | feature distance to input |");
  console.log("| ---: | ---: | ---: | ---: |");
  for (const [j, eta] of etas.entries()) {
    const r = rows[j];
    console.log(`| ${eta} | ${((100 * r.success) / n).toFixed(0)}% | ${(r.pixel / n).toFixed(3)} | ${(r.feature / n).toFixed(2)} |`);
  }
}

main().catch((error) => {
  console.error(`imagic bench: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
