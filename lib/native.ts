/**
 * The one place that loads the addon. Order: TORCH_DIFFUSION_NATIVE (a .node path), a source
 * build in build/Release, then a prebuilt binary under prebuilds/ whose variant (libtorch
 * version, soname, C++ ABI, CPU or CUDA major; the rule is scripts/prebuilt.js) matches the
 * libtorch this machine has. Nothing here needs the install script to have run: with a
 * matching prebuilt binary the package works where npm 11 or pnpm 10 skipped it.
 *
 * A prebuilt binary is refused with one message when its variant differs from the libtorch
 * found, before dlopen can fail with a linker message. Before loading it, the libtorch found
 * is loaded by absolute path, so the binary binds to that one even when it is not on the
 * dynamic loader's search path (a pip torch, a libtorch download).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Binding } from "./binding";
import { packageRoot } from "./package_root";

interface PrebuiltVariant {
  file: string;
  libc: string;
  torch: string; // "1.13"
  soname: string; // "libtorch.so.1.13" or "libtorch.so"
  abi: "cxx11" | "precxx11";
  device: string; // "cpu", "cuda12"
}

/** What scripts/find-libtorch.js says about the libtorch found. */
interface LibtorchFound {
  source: string;
  libDir: string;
  version: string;
  soname: string;
  cxx11Abi: boolean | null;
  cuda: boolean;
  cudaMajor: string | null;
}

/** scripts/prebuilt.js: the naming and matching rule the install script and the prebuild share. */
interface PrebuiltRule {
  parsePrebuiltName(file: string): PrebuiltVariant | null;
  describeVariant(variant: Omit<PrebuiltVariant, "file">): string;
  howToGetVariant(variant: Omit<PrebuiltVariant, "file">): string;
  prebuiltDir(root: string): string;
  listPrebuilt(dir: string): PrebuiltVariant[];
  findPrebuilt(dir: string, torch: LibtorchFound): { variants: PrebuiltVariant[]; wanted: Omit<PrebuiltVariant, "file">; match: PrebuiltVariant | null };
}
// eslint-disable-next-line @typescript-eslint/no-var-requires
const prebuiltRule = (): PrebuiltRule => require(path.join(packageRoot(), "scripts", "prebuilt.js"));

/**
 * The variant a prebuilt file name records (see scripts/prebuilt.js), else null.
 * @example parsePrebuiltName("torch_diffusion.napi.glibc.torch1.13.so1.13.cxx11.cpu.node")?.device // "cpu"
 */
export function parsePrebuiltName(file: string): PrebuiltVariant | null {
  return prebuiltRule().parsePrebuiltName(file);
}

/** dlopen's RTLD_NODELETE (glibc and musl), which Node does not export: the library stays loaded when Node closes it. */
const RTLD_NODELETE = 0x1000;

/** Loads libtorch by absolute path, so the prebuilt binary's NEEDED entries bind to it. */
function preloadLibtorch(torch: LibtorchFound): void {
  const names = fs.readdirSync(torch.libDir).filter((n) => /^libtorch\.so(\.\d+)*$/.test(n));
  const file = path.join(torch.libDir, names.includes(torch.soname) ? torch.soname : names.sort((a, b) => a.length - b.length)[0]);
  // RTLD_LOCAL: libtorch's dependencies (Debian's pull in GLib through OpenCV) must not take over symbols of libraries
  // loaded later, such as the GLib inside sharp's libvips.
  const flags = os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_LOCAL | RTLD_NODELETE;
  try {
    process.dlopen({ exports: {} }, file, flags);
  } catch (error) {
    // libtorch is no addon: Node loads it, finds no module and says so; the library stays (RTLD_NODELETE).
    if (!/did not self-register/.test((error as Error).message)) throw error;
  }
}

function loadPrebuilt(errors: string[]): Binding | null {
  const rule = prebuiltRule();
  const dir = rule.prebuiltDir(packageRoot());
  if (rule.listPrebuilt(dir).length === 0) {
    errors.push(`This package has no prebuilt binary for ${process.platform}-${process.arch}${fs.existsSync(path.join(packageRoot(), "build", "Release", "torch_diffusion.node")) ? "" : " and no source build (build/Release/torch_diffusion.node)"}.`);
    return null;
  }
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { findLibtorchRuntime } = require(path.join(packageRoot(), "scripts", "find-libtorch.js")) as { findLibtorchRuntime(): LibtorchFound };
  let torch: LibtorchFound;
  try {
    torch = findLibtorchRuntime();
  } catch (error) {
    errors.push((error as Error).message.split("\n")[0]);
    return null;
  }
  const { variants, wanted, match } = rule.findPrebuilt(dir, torch);
  if (!match) {
    errors.push(
      `No prebuilt binary fits the libtorch found (${torch.source}, ${torch.libDir}): it is ${rule.describeVariant(wanted)}; ` +
        `this package has ${variants.map((v) => `${rule.describeVariant(v)} (${rule.howToGetVariant(v)})`).join("; ")}.`,
    );
    return null;
  }
  try {
    preloadLibtorch(torch);
    return require(path.join(dir, match.file)) as Binding;
  } catch (error) {
    errors.push(`${path.join(dir, match.file)} failed to load: ${(error as Error).message}`);
    return null;
  }
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
      "  - it needs libtorch: Debian `sudo apt-get install -y libtorch-dev`, or `export LIBTORCH=/path/to/libtorch`,",
      "    or a Python PyTorch importable by the `python3` on PATH",
      "  - build the addon from source for the libtorch you have: `npm rebuild torch-diffusion` (pnpm: `pnpm approve-builds`, then",
      "    `pnpm rebuild torch-diffusion`; in a checkout `npm run build:native`); it needs cmake and a C++ compiler",
      "    (Debian `sudo apt-get install -y cmake g++ make`)",
    ].join("\n"),
  );
}

export const binding: Binding = load();
