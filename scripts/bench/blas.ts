/**
 * What the system BLAS costs: Debian's libtorch calls whatever libblas.so.3 the alternatives
 * system points at — the reference BLAS (package libblas3) unless OpenBLAS is installed
 * (scripts/setup.sh installs libopenblas0-openmp). Linear layers and matmuls go through it;
 * convolutions do not (oneDNN). Each BLAS found runs in its own child process, picked through
 * LD_LIBRARY_PATH, one intra-op thread, side by side in one run; medians of 7.
 *
 *   npx tsx scripts/bench/blas.ts [--threads 1]
 *
 * Measured: a linear layer's forward + backward at a DiT block's shape (2048 tokens, 96 -> 384),
 * and forward + backward at batch 32 (one training step's compute, no optimizer) of the built-in
 * U-Net (models/builtin) and, when it is there, the built-in DiT (models/builtin-dit).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../../lib";
import { timeUs } from "./timing";

const root = path.resolve(__dirname, "../..");
const REPEATS = 7;
const LIBDIR = "/usr/lib/x86_64-linux-gnu";
const CANDIDATES: Record<string, string> = {
  "reference BLAS (libblas3)": path.join(LIBDIR, "blas"),
  "OpenBLAS, OpenMP (libopenblas0-openmp)": path.join(LIBDIR, "openblas-openmp"),
  "OpenBLAS, pthreads (libopenblas0-pthread)": path.join(LIBDIR, "openblas-pthread"),
};

interface Timings { linearGmacPerSecond: number; unetStepMs: number; ditStepMs: number | null }

/** Median of REPEATS timed calls, after one warm-up, in ms. */
const medianMs = (body: () => void) => timeUs(1, () => td.tidy(body), REPEATS) / 1e3;

function measure(): Timings {
  const tokens = 2048, inFeatures = 96, outFeatures = 384;
  const generator = new td.Generator(0);
  const x = td.randn([tokens, inFeatures], { generator }).requiresGrad_();
  const weight = td.randn([outFeatures, inFeatures], { generator }).requiresGrad_();
  const bias = td.zeros([outFeatures]).requiresGrad_();
  const linearMs = medianMs(() => td.linear(x, weight, bias).sum().backward());
  const linearGmacPerSecond = (3 * tokens * inFeatures * outFeatures) / (linearMs / 1e3) / 1e9; // forward, grad input, grad weight

  const batch = 32;
  const builtin = td.loadModel(path.join(root, "models", "builtin"));
  const unet = builtin.unet!;
  const sample = td.randn([batch, 1, 32, 32], { generator });
  const context = td.randn([batch, 77, 64], { generator });
  const timestep = td.full([batch], 500, { dtype: "int64" });
  const unetStepMs = medianMs(() => unet.forwardSync({ sample, timestep, encoderHiddenStates: context }).square().mean().backward());

  let ditStepMs: number | null = null;
  const ditDir = path.join(root, "models", "builtin-dit");
  if (fs.existsSync(ditDir)) {
    const dit = td.loadModel(ditDir).transformer!;
    const labels = td.tensor(Array.from({ length: batch }, (_, i) => i % 10), undefined, { dtype: "int64" });
    ditStepMs = medianMs(() => dit.forwardSync({ hiddenStates: sample, timestep, classLabels: labels }).square().mean().backward());
  }
  return { linearGmacPerSecond, unetStepMs, ditStepMs };
}

function main(): void {
  const { values } = parseArgs({ options: { child: { type: "boolean", default: false }, threads: { type: "string", default: "1" } } });
  td.setNumThreads(Number(values.threads));
  if (values.child) {
    process.stdout.write(JSON.stringify(measure()) + "\n");
    return;
  }
  const rows: Array<{ name: string } & Timings> = [];
  for (const [name, dir] of Object.entries(CANDIDATES)) {
    if (!fs.existsSync(path.join(dir, "libblas.so.3"))) {
      console.log(`${name}: not installed (${dir})`);
      continue;
    }
    const child = spawnSync(process.execPath, [...process.execArgv, __filename, "--child", "--threads", values.threads!], {
      env: { ...process.env, LD_LIBRARY_PATH: [dir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(":") },
      encoding: "utf8",
    });
    if (child.status !== 0) throw new Error(`${name}: the measuring process failed: ${child.stderr}`);
    rows.push({ name, ...JSON.parse(child.stdout.trim().split("\n").pop()!) });
  }
  if (rows.length === 0) throw new Error("no BLAS found to measure");
  const base = rows[0];
  console.log(`\n${values.threads} intra-op thread(s), medians of ${REPEATS}; ratios against ${base.name}\n`);
  console.log("| BLAS | linear fwd+bwd GMAC/s | U-Net fwd+bwd, batch 32 (ms) | DiT fwd+bwd, batch 32 (ms) |");
  console.log("| --- | ---: | ---: | ---: |");
  for (const row of rows) {
    const dit = row.ditStepMs === null || base.ditStepMs === null ? "–" : `${row.ditStepMs.toFixed(0)} (${(base.ditStepMs / row.ditStepMs).toFixed(1)}× faster)`;
    console.log(`| ${row.name} | ${row.linearGmacPerSecond.toFixed(1)} (${(row.linearGmacPerSecond / base.linearGmacPerSecond).toFixed(1)}×) | ${row.unetStepMs.toFixed(0)} (${(base.unetStepMs / row.unetStepMs).toFixed(1)}× faster) | ${dit} |`);
  }
}

main();
