/**
 * Exponential moving average of model weights (Polyak averaging), as diffusers' `EMAModel`:
 * `shadow ← shadow - (1 - decay) · (shadow - param)` after every optimizer step, with the
 * decay warmed up so early, noisy weights do not dominate the average.
 */
import { noGrad } from "../autograd";
import { assertInteger, assertNumber, invalid } from "../errors";
import type { Module } from "../module";
import { keep, tidy } from "../scope";
import { assertTensor, type Tensor } from "../tensor";

export interface EMAOptions {
  /** Upper bound of the decay. Default 0.9999. */
  decay?: number;
  /** Lower bound of the decay once averaging has started. Default 0. */
  minDecay?: number;
  /** Updates before averaging starts (the shadow just copies the weights until then). Default 0. */
  updateAfterStep?: number;
  /**
   * How the decay ramps up with the update count `s` (counted from `updateAfterStep`):
   * `true` (default, diffusers' default): `min(decay, (1 + s) / (10 + s))`;
   * `{ power, invGamma }` (diffusers' `use_ema_warmup`): `1 - (1 + s / invGamma) ** -power`;
   * `false`: the constant `decay` from the first update on.
   */
  warmup?: boolean | { power: number; invGamma?: number };
}

/** The EMA state that checkpoints store. */
export interface EMAState {
  step: number;
  shadow: Record<string, Tensor>;
}

/**
 * The decay used by the `step`-th update (1-based), as diffusers' `EMAModel.get_decay`.
 * @example emaDecay(1, { decay: 0.999 }); // 0: the first update copies the weights
 * @example emaDecay(11, { decay: 0.999 }); // 11 / 20
 */
export function emaDecay(step: number, options: EMAOptions = {}): number {
  const decay = options.decay ?? 0.9999;
  const warmup = options.warmup ?? true;
  if (warmup === false) return decay;
  const s = Math.max(0, step - (options.updateAfterStep ?? 0) - 1);
  if (s <= 0) return 0;
  const value = warmup === true ? (1 + s) / (10 + s) : 1 - (1 + s / (warmup.invGamma ?? 1)) ** -warmup.power;
  return Math.max(Math.min(value, decay), options.minDecay ?? 0);
}

function checkOptions(o: EMAOptions): void {
  if (typeof o !== "object" || o === null) throw invalid("options object", "EMA options", o);
  if (o.decay !== undefined) {
    assertNumber(o.decay, "EMA decay");
    if (o.decay < 0 || o.decay > 1) throw invalid("number in [0, 1]", "EMA decay", o.decay);
  }
  if (o.minDecay !== undefined) assertNumber(o.minDecay, "EMA minDecay");
  if (o.updateAfterStep !== undefined) assertInteger(o.updateAfterStep, "EMA updateAfterStep", 0);
  const w = o.warmup;
  if (w !== undefined && typeof w !== "boolean") {
    if (typeof w !== "object" || w === null || typeof w.power !== "number") throw invalid("boolean or { power, invGamma }", "EMA warmup", w);
    if (w.invGamma !== undefined) assertNumber(w.invGamma, "EMA warmup.invGamma");
  }
}

/**
 * Shadow copies of named parameters, updated after each optimizer step. The parameters are
 * held by reference, so `update()` reads their current values.
 * @example
 * const ema = new EMA(model.namedParameters(), { decay: 0.999 });
 * for (...) { optimizer.update(); ema.update(); }
 * const averaged = model.copy(); ema.copyTo(averaged);
 */
export class EMA {
  readonly options: EMAOptions;
  /** Updates applied so far (diffusers' `optimization_step`). */
  step = 0;
  /** The decay of the last update. */
  lastDecay = 0;
  private readonly params: Record<string, Tensor>;
  private shadow: Record<string, Tensor>;

  constructor(params: Record<string, Tensor>, options: EMAOptions = {}) {
    if (typeof params !== "object" || params === null || Object.keys(params).length === 0) throw invalid("non-empty record of named parameter Tensors", "EMA params", params);
    for (const [name, p] of Object.entries(params)) assertTensor(p, `EMA params["${name}"]`);
    checkOptions(options);
    this.options = { ...options };
    this.params = params;
    this.shadow = noGrad(() => tidy(() => Object.fromEntries(Object.entries(params).map(([name, p]) => [name, keep(p.detach().clone())]))));
  }

  /** Moves every shadow weight one step towards its parameter. */
  update(): void {
    this.step += 1;
    const decay = emaDecay(this.step, this.options);
    this.lastDecay = decay;
    const oneMinusDecay = 1 - decay;
    // One scope per weight: its temporaries are freed (and their memory reused) before the next.
    noGrad(() => {
      for (const [name, s] of Object.entries(this.shadow)) tidy(() => s.sub_(s.sub(this.params[name]).mul(oneMinusDecay)));
    });
  }

  /** The averaged weights by name (owned by the EMA: do not dispose). */
  namedParameters(): Record<string, Tensor> {
    return { ...this.shadow };
  }

  /** Copies the averaged weights into a module with the same parameter names (e.g. `model.copy()`). */
  copyTo(module: Module): void {
    const target = module.namedParameters() as Record<string, Tensor>;
    try {
      for (const name of Object.keys(this.shadow)) {
        if (!target[name]) throw new Error(`EMA.copyTo: the module has no parameter "${name}"`);
      }
      noGrad(() => {
        for (const [name, s] of Object.entries(this.shadow)) target[name].copy_(s);
      });
    } finally {
      for (const t of Object.values(target)) t.dispose();
    }
  }

  stateDict(): EMAState {
    return { step: this.step, shadow: this.shadow };
  }

  /** Restores `stateDict()` output (e.g. from a checkpoint); names and shapes must match. */
  loadStateDict(state: EMAState): void {
    if (typeof state?.step !== "number" || typeof state.shadow !== "object") throw invalid("EMA state from stateDict()", "state", state);
    for (const [name, s] of Object.entries(this.shadow)) {
      const saved = state.shadow[name];
      if (!saved) throw new Error(`EMA.loadStateDict: the state has no weight "${name}"`);
      if (saved.shape.join() !== s.shape.join()) throw new Error(`EMA.loadStateDict: "${name}" has shape [${saved.shape}] but the parameter has [${s.shape}]`);
    }
    noGrad(() => {
      for (const [name, s] of Object.entries(this.shadow)) s.copy_(state.shadow[name]);
    });
    this.step = state.step;
  }

  dispose(): void {
    for (const s of Object.values(this.shadow)) s.dispose();
    this.shadow = {};
  }
}
