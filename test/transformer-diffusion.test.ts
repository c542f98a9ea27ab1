/**
 * DiT training and sampling, Simple Diffusion's U-ViT and multiscale loss, against the references
 * of scripts/fixtures/transformer_diffusion_refs.py (test/fixtures/transformer-diffusion,
 * test/fixtures/models/tiny-dit-pixel, test/fixtures/models/tiny-uvit).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { fixtures, maxRelativeError, readFixture } from "./helpers";
import { runCli } from "./helpers/cli";

const DIT_DIR = path.join(fixtures, "models", "tiny-dit-pixel");
const UVIT_DIR = path.join(fixtures, "models", "tiny-uvit");
const f32 = (values: number[], shape: number[]) => td.tensor(Float64Array.from(values), shape, { dtype: "float32" });

interface VlbCase { name: string; timesteps: number[]; shape: number[]; x0: number[]; xt: number[]; noise: number[]; epsilon: number[]; variance_values: number[]; vlb_bits: number[]; mse: number; hybrid_loss: number }
interface MultiscaleCase { name: string; shape: number[]; base_resolution: number; prediction: number[]; target: number[]; loss: number }
interface SamplingCase { name: string; scheduler: Record<string, unknown>; labels: number[]; guidance_scale: number; steps: number; seed: number; use_clipped_model_output?: boolean; timesteps: number[]; latents: number[][] }

const vlbRef = readFixture<{ cases: VlbCase[] }>("transformer-diffusion/vlb_ref.json");
const multiscaleRef = readFixture<{ cases: MultiscaleCase[] }>("transformer-diffusion/multiscale_ref.json");
const samplingRef = readFixture<{ cases: SamplingCase[] }>("transformer-diffusion/sampling_ref.json");

/** A batch as the Trainer hands its `loss`. */
function trainBatch(x0: td.Tensor, noisy: td.Tensor, timesteps: number[]): td.TrainBatch {
  return { images: x0, indices: [], cond: undefined, drop: [], dropDraws: [], x0, noisy, timesteps } as unknown as td.TrainBatch;
}

