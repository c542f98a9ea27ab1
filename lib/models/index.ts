/**
 * Model directories and the typed wrappers of their networks: pipelines call
 * `unet.forward({ sample, timestep, encoderHiddenStates })`, not argument positions.
 * @example
 * import { loadModel } from "torch-diffusion";
 * const { unet, vae, textEncoder, tokenizer, scheduler } = loadModel("models/sd-1.5");
 */
export { ModelComponent, CallInputs, isFloatingDtype, type ComponentMeta, type ComponentSpec } from "./component";
export { UNet2DConditionModel, type UNet2DConditionConfig, type UNetForwardArgs } from "./unet";
export { DiTTransformer2DModel, type DiTTransformer2DConfig, type DiTForwardArgs } from "./dit";
export { AutoencoderKL, latentDistribution, type AutoencoderKLConfig, type LatentDistribution } from "./vae";
export { CLIPTextModel, CLIPTextModelWithProjection, type CLIPTextConfig, type CLIPTextArgs, type CLIPTextOutput } from "./clip";
export { DiffusionModel, modelDefaults, type ModelDefaults, type ModelIndex, type ModelParts, type PredictArgs, type TextToImageModel } from "./model";
export { BUILTIN_MODEL_NAME, BUILTIN_INSTRUCT_MODEL_NAME, BUILTIN_DIT_MODEL_NAME, builtinModelPath, isBuiltinModelName, diffusersFolderMessage, diffusersFolderReason, resolveModelPath } from "./directory";
export {
  loadModel,
  loadComponent,
  COMPONENT_CLASSES,
  type AnyModelComponent,
  type ComponentClassName,
  type LoadedModel,
  type ModelLoadOptions,
  type ModelDirectoryOptions,
} from "./load";
export { UViT2DModel, type UViT2DConfig } from "./uvit";
