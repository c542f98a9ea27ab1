/**
 * Issue 11, "Speed: the sampling loop against the best a Python user can do". One run prints:
 *
 * 1. The 50-step DDIM loop with classifier-free guidance (uncond + cond in one U-Net batch per
 *    step), fixed prompt embeddings, on the tiny SD fixture (1 image, 64×64 latents) and the
 *    built-in model (8 images, 32×32): ours is the pipelines' own loop, `denoise` of
 *    lib/pipelines/common.ts (what Text2ImagePipeline.generate runs between prompt encoding and
 *    decoding; DDIM from the model's scheduler config, async `model.predict`), against the same
 *    loop in /usr/bin/python3 (scripts/bench/sampling_loop_torch.py: torch.jit.load of the same
 *    unet/model.pt, the DDIM update by hand with python-float scalars) on the same libtorch,
 *    for {1, 2 threads} × {glibc malloc settings}; both sides run in fresh processes started
 *    with that environment, their loops alternating; medians of the repeats.
 *    With 2 threads ours splits the CFG batch in two pieces run at once (setBatchParallelism's
 *    default); those rows also time ours with the batch whole.
 * 2. Async `forward` vs `forwardSync` on the same U-Net call (batch whole), interleaved, medians.
 * 3. `add` of two [16] float32 tensors, ours vs `torch.add`, ns per op, median over batches.
 * Ratios are ours / PyTorch (lower is better).
 *   npx tsx scripts/bench/sampling-loop.ts [--repeats 3] [--calls 30] [--python /usr/bin/python3]
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as os from "node:os";
import * as path from "node:path";
import { arange, buildInfo, getNumThreads, loadModel, noGrad, rand, setBatchParallelism, setNumThreads, type DiffusionModel, type Scheduler, type Tensor } from "../../lib";
import { ClassifierFreeGuidance } from "../../lib/guidance";
import { denoise } from "../../lib/pipelines/common";

const args = process.argv.slice(2);
const arg = (name: string, def: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const REPEATS = Number(arg("--repeats", "3"));
const CALLS = Number(arg("--calls", "30"));
const PYTHON = arg("--python", "/usr/bin/python3");
const STEPS = 50;
const SCALE = 7.5;
const ROOT = path.join(__dirname, "..", "..");

const MODELS = [
  // 64×64 latents take ~2 s per call here (unfused self-attention over 4096 tokens): 16×16 instead
  { key: "tiny-sd", label: "tiny SD fixture, 1 image, 4×16×16 latents (U-Net batch 2)", dir: path.join(ROOT, "test/fixtures/models/tiny-sd"), latent: 16, images: 1 },
  // 4 images (U-Net batch 8, ~110 ms per call on this 2-core machine) to fit the run in minutes
  { key: "builtin", label: "builtin, 4 images, 1×32×32 (U-Net batch 8)", dir: path.join(ROOT, "models/builtin"), latent: 32, images: 4 },
];
const BIG = "1000000000000";
const MALLOCS: { label: string; env: Record<string, string> }[] = [
  { label: "glibc default", env: {} },
  { label: "MMAP+TRIM thresholds 1e12", env: { MALLOC_MMAP_THRESHOLD_: BIG, MALLOC_TRIM_THRESHOLD_: BIG } },
];
const THREADS = [1, 2];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
/** The deterministic inputs both sides build the same way: sin(i·freq)·amp, float32. */
const pattern = (shape: number[], freq: number, amp: number): Tensor => noGrad(() => arange(0, numel(shape), 1, { dtype: "float32" }).mul(freq).sin().mul(amp).reshape(shape));

// ---------------------------------------------------------------- worker (one per configuration)

interface Loaded { model: DiffusionModel; scheduler: Scheduler; x: Tensor; ctx: Tensor; shape: number[]; ctxShape: number[] }