describe("improved DDPM's hybrid loss (L_simple + λ·L_vlb)", () => {
  it.each(vlbRef.cases.map((c) => [c.name, c] as const))("the VLB terms and the loss equal improved-diffusion's on %s", (_, c) => {
    const before = td.memory().numTensors;
    td.tidy(() => {
      const x0 = f32(c.x0, c.shape);
      const xt = f32(c.xt, c.shape);
      const epsilon = f32(c.epsilon, c.shape);
      const v = f32(c.variance_values, c.shape);
      const bits = td.vlbTerms({ epsilon, varianceValues: v, x0, xt, timesteps: c.timesteps, coefficients: td.diffusionCoefficients() });
      expect(bits.shape).toEqual([c.timesteps.length]);
      const got = Array.from(bits.toFloat64Array());
      got.forEach((value, i) => expect(Math.abs(value - c.vlb_bits[i]), `t=${c.timesteps[i]}`).toBeLessThanOrEqual(1e-5 + 1e-4 * Math.abs(c.vlb_bits[i])));
      const loss = td.hybridLoss();
      const value = loss(td.cat([epsilon, v], 1), f32(c.noise, c.shape), trainBatch(x0, xt, c.timesteps));
      expect(value.ndim).toBe(0);
      expect(Math.abs(value.item() - c.hybrid_loss)).toBeLessThanOrEqual(1e-4 * c.hybrid_loss);
      expect(Math.abs(loss.last!.mse - c.mse)).toBeLessThanOrEqual(1e-5 * c.mse);
      const meanBits = c.vlb_bits.reduce((a, b) => a + b, 0) / c.vlb_bits.length;
      expect(Math.abs(loss.last!.vlb - meanBits)).toBeLessThanOrEqual(1e-4 * meanBits);
    });
    expect(td.memory().numTensors).toBe(before);
  });

  it("trains ε through L_simple only and the variance channels through L_vlb only (stop-gradient mean)", () => {
    const c = vlbRef.cases[0];
    td.tidy(() => {
      const x0 = f32(c.x0, c.shape);
      const target = f32(c.noise, c.shape);
      const prediction = td.cat([f32(c.epsilon, c.shape), f32(c.variance_values, c.shape)], 1).requiresGrad_();
      td.hybridLoss()(prediction, target, trainBatch(x0, f32(c.xt, c.shape), c.timesteps)).backward();
      const grad = prediction.grad!;
      const n = target.numel;
      const mseGrad = f32(c.epsilon, c.shape).sub(target).mul(2 / n); // d mean((ε-target)²) / dε
      expect(maxRelativeError(grad.narrow(1, 0, 1).toFloat64Array(), mseGrad.toFloat64Array())).toBeLessThanOrEqual(1e-6);
      expect(grad.narrow(1, 1, 1).abs().sum().item()).toBeGreaterThan(0);
    });
  });

  it("rejects a model without variance channels and a batch without x0/x_t/t, naming the fix", () => {
    const loss = td.hybridLoss();
    td.tidy(() => {
      const x = td.zeros([2, 1, 4, 4]);
      expect(() => loss(x, x, trainBatch(x, x, [1, 2]))).toThrow(/2·C = 2 channels .* learned sigma/);
      expect(() => loss(td.zeros([2, 2, 4, 4]), x, { images: x } as unknown as td.TrainBatch)).toThrow(/lacks x0, noisy or timesteps/);
    });
  });

  it("lowers both terms when a tiny adaLN-Zero DiT trains on it through the Trainer", async () => {
    const before = td.memory().numTensors;
    await td.tidyAsync(async () => {
      const model = td.load(path.join(DIT_DIR, "transformer", "model.pt"));
      // adaLN-Zero: zero modulation and output layers, as scripts/build_dit_init.py initializes
      td.noGrad(() => {
        for (const [name, p] of Object.entries(model.namedParameters())) {
          if (/norm1\.linear\.|proj_out_[12]\./.test(name)) p.zero_();
        }
      });
      // 32 images of 8×8: class k a level k/4.5 - 1 with a stripe
      const g = new td.Generator(3);
      const labels = Array.from({ length: 32 }, (_, i) => i % 10);
      const levels = td.tensor(labels.map((k) => k / 4.5 - 1), [32, 1, 1, 1]);
      const stripe = td.tensor(Array.from({ length: 8 }, (_, i) => (i % 2 ? 0.3 : -0.3)), [1, 1, 1, 8]);
      const images = levels.add(stripe).clamp(-1, 1).add(td.randn([32, 1, 8, 8], { generator: g }).mul(0.02)).clamp(-1, 1);
      // a fixed evaluation batch: noise and timesteps drawn once, t ≥ 10 (the decoder NLL at t = 0 and the KL
      // of the first few steps, ~2.4 and ~0.3 bits against < 0.1 elsewhere, need sub-bin precision of x₀ and
      // move little in a few steps: they would hide the rest)
      const evalT = [10, 20, 40, 60, 100, 150, 250, 300, 500, 700, 900, 999];
      const evalX0 = images.narrow(0, 0, evalT.length);
      const evalNoise = td.randn(evalX0.shape, { generator: g });
      const { noisy } = td.ddpmTargets("epsilon", evalX0, evalNoise, evalT, td.alphasCumprodFor());
      const evalLabels = td.tensor(labels.slice(0, evalT.length), [evalT.length], { dtype: "int64" });
      const loss = td.hybridLoss();
      const terms = () => td.noGrad(() => td.tidy(() => {
        model.eval();
        const out = model.forwardSync(noisy, td.tensor(evalT, [evalT.length], { dtype: "int64" }), evalLabels) as td.Tensor;
        loss(out.float(), evalNoise, trainBatch(evalX0, noisy, evalT));
        return { ...loss.last! };
      }));
      const start = terms();
      await td.train(model, td.tensorDataset(images, { labels }), {
        objective: "epsilon", steps: 80, batchSize: 16, lr: 2e-3, seed: 1, loss, maxGradNorm: 1,
        condition: td.labelCondition({ nullLabel: 10 }), conditionDropout: 0.1,
      });
      const end = terms();
      expect(end.mse).toBeLessThan(0.8 * start.mse);
      expect(end.vlb).toBeLessThan(0.8 * start.vlb);
      model.dispose();
    });
    expect(td.memory().numTensors).toBe(before);
  }, 30_000);
});

