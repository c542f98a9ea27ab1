/**
 * `torch-diffusion convert --from DIR --to DIR`: turns a Hugging Face diffusers folder (what
 * `save_pretrained` and the Hub give: safetensors or .bin weights) into a model directory this
 * package runs, with the exporter the package ships (`scripts/export.py` and its
 * `torch_diffusion_models` architectures: PyTorch only, no diffusers, transformers or
 * safetensors). It runs under the first Python with PyTorch ≥ 1.13 it finds —
 * `TORCH_DIFFUSION_PYTHON`, else `python3` on PATH, then `/usr/bin/python3` — streams the
 * exporter's progress to stderr, and on success writes the directory's `checksums.sha256`, which
 * every later load checks.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as readline from "node:readline";
import { packagePath } from "../package_root";
import { CliError, badValue, stringOption, type Values } from "./args";
import { printJson, secondsSince, type CliIO } from "./output";

/** The dtypes the exporter writes. */
export const CONVERT_DTYPES = ["float32", "float16", "bfloat16"] as const;
/** The oldest PyTorch the exporter's architectures are tested with. */
const MIN_TORCH: [number, number] = [1, 13];
const PROBE = "import sys, torch; print(sys.version.split()[0], torch.__version__)";
const INSTALL = "pip install torch; on Debian or Ubuntu apt-get install python3-torch";

/** The exporter script inside the installed package. @example exporterPath() // ".../node_modules/torch-diffusion/scripts/export.py" */
export function exporterPath(): string {
  return packagePath("scripts", "export.py");
}

/** A Python that can run the exporter. */
export interface PythonFound {
  /** The command as run (`python3`, `/usr/bin/python3` or TORCH_DIFFUSION_PYTHON). */
  python: string;
  pythonVersion: string;
  torchVersion: string;
}

function versionAtLeast(version: string, min: [number, number]): boolean {
  const [major, minor] = version.split(/[.+]/).map(Number);
  return major > min[0] || (major === min[0] && minor >= min[1]);
}

/** Why a candidate cannot run the exporter, or what it has. */
function probe(python: string, env: NodeJS.ProcessEnv): PythonFound | string {
  const result = spawnSync(python, ["-c", PROBE], { env, encoding: "utf8", timeout: 120_000 });
  if (result.error) return (result.error as NodeJS.ErrnoException).code === "ENOENT" ? "not found" : result.error.message;
  if (result.status !== 0) {
    const last = result.stderr.trim().split("\n").filter((l) => l.trim() !== "").at(-1) ?? `exit ${result.status}`;
    return /No module named '?torch'?/.test(last) ? "has no torch" : `cannot import torch (${last.trim()})`;
  }
  const [pythonVersion, torchVersion] = result.stdout.trim().split(/\s+/);
  if (!versionAtLeast(torchVersion, MIN_TORCH)) return `has torch ${torchVersion}, older than ${MIN_TORCH.join(".")}`;
  return { python, pythonVersion, torchVersion };
}

/**
 * The Python the exporter runs with: `TORCH_DIFFUSION_PYTHON` alone when set, else the first of
 * `python3` on PATH and `/usr/bin/python3` that imports torch ≥ 1.13. Throws one line listing
 * each candidate's problem and what to install.
 * @example findPython().python // "/usr/bin/python3"
 */
export function findPython(env: NodeJS.ProcessEnv = process.env): PythonFound {
  const chosen = env.TORCH_DIFFUSION_PYTHON;
  const candidates = chosen ? [chosen] : ["python3", "/usr/bin/python3"];
  const problems: string[] = [];
  for (const python of candidates) {
    const found = probe(python, env);
    if (typeof found !== "string") return found;
    problems.push(`${chosen ? `TORCH_DIFFUSION_PYTHON=${python}` : python === "python3" ? "python3 on PATH" : python}: ${found}`);
  }
  const what = `convert runs the exporter under Python 3 with PyTorch ≥ ${MIN_TORCH.join(".")} (no diffusers, transformers or safetensors needed)`;
  const fix = chosen ? `point TORCH_DIFFUSION_PYTHON at a Python with PyTorch (${INSTALL})` : `install PyTorch for one of them (${INSTALL}), or set TORCH_DIFFUSION_PYTHON to a Python that has it`;
  throw new CliError(`${what}, and found none: ${problems.join("; ")}. Fix: ${fix}`);
}

