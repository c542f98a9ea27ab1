/**
 * Explicit tensor lifetimes: every tensor created inside `tidy(fn)` / `tidyAsync(fn)` is
 * disposed when the scope ends, except what the scope returns (moved to the enclosing
 * scope) and what `keep()` exempts. GC finalizers remain only a safety net.
 */
import { AsyncLocalStorage } from "node:async_hooks";

interface Disposable {
  dispose(): void;
}

class Scope {
  readonly tracked = new Set<Disposable>();
}

const syncScopes: Scope[] = [];
const asyncScopes = new AsyncLocalStorage<Scope>();
const kept = new WeakSet<Disposable>();

function currentScope(): Scope | undefined {
  return syncScopes.length > 0 ? syncScopes[syncScopes.length - 1] : asyncScopes.getStore();
}

/** Called by the Tensor constructor: every new tensor joins the innermost scope. */
export function track(tensor: Disposable): void {
  currentScope()?.tracked.add(tensor);
}

/**
 * Exempts `tensor` from the enclosing tidy scopes; the caller disposes it.
 * @example const weights = keep(randn([4, 4]));
 */
export function keep<T extends Disposable>(tensor: T): T {
  kept.add(tensor);
  for (const scope of syncScopes) scope.tracked.delete(tensor);
  asyncScopes.getStore()?.tracked.delete(tensor);
  return tensor;
}

function collectResults(value: unknown, into: Set<unknown>, isTensor: (v: unknown) => boolean, depth = 0): void {
  if (depth > 8 || value === null || typeof value !== "object") return;
  if (isTensor(value)) {
    into.add(value);
  } else if (Array.isArray(value)) {
    for (const item of value) collectResults(item, into, isTensor, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype || value instanceof Map) {
    const values = value instanceof Map ? value.values() : Object.values(value);
    for (const item of values) collectResults(item, into, isTensor, depth + 1);
  }
}

let tensorPredicate: (v: unknown) => boolean = () => false;
/** lib/tensor.ts tells the scope module what a tensor is (avoids an import cycle). */
export function setTensorPredicate(predicate: (v: unknown) => boolean): void {
  tensorPredicate = predicate;
}

function close(scope: Scope, result: unknown): void {
  const results = new Set<unknown>();
  collectResults(result, results, tensorPredicate);
  const parent = currentScope();
  for (const tensor of scope.tracked) {
    if (results.has(tensor)) parent?.tracked.add(tensor);
    else if (!kept.has(tensor)) tensor.dispose();
  }
  scope.tracked.clear();
}

/**
 * Runs `fn` and disposes every tensor it created, except those in its return value
 * (a tensor, or arrays / plain objects / Maps holding tensors).
 * @example const y = tidy(() => x.mul(2).add(1)); // the intermediate x*2 is freed
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Scope();
  syncScopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    syncScopes.pop();
    close(scope, undefined);
    throw error;
  }
  syncScopes.pop();
  if (result instanceof Promise) {
    close(scope, undefined);
    throw new TypeError("tidy: the function returned a Promise; use tidyAsync for async work");
  }
  close(scope, result);
  return result;
}

/**
 * The async twin of `tidy`: tensors created anywhere in `fn`'s async call tree are tracked
 * (through AsyncLocalStorage) and disposed when the returned promise settles.
 * @example const image = await tidyAsync(async () => decode(await unet.forward(x, t, ctx)));
 */
export async function tidyAsync<T>(fn: () => Promise<T>): Promise<T> {
  const scope = new Scope();
  // A sync scope open around this call must not capture the async work's tensors.
  const saved = syncScopes.splice(0, syncScopes.length);
  let pending: Promise<T>;
  try {
    pending = asyncScopes.run(scope, fn);
  } finally {
    syncScopes.push(...saved);
  }
  try {
    const result = await pending;
    close(scope, result);
    return result;
  } catch (error) {
    close(scope, undefined);
    throw error;
  }
}
