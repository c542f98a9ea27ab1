/**
 * `torch-diffusion info`: a model directory's components and the configs that matter most
 * (read from the JSON files, so no network is loaded), then the runtime: libtorch build,
 * CUDA, threads.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type * as TD from "../index";
import { diffusersFolderMessage } from "../models/directory";
import { modelDefaults, type ModelDefaults } from "../models/defaults";
import type { ModelIndex } from "../models/model";
import { CliError } from "./args";

/** The config keys worth a line per component class; other classes show their scalar keys. */
const KEY_FIELDS: Record<string, string[]> = {
  UNet2DConditionModel: ["in_channels", "out_channels", "sample_size", "block_out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim", "addition_embed_type"],
  DiTTransformer2DModel: ["in_channels", "out_channels", "sample_size", "patch_size", "num_layers", "num_attention_heads", "attention_head_dim", "num_embeds_ada_norm"],
  AutoencoderKL: ["in_channels", "latent_channels", "block_out_channels", "sample_size", "scaling_factor", "shift_factor"],
  CLIPTextModel: ["hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings", "vocab_size"],
  CLIPTextModelWithProjection: ["hidden_size", "num_hidden_layers", "num_attention_heads", "projection_dim", "vocab_size"],
  CLIPTokenizer: ["model_max_length"],
  scheduler: ["num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type", "timestep_spacing"],
};

function readJson(file: string): Record<string, unknown> | null {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch {
    return null;
  }
}

function summarize(config: Record<string, unknown> | null, fields: string[] | undefined): string {
  if (!config) return "(no config)";
  const keys = fields ?? Object.keys(config).filter((k) => !k.startsWith("_") && ["number", "string", "boolean"].includes(typeof config[k]));
  return keys.filter((k) => config[k] !== undefined && config[k] !== null).map((k) => `${k}=${JSON.stringify(config[k])}`).join(" ");
}

/**
 * The lines `info` prints for a model directory.
 * @example for (const line of modelInfo("models/sd-1.5")) console.log(line);
 */
export function modelInfo(dir: string): string[] {
  const raw = diffusersFolderMessage(dir);
  if (raw !== null) throw new CliError(`--model: ${raw}`);
  const index = readJson(path.join(dir, "model_index.json"));
  if (!index) throw new CliError(`--model: ${dir} has no readable model_index.json`);
  const ours = (index.torch_diffusion ?? {}) as NonNullable<ModelIndex["torch_diffusion"]>;
  const lines = [`model: ${dir}`, `  pipeline: ${index._class_name ?? "?"} (format ${ours.format_version ?? "?"}, dtype ${ours.dtype ?? "?"}, fused attention ${ours.fused_attention ? "yes" : "no"})`];
  let defaults: ModelDefaults;
  try {
    defaults = modelDefaults(index as ModelIndex);
  } catch (error) {
    throw new CliError(`--model: ${(error as Error).message} (${path.join(dir, "model_index.json")})`);
  }
  const recommended = [
    defaults.guidanceScale === undefined ? null : `guidance ${defaults.guidanceScale}`,
    defaults.numInferenceSteps === undefined ? null : `${defaults.numInferenceSteps} steps`,
    defaults.scheduler ?? null,
    defaults.guidanceInterval === undefined ? null : `guidance at timesteps ${defaults.guidanceInterval[0]}–${defaults.guidanceInterval[1]}`,
  ].filter((d) => d !== null);
  if (recommended.length > 0) lines.push(`  defaults: ${recommended.join(", ")} (the image commands use them unless given)`);
  lines.push("components:");
  for (const [name, entry] of Object.entries(index)) {
    if (name.startsWith("_") || name === "torch_diffusion" || !Array.isArray(entry)) continue;
    const className = typeof entry[1] === "string" ? entry[1] : null;
    const label = `  ${name.padEnd(16)}${(className ?? "-").padEnd(30)}`;
    if (className === null) continue;
    if (ours.skipped?.[name]) {
      lines.push(`${label}skipped by the exporter: ${ours.skipped[name]}`);
      continue;
    }
    const folder = path.join(dir, name);
    const config =
      name.startsWith("scheduler") ? readJson(path.join(folder, "scheduler_config.json"))
      : className.startsWith("CLIPTokenizer") ? readJson(path.join(folder, "tokenizer_config.json"))
      : readJson(path.join(folder, "config.json"));
    const fields = name.startsWith("scheduler") ? KEY_FIELDS.scheduler : KEY_FIELDS[className.replace(/Fast$/, "")];
    lines.push(`${label}${fs.existsSync(folder) ? summarize(config, fields) : "(folder missing)"}`);
  }
  return lines;
}

/** The runtime lines: libtorch build, CUDA, threads. @example runtimeInfo(td) // ["libtorch: 2.5.1 (CUDA build) ...", "CUDA: ...", "threads: 16"] */
export function runtimeInfo(td: typeof TD): string[] {
  const { torchVersion, cuda, libtorchDir } = td.buildInfo;
  const devices = td.cuda.isAvailable() ? `available, ${td.cuda.deviceCount()} device(s)` : cuda ? "not available (no device found)" : "not available (CPU build)";
  return [
    `libtorch: ${torchVersion} (${cuda ? "CUDA" : "CPU"} build)${libtorchDir ? ` from ${libtorchDir}` : ""}`,
    `CUDA: ${devices}`,
    `threads: ${td.getNumThreads()}`,
  ];
}
