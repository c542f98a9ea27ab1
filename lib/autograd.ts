/**
 * Grad mode scopes. libtorch's grad mode is per thread; async module calls capture the
 * mode in force when they are queued, so `noGrad` is honoured inside async work too.
 */
import { binding } from "./native";

/**
 * Runs `fn` with gradient recording off, then restores the previous mode.
 * @example const eps = noGrad(() => unet.forwardSync(x, t, ctx));
 */
export function noGrad<T>(fn: () => T): T {
  return withGradMode(false, fn);
}

/** Runs `fn` with gradient recording on (inside a noGrad scope, for example). */
export function enableGrad<T>(fn: () => T): T {
  return withGradMode(true, fn);
}

function withGradMode<T>(enabled: boolean, fn: () => T): T {
  const previous = binding.isGradEnabled();
  binding.setGradEnabled(enabled);
  try {
    return fn();
  } finally {
    binding.setGradEnabled(previous);
  }
}

/**
 * The async twin of `noGrad`: grad mode is off until the promise settles. Module calls
 * queued meanwhile run without grad; do not interleave it with training code.
 * @example const image = await noGradAsync(() => pipeline.generate(prompt));
 */
export async function noGradAsync<T>(fn: () => Promise<T>): Promise<T> {
  const previous = binding.isGradEnabled();
  binding.setGradEnabled(false);
  try {
    return await fn();
  } finally {
    binding.setGradEnabled(previous);
  }
}

export function isGradEnabled(): boolean {
  return binding.isGradEnabled();
}
