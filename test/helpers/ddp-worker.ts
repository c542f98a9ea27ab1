/**
 * One rank of the data-parallel tests: trains the tiny denoiser of the training tests on their
 * 12-image dataset with one of the reference runs' options, joined to its group through the
 * env:// variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) as torchrun sets them, and
 * writes `<out>.rank<R>.json` ({ rank, worldSize, step, losses, aborted, weights }).
 *
 *   RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 node --import tsx test/helpers/ddp-worker.ts '{"run":"epsilon","out":"/tmp/r"}'
 *
 * Spec fields: run (a key of refs.runs), out, steps?, timeoutMs?, checkpoint? { dir, every },
 * resume?, dieAt? / hangAt? / abortAt? { rank, step } (after that step, that rank SIGKILLs
 * itself / stops answering / aborts its signal). A failure prints `ddp-worker: <message>` on stderr and exits 1.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as td from "../../lib";

interface Spec {
  run: string;
  out: string;
  steps?: number;
  timeoutMs?: number;
  checkpoint?: { dir: string; every: number };
  resume?: boolean;
  dieAt?: { rank: number; step: number };
  hangAt?: { rank: number; step: number };
  abortAt?: { rank: number; step: number };
}

interface RunConfig {
  objective: td.Objective; seed: number; data_seed: number; batch_size: number; steps: number; lr: number; weight_decay: number;
  lr_schedule: td.LRScheduleKind; warmup: number; max_grad_norm: number; ema_decay: number; cond_dropout: number; grad_accumulation: number;
  logit_mean?: number; logit_std?: number;
}

interface Refs {
  data: { images: { shape: number[]; values: number[] }; labels: number[] };
  runs: Record<string, { config: RunConfig }>;
}

const fixtures = path.join(__dirname, "..", "fixtures", "training");

/** The training tests' options for a reference run (test/helpers/training.ts optionsFor, without vitest). */
export function runOptions(c: RunConfig): td.TrainerOptions {
  return {
    objective: c.objective, steps: c.steps, batchSize: c.batch_size, seed: c.seed, dataSeed: c.data_seed, lr: c.lr,
    optimizer: { weightDecay: c.weight_decay }, lrSchedule: { kind: c.lr_schedule, warmupSteps: c.warmup }, maxGradNorm: c.max_grad_norm,
    ema: { decay: c.ema_decay }, condition: td.labelCondition({ nullLabel: 10 }), conditionDropout: c.cond_dropout,
    gradientAccumulation: c.grad_accumulation,
    timestepSampling: c.objective === "flow_matching" ? { kind: "logit_normal", mean: c.logit_mean, std: c.logit_std } : { kind: "uniform" },
  };
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2]) as Spec;
  td.setNumThreads(1); // two ranks share the machine's cores
  const refs = JSON.parse(fs.readFileSync(path.join(fixtures, "refs.json"), "utf8")) as Refs;
  const images = td.tensor(Float64Array.from(refs.data.images.values), refs.data.images.shape, { dtype: "float32" });
  const dataset = td.tensorDataset(images, { labels: refs.data.labels });
  const group = await td.initProcessGroup({ timeoutMs: spec.timeoutMs ?? 20_000 });
  const model = td.load(path.join(fixtures, "tiny_denoiser.pt"));
  const options = runOptions(refs.runs[spec.run].config);
  const controller = new AbortController();
  const trainer = new td.Trainer(model, dataset, {
    ...options,
    steps: spec.steps ?? options.steps,
    distributed: group,
    ...(spec.checkpoint ? { checkpoint: spec.checkpoint } : {}),
    ...(spec.resume ? { resume: true } : {}),
    signal: controller.signal,
    onStep: async ({ step }) => {
      if (spec.abortAt?.rank === group.rank && spec.abortAt.step === step) controller.abort();
      if (spec.dieAt?.rank === group.rank && spec.dieAt.step === step) process.kill(process.pid, "SIGKILL");
      if (spec.hangAt?.rank === group.rank && spec.hangAt.step === step) await new Promise(() => setInterval(() => {}, 1 << 30));
    },
  });
  const result = await trainer.run();
  const weights: Record<string, number[]> = {};
  for (const [name, t] of Object.entries(model.namedParameters() as Record<string, td.Tensor>)) {
    weights[name] = Array.from(t.toFloat32Array());
    t.dispose();
  }
  trainer.dispose();
  fs.writeFileSync(`${spec.out}.rank${group.rank}.json`, JSON.stringify({ rank: group.rank, worldSize: group.worldSize, agentStore: process.env.TORCHELASTIC_USE_AGENT_STORE === "True", step: result.step, losses: result.losses, aborted: result.aborted, weights }));
  await group.destroy();
}

if (require.main === module) {
  main().catch((error: Error) => {
    process.stderr.write(`ddp-worker: ${error.name}: ${error.message}\n`);
    process.exit(1);
  });
}
