/**
 * The one place that loads the addon. Order: TORCH_DIFFUSION_NATIVE (a .node path),
 * a source build in build/Release, then a prebuilt binary under prebuilds/ whose
 * variant (libtorch version, cpu/cuda) matches the libtorch this machine has.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Binding } from "./binding";
import { packageRoot } from "./package_root";

interface PrebuiltVariant {
  file: string;
  torch: string; // "1.13"
  flavor: "cpu" | "cuda";
}

/** scripts/prebuilt.js: the naming and matching rule the install script and prebuild share. */
interface PrebuiltRule {
  parsePrebuiltName(file: string): PrebuiltVariant | null;
  prebuiltDir(root: string): string;
  findPrebuilt(dir: string, torch: { version: string; cuda: boolean }): { variants: PrebuiltVariant[]; match: PrebuiltVariant | null };
}
// eslint-disable-next-line @typescript-eslint/no-var-requires
const prebuiltRule = (): PrebuiltRule => require(path.join(packageRoot(), "scripts", "prebuilt.js"));

/** Prebuilt files are named torch_diffusion.napi.<libc>.torch<major.minor>.<cpu|cuda>.node (see scripts/prebuilt.js). */
export function parsePrebuiltName(file: string): PrebuiltVariant | null {
  return prebuiltRule().parsePrebuiltName(file);
}

function loadPrebuilt(errors: string[]): Binding | null {
  const rule = prebuiltRule();
  const dir = rule.prebuiltDir(packageRoot());
  if (!fs.existsSync(dir) || !fs.readdirSync(dir).some((file) => rule.parsePrebuiltName(file))) return null;
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { findLibtorch } = require(path.join(packageRoot(), "scripts", "find-libtorch.js"));
  let torch: { version: string; cuda: boolean; source: string; libDir: string | null };
  try {
    torch = findLibtorch();
  } catch (error) {
    errors.push((error as Error).message);
    return null;
  }
  const { variants, match } = rule.findPrebuilt(dir, torch);
  if (!match) {
    errors.push(
      `The prebuilt binaries (${variants.map((v) => `torch ${v.torch} ${v.flavor}`).join(", ")}) do not match the libtorch found ` +
        `(${torch.source}: ${torch.version} ${torch.cuda ? "cuda" : "cpu"}); build from source with \`npm rebuild torch-diffusion\`.`,
    );
    return null;
  }
  // Prebuilt binaries carry no rpath to this machine's libtorch; the dynamic loader needs its directory.
  if (torch.libDir && !(process.env.LD_LIBRARY_PATH || "").split(":").includes(torch.libDir)) {
    process.env.LD_LIBRARY_PATH = [torch.libDir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(":");
  }
  return require(path.join(dir, match.file)) as Binding;
}

function load(): Binding {
  const errors: string[] = [];
  const explicit = process.env.TORCH_DIFFUSION_NATIVE;
  const candidates = explicit ? [explicit] : [path.join(packageRoot(), "build", "Release", "torch_diffusion.node")];
  for (const file of candidates) {
    if (!fs.existsSync(file)) {
      if (explicit) errors.push(`TORCH_DIFFUSION_NATIVE=${explicit} does not exist.`);
      continue;
    }
    try {
      return require(file) as Binding;
    } catch (error) {
      errors.push(`${file} failed to load: ${(error as Error).message}`);
    }
  }
  const prebuilt = loadPrebuilt(errors);
  if (prebuilt) return prebuilt;
  throw new Error(
    [
      "torch-diffusion: could not load its native addon.",
      ...errors.map((e) => `  - ${e}`),
      "Fixes:",
      "  - build it: `npm rebuild torch-diffusion` (or `npm run build:native` in a checkout)",
      "  - it needs libtorch: Debian `sudo apt-get install -y libtorch-dev`, or `export LIBTORCH=/path/to/libtorch`,",
      "    or a Python PyTorch importable by the `python3` on PATH",
    ].join("\n"),
  );
}

export const binding: Binding = load();
