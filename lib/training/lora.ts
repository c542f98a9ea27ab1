/**
 * Low-rank adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
 * §4.1): each target weight W₀ (out, in) of a frozen module gets a trainable pair
 * A (r, in) and B (out, r), B = 0 at the start, and the layer computes with
 *
 *   W = W₀ + (α / r) · B · A                                     (the paper's eq. 3 with PEFT's scaling)
 *
 * Convolutions (out, in, kh, kw) get A (r, in, kh, kw) and B (out, r, 1, 1), as PEFT's Conv2d
 * adapters: ΔW = B·A over the flattened (in·kh·kw).
 *
 * How it hooks in, with no new C++: the adapters are plain tensors held here; `apply()` sets
 * each target parameter of the TorchScript module to W₀ + s·B·A with `module.setParameter`, so
 * with grad mode on the module's own use of that weight carries gradients back to A and B.
 * Training calls `apply()` before every forward (the Trainer's `forward` option) and gives the
 * Trainer `parameters()` to own: only the adapters are optimized and checkpointed (under
 * their PEFT names), which keeps exact resume; W₀ and every other weight stay bit-identical.
 * `fuse()` writes W₀ + s·B·A (no graph) for full-speed inference; `unfuse()` puts W₀ back.
 *
 * Files: `pytorch_lora_weights.safetensors` with PEFT keys (`unet.<module path>.lora_A.weight`,
 * `.lora_B.weight`; a text encoder's behind `text_encoder.`, as diffusers'
 * `train_dreambooth_lora.py --train_text_encoder` saves them) and each component's rank, alpha
 * and targets in the header's `lora_adapter_metadata`, which diffusers' `load_lora_weights`
 * reads ({@link saveLoRAWeights}). `LoRA.load` reads those, diffusers' older
 * `lora.down`/`lora.up` and attention-processor names, and kohya's `lora_unet_*` / `lora_te_*`
 * files with their `.alpha` entries.
 */
import * as fs from "node:fs";
import { noGrad } from "../autograd";
import { assertInteger, assertNumber, invalid } from "../errors";
import type { Module } from "../module";
import { Generator, keep, rand, randn, tidy, zeros, type Tensor } from "../tensor";
import { readSafetensors, writeSafetensors } from "./safetensors";

/** The file name diffusers' `save_lora_weights` writes and `load_lora_weights` looks for. */
export const LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors";

/** diffusers' DreamBooth/text-to-image LoRA targets: the attention projections of every transformer block. */
export const LORA_ATTENTION_TARGETS: readonly string[] = ["to_q", "to_k", "to_v", "to_out.0"];

/** diffusers' text-encoder LoRA targets (`train_dreambooth_lora.py`): the attention projections of every CLIP layer. */
export const TEXT_ENCODER_LORA_TARGETS: readonly string[] = ["q_proj", "k_proj", "v_proj", "out_proj"];

/** The pipeline components a LoRA file holds adapters for, by their key prefix in it. */
export type LoRAComponent = "unet" | "text_encoder";

/** The key of the safetensors metadata entry diffusers reads the LoRA config from. */
const METADATA_KEY = "lora_adapter_metadata";

export interface LoRAOptions {
  /** r. Default 4. */
  rank?: number;
  /** α; the update is scaled by α / r. Default: the rank (scale 1, as diffusers' training scripts). */
  alpha?: number;
  /**
   * Which layers get adapters: module names matched as PEFT's `target_modules` (a name equal
   * to an entry or ending in "." + entry; "conv1" adds the ResNet convolutions), or a RegExp on
   * the module path. Default {@link LORA_ATTENTION_TARGETS}.
   */
  targets?: readonly string[] | RegExp;
  /** A's initialization: "gaussian" (std 1/r, diffusers' training scripts) or "kaiming" (PEFT's default kaiming-uniform, a = √5). Default "gaussian". */
  init?: "gaussian" | "kaiming";
  /** Seed of A's initialization. Default 0. */
  seed?: number;
}

/** One adapted layer. */
export interface LoRALayer {
  /** The module path, e.g. "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q". */
  readonly path: string;
  /** W₀, the frozen weight (the module's own tensor; never written). */
  readonly base: Tensor;
  /** A: (r, in) or (r, in, kh, kw), float32. */
  readonly down: Tensor;
  /** B: (out, r) or (out, r, 1, 1), float32. */
  readonly up: Tensor;
  readonly rank: number;
  readonly alpha: number;
}

