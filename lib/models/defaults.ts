/**
 * A model directory's recommended sampling settings (`model_index.json`'s
 * `torch_diffusion.defaults`), read without libtorch so `torch-diffusion info` can show them.
 */
import { isTimestepInterval } from "../errors";
import type { ModelIndex } from "./model";

/**
 * The sampling settings a model directory recommends, from `model_index.json`'s
 * `torch_diffusion.defaults` (`{"guidance_scale": 2, "num_inference_steps": 30, "scheduler":
 * "DDIMScheduler", "guidance_interval": [200, 800]}`). Pipelines and the command line use them when the caller gives no value
 * of their own (the caller's always win), and fall back to diffusers' 7.5 and 50 when a model
 * names none. `scheduler` becomes the model's default scheduler (on its scheduler config).
 */
export interface ModelDefaults {
  guidanceScale?: number;
  numInferenceSteps?: number;
  /** A diffusers scheduler class name. */
  scheduler?: string;
  /** Text-to-image guidance only at timesteps in [low, high] (ClassifierFreeGuidance's interval). */
  guidanceInterval?: [number, number];
}

/**
 * The defaults a model_index.json records, checked; throws naming the bad key.
 * @example modelDefaults({ torch_diffusion: { defaults: { guidance_scale: 2 } } }) // { guidanceScale: 2 }
 */
export function modelDefaults(index: ModelIndex): ModelDefaults {
  const raw = index.torch_diffusion?.defaults as unknown;
  if (raw === undefined) return {};
  const where = 'model_index.json "torch_diffusion.defaults"';
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new Error(`${where} must be an object but is ${JSON.stringify(raw)}`);
  const d = raw as Record<string, unknown>;
  const out: ModelDefaults = {};
  if (d.guidance_scale !== undefined) {
    if (typeof d.guidance_scale !== "number" || !Number.isFinite(d.guidance_scale)) throw new Error(`${where}.guidance_scale must be a number but is ${JSON.stringify(d.guidance_scale)}`);
    out.guidanceScale = d.guidance_scale;
  }
  if (d.num_inference_steps !== undefined) {
    if (!Number.isInteger(d.num_inference_steps) || (d.num_inference_steps as number) < 1) throw new Error(`${where}.num_inference_steps must be a positive integer but is ${JSON.stringify(d.num_inference_steps)}`);
    out.numInferenceSteps = d.num_inference_steps as number;
  }
  if (d.guidance_interval !== undefined) {
    const v = d.guidance_interval;
    // JSON holds no NaN or Infinity, so this is the guider's own check.
    if (!isTimestepInterval(v)) throw new Error(`${where}.guidance_interval must be [low, high] timesteps with low ≤ high but is ${JSON.stringify(v)}`);
    out.guidanceInterval = [v[0], v[1]];
  }
  if (d.scheduler !== undefined) {
    if (typeof d.scheduler !== "string" || d.scheduler === "") throw new Error(`${where}.scheduler must be a scheduler class name but is ${JSON.stringify(d.scheduler)}`);
    out.scheduler = d.scheduler;
  }
  return out;
}