function readJson(file: string): Record<string, unknown> | null {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** True for a folder `convert` wrote before (a model directory or one exported component). */
function isConversion(dir: string): boolean {
  const index = readJson(path.join(dir, "model_index.json"));
  return index !== null ? index.torch_diffusion !== undefined : fs.existsSync(path.join(dir, "torch_diffusion.json"));
}

interface ConvertCommand {
  from: string;
  to: string;
  dtype: (typeof CONVERT_DTYPES)[number];
  fused: boolean;
  json: boolean;
  verbose: boolean;
  /** True when --to is new or empty: a failed or interrupted run removes what it wrote there. */
  fresh: boolean;
}

function convertOptions(values: Values): ConvertCommand {
  const fromGiven = stringOption(values, "from", { required: true });
  const toGiven = stringOption(values, "to", { required: true });
  const dtype = stringOption(values, "dtype") ?? "float32";
  if (!(CONVERT_DTYPES as readonly string[]).includes(dtype)) throw badValue("--dtype", CONVERT_DTYPES.join(", "), dtype);
  const from = path.resolve(fromGiven);
  const to = path.resolve(toGiven);
  if (!fs.existsSync(from)) throw new CliError(`--from: no such folder: ${fromGiven}`);
  if (fs.statSync(from).isDirectory() && isConversion(from)) {
    throw new CliError(`--from: ${fromGiven} is already a torch-diffusion model directory (its model_index.json has a "torch_diffusion" section): use it as --model`);
  }
  if (to === from || to.startsWith(`${from}${path.sep}`)) throw new CliError("--to must be a folder outside --from");
  const fresh = !fs.existsSync(to) || (fs.statSync(to).isDirectory() && fs.readdirSync(to).length === 0);
  if (!fresh) {
    if (!fs.statSync(to).isDirectory()) throw new CliError(`--to: ${toGiven} exists and is not a directory`);
    if (!isConversion(to)) throw new CliError(`--to: ${toGiven} exists and is not empty: pick a new folder (only an earlier conversion is overwritten)`);
  }
  return { from, to, dtype: dtype as ConvertCommand["dtype"], fused: values["fused-attention"] === true, json: values.json === true, verbose: values.verbose === true, fresh };
}

/** What the exporter reported on failure, as one line: its `export failed: ...` message (first line unless --verbose), else its last line. */
function failureLine(stderr: string, verbose: boolean): string {
  const at = stderr.lastIndexOf("export failed: ");
  const text = (at >= 0 ? stderr.slice(at + "export failed: ".length) : stderr.trim().split("\n").filter((l) => l.trim() !== "").at(-1) ?? "").trim();
  const lines = text.split("\n");
  if (verbose || lines.length === 1) return lines.join(" ").replace(/\s+/g, " ");
  return `${lines[0].trim()} (the full error with --verbose)`;
}

/** Runs the exporter, each line of its progress to stderr as `convert: ...`; resolves when it exits 0. */
function runExporter(python: string, o: ConvertCommand, io: CliIO, signal?: AbortSignal): Promise<void> {
  const args = ["-u", exporterPath(), "--from", o.from, "--to", o.to, "--dtype", o.dtype, ...(o.fused ? ["--fused-attention"] : [])];
  // No __pycache__ inside node_modules (it may be read-only, and it would change the package's files).
  const env = { ...process.env, PYTHONDONTWRITEBYTECODE: "1", PYTHONUNBUFFERED: "1" };
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(Object.assign(new Error("interrupted"), { name: "AbortError" }));
    const child = spawn(python, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (text: string) => {
      stderr += text;
      if (o.verbose) io.stderr.write(text);
    });
    readline.createInterface({ input: child.stdout }).on("line", (line) => io.stderr.write(`convert: ${line}\n`));
    const abort = () => child.kill("SIGTERM");
    signal?.addEventListener("abort", abort, { once: true });
    child.on("error", (error) => reject(new CliError(`convert: could not run ${python}: ${error.message}`)));
    child.on("close", (code, killedBy) => {
      signal?.removeEventListener("abort", abort);
      if (signal?.aborted) return reject(Object.assign(new Error("interrupted"), { name: "AbortError" }));
      if (code === 0) return resolve();
      if (killedBy !== null) {
        return reject(new CliError(`convert: the exporter was killed (${killedBy})${killedBy === "SIGKILL" ? ", most likely for want of memory: it holds about twice the largest component's float32 weights (SD 1.5's U-Net: 7 GB; SDXL's: 21 GB)" : ""}`));
      }
      reject(new CliError(`convert: ${failureLine(stderr, o.verbose) || `the exporter exited with ${code}`}`));
    });
  });
}

