/**
 * Improved DDPM's hybrid loss for models that learn their variance (Nichol & Dhariwal 2021,
 * "Improved Denoising Diffusion Probabilistic Models", §3.1), as DiT trains with it (Peebles &
 * Xie 2023, §3.1 "Diffusion formulation"): the model outputs 2C channels, ε then v, and
 *
 *   L_hybrid = L_simple + λ·L_vlb,   λ = 0.001,
 *
 * where L_simple = ‖ε − ε_θ‖² and L_vlb = Σ_t L_t is the variational bound: for t > 0
 * L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ‖ p_θ(x_{t-1} | x_t)), at t = 0 the discretized Gaussian
 * decoder's −log p_θ(x_0 | x_1), in bits per dimension. p_θ has the learned-range variance
 * (eq. 15) Σ_θ = exp(v' log β_t + (1 − v') log β̃_t), v' = (v + 1) / 2 (the model's raw output in
 * [-1, 1] mapped to [0, 1], as improved DDPM's and DiT's code do), and the mean from ε_θ. The mean
 * in L_vlb uses a stop-gradient ε_θ, so ε trains through L_simple only and the variance head
 * through L_vlb only (§3.1: "we apply a stop-gradient to the μ_θ(x_t, t) output for the L_vlb term").
 *
 * One uniformly drawn t per sample estimates L_vlb = T·E_t[L_t], so λ·L_vlb is λ·T·L_t: with
 * λ = 0.001 and T = 1000 the weight on the drawn term is 1, which is what the released code
 * (`loss = mse + vb`) computes. The schedule's quantities are float64 from its betas, as the
 * released code's numpy arrays.
 */
import { assertNumber, invalid } from "../errors";
import { where } from "../functional";
import { noiseSchedule } from "../schedulers/schedules";
import { tensor, tidy, type Tensor } from "../tensor";
import { noiseScheduleConfig, type TrainNoiseSchedule } from "./objectives";
import type { LossFn, TrainBatch } from "./options";

/** The posterior and reverse-process coefficients of a discrete schedule, float64 (improved DDPM's `GaussianDiffusion`). */
export interface DiffusionCoefficients {
  numTimesteps: number;
  betas: number[];
  /** log β_t: the learned range's upper end. */
  logBetas: number[];
  /** log β̃_t with β̃_0 replaced by β̃_1 (the posterior's variance is 0 at t = 0): the range's lower end. */
  posteriorLogVarianceClipped: number[];
  /** μ̃_t = coef1·x_0 + coef2·x_t. */
  posteriorMeanCoef1: number[];
  posteriorMeanCoef2: number[];
  /** x_0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε. */
  sqrtRecipAlphasCumprod: number[];
  sqrtRecipm1AlphasCumprod: number[];
}

/**
 * The coefficients of a trainer noise schedule (linear, 1000 steps by default), from its betas in float64.
 * @example const c = diffusionCoefficients({ betaSchedule: "linear" }); c.posteriorLogVarianceClipped[0] === c.posteriorLogVarianceClipped[1]
 */
export function diffusionCoefficients(schedule: TrainNoiseSchedule = {}): DiffusionCoefficients {
  return coefficientsFromBetas(noiseSchedule(noiseScheduleConfig(schedule)).betas);
}

/** {@link DiffusionCoefficients} from betas (float64 arithmetic). @example coefficientsFromBetas([1e-4, 2e-4, 3e-4]) */
export function coefficientsFromBetas(betas: number[]): DiffusionCoefficients {
  const n = betas.length;
  const alphasCumprod: number[] = [];
  let prod = 1;
  for (const b of betas) alphasCumprod.push((prod *= 1 - b));
  const prev = (t: number) => (t === 0 ? 1 : alphasCumprod[t - 1]);
  const posteriorVariance = betas.map((b, t) => (b * (1 - prev(t))) / (1 - alphasCumprod[t]));
  return {
    numTimesteps: n,
    betas: [...betas],
    logBetas: betas.map(Math.log),
    posteriorLogVarianceClipped: posteriorVariance.map((v, t) => Math.log(t === 0 ? posteriorVariance[Math.min(1, n - 1)] : v)),
    posteriorMeanCoef1: betas.map((b, t) => (b * Math.sqrt(prev(t))) / (1 - alphasCumprod[t])),
    posteriorMeanCoef2: betas.map((b, t) => ((1 - prev(t)) * Math.sqrt(1 - b)) / (1 - alphasCumprod[t])),
    sqrtRecipAlphasCumprod: alphasCumprod.map((a) => Math.sqrt(1 / a)),
    sqrtRecipm1AlphasCumprod: alphasCumprod.map((a) => Math.sqrt(1 / a - 1)),
  };
}

