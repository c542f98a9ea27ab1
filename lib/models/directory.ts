/**
 * What a model directory argument names, decided from the file system alone (no libtorch, so
 * the command line can check it before loading anything):
 *
 * - the name `"builtin"` is the package's own model (`<package>/models/builtin`) unless the
 *   current folder holds a folder of that name;
 * - a Hugging Face diffusers folder (what `save_pretrained` and the Hub give: safetensors or
 *   .bin weights, no TorchScript) is recognised, so loading it fails with one line naming
 *   `torch-diffusion convert` instead of a missing-file error deep inside.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { packagePath } from "../package_root";

/** The name that stands for the built-in model wherever a model directory is asked for. */
export const BUILTIN_MODEL_NAME = "builtin";
/** The built-in InstructPix2Pix model: the built-in model taught to follow edit instructions. */
export const BUILTIN_INSTRUCT_MODEL_NAME = "builtin-instruct";
/** The built-in class-conditional DiT (pixel space, Fashion-MNIST's ten classes by id or name). */
export const BUILTIN_DIT_MODEL_NAME = "builtin-dit";
const BUILTIN_MODELS = [BUILTIN_MODEL_NAME, BUILTIN_INSTRUCT_MODEL_NAME, BUILTIN_DIT_MODEL_NAME];

/**
 * Where a built-in model lives: `models/<name>` inside the installed package.
 * @example const model = loadModel(builtinModelPath()); // the same as loadModel("builtin")
 */
export function builtinModelPath(name = BUILTIN_MODEL_NAME): string {
  if (!BUILTIN_MODELS.includes(name)) throw new Error(`builtinModelPath: no built-in model "${name}" (${BUILTIN_MODELS.join(", ")})`);
  return packagePath("models", name);
}

/** True when `name` names a built-in model ("builtin", "builtin-instruct", "builtin-dit"). */
export function isBuiltinModelName(name: string): boolean {
  return BUILTIN_MODELS.includes(name);
}

/**
 * A model directory argument as an absolute path: a built-in model's name (`"builtin"`,
 * `"builtin-instruct"`, `"builtin-dit"`) is the package's model when the current folder has no folder of that
 * name; anything else is resolved as a path.
 * @example resolveModelPath("builtin") // "/app/node_modules/torch-diffusion/models/builtin"
 */
export function resolveModelPath(dir: string): string {
  const resolved = path.resolve(dir);
  if (isBuiltinModelName(dir) && !fs.existsSync(resolved)) return builtinModelPath(dir);
  return resolved;
}

/** Network component folders of a pipeline folder (the ones the exporter turns into model.pt). */
const NETWORK_FOLDERS = ["unet", "transformer", "vae", "text_encoder", "text_encoder_2"];
const WEIGHTS = /\.(safetensors|bin|ckpt|pth)$|\.(safetensors|bin)\.index\.json$/;

function readJson(file: string): Record<string, unknown> | null {
  try {
    const value = JSON.parse(fs.readFileSync(file, "utf8"));
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function listFiles(dir: string): string[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/** Why a component folder holds unconverted weights ("unet/ has diffusion_pytorch_model.safetensors but no model.pt"), else null. */
function rawComponent(folder: string, label: string): string | null {
  const files = listFiles(folder);
  if (files.includes("model.pt") || files.includes("torch_diffusion.json") || !files.includes("config.json")) return null;
  const weights = files.find((f) => WEIGHTS.test(f));
  return weights === undefined ? null : `${label}has ${weights} but no model.pt`;
}

/**
 * Why `dir` is a diffusers folder rather than a model directory this package runs, or null
 * when it is not one (a model directory, or something else the loader reports on its own).
 * Recognised: a `model_index.json` without our `"torch_diffusion"` section; a listed network
 * folder with `*.safetensors` / `*.bin` weights and no `model.pt`; a single component folder
 * (`config.json` + weights) without `torch_diffusion.json`.
 * @example diffusersFolderReason("sd-1.5") // 'model_index.json has no "torch_diffusion" section; unet/ has diffusion_pytorch_model.safetensors but no model.pt'
 */
export function diffusersFolderReason(dir: string): string | null {
  const index = readJson(path.join(dir, "model_index.json"));
  if (index === null) return fs.existsSync(path.join(dir, "model_index.json")) ? null : rawComponent(dir, "it ");
  const ours = index.torch_diffusion;
  const skipped = (ours !== null && typeof ours === "object" ? (ours as { skipped?: Record<string, unknown> }).skipped : undefined) ?? {};
  const listed = NETWORK_FOLDERS.filter((name) => Array.isArray(index[name]) && typeof (index[name] as unknown[])[1] === "string" && !(name in skipped));
  const raw = listed.map((name) => rawComponent(path.join(dir, name), `${name}/ `)).find((r) => r !== null) ?? null;
  if (ours === undefined) return raw === null ? 'model_index.json has no "torch_diffusion" section' : `model_index.json has no "torch_diffusion" section; ${raw}`;
  return raw;
}

/** `dir` quoted for a shell when it needs it. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`;
}

/**
 * The one-line message for a diffusers folder given where a model directory is wanted, or null.
 * @example const problem = diffusersFolderMessage("sd-1.5"); if (problem) throw new Error(problem);
 */
export function diffusersFolderMessage(dir: string): string | null {
  const reason = diffusersFolderReason(dir);
  if (reason === null) return null;
  return `${dir} is a Hugging Face diffusers folder (${reason}), not a model directory this package runs: convert it once with torch-diffusion convert --from ${shellWord(dir)} --to OUT (needs Python with PyTorch), then use OUT`;
}
