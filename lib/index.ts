/**
 * torch-diffusion: run, edit with and fine-tune diffusion models from Node.js on libtorch.
 * @example
 * import * as td from "torch-diffusion";
 * const x = td.randn([2, 3], { generator: new td.Generator(0) });
 * const y = td.tidy(() => x.mul(2).add(1).sum());
 */
export { Tensor, isTensor, isDtype, type DType, type TypedArray, type Scalar, type TensorOrScalar, type ToOptions } from "./tensor";
export * from "./creation";
export * from "./functional";
export { Generator, defaultGenerator, manualSeed } from "./random";
export { tidy, tidyAsync, keep } from "./scope";
export { op, opSchema } from "./dispatch";
export { noGrad, noGradAsync, enableGrad, isGradEnabled } from "./autograd";
export { AdamW, SGD, clipGradNorm, type AdamWOptions, type SGDOptions, type OptimizerState } from "./optim";
export { Module, load, type LoadOptions } from "./module";
export { memory, setNumThreads, getNumThreads, setBatchParallelism, getBatchParallelism, setGraphOptimization, isGraphOptimizationEnabled, cuda, buildInfo, cpuAllocatorStats, emptyCpuCache } from "./runtime";
export * from "./training";
export {
  initProcessGroup, distributedEnv, distributedBackends, isProcessGroup, ProcessGroup, DistributedError, DEFAULT_DISTRIBUTED_TIMEOUT_MS,
  type ProcessGroupOptions, type DistributedEnv, type ReduceOpName,
} from "./distributed";
export { save, loadValue, serialize, deserialize, writeFileAtomic, replaceFileAtomic } from "./serialize";
export { attention, naiveAttention, type AttentionOptions } from "./attention";
export * from "./tokenizers";
export * from "./schedulers";
export * from "./models";
export { ClassifierFreeGuidance, DualGuidance, type Guider } from "./guidance";
export {
  crossAttentionEdit, wordSwapMapper, refinementAlignment, reweightScales, wordTokens, promptWords,
  type CrossAttentionEdit, type CrossAttentionEditMode, type AttentionReweight, type WordTokens,
} from "./guidance/attention_control";
export { Text2ImagePipeline, type GenerateOptions, type PipelineOutput } from "./pipelines/text2img";
export { Img2ImagePipeline, timestepsForStrength, type EditOptions } from "./pipelines/img2img";
export { InpaintPipeline, loadMask, type InpaintOptions, type InpaintMode } from "./pipelines/inpaint";
export { invert, inverseScheduler, encodeClean, type InvertOptions, type Inversion } from "./pipelines/inversion";
export {
  DiffEditPipeline, readEditMask, type DiffEditOptions, type DiffEditMaskOptions, type DiffEditInvertOptions, type DiffEditMask, type DiffEditOutput,
  type DiffEditProgress, type DiffEditStage, type MaskInferenceOptions, type SourceTargetPrompts,
} from "./pipelines/diffedit";
export { type ProgressInfo } from "./pipelines/common";
export { PromptToPromptPipeline, type PromptToPromptOptions, type PromptToPromptOutput } from "./pipelines/prompt_to_prompt";
export { InstructPix2PixPipeline, widenInputChannels, type InstructOptions } from "./pipelines/instruct";
export { makeEditTriplets, EDIT_TRIPLETS_PROGRESS, EDIT_TRIPLETS_SETTINGS, type EditCandidate, type EditTripletOptions, type EditTripletReport } from "./pipelines/edit_triplets";
export { dreambooth, sampleSeeds, type DreamBoothOptions, type DreamBoothResult } from "./pipelines/dreambooth";
export { imagic, ImagicResult, IMAGIC_ETAS, type ImagicOptions, type ImagicEditOptions, type ImagicProgress } from "./pipelines/imagic";
export { type PromptOptions } from "./pipelines/prompts";
export { IMAGE_FORMATS, imageFormat } from "./image_format";
export { CHECKSUMS_FILE, sha256File, writeDirectoryChecksums, verifyDirectoryChecksums, writeFileChecksum, verifyFileChecksum } from "./checksums";
export { readImage, writeImage, encodePng, imageGrid, toImageTensor, decodeImage, pixelsToTensor, type ImageSource, type ReadImageOptions } from "./image";
export type { MemoryInfo } from "./binding";
export {
  ClassConditionalPipeline, classLabelIds, labelNames, guideEpsilon, usesLearnedVariance,
  type ClassConditionalOptions, type ClassConditionalOutput,
} from "./pipelines/class_conditional";