/** Per-sample values at `timesteps` as a (B, 1, 1, 1) float32 tensor on `like`'s device. */
function at(values: number[], timesteps: number[], like: Tensor): Tensor {
  const picked = timesteps.map((t) => {
    const v = values[t];
    if (!Number.isInteger(t) || v === undefined) throw invalid(`integer timestep in [0, ${values.length})`, "timesteps", t);
    return v;
  });
  return tensor(Float32Array.from(picked), [picked.length, ...new Array(like.ndim - 1).fill(1)], { device: like.device });
}

/**
 * KL(N(μ₁, e^{lv₁}) ‖ N(μ₂, e^{lv₂})) elementwise, in nats.
 * @example const kl = normalKL(trueMean, trueLogVar, mean, logVar);
 */
export function normalKL(mean1: Tensor, logVar1: Tensor, mean2: Tensor, logVar2: Tensor): Tensor {
  return tidy(() => logVar2.sub(logVar1).add(logVar1.sub(logVar2).exp()).add(mean1.sub(mean2).square().mul(logVar2.neg().exp())).sub(1).mul(0.5));
}

/** Φ(x) ≈ ½(1 + tanh(√(2/π)(x + 0.044715x³))), improved DDPM's approximation. @example approxStandardNormalCdf(tensor([0])) // 0.5 */
export function approxStandardNormalCdf(x: Tensor): Tensor {
  return tidy(() => x.add(x.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI)).tanh().add(1).mul(0.5));
}

/**
 * log-likelihood of data x ∈ [-1, 1] discretized to 256 bins under N(means, e^{2·logScales}),
 * elementwise in nats; the outermost bins reach to ±∞ (improved DDPM's decoder, Ho et al. §3.3).
 * @example const ll = discretizedGaussianLogLikelihood(x0, mean, logVar.mul(0.5));
 */
export function discretizedGaussianLogLikelihood(x: Tensor, means: Tensor, logScales: Tensor): Tensor {
  return tidy(() => {
    const centered = x.sub(means);
    const invStdv = logScales.neg().exp();
    const cdfPlus = approxStandardNormalCdf(centered.add(1 / 255).mul(invStdv));
    const cdfMin = approxStandardNormalCdf(centered.sub(1 / 255).mul(invStdv));
    const logCdfPlus = cdfPlus.clamp(1e-12).log();
    const logOneMinusCdfMin = cdfMin.neg().add(1).clamp(1e-12).log();
    const logCdfDelta = cdfPlus.sub(cdfMin).clamp(1e-12).log();
    return where(x.lt(-0.999), logCdfPlus, where(x.gt(0.999), logOneMinusCdfMin, logCdfDelta));
  });
}

/** Inputs of {@link vlbTerms}: all (B, C, H, W) float32 except `timesteps`. */
export interface VLBInputs {
  /** The model's ε prediction (its first C channels); the caller detaches it for the hybrid loss. */
  epsilon: Tensor;
  /** The model's variance channels v ∈ [-1, 1] (its last C channels). */
  varianceValues: Tensor;
  x0: Tensor;
  xt: Tensor;
  /** One integer timestep per sample. */
  timesteps: number[];
  coefficients: DiffusionCoefficients;
}

/**
 * Improved DDPM's `_vb_terms_bpd`: per sample (B,), the KL between the true posterior
 * q(x_{t-1} | x_t, x_0) and p_θ(x_{t-1} | x_t) for t > 0, or the decoder NLL −log p_θ(x_0 | x_1)
 * for t = 0, averaged over dimensions, in bits. Without clipping of the predicted x_0 (as in training).
 * @example const bits = vlbTerms({ epsilon: eps.detach(), varianceValues: v, x0, xt, timesteps, coefficients: diffusionCoefficients() });
 */
