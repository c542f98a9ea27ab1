/**
 * `--nproc-per-node N`: what torchrun does on one machine, without Python. It starts N copies
 * of the same command, each told its place through PyTorch's env:// variables (MASTER_ADDR
 * 127.0.0.1 and a free port, RANK = LOCAL_RANK = r, WORLD_SIZE = N), passes rank 0's stdout
 * through and every rank's stderr line by line as `[rank r] ...`. When a rank fails, the others
 * get a grace period to report their side (a DistributedError, once their collective notices),
 * then are stopped, and the launch fails with one line naming the rank. An abort (Ctrl-C)
 * reaches every rank once; they stop after the same step with a checkpoint.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import type * as TD from "../index";
import { CliError, intOption, numberOption, type Values } from "./args";
import type { CliIO } from "./output";

export interface LaunchOptions {
  nproc: number;
  /** The command line each rank runs, e.g. [node, cli.js, "train", ...]. */
  command: string[];
  io: CliIO;
  signal?: AbortSignal;
  /** How long the other ranks may take to exit on their own after one failed. Default 10 s. */
  graceMs?: number;
}

/**
 * A TCP port free on 127.0.0.1 now (the OS picks it; the ranks bind it a moment later, as torchrun does).
 * @example const port = await freePort();
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** This CLI as a command line: `node dist/cli.js`, or under tsx (a source checkout) `node --import tsx lib/cli.ts`. */
export function cliCommand(): string[] {
  const script = path.join(__dirname, "..", `cli${path.extname(__filename)}`);
  return script.endsWith(".ts") ? [process.execPath, "--import", pathToFileURL(require.resolve("tsx")).href, script] : [process.execPath, script];
}

/** Writes whole lines of `stream` to `write`, each with `prefix`. */
function forwardLines(stream: NodeJS.ReadableStream, prefix: string, write: (text: string) => void): void {
  let pending = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    const lines = (pending + chunk).split("\n");
    pending = lines.pop()!;
    for (const line of lines) write(`${prefix}${line.replace(/\r/g, "")}\n`);
  });
  stream.on("end", () => {
    if (pending) write(`${prefix}${pending}\n`);
  });
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

/**
 * Runs `command` as ranks 0..nproc-1 of one group and resolves to the launch's exit code
 * (0, or 130 after an abort); a failed rank rejects with a CliError naming it.
 * @example await launch({ nproc: 2, command: [...cliCommand(), "train", "--data", "fashion-mnist", "--out", "m"], io });
 */
export async function launch(o: LaunchOptions): Promise<number> {
  const port = await freePort();
  const [file, ...args] = o.command;
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("TORCHELASTIC_")));
  const children: ChildProcess[] = [];
  const exits: Promise<{ rank: number; code: number | null; signal: NodeJS.Signals | null }>[] = [];
  for (let rank = 0; rank < o.nproc; rank++) {
    const child = spawn(file, args, {
      env: { ...env, MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port), WORLD_SIZE: String(o.nproc), RANK: String(rank), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(o.nproc), GROUP_RANK: "0" },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group: a terminal's Ctrl-C reaches the launcher, which passes it on once.
      detached: true,
    });
    children.push(child);
    forwardLines(child.stderr!, `[rank ${rank}] `, (text) => o.io.stderr.write(text));
    if (rank === 0) child.stdout!.on("data", (chunk: Buffer) => o.io.stdout.write(chunk.toString("utf8")));
    else forwardLines(child.stdout!, `[rank ${rank}] `, (text) => o.io.stderr.write(text));
    exits.push(
      new Promise((resolve) => {
        child.once("error", (error) => {
          o.io.stderr.write(`[rank ${rank}] cannot start ${file}: ${error.message}\n`);
          resolve({ rank, code: 127, signal: null });
        });
        child.once("close", (code, signal) => resolve({ rank, code, signal }));
      }),
    );
  }
  const running = () => children.filter((c) => c.exitCode === null && c.signalCode === null);
  const stopAll = (signal: NodeJS.Signals) => {
    for (const child of running()) child.kill(signal);
  };
  // The launcher's own end (an uncaught error, process.exit) takes the ranks with it.
  const onExit = () => stopAll("SIGKILL");
  process.once("exit", onExit);
  const onAbort = () => stopAll("SIGINT");
  o.signal?.addEventListener("abort", onAbort, { once: true });

  let failed: { rank: number; code: number | null; signal: NodeJS.Signals | null } | null = null;
  let grace: NodeJS.Timeout | null = null;
  try {
    const pending = new Set(exits.map((_, i) => i));
    while (pending.size > 0) {
      const exit = await Promise.race([...pending].map((i) => exits[i]));
      pending.delete(exit.rank);
      if ((exit.code !== 0 || exit.signal) && failed === null) {
        failed = exit;
        // The others notice the loss at their next collective; then they are stopped.
        if (!o.signal?.aborted) grace = setTimeout(() => stopAll("SIGKILL"), o.graceMs ?? 10_000);
      }
    }
  } finally {
    if (grace) clearTimeout(grace);
    process.removeListener("exit", onExit);
    o.signal?.removeEventListener("abort", onAbort);
  }
  if (failed === null) return 0;
  if (o.signal?.aborted && failed.code === 130) return 130;
  throw new CliError(`rank ${failed.rank} of ${o.nproc} ${describeExit(failed.code, failed.signal)}; the other ranks were stopped (each rank's own lines above say why)`, failed.code && failed.code !== 130 ? failed.code : 1);
}

