/**
 * Scheduler configs: the snake_case objects of diffusers' `scheduler_config.json`, validated
 * against a per-class spec of defaults (diffusers' `__init__` defaults) and checks. Unknown keys
 * are ignored as diffusers does; a bad value throws one Error naming the class and the key:
 *
 *   DDIMScheduler: config.beta_schedule must be one of linear, scaled_linear, squaredcos_cap_v2, sigmoid but received "cosine"
 */

/** One config key: its default and a check returning an error expectation (or null if fine). */
export interface Field {
  default: unknown;
  check(value: unknown): string | null;
  /** Maps an accepted value to its stored form (e.g. "-Infinity" → -Infinity). */
  normalize?: (value: unknown) => unknown;
  nullable?: boolean;
  /** Included in the resolved config only when this holds (e.g. keys of one beta schedule). */
  onlyIf?: (config: Record<string, unknown>) => boolean;
}

export type Spec = Record<string, Field>;

/** Formats a received value for an error message: JSON for plain values, else its type. @example describe("x") // '"x"' */
export function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  if (typeof value === "function") return "a function";
  try {
    const s = JSON.stringify(value);
    return s.length > 60 ? `${s.slice(0, 57)}...` : s;
  } catch {
    return `a value of type ${typeof value}`;
  }
}

/**
 * The one error factory: `${owner}: ${what} must be ${expected} but received ${value}`.
 *
 * @example
 * throw invalid("DDIMScheduler", "config.eta", "a number", "x");
 */
export function invalid(owner: string, what: string, expected: string, value: unknown): Error {
  return new Error(`${owner}: ${what} must be ${expected} but received ${describe(value)}`);
}

const isNum = (v: unknown): v is number => typeof v === "number" && !Number.isNaN(v);

/** A finite number, optionally bounded (`min`/`max` inclusive, `gt` exclusive). @example num(0.0001) */
export function num(def: number | null, o: { min?: number; max?: number; gt?: number; nullable?: boolean; finite?: boolean } = {}): Field {
  let expected = o.finite === false ? "a number" : "a finite number";
  const infinite: Record<string, number> = { Infinity: Infinity, "-Infinity": -Infinity, inf: Infinity, "-inf": -Infinity };
  const isInfStr = (v: unknown): v is string => typeof v === "string" && Object.prototype.hasOwnProperty.call(infinite, v);
  if (o.gt !== undefined) expected = `a number > ${o.gt}`;
  else if (o.min !== undefined && o.max !== undefined) expected = `a number in [${o.min}, ${o.max}]`;
  else if (o.min !== undefined) expected = `a number >= ${o.min}`;
  if (o.nullable) expected += " or null";
  return {
    default: def,
    nullable: o.nullable,
    // JSON cannot hold ±Infinity: diffusers' refs and some configs write them as strings
    normalize: o.finite === false ? (v) => (isInfStr(v) ? infinite[v] : v) : undefined,
    check: (v) => {
      if (v === null && o.nullable) return null;
      if (o.finite === false && isInfStr(v)) return null;
      if (!isNum(v) || (o.finite !== false && !Number.isFinite(v))) return expected;
      if (o.gt !== undefined && !(v > o.gt)) return expected;
      if (o.min !== undefined && v < o.min) return expected;
      if (o.max !== undefined && v > o.max) return expected;
      return null;
    },
  };
}

/** An integer `>= min` (default 0). @example int(1000, { min: 1 }) */
export function int(def: number | null, o: { min?: number; nullable?: boolean } = {}): Field {
  const min = o.min ?? 0;
  const expected = `an integer >= ${min}${o.nullable ? " or null" : ""}`;
  return {
    default: def,
    nullable: o.nullable,
    check: (v) => (v === null && o.nullable ? null : Number.isInteger(v) && (v as number) >= min ? null : expected),
  };
}

/** A boolean. @example bool(false) */
export function bool(def: boolean): Field {
  return { default: def, check: (v) => (typeof v === "boolean" ? null : "a boolean") };
}

/** One of a fixed list of strings. @example oneOf(["epsilon", "sample", "v_prediction"], "epsilon") */
export function oneOf(values: readonly string[], def: string | null, o: { nullable?: boolean; listed?: readonly string[] } = {}): Field {
  const expected = `one of ${(o.listed ?? values).join(", ")}${o.nullable ? " or null" : ""}`;
  return {
    default: def,
    nullable: o.nullable,
    check: (v) => (v === null && o.nullable ? null : typeof v === "string" && values.includes(v) ? null : expected),
  };
}

/** An array of finite numbers, or null. @example numArrayOrNull() */
export function numArrayOrNull(): Field {
  return {
    default: null,
    nullable: true,
    check: (v) =>
      v === null || (Array.isArray(v) && v.length > 0 && v.every((x) => isNum(x) && Number.isFinite(x)))
        ? null
        : "a non-empty array of finite numbers or null",
  };
}

/** An array of integers. @example intArray([]) */
export function intArray(def: number[]): Field {
  return {
    default: def,
    check: (v) => (Array.isArray(v) && v.every((x) => Number.isInteger(x)) ? null : "an array of integers"),
  };
}

/**
 * Resolves a user config against a spec: defaults filled, every value checked, result frozen.
 * `_class_name` is kept; other keys outside the spec (and `_`-prefixed metadata) are dropped.
 *
 * @example
 * const cfg = resolveConfig("DDIMScheduler", { num_train_timesteps: int(1000, { min: 1 }) }, { num_train_timesteps: 50 });
 */
export function resolveConfig<C>(owner: string, spec: Spec, user: unknown): C {
  if (user === undefined || user === null) user = {};
  if (typeof user !== "object" || Array.isArray(user)) throw invalid(owner, "config", "an object", user);
  const given = user as Record<string, unknown>;
  const out: Record<string, unknown> = { _class_name: owner };
  for (const [key, field] of Object.entries(spec)) {
    const has = Object.prototype.hasOwnProperty.call(given, key) && given[key] !== undefined;
    const value = has ? given[key] : field.default;
    const problem = field.check(value);
    if (problem) throw invalid(owner, `config.${key}`, problem, value);
    const stored = field.normalize ? field.normalize(value) : value;
    out[key] = Array.isArray(stored) ? Object.freeze([...stored]) : stored;
  }
  for (const [key, field] of Object.entries(spec)) if (field.onlyIf && !field.onlyIf(out)) delete out[key];
  return out as C;
}
