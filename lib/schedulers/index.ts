/**
 * diffusers-compatible schedulers. Each class takes the snake_case object of a diffusers
 * `scheduler_config.json`; `schedulerFromConfig` picks the class from `_class_name`.
 *
 * @example
 * import { schedulerFromConfig } from "torch-diffusion";
 * const scheduler = schedulerFromConfig(JSON.parse(fs.readFileSync("model/scheduler/scheduler_config.json", "utf8")));
 * scheduler.setTimesteps(30);
 */
import { SchedulerBase } from "./base";
import { describe } from "./config";
import { DDIMInverseScheduler, DDIMScheduler } from "./ddim";
import { DDPMScheduler } from "./ddpm";
import { DEISMultistepScheduler } from "./deis";
import { DPMSolverMultistepScheduler } from "./dpmsolver_multistep";
import { DPMSolverSinglestepScheduler } from "./dpmsolver_singlestep";
import { EulerAncestralDiscreteScheduler, EulerDiscreteScheduler } from "./euler";
import { FlowMatchEulerDiscreteScheduler } from "./flow_match";
import { HeunDiscreteScheduler } from "./heun";
import { KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler } from "./kdpm2";
import { LCMScheduler } from "./lcm";
import { LMSDiscreteScheduler } from "./lms";
import { PNDMScheduler } from "./pndm";
import { TCDScheduler } from "./tcd";
import { UniPCMultistepScheduler } from "./unipc";

export { SchedulerBase, BetaScheduler, type StepOptions, type StepOutput, type SetTimestepsOptions, type TimestepLike, type TimestepsLike } from "./base";
export { DDPMScheduler, type DDPMConfig } from "./ddpm";
export { DDIMScheduler, DDIMInverseScheduler, type DDIMConfig, type DDIMInverseConfig } from "./ddim";
export { PNDMScheduler, type PNDMConfig } from "./pndm";
export { LMSDiscreteScheduler, lmsCoefficient, type LMSConfig } from "./lms";
export { EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, type EulerConfig, type EulerAncestralConfig } from "./euler";
export { HeunDiscreteScheduler, type HeunConfig } from "./heun";
export { KDPM2DiscreteScheduler, KDPM2AncestralDiscreteScheduler, type KDPM2Config } from "./kdpm2";
export { DPMSolverMultistepScheduler, type DPMSolverMultistepConfig } from "./dpmsolver_multistep";
export { DPMSolverSinglestepScheduler, singlestepOrders, type DPMSolverSinglestepConfig } from "./dpmsolver_singlestep";
export { UniPCMultistepScheduler, type UniPCConfig } from "./unipc";
export { DEISMultistepScheduler, type DEISConfig } from "./deis";
export { LCMScheduler, type LCMConfig } from "./lcm";
export { TCDScheduler, type TCDConfig, type TCDStepOutput } from "./tcd";
export { FlowMatchEulerDiscreteScheduler, calculateShift, type FlowMatchEulerConfig } from "./flow_match";
export {
  BETA_SCHEDULES,
  betasForAlphaBar,
  linearBetas,
  scaledLinearBetas,
  sigmoidBetas,
  shiftedCosineLogSnr,
  shiftedCosineAlphasCumprod,
  rescaleZeroTerminalSnr,
  noiseSchedule,
  trainSigmas,
  type NoiseSchedule,
  type ShiftedCosineOptions,
} from "./schedules";
export {
  karrasSigmas,
  exponentialSigmas,
  betaSigmas,
  betaPpf,
  betaCdf,
  sigmaToT,
  ddimTimesteps,
  dpmTimesteps,
  eulerTimesteps,
  flowShift,
  timeShift,
  stretchShiftToTerminal,
  TIMESTEP_SPACINGS,
} from "./sigmas";
export { torchLinspace32, numpyLinspace, numpyArange, numpyInterp, cumprod32 } from "./numpy";

/** Every scheduler class by its diffusers name. @example new SCHEDULERS["DDIMScheduler"]({}) */
export const SCHEDULERS = {
  DDPMScheduler,
  DDIMScheduler,
  DDIMInverseScheduler,
  PNDMScheduler,
  LMSDiscreteScheduler,
  EulerDiscreteScheduler,
  EulerAncestralDiscreteScheduler,
  HeunDiscreteScheduler,
  KDPM2DiscreteScheduler,
  KDPM2AncestralDiscreteScheduler,
  DPMSolverMultistepScheduler,
  DPMSolverSinglestepScheduler,
  UniPCMultistepScheduler,
  DEISMultistepScheduler,
  LCMScheduler,
  TCDScheduler,
  FlowMatchEulerDiscreteScheduler,
} as const;

export type SchedulerName = keyof typeof SCHEDULERS;
export type Scheduler = InstanceType<(typeof SCHEDULERS)[SchedulerName]>;

/**
 * Builds the scheduler named by `config._class_name` from a diffusers scheduler config.
 *
 * @example
 * const s = schedulerFromConfig({ _class_name: "EulerDiscreteScheduler", beta_schedule: "scaled_linear" });
 */
export function schedulerFromConfig(config: Record<string, unknown>): Scheduler {
  if (config === null || typeof config !== "object" || Array.isArray(config))
    throw new Error(`schedulerFromConfig: config must be an object but received ${describe(config)}`);
  const name = config._class_name;
  if (typeof name !== "string" || !(name in SCHEDULERS))
    throw new Error(`schedulerFromConfig: config._class_name must be one of ${Object.keys(SCHEDULERS).join(", ")} but received ${describe(name)}`);
  const Cls = SCHEDULERS[name as SchedulerName] as unknown as new (c: Record<string, unknown>) => Scheduler;
  return new Cls(config);
}

/** True for any scheduler instance of this module. @example isScheduler(new DDIMScheduler()) // true */
export const isScheduler = (v: unknown): v is SchedulerBase => v instanceof SchedulerBase;