/** `--nproc-per-node N` (default 1) and `--dist-timeout S` (default 60), of every command that trains data-parallel. */
export function dataParallelOption(values: Values): { nproc: number; distTimeoutMs: number } {
  return {
    nproc: intOption(values, "nproc-per-node", 1) ?? 1,
    distTimeoutMs: Math.round(1000 * (numberOption(values, "dist-timeout", [0.001, 1e6]) ?? 60)),
  };
}

/** Ranks other than 0 print nothing but their errors (which main() reports to the real stderr). */
function quiet(): CliIO {
  return { stdout: { write: () => true }, stderr: { write: () => true, isTTY: false } };
}

/**
 * Runs a training command where `--nproc-per-node` puts it: N > 1 launches N ranks of the same
 * command line and waits for them; a process launched as a rank (RANK, WORLD_SIZE, MASTER_ADDR,
 * MASTER_PORT set, by that launcher or torchrun) joins the group and runs `here` with it — with
 * `cuda` meaning its LOCAL_RANK's GPU, and ranks above 0 printing nothing but their errors;
 * otherwise `here` runs alone.
 * @example return runDataParallel(td, { command: "train", values, ...dataParallelOption(values), device, io, signal }, (group, device, io) => trainHere(...));
 */
export async function runDataParallel(
  td: typeof TD,
  o: { command: string; values: Values; nproc: number; distTimeoutMs: number; device: string; io: CliIO; signal?: AbortSignal },
  here: (group: TD.ProcessGroup | undefined, device: string, io: CliIO) => Promise<number>,
): Promise<number> {
  let env: TD.DistributedEnv | null;
  try {
    env = td.distributedEnv();
  } catch (error) {
    throw new CliError((error as Error).message);
  }
  if (o.nproc > 1) {
    if (env) throw new CliError(`--nproc-per-node: this process is already rank ${env.rank} of ${env.worldSize} (RANK and WORLD_SIZE are set); use one launcher`);
    const args = Object.entries(o.values).filter(([name, v]) => name !== "nproc-per-node" && v !== undefined && v !== false).map(([name, v]) => (v === true ? `--${name}` : `--${name}=${v}`));
    return launch({ nproc: o.nproc, command: [...cliCommand(), o.command, ...args], io: o.io, signal: o.signal });
  }
  const group = env ? await td.initProcessGroup({ timeoutMs: o.distTimeoutMs }) : undefined;
  try {
    return await here(group, group && o.device === "cuda" ? `cuda:${group.localRank}` : o.device, group && group.rank > 0 ? quiet() : o.io);
  } finally {
    await group?.destroy();
  }
}
