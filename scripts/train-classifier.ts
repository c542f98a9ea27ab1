/**
 * Trains the benchmark's Fashion-MNIST classifier (scripts/bench/classifier.ts) in Node:
 * cross-entropy, AdamW with a cosine decay, seeded batches of the 32×32 padded train split.
 * The built-in model's quality benchmark (scripts/bench/builtin-quality.ts) scores generated
 * images with it.
 *
 *   /usr/bin/python3 scripts/build_classifier_init.py     # random init -> build/classifier-init.pt
 *   npx tsx scripts/train-classifier.ts [--steps 3000] [--batch 128] [--lr 2e-3] [--seed 0]
 *
 * Writes models/classifier/fashion-mnist-classifier.pt and its TRAINING.json (test accuracy).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../lib";
import { accuracy, CLASSIFIER_PATH, classifyDataset } from "./bench/classifier";

const root = path.resolve(__dirname, "..");

/** Mean cross-entropy of (B, 10) logits against class labels, like F.cross_entropy. */
function crossEntropy(logits: td.Tensor, labels: number[]): td.Tensor {
  const target = td.tensor(labels, undefined, { dtype: "int64" }); // (B,)
  return td.op("aten::cross_entropy_loss", logits, target) as td.Tensor; // reduction mean
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      steps: { type: "string", default: "3000" },
      batch: { type: "string", default: "128" },
      lr: { type: "string", default: "2e-3" },
      seed: { type: "string", default: "0" },
      init: { type: "string", default: path.join(root, "build", "classifier-init.pt") },
      out: { type: "string", default: CLASSIFIER_PATH },
    },
  });
  if (!fs.existsSync(values.init!)) throw new Error(`${values.init} is missing: run /usr/bin/python3 scripts/build_classifier_init.py first`);
  const steps = Number(values.steps);
  const batchSize = Number(values.batch);
  const seed = Number(values.seed);
  const classifier = td.load(values.init!).train(true);
  const optimizer = new td.AdamW(classifier.parameters(), { lr: Number(values.lr), weightDecay: 1e-4 });
  const lrAt = td.lrSchedule({ lr: Number(values.lr), kind: "cosine", warmupSteps: 50, totalSteps: steps });
  const loader = new td.DataLoader(new td.FashionMNIST({ split: "train", pad32: true }), { batchSize, seed });
  const started = Date.now();
  let recent = 0;
  for (let step = 0; step < steps; step++) {
    const batch = await loader.next();
    optimizer.lr = lrAt(step);
    recent += td.tidy(() => {
      const loss = crossEntropy(classifier.forwardSync(batch.images) as td.Tensor, batch.labels!);
      loss.backward();
      return loss.item();
    });
    optimizer.update();
    optimizer.zeroGrad();
    batch.images.dispose();
    if ((step + 1) % 100 === 0) {
      console.log(`step ${step + 1}/${steps} loss(avg100) ${(recent / 100).toFixed(4)} epoch ${loader.state().epoch} ${((Date.now() - started) / 1000).toFixed(0)}s`);
      recent = 0;
    }
  }
  optimizer.dispose();
  classifier.eval();

  const test = await classifyDataset(classifier, new td.FashionMNIST({ split: "test", pad32: true }));
  const testAccuracy = accuracy(test.predictions, test.labels);
  test.features.dispose();
  fs.mkdirSync(path.dirname(values.out!), { recursive: true });
  classifier.save(values.out!);
  const info = {
    recipe: "scripts/train-classifier.ts",
    init: "scripts/build_classifier_init.py --seed 0",
    seed,
    steps,
    batchSize,
    lr: Number(values.lr),
    epochs: (steps * batchSize) / 60_000,
    testAccuracy,
    trainSeconds: Math.round((Date.now() - started) / 1000),
    libtorch: td.buildInfo.torchVersion,
  };
  fs.writeFileSync(values.out!.replace(/\.pt$/, ".json"), JSON.stringify(info, null, 2) + "\n");
  console.log(`test accuracy ${(testAccuracy * 100).toFixed(2)}% after ${steps} steps -> ${values.out}`);
}

main().catch((error) => {
  console.error(`train-classifier: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
