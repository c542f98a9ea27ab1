/**
 * What every diffusion pipeline shares: the denoising loop (scheduler + guider + model calls,
 * one tidy scope per step), abort checks and per-call schedulers. Prompt encoding, the image
 * codec and shapes belong to the model object (models/model.ts).
 *
 * Inference records no autograd history (diffusers pipelines run under torch.no_grad):
 * loaded modules' parameters require grad, and a recorded graph would keep every step's
 * activations alive until the images are freed. Grad mode is switched off only around
 * synchronous stretches and the queueing of module calls (which capture the mode when
 * queued), never across an await, so training code running meanwhile keeps its graph.
 */
import { noGrad } from "../autograd";
import { ClassifierFreeGuidance, type Guider } from "../guidance";
import type { DiffusionModel } from "../models";
import type { Scheduler } from "../schedulers";
import { cat, keep, tidyAsync, type Generator, type Tensor } from "../tensor";

export interface ProgressInfo {
  step: number;
  total: number;
  timestep: number;
  /** The current latents; valid only during the callback (clone to keep). */
  latents: Tensor;
}

export interface LoopOptions {
  signal?: AbortSignal;
  onProgress?: (info: ProgressInfo) => void;
  generator?: Generator;
  eta?: number;
}

export function abortError(): Error {
  const error = new Error("The operation was aborted");
  error.name = "AbortError";
  return error;
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError();
}

export interface DenoiseArgs extends LoopOptions {
  model: DiffusionModel;
  scheduler: Scheduler;
  guider: Guider | null;
  latents: Tensor;
  context: Tensor;
  timesteps: number[];
  /** Called after each step with the new latents and the next timestep (inpainting blends here). */
  afterStep?: (latents: Tensor, stepIndex: number) => Tensor;
  /** Extra channels concatenated to the model input (InstructPix2Pix image latents, inpainting masks). */
  extraInput?: Tensor;
}

/** Runs `denoise`, then decodes the final latents to images in [0, 1]; frees the latents and `args.context`. */
export async function denoiseToImages(args: DenoiseArgs): Promise<Tensor> {
  try {
    const final = await denoise(args);
    try {
      return await args.model.latentsToImages(final);
    } finally {
      final.dispose();
    }
  } finally {
    args.context.dispose();
  }
}

/**
 * The sampling loop: for each timestep, scale, predict (all conditions in one batch),
 * guide, step. Owns `latents` (disposes it) and returns the final latents.
 */
export async function denoise(args: DenoiseArgs): Promise<Tensor> {
  const { model, scheduler, guider, timesteps } = args;
  const copies = guider ? guider.conditions.length : 1;
  let latents = args.latents;
  try {
    for (let i = 0; i < timesteps.length; i++) {
      throwIfAborted(args.signal);
      const t = timesteps[i];
      // Outside the guider's interval only its full condition runs, unguided.
      const guided = guidesAt(guider, t);
      const next = await tidyAsync(async () => {
        const prediction = await noGrad(() => {
          const rows = (x: Tensor) => conditionRows(x, guider, guided, latents.shape[0]);
          const input = modelInput(latents, guided ? copies : 1, scheduler, t, args.extraInput && rows(args.extraInput));
          return model.predict({ sample: input, timestep: t, encoderHiddenStates: rows(args.context) });
        });
        return noGrad(() => {
          let stepped = guidedStep(prediction, guided ? guider : null, scheduler, t, latents, args);
          if (args.afterStep) stepped = args.afterStep(stepped, i);
          return keep(stepped);
        });
      });
      latents.dispose();
      latents = next;
      args.onProgress?.({ step: i + 1, total: timesteps.length, timestep: t, latents });
    }
    return latents;
  } catch (error) {
    latents.dispose();
    throw error;
  }
}

/** Whether `guider` guides the step at `t` (false without a guider). */
export function guidesAt(guider: Guider | null, t: number): boolean {
  return guider !== null && (guider.activeAt?.(t) ?? true);
}

/**
 * A per-condition stack (copies·B, ...) as a step runs it: whole when it is guided (or there is
 * no guider), else only the guider's full condition's B rows.
 * @example const context = conditionRows(args.context, guider, guidesAt(guider, t), latents.shape[0]);
 */
export function conditionRows(x: Tensor, guider: Guider | null, guided: boolean, batch: number): Tensor {
  return guided || guider === null ? x : x.narrow(0, (guider.fullCondition ?? 0) * batch, batch);
}

/**
 * The denoiser's input at `t`: the latents once per guidance condition along the batch, scaled by
 * the scheduler, with any extra channels appended. (copies·B, C (+ extra), h, w)
 * @example const input = modelInput(latents, 2, scheduler, t);
 */
export function modelInput(latents: Tensor, copies: number, scheduler: Scheduler, t: number, extraInput?: Tensor): Tensor {
  const batched = copies > 1 ? cat(Array(copies).fill(latents), 0) : latents; // (copies·B, C, h, w)
  const input = scheduler.scaleModelInput(batched, t);
  return extraInput ? cat([input, extraInput], 1) : input;
}

/**
 * One scheduler step from the denoiser's prediction over {@link modelInput}: the guider combines the
 * conditions' predictions (none: the prediction as is), the scheduler steps `latents`.
 * @example const next = guidedStep(prediction, guider, scheduler, t, latents, { generator });
 */
export function guidedStep(prediction: Tensor, guider: Guider | null, scheduler: Scheduler, t: number, latents: Tensor, options: { generator?: Generator; eta?: number }): Tensor {
  const guided = guider ? guider.combine(prediction.chunk(guider.conditions.length, 0)) : prediction;
  return scheduler.step(guided, t, latents, { generator: options.generator, eta: options.eta }).prevSample;
}

/**
 * A text-guided call's classifier-free guidance: its own scale, rescale and interval, else the
 * model's recommended scale and interval (`model.defaults`), else scale 7.5 on every step.
 * @example const guider = callGuidance(model, options);
 */
export function callGuidance(model: DiffusionModel, options: { guidanceScale?: number; guidanceRescale?: number; guidanceInterval?: [number, number] }): ClassifierFreeGuidance {
  return new ClassifierFreeGuidance(options.guidanceScale ?? model.defaults.guidanceScale ?? 7.5, options.guidanceRescale ?? 0, options.guidanceInterval ?? model.defaults.guidanceInterval);
}

/**
 * The scheduler one pipeline call steps: a fresh copy of the one given, or of the model's
 * default. Schedulers keep per-run state (timesteps, step index, multistep history), so calls
 * running at the same time on one pipeline must not share one.
 * @example const scheduler = callScheduler(model, options.scheduler);
 */
export function callScheduler(model: DiffusionModel, given?: Scheduler): Scheduler {
  return given ? given.clone() : model.newScheduler();
}
