/**
 * Random numbers from libtorch's own generators: with the same seed and call sequence,
 * `randn` here equals `torch.randn(..., generator=torch.Generator().manual_seed(s))` bit
 * for bit on CPU for the same libtorch version.
 */
import { binding } from "./native";
import type { Tensor } from "./tensor";

const NativeGenerator = binding.NativeGenerator;

/**
 * A seeded random generator (CPU by default, or `"cuda"`).
 * @example const g = new Generator(42); const noise = randn([1, 4, 64, 64], { generator: g });
 */
export class Generator extends NativeGenerator {
  constructor(seed?: number | bigint, device = "cpu") {
    super(seed, device);
  }
  declare manualSeed: (seed: number | bigint) => this;
  declare readonly seed: number | bigint;
  declare readonly device: string;
  /** The generator's full state as a uint8 tensor (for checkpoints). */
  declare getState: () => Tensor;
  declare setState: (state: Tensor) => void;
}

/** The global CPU generator that factories use when no `generator` is given. */
export const defaultGenerator: Generator = Object.setPrototypeOf(new NativeGenerator(undefined, "default"), Generator.prototype);

/**
 * Seeds the global generators (CPU and every CUDA device), like `torch.manual_seed`.
 * @example manualSeed(0); const a = randn([3]);
 */
export function manualSeed(seed: number | bigint): void {
  binding.manualSeed(seed);
}
