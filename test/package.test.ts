/**
 * The package as a new user gets it: `npm pack`, then install the tarball into an empty
 * project (test/consumer) with no compiler on PATH and no network, then run the README's
 * library and CLI examples from there (convert a diffusers folder with the shipped exporter, then
 * generate from it) and type-check a TypeScript consumer. The tarball carries
 * the already built addon as its prebuilt binary (test/consumer/pack.ts says how it packs and
 * installs offline); when `npm pack` or the offline install is impossible the tests skip, loudly.
 */
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";
import { ProgressBar, formatDuration } from "../lib/cli/output";
import { binWith, builtAddon as addon, diskUsage, makeConsumer, packPackage, root, tscPath as tsc } from "./consumer/pack";

// eslint-disable-next-line @typescript-eslint/no-var-requires
const prebuilt = require(path.join(root, "scripts", "prebuilt.js"));
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { findLibtorch, describeLibDir, usesCxx11Abi, readElfDynamic } = require(path.join(root, "scripts", "find-libtorch.js"));

let work = "";
let consumer = "";
let env: NodeJS.ProcessEnv = {};
let skipReason: string | null = null;
let installLog = "";
let tarballBytes = 0;

function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(command, args, { cwd: consumer, env: { ...env, ...options.env }, encoding: "utf8", timeout: options.timeout ?? 60_000 });
}

function skipIfUnavailable(ctx: TestContext): void {
  if (skipReason) {
    console.warn(`SKIPPED (package install): ${skipReason}`);
    ctx.skip();
  }
}

