/**
 * The one place that finds this package's root folder (the nearest folder above this file
 * whose package.json is ours), for the addon, the shipped data and the built-in models. It
 * works the same from `lib/` under tsx, from `dist/` and from `node_modules/torch-diffusion`.
 */
import * as fs from "node:fs";
import * as path from "node:path";

const PACKAGE_NAME = "torch-diffusion";
let cached: string | undefined;

function isOurManifest(file: string): boolean {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")).name === PACKAGE_NAME;
  } catch {
    return false; // missing or not JSON: keep looking
  }
}

/**
 * The package's root folder.
 * @example path.join(packageRoot(), "models", "builtin")
 */
export function packageRoot(): string {
  if (cached !== undefined) return cached;
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (isOurManifest(path.join(dir, "package.json"))) return (cached = dir);
    if (path.dirname(dir) === dir) return (cached = path.resolve(__dirname, ".."));
  }
}

/** A path inside the package. @example packagePath("data", "clip", "bpe_simple_vocab_16e6.txt.gz") */
export function packagePath(...parts: string[]): string {
  return path.join(packageRoot(), ...parts);
}
