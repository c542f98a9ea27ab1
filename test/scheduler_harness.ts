/**
 * Replays scheduler reference trajectories (the format of
 * test/fixtures/diffusers-ref/schedulers.json, see its README.md): timesteps, sigmas,
 * init_noise_sigma, teacher-forced steps and a chained run.
 */
import { tensor, tidy, type Tensor } from "../lib/tensor";
import { schedulerFromConfig, type Scheduler } from "../lib/schedulers";

export interface RefStep {
  t: number;
  sample: number[];
  scaled_input: number[];
  model_output: number[];
  noise: number[] | null;
  prev_sample: number[];
}

export interface RefCase {
  name: string;
  class: string;
  config: Record<string, unknown>;
  num_inference_steps: number;
  set_timesteps_kwargs?: Record<string, unknown>;
  step_kwargs: Record<string, unknown>;
  shape: number[];
  model_output_shape?: number[];
  timesteps: number[];
  sigmas: number[] | null;
  init_noise_sigma: number;
  noise_injection: string | null;
  noise_steps?: number[];
  steps: RefStep[];
  final: number[];
  timestep_tolerance?: number;
}

/** `max |got - ref| / max(1, |ref|)`. */
export function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (got.length !== ref.length) return Infinity;
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = Number(ref[i]);
    const e = Math.abs(got[i] - r) / Math.max(1, Math.abs(r));
    if (!(e <= m)) m = Number.isNaN(e) ? Infinity : e;
  }
  return m;
}

const f32 = (xs: number[], shape: number[]): Tensor => tensor(Float32Array.from(xs.map(Number)), shape);

const CAMEL: Record<string, string> = { eta: "eta", s_churn: "sChurn", s_tmin: "sTmin", s_tmax: "sTmax", s_noise: "sNoise", order: "order", use_clipped_model_output: "useClippedModelOutput" };

export function stepOptions(kwargs: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(kwargs ?? {})) out[CAMEL[k] ?? k] = v;
  return out;
}

export function setupScheduler(c: RefCase): Scheduler {
  const s = schedulerFromConfig({ ...c.config, _class_name: c.class });
  const kw = c.set_timesteps_kwargs ?? {};
  s.setTimesteps(c.num_inference_steps, { mu: kw.mu as number | undefined });
  return s;
}

export interface ReplayReport {
  timestepsMax: number;
  sigmasMax: number;
  initNoiseSigmaErr: number;
  scaledMax: number;
  teacherMax: number;
  chainedMax: number;
}

/** Toy model of the reference loop: 0.2x + 0.1 sin(3x) + 0.01 t/1000. */
export function toy(x: Tensor, t: number): Tensor {
  return tidy(() => x.mul(0.2).add(x.mul(3).sin().mul(0.1)).add(0.01 * t / 1000));
}

export function replay(c: RefCase): ReplayReport {
  const moShape = c.model_output_shape ?? c.shape;
  // schedule
  const s = setupScheduler(c);
  let timestepsMax = 0;
  if (s.timesteps.length !== c.timesteps.length) timestepsMax = Infinity;
  else
    for (let i = 0; i < c.timesteps.length; i++) {
      // float32 timesteps are stored in their shortest decimal form: compare as float32 too
      const r = Number(c.timesteps[i]);
      const d = s.timesteps[i] === Math.fround(r) ? 0 : Math.abs(s.timesteps[i] - r);
      timestepsMax = Math.max(timestepsMax, d);
    }
  let sigmasMax = 0;
  if (c.sigmas) sigmasMax = s.sigmas ? relErr(s.sigmas, c.sigmas.map(Number)) : Infinity;
  else if (s.sigmas && !("sigmas_null_ok" in c)) sigmasMax = 0; // we expose sigmas for more families than diffusers
  const initNoiseSigmaErr = Math.abs(s.initNoiseSigma - c.init_noise_sigma) / Math.max(1, Math.abs(c.init_noise_sigma));
  const opts = stepOptions(c.step_kwargs);
  // teacher-forced
  let scaledMax = 0;
  let teacherMax = 0;
  for (const st of c.steps) {
    tidy(() => {
      const sample = f32(st.sample, c.shape);
      const mo = f32(st.model_output, moShape);
      const scaled = s.scaleModelInput(sample, st.t);
      scaledMax = Math.max(scaledMax, relErr(scaled.toFloat32Array(), st.scaled_input));
      const noise = st.noise ? f32(st.noise, c.shape) : null;
      const out = s.step(mo, st.t, sample, { ...opts, noise });
      teacherMax = Math.max(teacherMax, relErr(out.prevSample.toFloat32Array(), st.prev_sample));
    });
  }
  s.dispose();
  // chained
  const s2 = setupScheduler(c);
  let x = f32(c.steps[0].sample, c.shape);
  let chainedMax = 0;
  for (let i = 0; i < c.steps.length; i++) {
    const st = c.steps[i];
    const next = tidy(() => {
      const scaled = s2.scaleModelInput(x, st.t);
      let mo = toy(scaled, st.t);
      if (moShape.length && moShape[1] !== c.shape[1]) mo = mo.repeat([1, moShape[1] / c.shape[1], 1, 1]);
      const noise = st.noise ? f32(st.noise, c.shape) : null;
      return s2.step(mo, st.t, x, { ...opts, noise }).prevSample;
    });
    x.dispose();
    x = next;
  }
  chainedMax = relErr(x.toFloat32Array(), c.final);
  x.dispose();
  s2.dispose();
  return { timestepsMax, sigmasMax, initNoiseSigmaErr, scaledMax, teacherMax, chainedMax };
}