/** True when `path` is selected by PEFT-style target names (or a RegExp). */
function isTarget(path: string, targets: readonly string[] | RegExp): boolean {
  if (targets instanceof RegExp) return targets.test(path);
  return targets.some((t) => path === t || path.endsWith(`.${t}`));
}

/** The module paths of weights an adapter can wrap (2-d linear or 4-d convolution weights) with their tensors. */
function adaptableWeights(module: Module): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const params = module.namedParameters() as Record<string, Tensor>;
  for (const [name, p] of Object.entries(params)) {
    if (name.endsWith(".weight") && (p.ndim === 2 || p.ndim === 4)) out.set(name.slice(0, -".weight".length), keep(p));
    else p.dispose();
  }
  return out;
}

function checkOptions(o: LoRAOptions): Required<Omit<LoRAOptions, "alpha">> & { alpha: number } {
  if (o === null || typeof o !== "object") throw invalid("LoRA options object", "LoRA options", o);
  const rank = o.rank ?? 4;
  assertInteger(rank, "LoRA rank", 1);
  const alpha = o.alpha ?? rank;
  assertNumber(alpha, "LoRA alpha");
  const targets = o.targets ?? LORA_ATTENTION_TARGETS;
  if (!(targets instanceof RegExp) && !(Array.isArray(targets) && targets.length > 0 && targets.every((t) => typeof t === "string" && t !== ""))) {
    throw invalid("non-empty array of module names or a RegExp", "LoRA targets", targets);
  }
  const init = o.init ?? "gaussian";
  if (init !== "gaussian" && init !== "kaiming") throw invalid('"gaussian" or "kaiming"', "LoRA init", init);
  const seed = o.seed ?? 0;
  assertInteger(seed, "LoRA seed", 0);
  return { rank, alpha, targets, init, seed };
}

/**
 * Low-rank adapters on a TorchScript module (a U-Net's `module`).
 * @example
 * const lora = LoRA.create(model.unet.module, { rank: 4 });           // B = 0: the model is unchanged
 * const trainer = new Trainer(model.unet.module, data, { ...objective, parameters: lora.parameters(),
 *   forward: (_m, sample, timestep, batch) => { lora.apply(); return model.predictSync({ sample, timestep, encoderHiddenStates: batch.cond as Tensor }); } });
 * await trainer.run();
 * lora.save("out/pytorch_lora_weights.safetensors");
 * lora.fuse();                                                           // full-speed inference
 */
export class LoRA {
  readonly layers: readonly LoRALayer[];
  /** Multiplies every layer's α/r (diffusers' `lora_scale`); set it, then `apply()` or `fuse()`. */
  scale = 1;
  /** Keys of a loaded file that were not adapters of the component loaded (e.g. the text encoder's, loading the U-Net's), left unused. */
  readonly ignored: readonly string[];
  private state: "base" | "applied" | "fused" = "base";

  /** PEFT's `target_modules` for these layers: the names given to `create`, else the layers' paths. */
  readonly targets: readonly string[];

  private constructor(readonly module: Module, layers: LoRALayer[], targets?: readonly string[], ignored: string[] = []) {
    this.layers = layers;
    this.targets = targets ?? layers.map((l) => l.path);
    this.ignored = ignored;
  }

  /**
   * New adapters on `module`'s target layers (B = 0, so the module computes exactly as before).
   * Every parameter of the module stops requiring grad: only the adapters train.
   * @example const lora = LoRA.create(unet.module, { rank: 8, targets: [...LORA_ATTENTION_TARGETS, "conv1", "conv2"] });
   */
  static create(module: Module, options: LoRAOptions = {}): LoRA {
    const o = checkOptions(options);
    const weights = adaptableWeights(module);
    const chosen = [...weights].filter(([path]) => isTarget(path, o.targets));
    for (const [path, t] of weights) if (!chosen.some(([p]) => p === path)) t.dispose();
    if (chosen.length === 0) {
      const examples = [...weights.keys()].slice(0, 6).join(", ");
      throw new Error(`LoRA.create: no layer matches targets ${String(o.targets instanceof RegExp ? o.targets : JSON.stringify(o.targets))} (layers look like: ${examples}, ...)`);
    }
    freeze(module);
    const generator = new Generator(o.seed);
    const layers = chosen.map(([path, weight]) => {
      const base = keep(weight.isLeaf ? weight : noGrad(() => weight.detach()));
      if (base !== weight) weight.dispose();
      const [out, inFeatures, ...kernel] = base.shape;
      const fanIn = inFeatures * kernel.reduce((a, b) => a * b, 1);
      const device = base.device;
      const down = keep(
        noGrad(() =>
          tidy(() => {
            const shape = [o.rank, inFeatures, ...kernel];
            // kaiming_uniform_(a=√5): bound = gain·√(3/fan_in) with gain = √(2/(1+5)), i.e. 1/√fan_in.
            const a = o.init === "gaussian" ? randn(shape, { generator }).mul(1 / o.rank) : rand(shape, { generator }).mul(2).sub(1).mul(1 / Math.sqrt(fanIn));
            return a.to({ device }).requiresGrad_(true);
          }),
        ),
      );
      const up = keep(noGrad(() => zeros([out, o.rank, ...kernel.map(() => 1)], { device }).requiresGrad_(true)));
      return { path, base, down, up, rank: o.rank, alpha: o.alpha };
    });
    return new LoRA(module, layers, o.targets instanceof RegExp ? undefined : [...o.targets]);
  }

