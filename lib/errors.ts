/** Argument guards and the one error factory: `Expected positive integer for steps but received -1 of type number`. */

export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `array of length ${value.length}`;
  if (typeof value === "string") return `"${value}" of type string`;
  if (typeof value === "object") return `${(value as object).constructor?.name ?? "object"}`;
  return `${String(value)} of type ${typeof value}`;
}

export function invalid(expected: string, name: string, value: unknown): TypeError {
  return new TypeError(`Expected ${expected} for ${name} but received ${describe(value)}`);
}

export function isInteger(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value);
}

/** True for `[low, high]`: two numbers (not NaN), low ≤ high. @example isTimestepInterval([200, 900]) // true */
export function isTimestepInterval(value: unknown): value is [number, number] {
  return Array.isArray(value) && value.length === 2 && value.every((v) => typeof v === "number" && !Number.isNaN(v)) && value[0] <= value[1];
}

export function assertInteger(value: unknown, name: string, min = -Infinity): asserts value is number {
  if (!isInteger(value) || value < min) {
    throw invalid(min === 1 ? "positive integer" : min === 0 ? "non-negative integer" : "integer", name, value);
  }
}

export function assertNumber(value: unknown, name: string): asserts value is number {
  if (typeof value !== "number" || Number.isNaN(value)) throw invalid("number", name, value);
}

export function assertShape(value: unknown, name = "shape"): asserts value is number[] {
  if (!Array.isArray(value) || !value.every((d) => isInteger(d) && d >= 0)) {
    throw invalid("array of non-negative integers", name, value);
  }
}

export function assertOneOf<T extends string>(value: unknown, allowed: readonly T[], name: string): asserts value is T {
  if (!allowed.includes(value as T)) throw invalid(`one of ${allowed.join(", ")}`, name, value);
}