describe("Simple Diffusion's multiscale loss", () => {
  it.each(multiscaleRef.cases.map((c) => [c.name, c] as const))("equals Σ (1/s)·MSE of avg-pooled versions in PyTorch on %s", (_, c) => {
    td.tidy(() => {
      const got = td.multiscaleMSE(f32(c.prediction, c.shape), f32(c.target, c.shape), { baseResolution: c.base_resolution }).item();
      expect(Math.abs(got - c.loss)).toBeLessThanOrEqual(1e-5 * c.loss);
      expect(td.multiscaleLoss({ baseResolution: c.base_resolution })(f32(c.prediction, c.shape), f32(c.target, c.shape), {} as td.TrainBatch).item()).toBeCloseTo(got, 6);
    });
  });

  it("takes the resolutions from the image side down to the base, and refuses a base that is not on the way", () => {
    expect(td.multiscaleResolutions(64, 32)).toEqual([64, 32]);
    expect(td.multiscaleResolutions(64, 16)).toEqual([64, 32, 16]);
    expect(() => td.multiscaleResolutions(64, 24)).toThrow(/base resolution 24/);
  });
});

describe("class-conditional sampling (DiT)", () => {
  it.each(samplingRef.cases.map((c) => [c.name, c] as const))("equals the diffusers scheduler reimplementations step by step: %s", async (_, c) => {
    const pipe = td.ClassConditionalPipeline.fromPretrained(DIT_DIR);
    const before = td.memory().numTensors;
    const steps: number[][] = [];
    const timesteps: number[] = [];
    const { images, classLabels } = await pipe.generate({
      classLabels: c.labels, guidanceScale: c.guidance_scale, numInferenceSteps: c.steps, scheduler: td.schedulerFromConfig(c.scheduler),
      useClippedModelOutput: c.use_clipped_model_output, generator: new td.Generator(c.seed), onProgress: ({ latents, timestep }) => { steps.push(Array.from(latents.toFloat64Array())); timesteps.push(timestep); },
    });
    expect(classLabels).toEqual(c.labels);
    expect(timesteps).toEqual(c.timesteps);
    steps.forEach((got, i) => expect(maxRelativeError(got, c.latents[i]), `step ${i}`).toBeLessThanOrEqual(1e-4));
    const expected = td.tidy(() => f32(c.latents.at(-1)!, images.shape).div(2).add(0.5).clamp(0, 1));
    expect(maxRelativeError(images.toFloat64Array(), expected.toFloat64Array())).toBeLessThanOrEqual(1e-4);
    images.dispose();
    expected.dispose();
    expect(td.memory().numTensors).toBe(before);
    pipe.model.dispose();
  });

  it("names bad generate options before sampling", async () => {
    const pipe = td.ClassConditionalPipeline.fromPretrained(DIT_DIR);
    const before = td.memory().numTensors;
    await expect(pipe.generate({ classLabels: [1], numImagesPerLabel: 0 })).rejects.toThrow(/numImagesPerLabel/);
    await expect(pipe.generate({ classLabels: [1], numInferenceSteps: 0 })).rejects.toThrow(/numInferenceSteps/);
    await expect(pipe.generate({ classLabels: [1], guidanceChannels: 2 })).rejects.toThrow(/guidanceChannels/);
    await expect(pipe.generate({ classLabels: [1], useClippedModelOutput: "yes" as never })).rejects.toThrow('Expected boolean for useClippedModelOutput but received "yes"');
    await expect(pipe.generate({ classLabels: ["hat"] })).rejects.toThrow(/class "hat" is not one of the model's labels/);
    expect(td.memory().numTensors).toBe(before);
    pipe.model.dispose();
  });

  it("reads labels by id or by the model's id2label names, synonyms included", () => {
    const names = td.labelNames({ "0": "T-shirt/top, t-shirt", "7": "Sneaker" });
    expect(names).toEqual({ "t-shirt/top": 0, "t-shirt": 0, sneaker: 7 });
    expect(td.classLabelIds(["SNEAKER", 3, "5", " t-shirt "], names, 10)).toEqual([7, 3, 5, 0]);
    expect(() => td.classLabelIds("hat", names, 10)).toThrow(/class "hat" is not one of the model's labels \(t-shirt\/top, t-shirt, sneaker\)/);
    expect(() => td.classLabelIds(10, names, 10)).toThrow(/class id in \[0, 9\]/);
  });

  it("guides only the leading ε channels and keeps the conditional pass's other channels", () => {
    td.tidy(() => {
      const u = td.tensor([[[[1]], [[10]], [[100]], [[1000]]]]); // (1, 4, 1, 1)
      const c = td.tensor([[[[2]], [[20]], [[200]], [[2000]]]]);
      const guided = td.guideEpsilon(td.cat([u, c]), new td.ClassifierFreeGuidance(3), 1);
      expect(Array.from(guided.toFloat32Array())).toEqual([4, 20, 200, 2000]);
      expect(Array.from(td.guideEpsilon(td.cat([u, c]), new td.ClassifierFreeGuidance(3), 2).toFloat32Array())).toEqual([4, 40, 200, 2000]);
    });
  });

  it("generate --class takes ids and names; a prompt or a missing --class is a one-line error", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-dit-"));
    const ok = await runCli(["generate", "--model", DIT_DIR, "--class", "sneaker,2", "--steps", "2", "--seed", "0", "--out", path.join(dir, "img.png"), "--json"]);
    fs.rmSync(dir, { recursive: true, force: true });
    expect(ok.code).toBe(0);
    const result = JSON.parse(ok.stdout);
    expect(result.classLabels).toEqual([7, 2]);
    expect(result.images.length).toBe(2);
    expect(result.scheduler).toBe("DDPMScheduler");
    const missing = await runCli(["generate", "--model", DIT_DIR, "--steps", "1"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/--class is required: .* is class-conditional \(labels: t-shirt\/top/);
    const prompt = await runCli(["generate", "a bag", "--model", DIT_DIR]);
    expect(prompt.stderr).toMatch(/--prompt: .* is class-conditional: it takes --class/);
    const text = await runCli(["generate", "--model", path.join(fixtures, "models", "tiny-sd"), "--class", "3"]);
    expect(text.stderr).toMatch(/--class: .* is not a class-conditional model/);
  });
});

describe("U-ViT (Simple Diffusion)", () => {
  it("the exported module equals its PyTorch module", async () => {
    const ref = JSON.parse(fs.readFileSync(path.join(UVIT_DIR, "reference.json"), "utf8"));
    const uvit = td.loadComponent(UVIT_DIR) as td.UViT2DModel;
    expect(uvit.className).toBe("UViT2DModel");
    expect(uvit.nullClassLabel).toBe(10);
    for (const c of ref.cases) {
      const [x, t, y] = c.inputs.map((i: { dtype: string; shape: number[]; data: number[] }) =>
        i.dtype === "int64" ? td.tensor(BigInt64Array.from(i.data, BigInt), i.shape) : f32(i.data, i.shape));
      const out = await uvit.forward({ hiddenStates: x, timestep: t, classLabels: y });
      expect(out.shape).toEqual(c.outputs[0].shape);
      expect(maxRelativeError(out.toFloat64Array(), c.outputs[0].data)).toBeLessThanOrEqual(1e-5);
      [x, t, y, out].forEach((v) => v.dispose());
    }
    uvit.dispose();
  });

  it("trains through the Trainer on the shifted cosine schedule with the multiscale loss", async () => {
    const model = td.load(path.join(UVIT_DIR, "model.pt"));
    const images = td.randn([8, 1, 16, 16], { generator: new td.Generator(2) }).clamp(-1, 1);
    const { losses } = await td.train(model, td.tensorDataset(images, { labels: [0, 1, 2, 3, 4, 5, 6, 7] }), {
      objective: "v_prediction", noiseSchedule: { betaSchedule: "shifted_cosine", resolution: 16, baseResolution: 8 },
      loss: td.multiscaleLoss({ baseResolution: 4 }), steps: 3, batchSize: 4, lr: 1e-3,
      condition: td.labelCondition({ nullLabel: 10 }), conditionDropout: 0.1,
    });
    expect(losses.length).toBe(3);
    expect(losses.every(Number.isFinite)).toBe(true);
    model.dispose();
    // the shift moves log-SNR by 2·log(base/resolution) at every time: ᾱ falls at equal t
    const plain = td.alphasCumprodFor({ betaSchedule: "shifted_cosine", resolution: 16, baseResolution: 16 });
    const shifted = td.alphasCumprodFor({ betaSchedule: "shifted_cosine", resolution: 16, baseResolution: 8 });
    const logSnr = (a: number) => Math.log(a / (1 - a));
    expect(logSnr(shifted[499]) - logSnr(plain[499])).toBeCloseTo(2 * Math.log(8 / 16), 4);
  });
});