  /**
   * Adapters from a LoRA file (PEFT, diffusers or kohya keys; see the file's header doc) on
   * `module`, applied (fused) at `scale`: the U-Net's, or with `component: "text_encoder"` the
   * text encoder's (keys `text_encoder.*`, kohya `lora_te_*`). The α comes from the file's
   * metadata or kohya `.alpha` entries, else α = r as diffusers assumes.
   * @example
   * const lora = LoRA.load(model.unet.module, "my-sneaker/pytorch_lora_weights.safetensors", { scale: 0.8 });
   * const te = LoRA.load(model.textEncoder.module, "my-sneaker/pytorch_lora_weights.safetensors", { scale: 0.8, component: "text_encoder" });
   */
  static load(module: Module, file: string, options: { scale?: number; fuse?: boolean; component?: LoRAComponent } = {}): LoRA {
    const component = options.component ?? "unet";
    if (component !== "unet" && component !== "text_encoder") throw invalid('"unet" or "text_encoder"', "LoRA.load component", component);
    const lora = LoRA.fromStateDict(module, file, component);
    if (options.scale !== undefined) {
      assertNumber(options.scale, "LoRA.load scale");
      lora.scale = options.scale;
    }
    if (options.fuse !== false) lora.fuse();
    return lora;
  }

  private static fromStateDict(module: Module, file: string, component: LoRAComponent): LoRA {
    const who = `LoRA.load("${file}")`;
    if (typeof file !== "string" || !fs.existsSync(file)) throw new Error(`${who}: no such file`);
    const { tensors, metadata } = readSafetensors(file);
    const weights = adaptableWeights(module);
    const pairs = new Map<string, { down?: Tensor; up?: Tensor; alpha?: number }>();
    const ignored: string[] = [];
    const layers: LoRALayer[] = [];
    try {
      const kohyaNames = new Map([...weights.keys()].map((p) => [p.replace(/\./g, "_"), p]));
      const config = loraMetadata(metadata, component);
      for (const [key, t] of Object.entries(tensors)) {
        const parsed = parseKey(key, kohyaNames, component);
        if (parsed === null) {
          ignored.push(key);
          continue;
        }
        const entry = pairs.get(parsed.path) ?? {};
        if (parsed.part === "alpha") entry.alpha = t.item();
        else entry[parsed.part] = t;
        pairs.set(parsed.path, entry);
      }
      if (pairs.size === 0) throw new Error(`${who}: no ${component === "unet" ? "U-Net" : "text encoder"} LoRA weights in the file (keys look like: ${Object.keys(tensors).slice(0, 4).join(", ")})`);
      for (const [path, { down, up, alpha }] of pairs) {
        const weight = weights.get(path);
        if (!weight) throw new Error(`${who}: the file adapts "${path}", which this module does not have (or it is not a linear/conv weight)`);
        if (!down || !up) throw new Error(`${who}: "${path}" has ${down ? "no lora_B/up" : "no lora_A/down"} weight`);
        const [out, inFeatures, ...kernel] = weight.shape;
        const rank = down.shape[0];
        const wantDown = [rank, inFeatures, ...kernel].join();
        const wantUp = [out, rank, ...kernel.map(() => 1)].join();
        if (down.shape.join() !== wantDown || up.shape.join() !== wantUp) {
          throw new Error(`${who}: "${path}" has A [${down.shape}] and B [${up.shape}] but its weight [${weight.shape}] needs A [${wantDown}] and B [${wantUp}]`);
        }
        const device = weight.device;
        const place = (t: Tensor) => keep(noGrad(() => tidy(() => t.to({ device, dtype: "float32" }).clone().requiresGrad_(true))));
        const base = keep(weight.isLeaf ? weight : noGrad(() => weight.detach()));
        layers.push({ path, base, down: place(down), up: place(up), rank, alpha: alpha ?? config.alpha ?? rank });
      }
      freeze(module);
    } catch (error) {
      for (const l of layers) for (const t of [l.down, l.up, l.base]) t.dispose();
      layers.length = 0;
      throw error;
    } finally {
      for (const t of Object.values(tensors)) t.dispose();
      const used = new Set(layers.map((l) => l.base));
      for (const w of weights.values()) if (!used.has(w)) w.dispose();
    }
    return new LoRA(module, layers, undefined, ignored);
  }

