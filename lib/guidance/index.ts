/**
 * Guidance as small objects behind one interface: a guider says how many model passes
 * it needs per step (the conditions, stacked along the batch) and combines their
 * predictions into one.
 */
import { assertNumber, invalid, isTimestepInterval } from "../errors";
import { tidy, type Tensor } from "../tensor";

/** A guider's `interval` option, checked and copied. */
function checkedInterval(interval: readonly [number, number]): readonly [number, number] {
  if (!isTimestepInterval(interval)) throw invalid("[low, high] timesteps with low ≤ high", "guidanceInterval", interval);
  return [interval[0], interval[1]];
}

const inInterval = (t: number, [low, high]: readonly [number, number]): boolean => t >= low && t <= high;

export interface Guider {
  /** Conditions per sample, in the order the pipeline stacks them along the batch. */
  readonly conditions: readonly string[];
  /** Combines the per-condition predictions (each [B, ...]) into the guided prediction. */
  combine(predictions: Tensor[]): Tensor;
  /**
   * Whether guidance applies at timestep `t` (absent: always). Where it does not, the loop
   * runs only the condition at index `fullCondition` and takes its prediction as is.
   */
  activeAt?(t: number): boolean;
  readonly fullCondition?: number;
}

/**
 * Classifier-free guidance (Ho & Salimans, 2022): ε = ε_u + s·(ε_c − ε_u); with
 * `guidanceRescale` φ > 0, rescales toward the conditional prediction's std (Lin et al.,
 * "Common Diffusion Noise Schedules and Sample Steps are Flawed", 2023, Alg. 2). With
 * `interval` [low, high] it guides only the steps whose timestep lies in it and runs the
 * conditional pass alone elsewhere (Kynkäänniemi et al., "Applying Guidance in a Limited
 * Interval Improves Sample and Distribution Quality in Diffusion Models", 2024: guidance at
 * high noise levels costs variety and gains little).
 * @example const guider = new ClassifierFreeGuidance(2, 0, [100, 700]);
 */
export class ClassifierFreeGuidance implements Guider {
  readonly conditions = ["unconditional", "text"] as const;
  readonly fullCondition = 1;
  readonly interval: readonly [number, number];

  constructor(readonly scale: number, readonly guidanceRescale = 0, interval: readonly [number, number] = [-Infinity, Infinity]) {
    assertNumber(scale, "guidance scale");
    assertNumber(guidanceRescale, "guidanceRescale");
    this.interval = checkedInterval(interval);
  }

  activeAt(t: number): boolean {
    return inInterval(t, this.interval);
  }

  /** Whether the unconditional pass is needed at all (diffusers skips it for scale ≤ 1). */
  get enabled(): boolean {
    return this.scale > 1;
  }

  combine([unconditional, conditional]: Tensor[]): Tensor {
    return tidy(() => {
      const guided = unconditional.add(conditional.sub(unconditional).mul(this.scale));
      if (this.guidanceRescale <= 0) return guided;
      const dims = Array.from({ length: conditional.ndim - 1 }, (_, i) => i + 1);
      const stdText = conditional.std(dims, { keepdim: true });
      const stdGuided = guided.std(dims, { keepdim: true });
      const rescaled = guided.mul(stdText.div(stdGuided));
      return rescaled.mul(this.guidanceRescale).add(guided.mul(1 - this.guidanceRescale));
    });
  }
}

/**
 * InstructPix2Pix's dual guidance (Brooks et al., 2023, Eq. 3) over an image and a text
 * condition: ε = ε(∅,∅) + s_I·(ε(I,∅) − ε(∅,∅)) + s_T·(ε(I,T) − ε(I,∅)). With `interval`
 * [low, high] it guides only the steps whose timestep lies in it and runs the image+text pass
 * alone elsewhere, as {@link ClassifierFreeGuidance} does.
 * @example const guider = new DualGuidance({ textScale: 7.5, imageScale: 1.5, interval: [200, 900] });
 */
export class DualGuidance implements Guider {
  readonly conditions = ["image+text", "image", "unconditional"] as const;
  readonly fullCondition = 0;
  readonly textScale: number;
  readonly imageScale: number;
  readonly interval: readonly [number, number];

  constructor(options: { textScale: number; imageScale: number; interval?: readonly [number, number] }) {
    assertNumber(options?.textScale, "textScale");
    assertNumber(options.imageScale, "imageScale");
    this.textScale = options.textScale;
    this.imageScale = options.imageScale;
    this.interval = checkedInterval(options.interval ?? [-Infinity, Infinity]);
  }

  activeAt(t: number): boolean {
    return inInterval(t, this.interval);
  }

  combine([full, imageOnly, unconditional]: Tensor[]): Tensor {
    return tidy(() =>
      unconditional.add(imageOnly.sub(unconditional).mul(this.imageScale)).add(full.sub(imageOnly).mul(this.textScale)),
    );
  }
}
