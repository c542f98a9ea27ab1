/**
 * Loading model directories in diffusers' layout, as scripts/export.py writes them:
 * `model_index.json` (diffusers' `{"unet": ["diffusers", "UNet2DConditionModel"], ...}` plus
 * our "torch_diffusion" section), and per component `model.pt`, `config.json` and
 * `torch_diffusion.json`; tokenizers and `scheduler/scheduler_config.json` as diffusers has them.
 */
import * as path from "node:path";
import type { DType } from "../binding";
import { verifyDirectoryChecksums } from "../checksums";
import { invalid } from "../errors";
import { load, type Module } from "../module";
import { SCHEDULERS, schedulerFromConfig } from "../schedulers";
import { CLIPTokenizer } from "../tokenizers";
import { CLIPTextModel, CLIPTextModelWithProjection } from "./clip";
import { isFloatingDtype, type ComponentMeta } from "./component";
import { DiTTransformer2DModel } from "./dit";
import { directoryArgument, fileError, isDirectory, isFile, readJsonObject, requireDirectory, requireFile, type FileContext } from "./files";
import { diffusersFolderMessage, resolveModelPath } from "./directory";
import { DiffusionModel, modelDefaults, type ModelIndex, type ModelParts } from "./model";
import { UNet2DConditionModel } from "./unet";
import { UViT2DModel } from "./uvit";
import { AutoencoderKL } from "./vae";

/** Every network class a model directory may hold, by its diffusers / transformers name. */
export const COMPONENT_CLASSES = {
  UNet2DConditionModel,
  DiTTransformer2DModel,
  UViT2DModel,
  AutoencoderKL,
  CLIPTextModel,
  CLIPTextModelWithProjection,
} as const;

export type ComponentClassName = keyof typeof COMPONENT_CLASSES;
export type AnyModelComponent = InstanceType<(typeof COMPONENT_CLASSES)[ComponentClassName]>;

export interface ModelLoadOptions {
  /** Where the modules live: "cpu" (default), "cuda", "cuda:1". */
  device?: string;
  /**
   * Cast the networks to this dtype. As the exporter and diffusers pipelines do, an
   * AutoencoderKL whose config has `force_upcast` (default true) stays float32 when
   * float16 is asked for; `vae.to({ dtype: "float16" })` overrides that.
   */
  dtype?: DType;
}

export interface ModelDirectoryOptions extends ModelLoadOptions {
  /** Load only these model_index.json entries (e.g. ["unet"]); default all. */
  components?: string[];
  /** Check the files against the directory's `checksums.sha256`, when it has one. Default true. */
  verify?: boolean;
}

/** What {@link loadModel} returns (the name earlier versions used). */
export type LoadedModel = DiffusionModel;

/** model_index.json names -> DiffusionModel parts and the classes each slot accepts. */
const MODEL_SLOTS = {
  unet: { key: "unet", classes: ["UNet2DConditionModel"] },
  transformer: { key: "transformer", classes: ["DiTTransformer2DModel", "UViT2DModel"] },
  vae: { key: "vae", classes: ["AutoencoderKL"] },
  text_encoder: { key: "textEncoder", classes: ["CLIPTextModel", "CLIPTextModelWithProjection"] },
  text_encoder_2: { key: "textEncoder2", classes: ["CLIPTextModel", "CLIPTextModelWithProjection"] },
} as const;
const TOKENIZER_SLOTS = { tokenizer: "tokenizer", tokenizer_2: "tokenizer2" } as const;

function isComponentClass(name: unknown): name is ComponentClassName {
  return typeof name === "string" && Object.prototype.hasOwnProperty.call(COMPONENT_CLASSES, name);
}

/** The class a diffusers (`_class_name`) or transformers (`architectures[0]`) config names. */
function configClass(config: Record<string, unknown>): string | undefined {
  if (typeof config._class_name === "string") return config._class_name;
  const arch = config.architectures;
  return Array.isArray(arch) && typeof arch[0] === "string" ? arch[0] : undefined;
}

function checkOptions(options: unknown, who: string): ModelDirectoryOptions {
  if (options === null || typeof options !== "object" || Array.isArray(options)) throw invalid("options object", `${who} options`, options);
  const o = options as ModelDirectoryOptions;
  if (o.device !== undefined && typeof o.device !== "string") throw invalid("device string", `${who} options.device`, o.device);
  if (o.dtype !== undefined && !isFloatingDtype(o.dtype)) throw invalid("float32, float16, bfloat16 or float64", `${who} options.dtype`, o.dtype);
  if (o.verify !== undefined && typeof o.verify !== "boolean") throw invalid("boolean", `${who} options.verify`, o.verify);
  if (o.components !== undefined && !(Array.isArray(o.components) && o.components.every((c) => typeof c === "string"))) {
    throw invalid("string[]", `${who} options.components`, o.components);
  }
  return o;
}