export function vlbTerms(a: VLBInputs): Tensor {
  const c = a.coefficients;
  if (a.timesteps.length !== a.x0.shape[0]) throw new Error(`vlbTerms: ${a.timesteps.length} timesteps for a batch of ${a.x0.shape[0]}`);
  return tidy(() => {
    const t = a.timesteps;
    const like = a.x0;
    const coef1 = at(c.posteriorMeanCoef1, t, like); // (B, 1, 1, 1)
    const coef2 = at(c.posteriorMeanCoef2, t, like);
    const minLog = at(c.posteriorLogVarianceClipped, t, like);
    const maxLog = at(c.logBetas, t, like);
    // 1. the true posterior q(x_{t-1} | x_t, x_0)
    const trueMean = a.x0.mul(coef1).add(a.xt.mul(coef2)); // (B, C, H, W)
    // 2. p_θ: x̂_0 from ε, its posterior mean, and the learned-range log-variance
    const predX0 = a.xt.mul(at(c.sqrtRecipAlphasCumprod, t, like)).sub(a.epsilon.mul(at(c.sqrtRecipm1AlphasCumprod, t, like)));
    const mean = predX0.mul(coef1).add(a.xt.mul(coef2));
    const frac = a.varianceValues.add(1).div(2);
    const logVar = frac.mul(maxLog).add(frac.neg().add(1).mul(minLog)); // (B, C, H, W)
    // 3. KL for t > 0, decoder NLL for t = 0, mean over dimensions, in bits
    const dims = Array.from({ length: like.ndim - 1 }, (_, i) => i + 1);
    const kl = normalKL(trueMean, minLog.expandAs(mean), mean, logVar).mean(dims).div(Math.LN2); // (B,)
    const nll = discretizedGaussianLogLikelihood(a.x0, mean, logVar.mul(0.5)).neg().mean(dims).div(Math.LN2); // (B,)
    const first = tensor(t.map((v) => v === 0), [t.length], { dtype: "bool", device: like.device }); // (B,)
    return where(first, nll, kl);
  });
}

/** The two terms of the last micro-batch a {@link hybridLoss} computed (means over the batch). */
export interface HybridTerms {
  /** L_simple: the ε mean squared error. */
  mse: number;
  /** The drawn timesteps' L_t, bits per dimension (λ·T times it enters the loss). */
  vlb: number;
}

export interface HybridLossOptions {
  /** The Trainer's `noiseSchedule` (the same object): linear over 1000 steps by default. */
  noiseSchedule?: TrainNoiseSchedule;
  /** λ, the weight of L_vlb = T·E_t[L_t]. Default 0.001 (improved DDPM, DiT). */
  lambda?: number;
}

/** A Trainer `loss` that also reports its two terms. */
export type HybridLossFn = LossFn & { coefficients: DiffusionCoefficients; lambda: number; last: HybridTerms | null };

/**
 * L_simple + λ·L_vlb as a Trainer `loss` (objective "epsilon"): the prediction has 2C channels
 * (ε, v) and the target is ε; x_0, x_t and the timesteps come from the batch the Trainer passes.
 * `loss.last` holds the last micro-batch's two terms, for logging.
 * @example
 * const loss = hybridLoss();
 * await td.train(dit, new FashionMNIST({ pad32: true }), { objective: "epsilon", loss, steps: 1000, batchSize: 32,
 *   condition: labelCondition({ nullLabel: 10 }), conditionDropout: 0.1, onStep: () => console.log(loss.last) });
 */
export function hybridLoss(options: HybridLossOptions = {}): HybridLossFn {
  const lambda = options.lambda ?? 0.001;
  assertNumber(lambda, "hybridLoss lambda");
  const coefficients = diffusionCoefficients(options.noiseSchedule);
  const fn = ((prediction: Tensor, target: Tensor, batch: TrainBatch): Tensor => {
    const channels = target.shape[1];
    if (prediction.shape[1] !== 2 * channels) {
      throw new Error(`hybridLoss: the model must output 2·C = ${2 * channels} channels (ε, then the variance values) but gave ${prediction.shape[1]}; build it with learned sigma (out_channels = 2·in_channels)`);
    }
    const { x0, noisy, timesteps } = batch;
    if (!x0 || !noisy || !timesteps) throw new Error('hybridLoss: the batch lacks x0, noisy or timesteps (use it as the Trainer\'s loss with a DDPM objective, "epsilon")');
    return tidy(() => {
      const epsilon = prediction.narrow(1, 0, channels); // (B, C, H, W)
      const varianceValues = prediction.narrow(1, channels, channels); // (B, C, H, W)
      const mse = epsilon.sub(target).square().mean();
      const vlb = vlbTerms({ epsilon: epsilon.detach(), varianceValues, x0, xt: noisy, timesteps, coefficients }).mean();
      fn.last = { mse: mse.item(), vlb: vlb.item() };
      return mse.add(vlb.mul(lambda * coefficients.numTimesteps));
    });
  }) as HybridLossFn;
  fn.coefficients = coefficients;
  fn.lambda = lambda;
  fn.last = null;
  return fn;
}