async function worker(): Promise<void> {
  const loaded = new Map<string, Loaded>();
  const handle = async (req: Record<string, any>): Promise<object> => {
    switch (req.cmd) {
      case "init":
        setNumThreads(req.threads);
        return { ready: true, threads: getNumThreads(), build: buildInfo };
      case "model": {
        const spec = MODELS.find((m) => m.key === req.key)!;
        const model = loadModel(spec.dir);
        const scheduler = model.newScheduler("DDIMScheduler");
        scheduler.setTimesteps(STEPS);
        const unetConfig = model.unet!.config as Record<string, any>;
        const shape = [spec.images, model.latentChannels, spec.latent, spec.latent];
        const ctxShape = [2 * spec.images, 77, unetConfig.cross_attention_dim];
        loaded.set(spec.key, { model, scheduler, shape, ctxShape, x: pattern(shape, 0.01, 1), ctx: pattern(ctxShape, 0.1, 0.5) });
        const s = scheduler as unknown as { alphasCumprod: number[]; finalAlphaCumprod: number; config: Record<string, any> };
        return {
          cmd: "model", key: spec.key, path: path.join(spec.dir, "unet", "model.pt"), shape, ctx: ctxShape, pred: s.config.prediction_type,
          alphas: s.alphasCumprod, final: s.finalAlphaCumprod, timesteps: scheduler.timesteps, scale: SCALE,
        };
      }
      case "loop": {
        const m = loaded.get(req.key)!;
        setBatchParallelism(req.pieces ?? "auto");
        m.scheduler.setTimesteps(STEPS);
        const start = process.hrtime.bigint();
        const out = await denoise({ model: m.model, scheduler: m.scheduler, guider: new ClassifierFreeGuidance(SCALE), latents: m.x.clone(), context: m.ctx, timesteps: m.scheduler.timesteps } as never);
        const ms = Number(process.hrtime.bigint() - start) / 1e6;
        const checksum = noGrad(() => out.abs().sum().item());
        out.dispose();
        return { ms, checksum };
      }
      case "fwd": {
        // Item 2: the first U-Net call of the loop (uncond + cond batch), async vs sync, interleaved,
        // both unsplit (predictSync never splits the batch): this measures the executor hop.
        const m = loaded.get(req.key)!;
        setBatchParallelism(1);
        const sample = noGrad(() => m.x.repeat([2, 1, 1, 1]));
        const unetArgs = { sample, timestep: m.scheduler.timesteps[0], encoderHiddenStates: m.ctx };
        const asyncMs: number[] = [];
        const syncMs: number[] = [];
        for (let i = -3; i < req.n; i++) {
          let t0 = process.hrtime.bigint();
          (await noGrad(() => m.model.predict(unetArgs))).dispose();
          const a = Number(process.hrtime.bigint() - t0) / 1e6;
          t0 = process.hrtime.bigint();
          noGrad(() => m.model.predictSync(unetArgs)).dispose();
          const s = Number(process.hrtime.bigint() - t0) / 1e6;
          if (i >= 0) { asyncMs.push(a); syncMs.push(s); }
        }
        sample.dispose();
        return { asyncMs, syncMs };
      }
      case "add": {
        const a = rand([16]);
        const b = rand([16]);
        const ns: number[] = [];
        for (let k = 0; k < req.batches; k++) {
          const t0 = process.hrtime.bigint();
          noGrad(() => {
            for (let i = 0; i < req.n; i++) a.add(b).dispose();
          });
          // The GC safety net (a FinalizationRegistry) still runs a callback for each collected
          // tensor, disposed or not, on the event loop: let it run inside the timed batch.
          await new Promise((resolve) => setImmediate(resolve));
          ns.push(Number(process.hrtime.bigint() - t0) / req.n);
        }
        a.dispose();
        b.dispose();
        return { ns };
      }
    }
    throw new Error(`unknown request ${JSON.stringify(req)}`);
  };
  let buffer = "";
  let chain = Promise.resolve();
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk: string) => {
    buffer += chunk;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      chain = chain.then(async () => process.stdout.write(JSON.stringify(await handle(JSON.parse(line))) + "\n"));
    }
  });
  process.stdin.on("end", () => void chain.then(() => process.exit(0)));
}

