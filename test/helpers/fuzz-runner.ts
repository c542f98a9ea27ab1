/**
 * Drives test/helpers/fuzz-child.ts: runs calls [0, calls) of one seed in child processes and
 * reports every call that killed its process (a signal or an exit without DONE) or ran past
 * `callTimeoutMs`, by index and label. After a crash a new child goes on from the next call.
 *
 * Also a command, for the long runs: `npx tsx test/helpers/fuzz-runner.ts <typed|ops> <calls> [seed]`
 * (environment: FUZZ_ONLY, FUZZ_VERBOSE as in fuzz-child.ts; FUZZ_MALLOC_CHECK below).
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

const root = path.resolve(__dirname, "..", "..");
const child = path.join(__dirname, "fuzz-child.ts");
// A child may not hold more than this much heap: a random size that libtorch would allocate
// and fill (below the 2^40-element refusal) fails as an allocation error instead of swapping.
const DATA_LIMIT_KB = 3 * 1024 * 1024;

export interface Crash {
  index: number;
  label: string;
  /** "SIGSEGV", "exit 1", "timeout" */
  how: string;
  stderr: string;
}

export interface FuzzReport {
  surface: string;
  seed: number;
  calls: number;
  ok: number;
  threw: number;
  crashes: Crash[];
  /** Calls that threw something other than a clean Error (no message, a C++ backtrace). */
  bad: string[];
  processes: number;
  seconds: number;
}

interface ChildResult {
  lastCall: { index: number; label: string } | null;
  done: { ok: number; threw: number } | null;
  ok: number;
  threw: number;
  how: string;
  stderr: string;
  bad: string[];
}

// FUZZ_MALLOC_CHECK=1: glibc's checking malloc, and no tensor-memory cache in front of it, so a
// call that corrupts the heap dies itself instead of a later call taking the blame (about 4x slower).
const MALLOC_DEBUG = ["/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0", "/usr/lib64/libc_malloc_debug.so.0", "/lib64/libc_malloc_debug.so.0"].find((file) => fs.existsSync(file));

function childEnv(): NodeJS.ProcessEnv {
  if (process.env.FUZZ_MALLOC_CHECK !== "1" || !MALLOC_DEBUG) return process.env;
  return { ...process.env, LD_PRELOAD: MALLOC_DEBUG, MALLOC_CHECK_: "3", TORCH_DIFFUSION_CPU_CACHE_MB: "0" };
}

function runChild(surface: string, seed: number, start: number, count: number, callTimeoutMs: number): Promise<ChildResult> {
  return new Promise((resolve) => {
    const proc = spawn("/bin/sh", ["-c", `ulimit -d ${DATA_LIMIT_KB}; exec "$0" "$@"`, process.execPath, "--import", "tsx", child, surface, String(seed), String(start), String(count)], {
      cwd: root,
      env: childEnv(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    const result: ChildResult = { lastCall: null, done: null, ok: 0, threw: 0, how: "", stderr: "", bad: [] };
    let buffered = "";
    let timedOut = false;
    let timer = setTimeout(() => undefined, 0);
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        proc.kill("SIGKILL");
      }, callTimeoutMs);
    };
    arm();
    proc.stdout.setEncoding("utf8");
    proc.stdout.on("data", (chunk: string) => {
      arm();
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const text of lines) {
        const [kind, a, b] = text.split(" ");
        if (kind === "CALL") result.lastCall = { index: Number(a), label: b };
        else if (kind === "DONE") result.done = { ok: Number(a), threw: Number(b) };
        else if (kind === "BAD") result.bad.push(text.slice(4));
      }
    });
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk: string) => {
      result.stderr = (result.stderr + chunk).slice(-2000);
    });
    proc.on("close", (code, signal) => {
      clearTimeout(timer);
      result.how = timedOut ? "timeout" : signal ? signal : `exit ${code}`;
      resolve(result);
    });
  });
}

/** Runs calls [0, calls) of `seed` on `surface` ("typed" or "ops"), restarting after each crash. */
export async function fuzz(surface: "typed" | "ops", calls: number, seed: number, options: { callTimeoutMs?: number; maxCrashes?: number } = {}): Promise<FuzzReport> {
  const started = Date.now();
  const report: FuzzReport = { surface, seed, calls, ok: 0, threw: 0, crashes: [], bad: [], processes: 0, seconds: 0 };
  let next = 0;
  while (next < calls && report.crashes.length < (options.maxCrashes ?? 200)) {
    report.processes++;
    const result = await runChild(surface, seed, next, calls - next, options.callTimeoutMs ?? 20_000);
    report.bad.push(...result.bad);
    if (result.done) {
      report.ok += result.done.ok;
      report.threw += result.done.threw;
      break;
    }
    if (!result.lastCall) throw new Error(`fuzz child failed to start (${result.how}): ${result.stderr}`);
    report.crashes.push({ index: result.lastCall.index, label: result.lastCall.label, how: result.how, stderr: result.stderr.trim().split("\n").slice(0, 3).join("\n") });
    next = result.lastCall.index + 1;
  }
  report.seconds = (Date.now() - started) / 1000;
  return report;
}

export function summarize(report: FuzzReport): string {
  const lines = [
    `fuzz ${report.surface} seed ${report.seed}: ${report.calls} calls in ${report.seconds.toFixed(1)} s, ${report.processes} process(es), ` +
      `${report.crashes.length} crash(es), ${report.bad.length} unclean error(s)`,
    ...report.crashes.map((c) => `  crash: call ${c.index} ${c.label} (${c.how})`),
    ...report.bad.map((b) => `  unclean error: ${b}`),
  ];
  return lines.join("\n");
}

if (require.main === module) {
  const [surface = "typed", calls = "10000", seed = "1"] = process.argv.slice(2);
  fuzz(surface as "typed" | "ops", Number(calls), Number(seed), { maxCrashes: 10_000 }).then((report) => {
    console.log(summarize(report));
    const byLabel = new Map<string, number>();
    for (const c of report.crashes) byLabel.set(`${c.label} (${c.how})`, (byLabel.get(`${c.label} (${c.how})`) ?? 0) + 1);
    console.log([...byLabel].map(([label, n]) => `${label} x${n}`).join("\n"));
  });
}
