/**
 * Data-parallel training measured side by side on this machine: `torch-diffusion train` in one
 * process against the same command with `--nproc-per-node 2` (Gloo over 127.0.0.1), same model,
 * data, seed and global batch. It prints the weights' difference after N steps, the throughput
 * of each run and per process, Gloo's all-reduce time on loopback for the U-Net's gradients,
 * and the ring all-reduce model for an SD-1.5-sized U-Net at 8 and 64 GPUs.
 *
 *   npx tsx scripts/bench/ddp.ts [--steps 10] [--batch 16] [--model DIR] [--threads N]
 *
 * The two runs get the same cores: one process with N threads (default: all cores) against two
 * with N/2 each (OMP_NUM_THREADS).
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../../lib";
import { cliCommand, freePort } from "../../lib/cli/launch";

const root = path.resolve(__dirname, "..", "..");

interface TrainJson {
  timings: { load: number; train: number; total: number };
  step: number;
  meanLoss: number;
}

/** Runs a command; resolves to its stdout, rejects with its stderr. */
function run(command: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command[0], command.slice(1), { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c));
    child.stderr.on("data", (c: Buffer) => (stderr += c));
    child.once("close", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${command.join(" ")} failed (${code}):\n${stderr}`))));
  });
}

function unetWeights(dir: string): Map<string, Float32Array> {
  const unet = td.loadComponent(path.join(dir, "unet"));
  try {
    return td.tidy(() => new Map(Object.entries(unet.namedParameters()).map(([name, p]) => [name, (p as td.Tensor).toFloat32Array()])));
  } finally {
    unet.dispose();
  }
}

/** One rank of the all-reduce measurement: `reps` all-reduces of `numel` float32 values; prints seconds per call (rank 0). */
async function allReduceWorker(numel: number, reps: number): Promise<void> {
  const group = await td.initProcessGroup();
  const buffer = td.randn([numel]);
  await group.allReduce(buffer, "avg"); // warm-up: connections, buffers
  const started = process.hrtime.bigint();
  for (let i = 0; i < reps; i++) await group.allReduce(buffer, "avg");
  const seconds = Number(process.hrtime.bigint() - started) / 1e9 / reps;
  if (group.rank === 0) process.stdout.write(`${JSON.stringify({ numel, seconds })}\n`);
  buffer.dispose();
  await group.destroy();
}

async function allReduceSeconds(numel: number, reps: number, threads: number): Promise<number> {
  const port = await freePort();
  const self = [...cliCommand().slice(0, -1), __filename, "--allreduce-worker", String(numel), String(reps)];
  const outputs = await Promise.all(
    [0, 1].map((rank) => run(self, { RANK: String(rank), WORLD_SIZE: "2", MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port), OMP_NUM_THREADS: String(threads) })),
  );
  return (JSON.parse(outputs[0].trim()) as { seconds: number }).seconds;
}

/** Seconds of a ring all-reduce: each of n GPUs sends and receives 2·(n−1)/n · bytes. */
export function ringAllReduceSeconds(bytes: number, gpus: number, bytesPerSecond: number): number {
  return ((2 * (gpus - 1)) / gpus) * bytes / bytesPerSecond;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { steps: { type: "string" }, batch: { type: "string" }, model: { type: "string" }, threads: { type: "string" }, "allreduce-worker": { type: "boolean" } }, allowPositionals: true });
  if (values["allreduce-worker"]) {
    const [numel, reps] = process.argv.slice(-2).map(Number);
    return allReduceWorker(numel, reps);
  }
  const steps = Number(values.steps ?? 10);
  const batch = Number(values.batch ?? 16);
  const threads = Number(values.threads ?? os.availableParallelism());
  const model = values.model ?? path.join(root, "models", "builtin");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-bench-ddp-"));
  try {
    const args = ["train", "--model", model, "--data", "fashion-mnist", "--steps", String(steps), "--batch", String(batch), "--checkpoint-every", String(steps), "--json"];
    const cli = cliCommand();
    const one = JSON.parse(await run([...cli, ...args, "--out", path.join(tmp, "one")], { OMP_NUM_THREADS: String(threads) })) as TrainJson;
    const perRank = Math.max(1, Math.floor(threads / 2));
    const two = JSON.parse(await run([...cli, ...args, "--out", path.join(tmp, "two"), "--nproc-per-node", "2"], { OMP_NUM_THREADS: String(perRank) })) as TrainJson;

    const a = unetWeights(path.join(tmp, "one"));
    const b = unetWeights(path.join(tmp, "two"));
    const base = unetWeights(model);
    let maxDiff = 0;
    let maxMoved = 0;
    let sumDiff = 0;
    let numel = 0;
    for (const [name, w] of a) {
      const v = b.get(name)!;
      const w0 = base.get(name)!;
      for (let i = 0; i < w.length; i++) {
        const d = Math.abs(w[i] - v[i]);
        maxDiff = Math.max(maxDiff, d);
        sumDiff += d;
        maxMoved = Math.max(maxMoved, Math.abs(w[i] - w0[i]));
      }
      numel += w.length;
    }
    const reduce = await allReduceSeconds(numel, 20, perRank);
    const big = 16 * 2 ** 20; // 64 MB of float32
    const reduceBig = await allReduceSeconds(big, 5, perRank);
    const busBandwidth = (n: number, seconds: number) => (2 * (2 - 1) / 2) * n * 4 / seconds / 1e9; // GB/s each rank moves

    const rate = (r: TrainJson) => (steps * batch) / r.timings.train;
    console.log(`torch-diffusion data-parallel benchmark — libtorch ${td.buildInfo.torchVersion}, ${os.cpus()[0]?.model ?? "cpu"}, ${os.availableParallelism()} cores`);
    console.log(`model ${path.relative(root, model) || model}: U-Net ${(numel / 1e6).toFixed(2)}M parameters; ${steps} steps, global batch ${batch}, Fashion-MNIST`);
    console.log("");
    console.log("| run | threads | train s | samples/s | samples/s per process |");
    console.log("| --- | --- | --- | --- | --- |");
    console.log(`| 1 process | ${threads} | ${one.timings.train.toFixed(2)} | ${rate(one).toFixed(1)} | ${rate(one).toFixed(1)} |`);
    console.log(`| 2 processes (Gloo, 127.0.0.1) | ${perRank} each | ${two.timings.train.toFixed(2)} | ${rate(two).toFixed(1)} | ${(rate(two) / 2).toFixed(1)} |`);
    console.log("");
    console.log(`weights after ${steps} steps, 2 processes vs 1: max |Δw| ${maxDiff.toExponential(2)}, mean |Δw| ${(sumDiff / numel).toExponential(2)} (the weights moved up to ${maxMoved.toExponential(2)}); loss ${one.meanLoss.toFixed(6)} vs ${two.meanLoss.toFixed(6)}`);
    console.log(`Gloo all-reduce on loopback, 2 ranks: the U-Net's gradients (${(numel * 4 / 1e6).toFixed(1)} MB) ${(reduce * 1000).toFixed(2)} ms; 64 MB ${(reduceBig * 1000).toFixed(1)} ms (${busBandwidth(big, reduceBig).toFixed(2)} GB/s per rank)`);
    console.log("");
    const sdBytes = 860e6 * 4;
    console.log(`Ring all-reduce model, SD-1.5-sized U-Net (860M parameters, fp32 gradients = ${(sdBytes / 1e9).toFixed(2)} GB), per GPU per step:`);
    console.log("| GPUs | bytes moved per GPU | NVLink ~300 GB/s | 100 Gb/s = 12.5 GB/s |");
    console.log("| --- | --- | --- | --- |");
    for (const n of [8, 64]) {
      const moved = ((2 * (n - 1)) / n) * sdBytes;
      console.log(`| ${n} | ${(moved / 1e9).toFixed(2)} GB | ${(ringAllReduceSeconds(sdBytes, n, 300e9) * 1000).toFixed(1)} ms | ${(ringAllReduceSeconds(sdBytes, n, 12.5e9) * 1000).toFixed(0)} ms |`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((error: Error) => {
  console.error(error.message);
  process.exit(1);
});