/** Loads the module file, explaining a missing custom op (fused-attention exports). */
function loadModule(file: string, meta: ComponentMeta, options: ModelLoadOptions, context: FileContext): Module {
  try {
    return load(file, { device: options.device, dtype: options.dtype });
  } catch (error) {
    const message = (error as Error).message;
    const ops = (meta.custom_ops ?? []).filter((op) => message.includes(op));
    if (ops.length > 0) {
      throw fileError(context, `${file} needs the custom op ${ops.join(", ")}, which this build of the native addon does not register: ${message}`);
    }
    throw fileError(context, message);
  }
}

/** A component folder; `listed` is the model_index.json entry (name and class) when loading a pipeline. */
function loadComponentAt(dir: string, options: ModelLoadOptions, context: FileContext, listed?: { name: string; className: string; indexMeta?: Record<string, unknown> }): AnyModelComponent {
  requireDirectory(dir, context);
  const metaFile = path.join(dir, "torch_diffusion.json");
  if (!isFile(metaFile) && listed?.indexMeta === undefined) requireFile(metaFile, context);
  const meta = (isFile(metaFile) ? readJsonObject(metaFile, context) : listed?.indexMeta) as unknown as ComponentMeta;
  const configFile = path.join(dir, "config.json");
  const config = readJsonObject(configFile, context);
  if (!isComponentClass(meta.class)) {
    throw fileError(context, `${metaFile}: class ${JSON.stringify(meta.class)} is not supported (supported: ${Object.keys(COMPONENT_CLASSES).join(", ")})`);
  }
  const names = [meta.class, meta.source_class].filter((n): n is string => typeof n === "string");
  const fromConfig = configClass(config);
  if (fromConfig !== undefined && !names.includes(fromConfig)) {
    throw fileError(context, `${configFile} names class ${fromConfig} but ${metaFile} names ${meta.class}`);
  }
  if (listed && !names.includes(listed.className)) {
    throw fileError(context, `model_index.json lists ${listed.name} as ${listed.className} but ${metaFile} names ${meta.class}`);
  }
  const file = path.join(dir, typeof meta.file === "string" ? meta.file : "model.pt");
  requireFile(file, context);
  const upcast = meta.class === "AutoencoderKL" && options.dtype === "float16" && config.force_upcast !== false;
  const module = loadModule(file, meta, upcast ? { ...options, dtype: "float32" } : options, context);
  return new COMPONENT_CLASSES[meta.class](module, config, meta);
}

/**
 * Loads one exported component folder (`model.pt`, `config.json`, `torch_diffusion.json`)
 * as its typed wrapper.
 * @example
 * const unet = loadComponent("models/sd-1.5/unet", { device: "cuda", dtype: "float16" });
 * if (unet instanceof UNet2DConditionModel) await unet.forward({ sample, timestep: 999, encoderHiddenStates });
 */
export function loadComponent(dir: string, options: ModelLoadOptions = {}): AnyModelComponent {
  const who = "loadComponent";
  const resolved = directoryArgument(dir, who);
  const o = checkOptions(options, who);
  const raw = isDirectory(resolved) && !isFile(path.join(resolved, "model_index.json")) ? diffusersFolderMessage(resolved) : null;
  if (raw !== null) throw fileError({ who }, raw);
  return loadComponentAt(resolved, o, { who });
}

/** The [library, class] pair of a model_index.json entry, or null for `[null, null]` / non-component keys. */
function entryClass(name: string, entry: unknown, context: FileContext, indexFile: string): string | null {
  if (!Array.isArray(entry)) return null;
  if (entry.length !== 2) throw fileError(context, `${indexFile}: entry "${name}" must be [library, class] but is ${JSON.stringify(entry)}`);
  if (entry[1] === null) return null;
  if (typeof entry[1] !== "string") throw fileError(context, `${indexFile}: entry "${name}" must be [library, class] but is ${JSON.stringify(entry)}`);
  return entry[1];
}

/** The scheduler folder's config and the default scheduler: of the model's recommended class (`defaults.scheduler`) when it names one, else of the config's. */
function loadScheduler(dir: string, context: FileContext, className: string | undefined): Pick<ModelParts, "scheduler" | "schedulerConfig"> {
  const file = path.join(dir, "scheduler_config.json");
  const schedulerConfig = readJsonObject(file, context);
  if (className !== undefined && !(className in SCHEDULERS)) {
    throw fileError(context, `model_index.json "torch_diffusion.defaults.scheduler" names ${JSON.stringify(className)}, which is not a scheduler this package has (${Object.keys(SCHEDULERS).join(", ")})`);
  }
  const name = className ?? schedulerConfig._class_name;
  if (!(typeof name === "string" && name in SCHEDULERS)) return { schedulerConfig };
  try {
    return { scheduler: schedulerFromConfig({ ...schedulerConfig, _class_name: name }), schedulerConfig };
  } catch (error) {
    throw fileError(context, `${file}: ${(error as Error).message}`);
  }
}

