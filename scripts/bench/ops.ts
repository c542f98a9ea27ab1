/**
 * Per-op overhead and a small TorchScript forward loop: torch-diffusion vs Python PyTorch
 * on the same libtorch, measured side by side in one run. Prints medians and ratios.
 *   npx tsx scripts/bench/ops.ts
 */
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import * as td from "../../lib";
import { median, timeSettledUs, timeUs } from "./timing";

const REPEATS = 7;
const root = path.resolve(__dirname, "../..");
const convPath = path.join(root, "test/fixtures/modules/tiny_conv.pt");


async function timeAsyncUs(iterations: number, body: () => Promise<void>): Promise<number> {
  for (let i = 0; i < 20; i++) await body();
  const runs: number[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) await body();
    runs.push(Number(process.hrtime.bigint() - start) / 1e3 / iterations);
  }
  return median(runs);
}

const PYTHON = `
import sys, time, statistics, json, torch
torch.set_num_threads(${td.getNumThreads()})
a = torch.randn(16); b = torch.randn(16); m = torch.randn(256, 256); x = torch.randn(2, 4, 32, 32); x64 = torch.randn(2, 4, 64, 64)
conv = torch.jit.load(sys.argv[1]); conv.eval()
def t(n, f):
    for _ in range(min(n, 200)): f()
    runs = []
    for _ in range(${REPEATS}):
        s = time.perf_counter_ns()
        for _ in range(n): f()
        runs.append((time.perf_counter_ns() - s) / 1e3 / n)
    return statistics.median(runs)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    out = {
        "add [16]": t(20000, lambda: a + b),
        "mul scalar [16]": t(20000, lambda: a * 0.5),
        "chain x*0.9+0.1 [16]": t(10000, lambda: a * 0.9 + 0.1),
        "randn [16]": t(20000, lambda: torch.randn(16, generator=g)),
        "x*0.5+1 [2,4,64,64]": t(2000, lambda: x64 * 0.5 + 1),
        "matmul 256x256": t(300, lambda: m @ m),
        "tiny conv forward [2,4,32,32]": t(300, lambda: conv(x)),
    }
print(json.dumps(out))
`;

async function main(): Promise<void> {
  const a = td.keep(td.randn([16]));
  const b = td.keep(td.randn([16]));
  const m = td.keep(td.randn([256, 256]));
  const x = td.keep(td.randn([2, 4, 32, 32]));
  const x64 = td.keep(td.randn([2, 4, 64, 64]));
  const conv = td.load(convPath);
  const g = new td.Generator(0);
  const ours: Record<string, number> = {};
  await td.noGradAsync(async () => {
    ours["add [16]"] = await timeSettledUs(20000, () => a.add(b).dispose());
    ours["mul scalar [16]"] = await timeSettledUs(20000, () => a.mul(0.5).dispose());
    ours["chain x*0.9+0.1 [16]"] = await timeSettledUs(10000, () => td.tidy(() => { a.mul(0.9).add(0.1); }));
    ours["randn [16]"] = await timeSettledUs(20000, () => td.randn([16], { generator: g }).dispose());
    ours["x*0.5+1 [2,4,64,64]"] = await timeSettledUs(2000, () => td.tidy(() => { x64.mul(0.5).add(1); }));
    ours["matmul 256x256"] = timeUs(300, () => m.matmul(m).dispose());
    ours["tiny conv forward [2,4,32,32]"] = timeUs(300, () => (conv.forwardSync(x) as td.Tensor).dispose());
  });
  ours["tiny conv forward async"] = await td.noGradAsync(() => timeAsyncUs(300, async () => ((await conv.forward(x)) as td.Tensor).dispose()));

  const python = JSON.parse(execFileSync("/usr/bin/python3", ["-c", PYTHON, convPath], { encoding: "utf8" })) as Record<string, number>;
  console.log(`libtorch ${td.buildInfo.torchVersion}, ${td.getNumThreads()} threads, medians of ${REPEATS} runs (µs per call)`);
  console.log(`${"case".padEnd(32)} ${"ours".padStart(9)} ${"python".padStart(9)} ${"ours/python".padStart(12)}`);
  for (const [name, us] of Object.entries(ours)) {
    const py = python[name] ?? python[name.replace(" async", " [2,4,32,32]")];
    console.log(`${name.padEnd(32)} ${us.toFixed(2).padStart(9)} ${py.toFixed(2).padStart(9)} ${(us / py).toFixed(2).padStart(12)}`);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
