/**
 * Per-step cost of every scheduler on 2×4×64×64 latents (scaleModelInput + step, model call
 * excluded): torch-diffusion next to the same step in PyTorch (the float32 reimplementation of
 * diffusers in scripts/fixtures/scheduler_refs_*.py, timed by scripts/bench/schedulers_torch.py
 * in a /usr/bin/python3 worker with the same thread count). Full sampling loops alternate
 * between the two so both see the same machine load; medians over the repeats;
 * ratio = ours / PyTorch (lower is better).
 *   npx tsx scripts/bench/schedulers.ts [--steps 20] [--repeats 7] [--python /usr/bin/python3]
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import { Generator, getNumThreads, randn, tidy, type Tensor } from "../../lib";
import { schedulerFromConfig } from "../../lib/schedulers";
import { median } from "./timing";

const args = process.argv.slice(2);
const arg = (name: string, def: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const STEPS = Number(arg("--steps", "20"));
const REPEATS = Number(arg("--repeats", "7"));
const PYTHON = arg("--python", "/usr/bin/python3");
const SHAPE = [2, 4, 64, 64];
const SD = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 };

/** One representative configuration per scheduler (and the DPM-Solver variants people use). */
const CASES: { label: string; config: Record<string, unknown>; kwargs?: Record<string, unknown> }[] = [
  { label: "DDPM", config: { _class_name: "DDPMScheduler", ...SD } },
  { label: "DDIM (η=0)", config: { _class_name: "DDIMScheduler", ...SD, steps_offset: 1, set_alpha_to_one: false, clip_sample: false } },
  { label: "DDIM inverse", config: { _class_name: "DDIMInverseScheduler", ...SD, clip_sample: false } },
  { label: "PNDM (PLMS)", config: { _class_name: "PNDMScheduler", ...SD, skip_prk_steps: true } },
  { label: "LMS", config: { _class_name: "LMSDiscreteScheduler", ...SD } },
  { label: "Euler", config: { _class_name: "EulerDiscreteScheduler", ...SD } },
  { label: "Euler ancestral", config: { _class_name: "EulerAncestralDiscreteScheduler", ...SD } },
  { label: "Heun", config: { _class_name: "HeunDiscreteScheduler", ...SD } },
  { label: "KDPM2", config: { _class_name: "KDPM2DiscreteScheduler", ...SD } },
  { label: "KDPM2 ancestral", config: { _class_name: "KDPM2AncestralDiscreteScheduler", ...SD } },
  { label: "DPM++ 2M", config: { _class_name: "DPMSolverMultistepScheduler", ...SD } },
  { label: "DPM++ 3M Karras", config: { _class_name: "DPMSolverMultistepScheduler", ...SD, solver_order: 3, use_karras_sigmas: true } },
  { label: "DPM++ 2M SDE", config: { _class_name: "DPMSolverMultistepScheduler", ...SD, algorithm_type: "sde-dpmsolver++" } },
  { label: "DPM++ singlestep 3", config: { _class_name: "DPMSolverSinglestepScheduler", ...SD, solver_order: 3 } },
  { label: "UniPC bh2 (order 2)", config: { _class_name: "UniPCMultistepScheduler", ...SD } },
  { label: "UniPC bh1 (order 3)", config: { _class_name: "UniPCMultistepScheduler", ...SD, solver_type: "bh1", solver_order: 3, final_sigmas_type: "sigma_min" } },
  { label: "DEIS 3", config: { _class_name: "DEISMultistepScheduler", ...SD, solver_order: 3 } },
  { label: "LCM", config: { _class_name: "LCMScheduler" } },
  { label: "TCD", config: { _class_name: "TCDScheduler" }, kwargs: { eta: 0.3 } },
  { label: "FlowMatch Euler", config: { _class_name: "FlowMatchEulerDiscreteScheduler", shift: 3.0 } },
];

const stepsFor = (c: (typeof CASES)[number]) => (c.config._class_name === "LCMScheduler" || c.config._class_name === "TCDScheduler" ? 8 : STEPS);

/** One full loop of `scaleModelInput + step`, µs per step. */
function loopOurs(c: (typeof CASES)[number], x: Tensor, mo: Tensor, g: Generator): number {
  const s = schedulerFromConfig(c.config);
  s.setTimesteps(stepsFor(c));
  const start = process.hrtime.bigint();
  for (const t of s.timesteps) {
    tidy(() => {
      s.scaleModelInput(x, t);
      s.step(mo, t, x, { generator: g, ...(c.kwargs ?? {}) });
    });
  }
  const us = Number(process.hrtime.bigint() - start) / 1e3 / s.timesteps.length;
  s.dispose();
  return us;
}

/** The PyTorch worker: one JSON request per line, one JSON answer per line. */
function torchWorker(): { ask: (req: object) => Promise<Record<string, number>>; close: () => void } {
  const child = spawn(PYTHON, [path.join(__dirname, "schedulers_torch.py")], { stdio: ["pipe", "pipe", "inherit"] });
  let buffer = "";
  const waiting: ((line: string) => void)[] = [];
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    buffer += chunk;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      waiting.shift()?.(line);
    }
  });
  return {
    ask: (req) =>
      new Promise((resolve) => {
        waiting.push((line) => resolve(JSON.parse(line)));
        child.stdin.write(JSON.stringify(req) + "\n");
      }),
    close: () => child.stdin.end(),
  };
}

async function main(): Promise<void> {
  const threads = getNumThreads();
  const g = new Generator(0);
  const x = randn(SHAPE, { generator: g });
  const mo = randn(SHAPE, { generator: g }).mul(0.1);
  const worker = torchWorker();
  await worker.ask({ shape: SHAPE, threads });
  console.log(`scheduler step on ${SHAPE.join("×")} float32 latents, ${STEPS} steps (LCM/TCD 8), ${threads} thread(s), median of ${REPEATS} interleaved loops`);
  console.log(`${"scheduler".padEnd(22)} ${"ours µs/step".padStart(13)} ${"torch µs/step".padStart(14)} ${"ratio".padStart(7)}`);
  const ratios: number[] = [];
  for (const c of CASES) {
    const ours: number[] = [];
    const ref: number[] = [];
    for (let r = 0; r <= REPEATS; r++) {
      const a = loopOurs(c, x, mo, g);
      const b = (await worker.ask({ config: c.config, steps: stepsFor(c), kwargs: c.kwargs ?? {} })).us;
      if (r > 0) {
        ours.push(a); // the first round warms up both sides
        ref.push(b);
      }
    }
    const [o, t] = [median(ours), median(ref)];
    ratios.push(o / t);
    console.log(`${c.label.padEnd(22)} ${o.toFixed(0).padStart(13)} ${t.toFixed(0).padStart(14)} ${(o / t).toFixed(2).padStart(7)}`);
  }
  console.log(`median ratio ${median(ratios).toFixed(2)} (ours / PyTorch)`);
  worker.close();
  x.dispose();
  mo.dispose();
}

void main();
