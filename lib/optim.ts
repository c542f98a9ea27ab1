/**
 * Optimizers as PyTorch 1.13's single-tensor implementations (torch.optim.SGD / AdamW),
 * written over in-place tensor ops so the math reads like the paper, plus gradient clipping.
 * State is plain tensors: `stateDict()` / `loadStateDict()` round-trip through `save`.
 */
import { noGrad } from "./autograd";
import { fullLike, zerosLike } from "./creation";
import { assertNumber, invalid } from "./errors";
import { stack } from "./functional";
import { keep, tidy } from "./scope";
import type { Tensor } from "./tensor";

export interface OptimizerState {
  step: number;
  lr: number;
  buffers: Record<string, (Tensor | null)[]>;
}

abstract class Optimizer {
  readonly params: Tensor[];
  lr: number;
  step = 0;
  protected buffers: Record<string, (Tensor | null)[]> = {};

  constructor(params: Tensor[], lr: number, name: string) {
    if (!Array.isArray(params) || params.length === 0) throw invalid("non-empty array of parameter Tensors", `${name} params`, params);
    assertNumber(lr, `${name} lr`);
    if (lr < 0) throw invalid("non-negative number", `${name} lr`, lr);
    this.params = params;
    this.lr = lr;
  }

  /** Clears every parameter's gradient (sets it to null, like set_to_none=True). */
  zeroGrad(): void {
    for (const p of this.params) {
      const grad = p.grad;
      p.grad = null;
      grad?.dispose();
    }
  }

  /** Applies one update from the parameters' current gradients. */
  abstract update(): void;

  protected buffer(name: string, index: number): Tensor | null {
    return this.buffers[name]?.[index] ?? null;
  }
  protected setBuffer(name: string, index: number, value: Tensor): void {
    (this.buffers[name] ??= new Array(this.params.length).fill(null))[index] = keep(value);
  }

  stateDict(): OptimizerState {
    return { step: this.step, lr: this.lr, buffers: this.buffers };
  }
  loadStateDict(state: OptimizerState): void {
    if (typeof state?.step !== "number" || typeof state.buffers !== "object") throw invalid("optimizer state from stateDict()", "state", state);
    for (const [name, list] of Object.entries(state.buffers)) {
      if (list.length !== this.params.length) throw new Error(`loadStateDict: buffer "${name}" has ${list.length} entries but the optimizer has ${this.params.length} parameters`);
      list.forEach((t, i) => t && this.setBuffer(name, i, t.clone()));
    }
    this.step = state.step;
    this.lr = state.lr;
  }
  dispose(): void {
    for (const list of Object.values(this.buffers)) for (const t of list) t?.dispose();
    this.buffers = {};
  }
}

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019), as torch.optim.AdamW.
 * @example const opt = new AdamW(model.parameters(), { lr: 1e-4 }); loss.backward(); opt.update(); opt.zeroGrad();
 */
export class AdamW extends Optimizer {
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;

  constructor(params: Tensor[], options: AdamWOptions = {}) {
    super(params, options.lr ?? 1e-3, "AdamW");
    this.betas = options.betas ?? [0.9, 0.999];
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 1e-2;
  }

  update(): void {
    this.step += 1;
    const [beta1, beta2] = this.betas;
    const biasCorrection1 = 1 - beta1 ** this.step;
    const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** this.step);
    const stepSize = this.lr / biasCorrection1;
    noGrad(() =>
      this.params.forEach((param, i) => {
        const grad = param.grad;
        if (!grad) return;
        tidy(() => {
          // 1. decoupled weight decay
          param.mul_(1 - this.lr * this.weightDecay);
          // 2. moment estimates
          const expAvg = this.buffer("exp_avg", i) ?? this.setBufferAndGet("exp_avg", i, zerosLike(param));
          const expAvgSq = this.buffer("exp_avg_sq", i) ?? this.setBufferAndGet("exp_avg_sq", i, zerosLike(param));
          expAvg.mul_(beta1).add_(grad, 1 - beta1);
          expAvgSq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
          // 3. bias-corrected step
          const denom = expAvgSq.sqrt().div_(biasCorrection2Sqrt).add_(this.eps);
          param.addcdiv_(expAvg, denom, -stepSize);
        });
        grad.dispose();
      }),
    );
  }

  private setBufferAndGet(name: string, index: number, value: Tensor): Tensor {
    this.setBuffer(name, index, value);
    return value;
  }
}

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/**
 * Stochastic gradient descent with optional momentum / Nesterov, as torch.optim.SGD.
 * @example const opt = new SGD(params, { lr: 0.1, momentum: 0.9 });
 */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;

  constructor(params: Tensor[], options: SGDOptions) {
    super(params, options?.lr, "SGD");
    this.momentum = options.momentum ?? 0;
    this.dampening = options.dampening ?? 0;
    this.weightDecay = options.weightDecay ?? 0;
    this.nesterov = options.nesterov ?? false;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) throw new Error("SGD: Nesterov momentum requires a momentum and zero dampening");
  }

  update(): void {
    this.step += 1;
    noGrad(() =>
      this.params.forEach((param, i) => {
        const grad = param.grad;
        if (!grad) return;
        tidy(() => {
          let direction = this.weightDecay !== 0 ? grad.add(param, this.weightDecay) : grad;
          if (this.momentum !== 0) {
            let buf = this.buffer("momentum_buffer", i);
            if (!buf) {
              buf = direction.clone().detach();
              this.setBuffer("momentum_buffer", i, buf);
            } else {
              buf.mul_(this.momentum).add_(direction, 1 - this.dampening);
            }
            direction = this.nesterov ? direction.add(buf, this.momentum) : buf;
          }
          param.add_(direction, -this.lr);
        });
        grad.dispose();
      }),
    );
  }
}

/**
 * Scales gradients so their joint 2-norm is at most `maxNorm`, like torch.nn.utils.clip_grad_norm_.
 * Returns the norm before clipping.
 * @example const norm = clipGradNorm(model.parameters(), 1.0);
 */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  assertNumber(maxNorm, "clipGradNorm maxNorm");
  return noGrad(() =>
    tidy(() => {
      const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
      if (grads.length === 0) return 0;
      const totalNorm = stack(grads.map((g) => g.norm(2))).norm(2);
      const clipCoef = fullLike(totalNorm, maxNorm).div(totalNorm.add(1e-6)).clamp(null, 1.0); // max_norm / (norm + 1e-6), as PyTorch
      for (const g of grads) g.mul_(clipCoef);
      return totalNorm.item();
    }),
  );
}