  /** The rank (the largest, when a loaded file mixes ranks). */
  get rank(): number {
    return Math.max(...this.layers.map((l) => l.rank));
  }

  /** α (of the first layer; a kohya file may vary it per layer). */
  get alpha(): number {
    return this.layers[0].alpha;
  }

  /** Trainable parameters in the layers. */
  get numParameters(): number {
    return this.layers.reduce((n, l) => n + l.down.numel + l.up.numel, 0);
  }

  /** True while the module's weights hold W₀ + s·B·A without a graph (after `fuse()`). */
  get fused(): boolean {
    return this.state === "fused";
  }

  /**
   * The adapters by PEFT name (`<path>.lora_A.weight`, `<path>.lora_B.weight`): what a Trainer
   * owns with its `parameters` option. They belong to this object: do not dispose them.
   */
  parameters(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const l of this.layers) {
      out[`${l.path}.lora_A.weight`] = l.down;
      out[`${l.path}.lora_B.weight`] = l.up;
    }
    return out;
  }

  /**
   * Sets each target weight of the module to W₀ + s·B·A in W₀'s dtype. With grad mode on, the
   * module's next forward records the adapters' use, so backward reaches A and B; call it
   * before every training forward (the adapters change at every step).
   */
  apply(): void {
    tidy(() => {
      for (const l of this.layers) this.module.setParameter(`${l.path}.weight`, this.weightOf(l));
    });
    this.state = "applied";
  }

  /** Writes W₀ + s·B·A into the module, without a graph: inference runs at the base model's speed. */
  fuse(): void {
    noGrad(() => this.apply());
    this.state = "fused";
  }

  /** Puts W₀ back in every adapted layer (to switch adapters or compare with the base model). */
  unfuse(): void {
    for (const l of this.layers) this.module.setParameter(`${l.path}.weight`, l.base);
    this.state = "base";
  }

  /** W₀ + s·B·A for one layer (a new tensor). */
  private weightOf(l: LoRALayer): Tensor {
    const s = (this.scale * l.alpha) / l.rank;
    const [out] = l.base.shape;
    const delta = l.up.reshape([out, l.rank]).matmul(l.down.reshape([l.rank, -1])).reshape(l.base.shape).mul(s); // (out, in[, kh, kw])
    return l.base.add(l.base.dtype === "float32" ? delta : delta.to(l.base.dtype));
  }

  /**
   * The adapters under diffusers' pipeline keys: `<prefix>.<path>.lora_A.weight` / `lora_B.weight`.
   * The tensors are this object's (do not dispose them).
   */
  stateDict(prefix = "unet"): Record<string, Tensor> {
    return Object.fromEntries(Object.entries(this.parameters()).map(([k, v]) => [prefix ? `${prefix}.${k}` : k, v]));
  }

  /**
   * Writes a `pytorch_lora_weights.safetensors`-style file (atomically) with these adapters as
   * the U-Net's; {@link saveLoRAWeights} writes a U-Net's and a text encoder's together.
   * @example lora.save(path.join(out, LORA_WEIGHTS_FILE));
   */
  save(file: string): void {
    saveLoRAWeights(file, { unet: this });
  }

  /** diffusers' LoRA config of these adapters (one rank and alpha), or null when the layers mix them (a kohya file). */
  config(): { r: number; lora_alpha: number; target_modules: string[] } | null {
    const alphas = new Set(this.layers.map((l) => l.alpha));
    const ranks = new Set(this.layers.map((l) => l.rank));
    return alphas.size === 1 && ranks.size === 1 ? { r: this.rank, lora_alpha: this.alpha, target_modules: [...this.targets] } : null;
  }

  /** Frees the adapters and W₀ handles; the module keeps whatever weights it holds now (fused or not). */
  dispose(): void {
    for (const l of this.layers) for (const t of [l.down, l.up, l.base]) t.dispose();
  }
}

