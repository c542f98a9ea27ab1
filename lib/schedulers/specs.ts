/**
 * Config spec fragments shared by several scheduler families (beta schedule, thresholding,
 * spacing, sigma kinds), with diffusers' defaults as parameters where classes differ.
 */
import { Spec, bool, int, num, numArrayOrNull, oneOf } from "./config";
import { BETA_SCHEDULES } from "./schedules";
import { TIMESTEP_SPACINGS } from "./sigmas";

/** Beta schedules named in error messages: diffusers' own (shifted_cosine is our extension). */
const LISTED_BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"] as const;

const onlyShifted = (c: Record<string, unknown>) => c.beta_schedule === "shifted_cosine";

/**
 * `num_train_timesteps`, `beta_start`, `beta_end`, `beta_schedule`, `trained_betas`, and the
 * shifted-cosine keys (`resolution`, `base_resolution`, `base_resolution_high`, `logsnr_min`,
 * `logsnr_max`; present in the config only when `beta_schedule` is "shifted_cosine").
 *
 * @example
 * const spec = betaSpec(0.00085, 0.012, "scaled_linear");
 */
export function betaSpec(start = 0.0001, end = 0.02, schedule = "linear"): Spec {
  return {
    num_train_timesteps: int(1000, { min: 1 }),
    beta_start: num(start, { min: 0 }),
    beta_end: num(end, { min: 0 }),
    beta_schedule: oneOf(BETA_SCHEDULES, schedule, { listed: LISTED_BETA_SCHEDULES }),
    trained_betas: numArrayOrNull(),
    resolution: { ...num(64, { gt: 0 }), onlyIf: onlyShifted },
    base_resolution: { ...num(64, { gt: 0 }), onlyIf: onlyShifted },
    base_resolution_high: { ...num(null, { gt: 0, nullable: true }), onlyIf: onlyShifted },
    logsnr_min: { ...num(-15), onlyIf: onlyShifted },
    logsnr_max: { ...num(15), onlyIf: onlyShifted },
  };
}

/** `prediction_type` with diffusers' three values (flow schedulers use their own). @example predictionSpec() */
export const predictionSpec = (values: readonly string[] = ["epsilon", "sample", "v_prediction"], def = "epsilon"): Spec => ({
  prediction_type: oneOf(values, def),
});

/** Imagen dynamic thresholding keys. @example thresholdSpec() */
export const thresholdSpec = (): Spec => ({
  thresholding: bool(false),
  dynamic_thresholding_ratio: num(0.995, { gt: 0, max: 1 }),
  sample_max_value: num(1.0, { gt: 0 }),
});

/** `clip_sample`, `clip_sample_range`. @example clipSpec(true) */
export const clipSpec = (clip: boolean): Spec => ({
  clip_sample: bool(clip),
  clip_sample_range: num(1.0, { gt: 0 }),
});

/** `timestep_spacing`, `steps_offset`. @example spacingSpec("leading") */
export const spacingSpec = (def: string, values: readonly string[] = TIMESTEP_SPACINGS): Spec => ({
  timestep_spacing: oneOf(values, def),
  steps_offset: int(0),
});

/** `use_karras_sigmas`, `use_exponential_sigmas`, `use_beta_sigmas`. @example sigmaKindSpec() */
export const sigmaKindSpec = (): Spec => ({
  use_karras_sigmas: bool(false),
  use_exponential_sigmas: bool(false),
  use_beta_sigmas: bool(false),
});

/** Throws unless at most one of the sigma-kind flags is set (as diffusers' `__init__`). @example checkOneSigmaKind("EulerDiscreteScheduler", { use_karras_sigmas: true }) */
export function checkOneSigmaKind(className: string, c: Record<string, unknown>): void {
  const on = ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"].filter((k) => c[k] === true);
  if (on.length > 1)
    throw new Error(`${className}: only one of config.use_karras_sigmas, config.use_exponential_sigmas, config.use_beta_sigmas can be true but received ${on.map((k) => `${k}=true`).join(", ")}`);
}

/** Which sigma schedule the flags select. */
export type SigmaKind = "karras" | "exponential" | "beta" | null;

/** The selected sigma kind. @example sigmaKind({ use_karras_sigmas: true }) // "karras" */
export function sigmaKind(c: { use_karras_sigmas?: boolean; use_exponential_sigmas?: boolean; use_beta_sigmas?: boolean }): SigmaKind {
  return c.use_karras_sigmas ? "karras" : c.use_exponential_sigmas ? "exponential" : c.use_beta_sigmas ? "beta" : null;
}
