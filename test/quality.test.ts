import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { CLASSIFIER_PATH, classify, toClassifierInput } from "../scripts/bench/classifier";
import { frechetDistance, frechetDistanceOf, gaussianFit } from "../scripts/bench/frechet";
import { readFixture } from "./helpers";
import { runCli } from "./helpers/cli";

/** Written by scripts/fixtures/frechet_ref.py (numpy float64). */
interface FrechetRefs {
  a: number[][];
  b: number[][];
  fd_ab: number;
  fd_ba: number;
  fd_aa: number;
  mean_term: number;
}

const refs = readFixture<FrechetRefs>("frechet_ref.json");
const features = (rows: number[][]) => td.tensor(Float64Array.from(rows.flat()), [rows.length, rows[0].length], { dtype: "float64" });
const relative = (got: number, ref: number) => Math.abs(got - ref) / Math.abs(ref);

describe("Fréchet distance (scripts/bench/frechet.ts)", () => {
  it("matches numpy on two 200×64 feature sets, in both orders", () => {
    const before = td.memory().numTensors;
    td.tidy(() => {
      const [a, b] = [features(refs.a), features(refs.b)];
      expect(relative(frechetDistanceOf(a, b), refs.fd_ab)).toBeLessThanOrEqual(1e-6);
      expect(relative(frechetDistanceOf(b, a), refs.fd_ba)).toBeLessThanOrEqual(1e-6);
    });
    expect(td.memory().numTensors).toBe(before);
  });

  it("is ~0 for a set against itself and reduces to |μ1 − μ2|² for shifted copies", () => {
    td.tidy(() => {
      const a = features(refs.a);
      const fit = gaussianFit(a);
      expect(Math.abs(frechetDistance(fit, fit))).toBeLessThan(1e-8 * refs.fd_ab);
      expect(Math.abs(refs.fd_aa)).toBeLessThan(1e-8 * refs.fd_ab);
      const shifted = a.add(td.tensor(Array.from({ length: 64 }, (_, i) => (i % 3) - 1), undefined, { dtype: "float64" })); // |shift|² = 43
      expect(frechetDistanceOf(a, shifted)).toBeCloseTo(43, 6);
    });
  });

  it("takes float32 features and fits an unbiased covariance", () => {
    td.tidy(() => {
      const x = td.tensor([[1, 2], [3, 6], [5, 4]]); // float32 (3, 2)
      const { mean, cov } = gaussianFit(x);
      expect(mean.dtype).toBe("float64");
      expect(mean.toArray()).toEqual([3, 4]);
      expect(cov.toArray()).toEqual([[4, 2], [2, 4]]);
      expect(() => gaussianFit(td.zeros([1, 2]))).toThrow("gaussianFit: expected (N ≥ 2, D) features but received shape [1, 2]");
    });
  });
});

describe("the built-in model", () => {
  // 30 DDIM steps: with clip_sample on, the images collapsed at 30+ steps, which 10 steps did not show.
  it("draws what it is asked: the Fashion-MNIST classifier recognizes most images of each prompt", async () => {
    const pipe = td.Text2ImagePipeline.fromPretrained(path.join(__dirname, "..", "models", "builtin"));
    const classifier = td.load(CLASSIFIER_PATH);
    const recognized: Record<string, number> = {};
    for (const label of [1, 7, 8]) { // trouser, sneaker, bag
      const prompt = td.fashionMnistCaption(label, "a photo of {a} {name}");
      const { images } = await pipe.generate({ prompt, numImagesPerPrompt: 6, guidanceScale: 2, numInferenceSteps: 30, generator: new td.Generator(label) });
      const { predictions, features } = td.tidy(() => classify(classifier, toClassifierInput(images)));
      features.dispose();
      images.dispose();
      recognized[prompt] = predictions.filter((p) => p === label).length;
    }
    for (const [prompt, count] of Object.entries(recognized)) expect(count, `${prompt}: ${count} of 6 recognized`).toBeGreaterThanOrEqual(4);
  });
});

describe("the built-in DiT", () => {
  it("draws the class it is asked for, by id or name; generate --class without --model uses it", async () => {
    const pipe = new td.ClassConditionalPipeline(td.loadModel(td.BUILTIN_DIT_MODEL_NAME));
    expect(pipe.labelIds(["sneaker", "Ankle boot", 1])).toEqual([7, 9, 1]);
    const classifier = td.load(CLASSIFIER_PATH);
    const labels = [1, 7, 8]; // trouser, sneaker, bag
    const { images } = await pipe.generate({ classLabels: labels, numImagesPerLabel: 6, numInferenceSteps: 50, generator: new td.Generator(0) });
    const { predictions, features } = td.tidy(() => classify(classifier, toClassifierInput(images)));
    features.dispose();
    images.dispose();
    labels.forEach((label, i) => {
      const recognized = predictions.slice(6 * i, 6 * i + 6).filter((p) => p === label).length;
      expect(recognized, `class ${label}: ${recognized} of 6 recognized`).toBeGreaterThanOrEqual(4);
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-builtin-dit-"));
    const cli = await runCli(["generate", "--class", "sneaker", "--steps", "2", "--out", path.join(dir, "sneaker.png"), "--json"]);
    fs.rmSync(dir, { recursive: true, force: true });
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stderr).toMatch(/^generate: 1 image 32×32 of class 7/);
    expect(JSON.parse(cli.stdout)).toMatchObject({ model: expect.stringMatching(/models[/\\]builtin-dit$/), classLabels: [7] });
  });
});
