/**
 * The Fashion-MNIST classifier the quality benchmark judges images with
 * (scripts/build_classifier_init.py, trained by scripts/train-classifier.ts): where it lives,
 * and its outputs over batches of images or a dataset.
 */
import * as path from "node:path";
import * as td from "../../lib";

export const CLASSIFIER_PATH = path.resolve(__dirname, "..", "..", "models", "classifier", "fashion-mnist-classifier.pt");

export interface ClassifierOutputs {
  /** Predicted class per image. */
  predictions: number[];
  /** (N, 64) float64 penultimate features. */
  features: td.Tensor;
}

/** Pipeline output (B, C, H, W) in [0, 1] -> classifier input (B, 1, 32, 32) in [-1, 1]; gray/resizes other models' output. */
export function toClassifierInput(images: td.Tensor): td.Tensor {
  return td.tidy(() => {
    let x = images.shape[1] === 1 ? images : images.mean(1, true); // (B, 1, H, W)
    if (x.shape[2] !== 32 || x.shape[3] !== 32) x = td.interpolate(x, { size: [32, 32], mode: "bilinear", antialias: true });
    return x.mul(2).sub(1);
  });
}

/** Runs the classifier (in eval mode, without grad) on (B, 1, 32, 32) images in [-1, 1]. */
export function classify(classifier: td.Module, images: td.Tensor): ClassifierOutputs {
  return td.noGrad(() =>
    td.tidy(() => {
      const features = classifier.callMethodSync("features", [images]) as td.Tensor; // (B, 64)
      const logits = classifier.forwardSync(images) as td.Tensor; // (B, 10)
      const predictions = Array.from(logits.argmax(1).toFloat64Array());
      return { predictions, features: features.double() };
    }),
  );
}

/**
 * The classifier's outputs on the first `count` samples of `dataset` in a seeded order (all
 * when `count` is omitted), with the samples' labels.
 */
export async function classifyDataset(
  classifier: td.Module,
  dataset: td.Dataset,
  options: { count?: number; seed?: number; batchSize?: number } = {},
): Promise<ClassifierOutputs & { labels: number[] }> {
  const count = Math.min(options.count ?? dataset.length, dataset.length);
  const loader = new td.DataLoader(dataset, { batchSize: options.batchSize ?? 500, shuffle: options.seed !== undefined, seed: options.seed ?? 0, dropLast: false });
  const predictions: number[] = [];
  const labels: number[] = [];
  const features: td.Tensor[] = [];
  while (labels.length < count) {
    const batch = await loader.next();
    const take = Math.min(batch.indices.length, count - labels.length);
    const images = batch.images.narrow(0, 0, take); // (take, 1, 32, 32)
    const out = classify(classifier, images);
    images.dispose();
    batch.images.dispose();
    predictions.push(...out.predictions);
    labels.push(...batch.labels!.slice(0, take));
    features.push(out.features);
  }
  const all = td.cat(features); // (count, 64)
  features.forEach((f) => f.dispose());
  return { predictions, labels, features: all };
}

/** The fraction of `predictions` equal to `labels`. */
export function accuracy(predictions: number[], labels: number[]): number {
  return predictions.filter((p, i) => p === labels[i]).length / predictions.length;
}