/** What the written directory holds: components exported or copied, and those skipped (with why). */
function summarize(to: string): { kind: "pipeline" | "component"; components: string[]; skipped: Record<string, string> } {
  const index = readJson(path.join(to, "model_index.json"));
  if (index === null) return { kind: "component", components: [path.basename(to)], skipped: {} };
  const ours = (index.torch_diffusion ?? {}) as { components?: Record<string, unknown>; skipped?: Record<string, string> };
  return { kind: "pipeline", components: Object.keys(ours.components ?? {}), skipped: ours.skipped ?? {} };
}

/** `convert`. @example await runConvert({ from: "sd-1.5-diffusers", to: "sd-1.5" }, io); */
export async function runConvert(values: Values, io: CliIO, signal?: AbortSignal): Promise<number> {
  const started = Date.now();
  const o = convertOptions(values);
  const python = findPython();
  // Loaded before the export, so a package that cannot load fails now, not after minutes of work.
  const td = await import("../index");
  io.stderr.write(`convert: ${o.from} -> ${o.to} (${o.dtype}${o.fused ? ", fused attention" : ""}) with ${python.python} (Python ${python.pythonVersion}, torch ${python.torchVersion})\n`);
  try {
    await runExporter(python.python, o, io, signal);
  } catch (error) {
    // Nothing half-written is left to be mistaken for a model: a new folder goes, an earlier conversion keeps its (now failing) checksums.
    if (o.fresh) fs.rmSync(o.to, { recursive: true, force: true });
    const left = o.fresh ? `removed the partial ${o.to}` : `${o.to} may be partly overwritten (its earlier checksums.sha256 flags any changed file)`;
    if ((error as Error).name === "AbortError") {
      io.stderr.write(`convert: interrupted; ${left}: run the same command again\n`);
      return 130;
    }
    io.stderr.write(`convert: failed; ${left}\n`);
    throw error;
  }
  const exported = secondsSince(started);
  const hashing = Date.now();
  td.writeDirectoryChecksums(o.to);
  const { kind, components, skipped } = summarize(o.to);
  const skippedNote = Object.keys(skipped).length > 0 ? `; skipped ${Object.entries(skipped).map(([name, why]) => `${name} (${why})`).join(", ")}` : "";
  io.stderr.write(`convert: wrote ${o.to}: ${components.join(", ")}${skippedNote}, in ${secondsSince(started).toFixed(1)} s\n`);
  const [pyMajor, pyMinor] = python.torchVersion.split(".").map(Number);
  const [ourMajor, ourMinor] = td.buildInfo.torchVersion.split(".").map(Number);
  if (pyMajor > ourMajor || (pyMajor === ourMajor && pyMinor > ourMinor)) {
    io.stderr.write(
      `convert: note: torch ${python.torchVersion} wrote these TorchScript files and this package runs libtorch ${td.buildInfo.torchVersion}; ` +
        "if loading them fails, convert with a PyTorch no newer than that (TORCH_DIFFUSION_PYTHON)\n",
    );
  }
  if (kind === "component") io.stderr.write(`convert: ${o.to} is one component: load it with loadComponent (the commands take whole pipelines)\n`);
  if (o.json) {
    printJson(io, {
      command: "convert", from: o.from, to: o.to, kind, dtype: o.dtype, fusedAttention: o.fused, components, skipped,
      python: python.python, torch: python.torchVersion, timings: { export: exported, checksums: secondsSince(hashing), total: secondsSince(started) },
    });
  } else {
    io.stdout.write(`${o.to}\n`);
  }
  return 0;
}
