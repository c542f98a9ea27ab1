/**
 * Training: the generic denoising trainer and its parts (objectives, LR schedules, EMA,
 * conditioning with CFG dropout, data loading, checkpoints).
 *
 * @example
 * import { Trainer, FashionMNIST, labelCondition } from "torch-diffusion";
 * const trainer = new Trainer(model, new FashionMNIST({ pad32: true }), {
 *   objective: "flow_matching", steps: 2000, batchSize: 64, lr: 1e-3,
 *   timestepSampling: { kind: "logit_normal" },
 *   condition: labelCondition({ nullLabel: 10 }), conditionDropout: 0.1,
 * });
 * await trainer.run();
 */
export { Trainer, train, NonFiniteLossError, type TrainResult } from "./trainer";
export type { TrainerOptions, StepInfo, TrainBatch, ForwardFn, LossFn } from "./options";
export {
  OBJECTIVES, TRAIN_BETA_SCHEDULES, alphasCumprodFor, ddpmTargets, flowTargets, noisedBatch, logitNormalTimes, sampleTimes,
  type Objective, type NoisedBatch, type TimestepSampling, type TrainNoiseSchedule,
} from "./objectives";
export { lrSchedule, lrFactor, LR_SCHEDULES, type LRScheduleKind, type LRScheduleOptions } from "./lr";
export { EMA, emaDecay, type EMAOptions, type EMAState } from "./ema";
export { labelCondition, captionCondition, type Condition } from "./conditioning";
export { DataLoader, collate, mapDataset, tensorDataset, type Dataset, type Sample, type Batch, type DataLoaderOptions, type LoaderPosition } from "./data";
export { latentDataset } from "./latents";
export { DataParallel, DistributedSampler, localPositions, onEveryRank, writeOnMainRank } from "./ddp";
export { fineTune, fineTuneDataset, fitImage, trainingObjective, type FineTuneOptions, type FineTuneResult } from "./fine_tune";
export { FashionMNIST, FASHION_MNIST_CLASSES, FASHION_MNIST_NOUNS, FASHION_MNIST_TEMPLATES, FASHION_MNIST_DIR, fashionMnistCaption, type FashionMNISTOptions } from "./fashion_mnist";
export { ImageFolderDataset, netpbmDecoder, sharpDecoder, type ImageDecoder, type DecodedImage, type ImageFolderOptions } from "./image_folder";
export {
  CHECKPOINT_FORMAT, checkpointFile, listCheckpoints, latestCheckpoint, loadCheckpoint, saveCheckpoint, pruneCheckpoints, disposeCheckpoint,
  type TrainCheckpoint,
} from "./checkpoint";
export { LoRA, LORA_WEIGHTS_FILE, LORA_ATTENTION_TARGETS, TEXT_ENCODER_LORA_TARGETS, saveLoRAWeights, type LoRAOptions, type LoRALayer, type LoRAComponent } from "./lora";
export { TrainedParts, TEXT_ENCODER_PREFIX, type TrainedPartsOptions } from "./text_to_image";
export { readSafetensors, writeSafetensors, safetensorsBytes, type SafetensorsFile } from "./safetensors";
export {
  rareTokenRange, rareTokenCandidates, rareTokenIdentifier, ensureClassImages, classImageFile, imageFilesDataset, dreamBoothDataset, priorPreservationLoss,
  DREAMBOOTH_INSTANCE, DREAMBOOTH_CLASS, CLASS_IMAGES_RECORD, type ClassImagesOptions, type ClassImagesRecord, type DreamBoothDataOptions,
} from "./dreambooth";
export {
  EditTripletDataset, EditTripletWriter, EDIT_TRIPLETS_INDEX, readEditTripletRows, INSTRUCTION_TEMPLATES, fillEditTemplate, templateEditCaptions, readEditCaptions, instructDropout,
  imageCondition, imageConditionChannels, imageConditionedInput, isImageConditioned, checkInstructDropout,
  type EditCaptions, type EditTripletRow, type EditTripletDatasetOptions, type TemplateEditOptions,
} from "./instruct";
export {
  hybridLoss, vlbTerms, diffusionCoefficients, coefficientsFromBetas, normalKL, discretizedGaussianLogLikelihood, approxStandardNormalCdf,
  type HybridLossFn, type HybridLossOptions, type HybridTerms, type VLBInputs, type DiffusionCoefficients,
} from "./hybrid_loss";
export { minSnrLoss, minSnrWeights, type MinSnrLossOptions } from "./min_snr";
export { multiscaleLoss, multiscaleMSE, multiscaleResolutions, avgPool } from "./multiscale";
