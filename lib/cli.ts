#!/usr/bin/env node
/**
 * The `torch-diffusion` command: generate, edit (SDEdit, DiffEdit), p2p (Prompt-to-Prompt), inpaint, instruct, train, imagic, convert, info.
 *
 *   torch-diffusion convert --from ~/sd-1.5-diffusers --to sd-1.5 --dtype float16
 *   torch-diffusion generate --prompt "a photo of a sneaker" --steps 30 --scheduler dpm++2m --out sneaker.png
 *   torch-diffusion p2p --prompt "a photo of a shirt" --target "a photo of a dress" --cross-replace 0.8 --out pair.png
 *   torch-diffusion inpaint --image room.png --mask mask.png --prompt "a red sofa" --batch 4 --grid all.png
 *   torch-diffusion instruct --image shirt.png --instruction "make it a dress" --image-guidance 1.5 --guidance 7.5
 *   torch-diffusion train --data fashion-mnist --steps 500 --out my-model
 *   torch-diffusion imagic --image shirt.png --prompt "a photo of a dress" --out edit --sweep
 *   torch-diffusion dreambooth --images subject/ --class-noun sneaker --out my-sneaker --lora-rank 4
 *   torch-diffusion info --model models/sd-1.5
 *
 * Written files go to stdout (one per line; with --json one JSON object with the result instead),
 * notes, progress and the summary to stderr. Bad
 * input prints one `torch-diffusion: <message>` line and exits 1; Ctrl-C stops after the
 * current step and exits 130.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { COMMANDS, CliError, TOP_HELP, commandHelp, parseCommand, stringOption, type Values } from "./cli/args";
import { modelInfo, runtimeInfo } from "./cli/info";
import { resolveModelDir, type CliIO } from "./cli/output";
import { packageRoot } from "./package_root";
import { runEdit, runInpaint, runInstruct } from "./cli/run";
import { runTrain } from "./cli/train";
import { runImagic } from "./cli/imagic";
import { runPromptToPrompt } from "./cli/p2p";
import { runDreamBooth } from "./cli/dreambooth";
import { runConvert } from "./cli/convert";
import { runGenerateOrClasses } from "./cli/classes";

type Runner = (values: Values, io: CliIO, signal?: AbortSignal) => Promise<number | void>;

async function runInfo(values: Values, io: CliIO): Promise<void> {
  const dir = resolveModelDir(stringOption(values, "model"));
  const lines = modelInfo(dir);
  const td = await import("./index");
  io.stdout.write([...lines, ...runtimeInfo(td)].join("\n") + "\n");
}

const RUNNERS: Record<keyof typeof COMMANDS, Runner> = {
  generate: runGenerateOrClasses,
  edit: runEdit,
  p2p: runPromptToPrompt,
  inpaint: runInpaint,
  instruct: runInstruct,
  train: runTrain,
  imagic: runImagic,
  dreambooth: runDreamBooth,
  convert: runConvert,
  info: runInfo,
};

function version(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(packageRoot(), "package.json"), "utf8")).version;
  } catch {
    return "unknown";
  }
}

/** Where libtorch appends the TorchScript traceback (kilobytes of it) to an error's own first line. */
const TRACEBACK = /\n(The following operation failed in the TorchScript interpreter|Traceback of TorchScript|Exception raised from )/;

/**
 * Any error as one line, never a stack trace: the message up to any TorchScript traceback
 * (all of it with `verbose`), line breaks folded.
 * @example errorLine(new Error("Module.forward: bad shape\nTraceback of TorchScript ...")) // "Module.forward: bad shape (the full error with --verbose)"
 */
export function errorLine(error: unknown, verbose = false): string {
  const full = error instanceof Error ? error.message : String(error);
  const cut = verbose ? -1 : full.search(TRACEBACK);
  const message = cut >= 0 ? `${full.slice(0, cut)} (the full error with --verbose)` : full;
  return message.replace(/\s*\n\s*/g, " ").trim().replace(/^torch-diffusion:\s*/, "");
}

function report(error: unknown, io: CliIO, verbose: boolean): number {
  if ((error as Error | undefined)?.name === "AbortError") {
    io.stderr.write("torch-diffusion: interrupted\n");
    return 130;
  }
  io.stderr.write(`torch-diffusion: ${errorLine(error, verbose)}\n`);
  return error instanceof CliError ? error.exitCode : 1;
}

/**
 * Runs the command line `argv` (without node and the script) and resolves to the exit code;
 * it never throws and never exits the process, so tests can call it in-process.
 * @example process.exitCode = await main(["generate", "--prompt", "a cat", "--out", "cat.png"]);
 */
export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr }, signal?: AbortSignal): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined) {
      io.stderr.write(`${TOP_HELP}\n`);
      return 1;
    }
    if (command === "--help" || command === "-h") {
      io.stdout.write(`${TOP_HELP}\n`);
      return 0;
    }
    if (command === "--version" || command === "-v") {
      io.stdout.write(`${version()}\n`);
      return 0;
    }
    if (command === "help") {
      const topic = rest[0];
      if (topic !== undefined && !Object.hasOwn(COMMANDS, topic)) throw new CliError(`help: unknown command ${JSON.stringify(topic)}`);
      io.stdout.write(`${topic === undefined ? TOP_HELP : commandHelp(topic)}\n`);
      return 0;
    }
    if (!Object.hasOwn(COMMANDS, command)) {
      const hint = command.startsWith("-") ? "a command comes first" : `commands: ${Object.keys(COMMANDS).join(", ")}`;
      throw new CliError(`unknown command ${JSON.stringify(command)} (${hint}; see torch-diffusion --help)`);
    }
    const values = parseCommand(command, rest);
    if (values.help) {
      io.stdout.write(`${commandHelp(command)}\n`);
      return 0;
    }
    return (await RUNNERS[command](values, io, signal)) ?? 0;
  } catch (error) {
    return report(error, io, rest.includes("--verbose"));
  }
}

if (require.main === module) {
  // The first Ctrl-C stops the run after the current step; a second one kills as usual.
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  main(process.argv.slice(2), undefined, controller.signal).then((code) => {
    process.exitCode = code;
  });
}