// ---------------------------------------------------------------- orchestrator

interface Worker { ask: (req: object) => Promise<Record<string, any>>; close: () => void; child: ChildProcess }

function startWorker(command: string, argv: string[], env: Record<string, string>): Worker {
  const child = spawn(command, argv, { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, ...env } });
  let buffer = "";
  const waiting: ((line: string) => void)[] = [];
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (chunk: string) => {
    buffer += chunk;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      waiting.shift()?.(line);
    }
  });
  return {
    child,
    ask: (req) => new Promise((resolve) => { waiting.push((line) => resolve(JSON.parse(line))); child.stdin!.write(JSON.stringify(req) + "\n"); }),
    close: () => child.stdin!.end(),
  };
}

interface ConfigResult {
  threads: number; malloc: string;
  loops: Record<string, { ours: number[]; oursUnsplit: number[]; torch: number[]; oursSum: number; torchSum: number }>;
  fwd: Record<string, { asyncMs: number[]; syncMs: number[] }>;
  addOurs: number[]; addTorch: number[];
}

async function runConfig(threads: number, malloc: (typeof MALLOCS)[number]): Promise<{ result: ConfigResult; info: Record<string, any> }> {
  const env = { ...malloc.env, OMP_NUM_THREADS: String(threads) };
  const ours = startWorker(process.execPath, [...process.execArgv, __filename, "--worker"], env);
  const torch = startWorker(PYTHON, [path.join(__dirname, "sampling_loop_torch.py")], env);
  const infoOurs = await ours.ask({ cmd: "init", threads });
  const infoTorch = await torch.ask({ cmd: "init", threads });
  const result: ConfigResult = { threads, malloc: malloc.label, loops: {}, fwd: {}, addOurs: [], addTorch: [] };
  for (const m of MODELS) {
    const spec = await ours.ask({ cmd: "model", key: m.key });
    await torch.ask(spec);
    const r = (result.loops[m.key] = { ours: [] as number[], oursUnsplit: [] as number[], torch: [] as number[], oursSum: 0, torchSum: 0 });
    for (let i = 0; i <= REPEATS; i++) {
      const a = await ours.ask({ cmd: "loop", key: m.key });
      const b = await torch.ask({ cmd: "loop", key: m.key });
      // With 2 threads the default splits the CFG batch in two (setBatchParallelism): also time it whole.
      const c = threads > 1 ? await ours.ask({ cmd: "loop", key: m.key, pieces: 1 }) : a;
      r.oursSum = a.checksum;
      r.torchSum = b.checksum;
      if (i > 0) { r.ours.push(a.ms); r.torch.push(b.ms); r.oursUnsplit.push(c.ms); } // the first round warms up both
    }
    result.fwd[m.key] = (await ours.ask({ cmd: "fwd", key: m.key, n: CALLS })) as ConfigResult["fwd"][string];
  }
  for (let i = 0; i < 3; i++) { // alternate batches of 10,000 adds, 5 per side each round
    result.addOurs.push(...(await ours.ask({ cmd: "add", batches: 5, n: 10000 })).ns);
    result.addTorch.push(...(await torch.ask({ cmd: "add", batches: 5, n: 10000 })).ns);
  }
  ours.close();
  torch.close();
  return { result, info: { ours: infoOurs, torch: infoTorch } };
}