/**
 * Writes adapters of a pipeline's components into one file (atomically), as diffusers'
 * `save_lora_weights` does: PEFT keys behind each component's prefix (`unet.`,
 * `text_encoder.`) and each component's config (`unet.r`, `unet.lora_alpha`,
 * `unet.target_modules`, `text_encoder.r`, ...) in the header's `lora_adapter_metadata`.
 * @example saveLoRAWeights(path.join(out, LORA_WEIGHTS_FILE), { unet: unetLoRA, text_encoder: textEncoderLoRA });
 */
export function saveLoRAWeights(file: string, adapters: Partial<Record<LoRAComponent, LoRA>>): void {
  const parts = Object.entries(adapters).filter((e): e is [LoRAComponent, LoRA] => e[1] !== undefined);
  if (parts.length === 0) throw invalid("{ unet?, text_encoder? } with at least one LoRA", "saveLoRAWeights adapters", adapters);
  const config: Record<string, unknown> = {};
  let complete = true;
  for (const [component, lora] of parts) {
    const c = lora.config();
    if (c === null) complete = false;
    else for (const [k, v] of Object.entries(c)) config[`${component}.${k}`] = v;
  }
  const metadata: Record<string, string> = { format: "pt" };
  if (complete) metadata[METADATA_KEY] = JSON.stringify(config, null, 2);
  const tensors = noGrad(() => tidy(() => Object.fromEntries(parts.flatMap(([component, lora]) => Object.entries(lora.stateDict(component)).map(([k, v]) => [k, keep(v.detach())])))));
  try {
    writeSafetensors(file, tensors, metadata);
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
}

/** Stops every parameter of the module from requiring grad. */
function freeze(module: Module): void {
  for (const p of Object.values(module.namedParameters() as Record<string, Tensor>)) {
    p.requiresGrad = false;
    p.dispose();
  }
}

/** α from diffusers' `lora_adapter_metadata` header entry ("<component>.lora_alpha", or "lora_alpha" in a U-Net-only file). */
function loraMetadata(metadata: Record<string, string>, component: LoRAComponent): { alpha?: number } {
  const raw = metadata[METADATA_KEY];
  if (!raw) return {};
  try {
    const parsed = JSON.parse(raw) as Record<string, unknown>;
    const alpha = parsed[`${component}.lora_alpha`] ?? (component === "unet" ? parsed.lora_alpha : undefined);
    return typeof alpha === "number" ? { alpha } : {};
  } catch {
    return {};
  }
}

/**
 * A file key -> (module path, part), or null for keys that are not adapters of `component`.
 * Accepts PEFT (`<path>.lora_A.weight`), diffusers (`<path>.lora.down.weight`,
 * `<attn>.processor.to_q_lora.down.weight`) and kohya (`lora_unet_<path_>.lora_down.weight`,
 * `lora_te_<path_>...`, `.alpha`) names; U-Net keys may come without their `unet.` prefix.
 */
function parseKey(key: string, kohyaNames: Map<string, string>, component: LoRAComponent): { path: string; part: "down" | "up" | "alpha" } | null {
  const kohyaPrefix = component === "unet" ? "lora_unet_" : "lora_te_";
  if (key.startsWith(kohyaPrefix)) {
    const match = new RegExp(`^${kohyaPrefix}(.+)\\.(lora_down\\.weight|lora_up\\.weight|alpha)$`).exec(key);
    const path = match && kohyaNames.get(match[1]);
    if (!match || !path) return null;
    return { path, part: match[2] === "alpha" ? "alpha" : match[2].startsWith("lora_down") ? "down" : "up" };
  }
  if (key.startsWith("lora_")) return null; // another component's kohya key
  let name: string;
  if (key.startsWith(`${component}.`)) name = key.slice(component.length + 1);
  else if (component === "unet" && !key.startsWith("text_encoder") && !key.startsWith("unet")) name = key;
  else return null;
  let match = /^(.+)\.(?:lora_A|lora\.down|lora_linear_layer\.down)\.weight$/.exec(name);
  if (match) return { path: match[1], part: "down" };
  match = /^(.+)\.(?:lora_B|lora\.up|lora_linear_layer\.up)\.weight$/.exec(name);
  if (match) return { path: match[1], part: "up" };
  match = /^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/.exec(name);
  if (match) return { path: `${match[1]}.${match[2] === "to_out" ? "to_out.0" : match[2]}`, part: match[3] as "down" | "up" };
  return null;
}