/**
 * Loads an exported model directory: each network its model_index.json lists (unet or
 * transformer, vae, text_encoder, text_encoder_2), CLIP tokenizers whose folders exist, and
 * the scheduler. Other entries (safety_checker, feature_extractor, image_encoder, T5
 * encoders, ...) and those the exporter skipped are left out; `modelIndex` has them all.
 * Errors name the file at fault and the model_index.json entry that asked for it; a Hugging
 * Face diffusers folder (safetensors / .bin weights, not yet exported) is refused in one line
 * naming `torch-diffusion convert`. `dir` may be `"builtin"`: the package's built-in model
 * (unless the current folder has a `builtin` folder), wherever the calling project lives.
 * The model's recommended sampling settings (`torch_diffusion.defaults`) become `model.defaults`
 * and, for `scheduler`, its default scheduler.
 * @example
 * const builtin = loadModel("builtin");
 * @example
 * const sd = loadModel("models/sd-1.5", { device: "cuda", dtype: "float16" });
 * sd.scheduler!.setTimesteps(30);
 * const eps = await sd.unet!.forward({ sample, timestep: sd.scheduler!.timesteps[0], encoderHiddenStates });
 */
export function loadModel(dir: string, options: ModelDirectoryOptions = {}): DiffusionModel {
  const who = "loadModel";
  directoryArgument(dir, who);
  const root = resolveModelPath(dir);
  const o = checkOptions(options, who);
  requireDirectory(root, { who });
  const raw = diffusersFolderMessage(root);
  if (raw !== null) throw fileError({ who }, raw);
  const indexFile = path.join(root, "model_index.json");
  if (!isFile(indexFile) && isFile(path.join(root, "config.json"))) {
    throw fileError({ who }, `${indexFile} is missing (${root} looks like a single component: use loadComponent)`);
  }
  const modelIndex = readJsonObject(indexFile, { who }) as ModelIndex;
  const section = modelIndex.torch_diffusion;
  const skipped = section?.skipped ?? {};
  let defaults;
  try {
    defaults = modelDefaults(modelIndex);
  } catch (error) {
    throw fileError({ who }, `${(error as Error).message} (${indexFile})`);
  }
  if (o.verify !== false) {
    const wanted = Object.keys(modelIndex).filter((name) => !name.startsWith("_") && (!o.components || o.components.includes(name)));
    try {
      verifyDirectoryChecksums(root, ["model_index.json", ...wanted]);
    } catch (error) {
      throw fileError({ who }, (error as Error).message);
    }
  }
  const parts: Record<string, unknown> = {};
  try {
    for (const [name, entry] of Object.entries(modelIndex)) {
      if (name.startsWith("_") || name === "torch_diffusion" || name in skipped) continue;
      if (o.components && !o.components.includes(name)) continue;
      const context: FileContext = { who, because: `model_index.json lists ${name}` };
      const className = entryClass(name, entry, context, indexFile);
      if (className === null) continue;
      const folder = path.join(root, name);
      if (name in MODEL_SLOTS) {
        const slot = MODEL_SLOTS[name as keyof typeof MODEL_SLOTS];
        const component = loadComponentAt(folder, o, context, { name, className, indexMeta: section?.components?.[name] });
        if (!(slot.classes as readonly string[]).includes(component.className)) {
          component.dispose();
          throw fileError(context, `${folder} holds ${component.className}, but ${name} must be one of ${slot.classes.join(", ")}`);
        }
        parts[slot.key] = component;
      } else if (name in TOKENIZER_SLOTS) {
        if (!className.startsWith("CLIPTokenizer") || !isDirectory(folder)) continue;
        try {
          parts[TOKENIZER_SLOTS[name as keyof typeof TOKENIZER_SLOTS]] = CLIPTokenizer.fromDirectory(folder);
        } catch (error) {
          throw fileError(context, (error as Error).message);
        }
      } else if (name === "scheduler") {
        requireDirectory(folder, context);
        Object.assign(parts, loadScheduler(folder, context, defaults.scheduler));
      }
    }
  } catch (error) {
    new DiffusionModel(parts as ModelParts).dispose();
    throw error;
  }
  return new DiffusionModel(parts as ModelParts, { dir: root, modelIndex });
}