beforeAll(() => {
  if (!fs.existsSync(addon)) {
    skipReason = `no built addon at ${addon} to ship as the prebuilt binary (run npm run build:native)`;
    return;
  }
  work = fs.mkdtempSync(path.join(os.tmpdir(), "td-package-"));
  let tarball: string;
  try {
    tarball = packPackage(work, prebuilt.prebuiltName(findLibtorch()));
  } catch (error) {
    skipReason = (error as Error).message;
    return;
  }
  tarballBytes = fs.statSync(tarball).size;
  consumer = path.join(work, "consumer");
  makeConsumer(consumer, tarball);

  // Install with no compiler on PATH and no network.
  const bareBinDir = binWith(path.join(work, "bin"));
  env = { HOME: os.homedir(), PATH: bareBinDir, TMPDIR: os.tmpdir(), npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false", LANG: "C.UTF-8" };
  for (const tool of ["cc", "c++", "g++", "cmake", "make"]) {
    expect(spawnSync("sh", ["-c", `command -v ${tool}`], { env }).status, `${tool} must not be on the consumer's PATH`).not.toBe(0);
  }
  const install = run("npm", ["ci", "--offline", "--foreground-scripts"], { timeout: 120_000 });
  installLog = `${install.stdout}\n${install.stderr}`;
  if (install.status !== 0) {
    if (/ENOTCACHED|only-if-cached/.test(installLog)) skipReason = `the npm cache lacks a dependency's tarball (run npm ci in the checkout once): ${installLog.trim().split("\n").slice(-2).join(" ")}`;
    else throw new Error(`npm ci of the packed tarball failed:\n${installLog}`);
    return;
  }
  // What `npm i -D @types/node` gives a TypeScript user.
  fs.mkdirSync(path.join(consumer, "node_modules", "@types"), { recursive: true });
  fs.symlinkSync(path.join(root, "node_modules", "@types", "node"), path.join(consumer, "node_modules", "@types", "node"));
}, 240_000);

afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe("the packed package, installed into an empty project", () => {
  it("installs from the tarball with the prebuilt binary: no compiler, no build tree", (ctx) => {
    skipIfUnavailable(ctx);
    const installed = path.join(consumer, "node_modules", "torch-diffusion");
    expect(installLog).toMatch(/torch-diffusion: using the prebuilt torch_diffusion\.napi\.glibc\.torch\d+\.\d+\.so[\d.]*\.(cxx11|precxx11)\.(cpu|cuda\d*)\.node/);
    expect(fs.existsSync(path.join(installed, "build"))).toBe(false);
    const shipped = ["LICENSE", "dist/index.d.ts", "dist/cli.js", "scripts/prebuilt.js", "models/builtin/model_index.json", "models/builtin/recipe.json", "models/builtin-instruct/model_index.json", "models/builtin-instruct/training.json", "models/builtin-dit/model_index.json", "models/builtin-dit/transformer/model.pt"];
    const exporter = ["scripts/export.py", "scripts/safetensors_io.py", ...["__init__", "loading", "unet_2d_condition", "autoencoder_kl", "clip_text", "dit", "signatures"].map((m) => `scripts/torch_diffusion_models/${m}.py`)];
    for (const file of [...shipped, ...exporter]) expect(fs.existsSync(path.join(installed, file)), file).toBe(true);
    expect(fs.existsSync(path.join(installed, "models", "builtin", "TRAINING.json"))).toBe(false);
    expect(fs.existsSync(path.join(installed, "models", "builtin-instruct", "checkpoints"))).toBe(false);
    expect(fs.readdirSync(path.join(installed, "scripts", "torch_diffusion_models"))).not.toContain("__pycache__");
    const names = fs.readdirSync(path.join(consumer, "node_modules"));
    expect(names).not.toContain("cmake-js");
    expect(names).not.toContain("node-gyp-build");
    console.log(`package: tarball ${(tarballBytes / 1e6).toFixed(1)} MB, node_modules ${(diskUsage(path.join(consumer, "node_modules")) / 1e6).toFixed(1)} MB with the prebuilt binary`);
  });

  it("runs the library example from CommonJS", (ctx) => {
    skipIfUnavailable(ctx);
    const result = run(process.execPath, ["example.cjs"]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const out = JSON.parse(result.stdout.trim().split("\n").pop()!);
    expect(out.shape).toEqual([1, 4, 8, 8]);
    expect(out.builtin).toBe(path.join(consumer, "node_modules", "torch-diffusion", "models", "builtin"));
    expect(out.defaults).toEqual({ guidanceScale: 2, numInferenceSteps: 20, scheduler: "DPMSolverMultistepScheduler", guidanceInterval: [200, 900] });
    expect(out.max).toBeLessThanOrEqual(1);
    expect(out.images[0]).toBe(1);
    expect(fs.statSync(path.join(consumer, "cjs.png")).size).toBeGreaterThan(0);
  });

  it("runs the library from an ES module (namespace, default and named imports)", (ctx) => {
    skipIfUnavailable(ctx);
    const result = run(process.execPath, ["example.mjs"]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const out = JSON.parse(result.stdout.trim());
    expect(out.same).toBe(true);
    expect(Number.isFinite(out.sum)).toBe(true);
    expect(out.timesteps).toHaveLength(4);
  });

  it.for(["nodenext", "node16", "bundler", "commonjs"])("type-checks a TypeScript consumer with `using` under module %s", (mode, ctx) => {
    skipIfUnavailable(ctx);
    const result = run(process.execPath, [tsc, "-p", `tsconfig.${mode}.json`]);
    expect(result.stdout + result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  it("answers --help without loading libtorch, and fails in one line when libtorch is missing", (ctx) => {
    skipIfUnavailable(ctx);
    const help = run("npx", ["torch-diffusion", "--help"], { env: { LIBTORCH: "/nonexistent/libtorch" } });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: torch-diffusion <command>/);
    const generateHelp = run("npx", ["torch-diffusion", "generate", "--help"], { env: { LIBTORCH: "/nonexistent/libtorch" } });
    expect(generateHelp.status).toBe(0);
    const failed = run("npx", ["torch-diffusion", "generate", "a photo of a sneaker", "--steps", "2", "--out", "missing.png"], { env: { LIBTORCH: "/nonexistent/libtorch" } });
    expect(failed.status).toBe(1);
    expect(failed.stderr.trim().split("\n")).toHaveLength(1);
    expect(failed.stderr).toMatch(/^torch-diffusion: could not load its native addon\. .*LIBTORCH=\/nonexistent\/libtorch holds no lib\/libtorch\.so/);
    expect(failed.stderr).not.toMatch(/\n\s+at /);
  });

  it("converts a diffusers folder with the shipped exporter (python3 not on PATH: /usr/bin/python3), then generates from it", (ctx) => {
    skipIfUnavailable(ctx);
    const torch = spawnSync("/usr/bin/python3", ["-c", "import torch"], { encoding: "utf8" });
    if (torch.status !== 0) {
      console.warn(`SKIPPED (convert from the installed package): /usr/bin/python3 cannot import torch, which the exporter needs (apt-get install python3-torch): ${torch.stderr.trim().split("\n").pop()}`);
      ctx.skip();
    }
    const source = path.join(root, "test", "fixtures", "diffusers", "tiny-sd");
    const convert = run("npx", ["torch-diffusion", "convert", "--from", source, "--to", "tiny-sd", "--json"]);
    expect(convert.status, convert.stderr).toBe(0);
    expect(JSON.parse(convert.stdout)).toMatchObject({ command: "convert", to: path.join(consumer, "tiny-sd"), python: "/usr/bin/python3", components: ["scheduler", "text_encoder", "tokenizer", "unet", "vae"] });
    expect(convert.stderr).toContain("convert: export unet (UNet2DConditionModel)\n");
    expect(fs.existsSync(path.join(consumer, "tiny-sd", "checksums.sha256"))).toBe(true);
    const installed = path.join(consumer, "node_modules", "torch-diffusion");
    expect(fs.readdirSync(path.join(installed, "scripts", "torch_diffusion_models"))).not.toContain("__pycache__"); // no bytecode written into the package
    const generate = run("npx", ["torch-diffusion", "generate", "a cat", "--model", "tiny-sd", "--steps", "2", "--seed", "0", "--out", "cat.png", "--json"]);
    expect(generate.status, generate.stderr).toBe(0);
    expect(JSON.parse(generate.stdout)).toMatchObject({ images: ["cat.png"], width: 16, height: 16, steps: 2 });
    const raw = run("npx", ["torch-diffusion", "generate", "a cat", "--model", source]);
    expect(raw.status).toBe(1);
    expect(raw.stderr).toContain(`convert it once with torch-diffusion convert --from ${source} --to OUT`);
  });

  it("generates a PNG with the built-in model from the command line", (ctx) => {
    skipIfUnavailable(ctx);
    const result = run("npx", ["torch-diffusion", "generate", "a photo of a sneaker", "--steps", "2", "--out", "x.png"]);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe("x.png");
    const png = fs.readFileSync(path.join(consumer, "x.png"));
    expect(png.subarray(1, 4).toString()).toBe("PNG");
  });

  it("refuses a prebuilt binary for another libtorch with one message before dlopen", (ctx) => {
    skipIfUnavailable(ctx);
    const installed = path.join(consumer, "node_modules", "torch-diffusion");
    const dir = prebuilt.prebuiltDir(installed);
    const [file] = fs.readdirSync(dir);
    const other = file.replace(/\.(cxx11|precxx11)\./, (_m: string, abi: string) => (abi === "cxx11" ? ".precxx11." : ".cxx11."));
    fs.renameSync(path.join(dir, file), path.join(dir, other));
    try {
      const result = run(process.execPath, ["-e", "require('torch-diffusion')"]);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/No prebuilt binary fits the libtorch found \(.*\): it is libtorch \d+\.\d+ \(libtorch\.so[\d.]*, (pre-)?C\+\+11 ABI, (CPU|CUDA.*), glibc\); this package has libtorch/);
      expect(result.stderr).not.toMatch(/undefined symbol|cannot open shared object/);
    } finally {
      fs.renameSync(path.join(dir, other), path.join(dir, file));
    }
  });
});

describe("prebuilt tags and libtorch detection", () => {
  it("tags the binary with libtorch version, soname, C++ ABI and CPU/CUDA, and reads tags back", () => {
    expect(prebuilt.parsePrebuiltName("torch_diffusion.napi.glibc.torch1.13.so1.13.cxx11.cpu.node")).toEqual({
      file: "torch_diffusion.napi.glibc.torch1.13.so1.13.cxx11.cpu.node", libc: "glibc", torch: "1.13", soname: "libtorch.so.1.13", abi: "cxx11", device: "cpu",
    });
    expect(prebuilt.parsePrebuiltName("torch_diffusion.napi.glibc.torch2.5.so.precxx11.cuda12.node")).toMatchObject({ torch: "2.5", soname: "libtorch.so", abi: "precxx11", device: "cuda12" });
    expect(prebuilt.variantTag({ libc: "glibc", torch: "2.5", soname: "libtorch.so", abi: "cxx11", device: "cuda12" })).toBe("torch2.5.so.cxx11.cuda12");
    expect(prebuilt.parsePrebuiltName("torch_diffusion.napi.glibc.torch1.13.cpu.node")).toBeNull(); // the old tag said too little
    expect(() => prebuilt.variantTag({ libc: "glibc", torch: "2.5", soname: "libtorch.so", abi: "unknown", device: "cpu" })).toThrow(/cannot tag a binary for libtorch 2\.5 \(libtorch\.so, unknown C\+\+ ABI/);
  });

  it("detects what the built addon really links: the soname it NEEDs and its C++ ABI", (ctx) => {
    if (!fs.existsSync(addon)) {
      console.warn(`SKIPPED: no built addon at ${addon}`);
      ctx.skip();
    }
    const torch = findLibtorch();
    const variant = prebuilt.variantOf(torch);
    expect(readElfDynamic(addon).needed).toContain(variant.soname);
    expect(usesCxx11Abi(addon)).toBe(variant.abi === "cxx11");
  });

  it("reads the C++ ABI and version as PyTorch and TorchConfig.cmake report them", (ctx) => {
    const torch = findLibtorch();
    const config = /_GLIBCXX_USE_CXX11_ABI=([01])/.exec(fs.readFileSync(path.join(torch.torchDir, "TorchConfig.cmake"), "utf8"));
    if (config) expect(torch.cxx11Abi).toBe(config[1] === "1");
    const script = "import os, torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI), torch.__version__, os.path.join(os.path.dirname(torch.__file__), 'lib'))";
    const python = spawnSync("/usr/bin/python3", ["-c", script], { encoding: "utf8" });
    if (python.status !== 0) {
      console.warn("SKIPPED the PyTorch cross-check: /usr/bin/python3 has no torch");
      ctx.skip();
    }
    const [abi, version, libDir] = python.stdout.trim().split(" ");
    const described = describeLibDir(libDir);
    expect(described.cxx11Abi).toBe(abi === "1");
    expect(described.version.split(".").slice(0, 2)).toEqual(version.split(".").slice(0, 2));
  });
});

describe("libtorch layouts", () => {
  const system = findLibtorch();
  // A pip-style torch/lib (and a libtorch download) linking to this machine's libraries, with CUDA marked by files only.
  function fakeLayout(files: Record<string, string>): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-layout-"));
    fs.mkdirSync(path.join(dir, "lib"));
    fs.symlinkSync(path.join(system.libDir, "libc10.so"), path.join(dir, "lib", "libc10.so"));
    fs.copyFileSync(fs.realpathSync(path.join(system.libDir, "libtorch.so")), path.join(dir, "lib", "libtorch.so"));
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
    return dir;
  }

  it("reads version and CUDA major from a pip wheel's torch/version.py", () => {
    const dir = fakeLayout({ "version.py": "__version__ = '2.5.1+cu121'\ndebug = False\ncuda: Optional[str] = '12.1'\n", "lib/libtorch_cuda.so": "" });
    try {
      const found = describeLibDir(path.join(dir, "lib"));
      expect(found).toMatchObject({ version: "2.5.1", cuda: true, cudaMajor: "12", cxx11Abi: system.cxx11Abi });
      expect(prebuilt.variantTag(prebuilt.variantOf(found))).toMatch(/^torch2\.5\.so[\d.]*\.(cxx11|precxx11)\.cuda12$/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads version and CUDA major from a libtorch download's build-version", () => {
    const dir = fakeLayout({ "build-version": "2.4.0+cu118\n", "lib/libtorch_cuda.so": "" });
    try {
      expect(describeLibDir(path.join(dir, "lib"))).toMatchObject({ version: "2.4.0", cuda: true, cudaMajor: "11" });
      fs.writeFileSync(path.join(dir, "build-version"), "2.4.0+cpu\n");
      fs.rmSync(path.join(dir, "lib", "libtorch_cuda.so"));
      expect(describeLibDir(path.join(dir, "lib"))).toMatchObject({ version: "2.4.0", cuda: false, cudaMajor: null });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("finds a runtime-only libtorch (no TorchConfig.cmake) for prebuilt binaries, not for source builds", () => {
    const dir = fakeLayout({ "build-version": "1.13.1+cpu\n" });
    const lookup = (flag: string[]) => spawnSync(process.execPath, [path.join(root, "scripts", "find-libtorch.js"), ...flag], { encoding: "utf8", env: { ...process.env, LIBTORCH: dir } });
    try {
      const runtime = lookup(["--runtime"]);
      expect(runtime.status, runtime.stderr).toBe(0);
      expect(JSON.parse(runtime.stdout)).toMatchObject({ source: "LIBTORCH", libDir: path.join(dir, "lib"), torchDir: null, version: "1.13.1" });
      expect(lookup([]).stderr).toMatch(/holds no share\/cmake\/Torch\/TorchConfig\.cmake/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("progress bar", () => {
  it("shows the rate and the time left", () => {
    let now = 0;
    const written: string[] = [];
    const bar = new ProgressBar({ isTTY: true, write: (s: string) => written.push(s) }, "generate", () => now);
    bar.update(0, 30);
    now = 4000;
    bar.update(10, 30);
    bar.update(30, 30);
    expect(written[0]).toBe("\rgenerate [........................] 0/30\x1b[K");
    expect(written[1]).toBe("\rgenerate [########................] 10/30 2.50 it/s ETA 0:08\x1b[K");
    expect(written[2]).toBe("\rgenerate [########################] 30/30 7.50 it/s\x1b[K");
    expect([formatDuration(59.6), formatDuration(3725)]).toEqual(["1:00", "1:02:05"]);
  });
});
