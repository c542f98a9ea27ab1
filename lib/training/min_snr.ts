/**
 * Min-SNR-γ loss weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
 * Strategy"), as diffusers' training scripts apply it (`--snr_gamma`): each sample's MSE is
 * weighted by min(SNR_t, γ) / SNR_t for ε-prediction, min(SNR_t, γ) / (SNR_t + 1) for
 * v-prediction and min(SNR_t, γ) for x₀ (sample) prediction, SNR_t = ᾱ_t / (1 − ᾱ_t). High-noise
 * steps keep weight ~1, low-noise ones (easy to denoise, large SNR) are capped, so the steps stop
 * competing for the network's capacity. γ = 5 is the paper's value.
 */
import { assertNumber } from "../errors";
import { tensor, tidy, type Tensor } from "../tensor";
import { alphasCumprodFor, type Objective, type TrainNoiseSchedule } from "./objectives";
import type { LossFn, TrainBatch } from "./options";

export interface MinSnrLossOptions {
  /** The cap γ on the SNR. Default 5. */
  gamma?: number;
  /** The objective trained (the weight's denominator depends on it). */
  objective: Extract<Objective, "epsilon" | "v_prediction" | "sample">;
  /** The Trainer's noise schedule (the same object). Default: the Trainer's default (linear, 1000 steps). */
  noiseSchedule?: TrainNoiseSchedule;
}

/**
 * The per-timestep weights, index t: min(SNR_t, γ) over SNR_t, SNR_t + 1 or 1 as the objective asks,
 * from the ᾱ_t the Trainer noises with (`alphasCumprodFor`).
 * @example minSnrWeights({ objective: "epsilon" })[999] // ≈ 1: at high noise SNR < γ
 */
export function minSnrWeights(options: MinSnrLossOptions): number[] {
  const gamma = options.gamma ?? 5;
  assertNumber(gamma, "minSnrLoss gamma");
  if (!(gamma > 0)) throw new Error(`minSnrLoss: gamma must be > 0 but got ${gamma}`);
  const denominators = { epsilon: (snr: number) => snr, v_prediction: (snr: number) => snr + 1, sample: () => 1 };
  const denominator = denominators[options.objective];
  if (!denominator) throw new Error(`minSnrLoss: objective must be "epsilon", "v_prediction" or "sample" but got ${JSON.stringify(options.objective)}`);
  return alphasCumprodFor(options.noiseSchedule).map((alphaCumprod) => {
    const snr = alphaCumprod / (1 - alphaCumprod);
    return Math.min(snr, gamma) / denominator(snr);
  });
}

/**
 * The min-SNR-γ weighted MSE as a Trainer `loss`: the mean over the batch of each sample's MSE
 * times its timestep's weight (diffusers' `--snr_gamma` loss).
 * @example
 * const noiseSchedule = { betaSchedule: "squaredcos_cap_v2" } as const;
 * await td.train(model, data, { objective: "v_prediction", noiseSchedule, loss: td.minSnrLoss({ objective: "v_prediction", noiseSchedule }), steps: 1000, batchSize: 32 });
 */
export function minSnrLoss(options: MinSnrLossOptions): LossFn & { weights: number[] } {
  const weights = minSnrWeights(options);
  const fn = ((prediction: Tensor, target: Tensor, batch: TrainBatch): Tensor => {
    const { timesteps } = batch;
    if (!timesteps) throw new Error("minSnrLoss: the batch has no timesteps (use it as the Trainer's loss with a DDPM objective, not flow matching)");
    if (prediction.shape.join() !== target.shape.join()) throw new Error(`minSnrLoss: prediction [${prediction.shape}] and target [${target.shape}] differ`);
    if (timesteps.length !== prediction.shape[0]) throw new Error(`minSnrLoss: ${timesteps.length} timesteps for a batch of ${prediction.shape[0]}`);
    return tidy(() => {
      const perSample = prediction.sub(target).square().flatten(1).mean([1]); // (B)
      const w = tensor(timesteps.map((t) => {
        if (!(t >= 0 && t < weights.length)) throw new Error(`minSnrLoss: timestep ${t} is outside the schedule's 0..${weights.length - 1}`);
        return weights[t];
      })).to(perSample.device);
      return perSample.mul(w).mean();
    });
  }) as LossFn & { weights: number[] };
  fn.weights = weights;
  return fn;
}