async function main(): Promise<void> {
  if (args.includes("--worker")) return worker();
  const started = Date.now();
  const results: ConfigResult[] = [];
  let info: Record<string, any> = {};
  for (const threads of THREADS) {
    for (const malloc of MALLOCS) {
      const r = await runConfig(threads, malloc);
      results.push(r.result);
      info = r.info;
      process.stderr.write(`  done: ${threads} thread(s), ${malloc.label} (${((Date.now() - started) / 1e3).toFixed(0)} s)\n`);
    }
  }
  const cpu = os.cpus();
  console.log(`## Sampling loop vs PyTorch (issue 11)\n`);
  console.log(`- CPU: ${cpu[0]?.model ?? "?"} × ${cpu.length} logical, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}; threads per row (torch.set_num_threads / setNumThreads + OMP_NUM_THREADS)`);
  console.log(`- ours: libtorch ${JSON.stringify(info.ours?.build ?? {})}`);
  console.log(`- PyTorch: ${PYTHON} torch ${info.torch?.torch}, torch.jit.load of the same unet/model.pt (graph executor at its default), no_grad`);
  console.log(`- ${STEPS} DDIM steps (η=0), CFG scale ${SCALE}, one U-Net call per step; ${REPEATS} measured loops per side after 1 warm-up, alternating; medians\n`);

  console.log(`### 1. 50-step DDIM + CFG loop (ms per loop; ours = lib/pipelines/common.ts \`denoise\`, the loop inside Text2ImagePipeline.generate, async model.predict)\n`);
  for (const m of MODELS) {
    const bestTorch = Math.min(...results.map((r) => median(r.loops[m.key].torch)));
    console.log(`**${m.label}**\n`);
    console.log(`| threads | malloc | ours ms | ours ms, batch unsplit | PyTorch ms | ours / PyTorch (same row) | ours / best PyTorch | ours unsplit ms/step − sync U-Net ms | checksum ours / torch |`);
    console.log(`|---|---|---|---|---|---|---|---|---|`);
    for (const r of results) {
      const l = r.loops[m.key];
      const [o, t] = [median(l.ours), median(l.torch)];
      const unsplit = median(l.oursUnsplit);
      const overhead = unsplit / STEPS - median(r.fwd[m.key].syncMs);
      console.log(`| ${r.threads} | ${r.malloc} | ${o.toFixed(1)} | ${unsplit.toFixed(1)} | ${t.toFixed(1)} | ${(o / t).toFixed(3)} | ${(o / bestTorch).toFixed(3)} | ${overhead.toFixed(3)} | ${l.oursSum.toFixed(3)} / ${l.torchSum.toFixed(3)} |`);
    }
    console.log(`\nbest PyTorch: ${bestTorch.toFixed(1)} ms; best ours: ${Math.min(...results.map((r) => median(r.loops[m.key].ours))).toFixed(1)} ms\n`);
  }

  console.log(`### 2. async \`forward\` vs \`forwardSync\` (model.predict vs predictSync), first step's U-Net call, ${CALLS} interleaved calls each, median ms\n`);
  console.log(`| model | threads | malloc | async ms | sync ms | async / sync |`);
  console.log(`|---|---|---|---|---|---|`);
  for (const m of MODELS) {
    for (const r of results) {
      const [a, s] = [median(r.fwd[m.key].asyncMs), median(r.fwd[m.key].syncMs)];
      console.log(`| ${m.key} | ${r.threads} | ${r.malloc} | ${a.toFixed(3)} | ${s.toFixed(3)} | ${(a / s).toFixed(3)} |`);
    }
  }

  console.log(`\n### 3. \`add\` of two [16] float32 tensors, ns per op (ours: a.add(b).dispose(); PyTorch: torch.add(a, b)), median of 15 batches of 10,000\n`);
  console.log(`| threads | malloc | ours ns | PyTorch ns | ours / PyTorch |`);
  console.log(`|---|---|---|---|---|`);
  for (const r of results) {
    const [o, t] = [median(r.addOurs), median(r.addTorch)];
    console.log(`| ${r.threads} | ${r.malloc} | ${o.toFixed(0)} | ${t.toFixed(0)} | ${(o / t).toFixed(2)} |`);
  }
  console.log(`\ntotal ${((Date.now() - started) / 1e3).toFixed(0)} s`);
}

void main();
