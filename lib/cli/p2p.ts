/**
 * `torch-diffusion p2p`: Prompt-to-Prompt (library `PromptToPromptPipeline`): from one seed, the
 * image of `--prompt` and its edit under `--target`. `--out` gets each pair side by side (source
 * left, target right; `out-0.png, out-1.png, ...` with `--batch N`), `--out-source`/`--out-target`
 * the two images on their own and `--grid` every pair, one per row. Options are checked before
 * libtorch or the model loads.
 */
import type * as TD from "../index";
import { promptWords } from "../guidance/attention_control";
import { CliError, badValue, numberOption, stringOption, type Values } from "./args";
import { ProgressBar, ensureParent, outputPaths, printJson, secondsSince, type CliIO } from "./output";
import { checkImageOutputs, commonOptions, effective, loadTextToImage, type Common } from "./run";

interface P2PCommand extends Common {
  target: string;
  mode?: "replace" | "refine";
  crossReplace: number;
  reweight: { word: string; scale: number }[];
  outSource?: string;
  outTarget?: string;
}

/**
 * `--reweight WORD=S[,WORD=S...]` -> the pipeline's `reweight`.
 * @example parseReweight("red=2,shirt=0.5") // [{ word: "red", scale: 2 }, { word: "shirt", scale: 0.5 }]
 */
export function parseReweight(raw: string | undefined): { word: string; scale: number }[] {
  if (raw === undefined) return [];
  return raw.split(",").map((item) => {
    const match = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(item);
    const scale = match ? Number(match[2]) : NaN;
    if (!match || !Number.isFinite(scale)) throw badValue("--reweight", "WORD=SCALE[,WORD=SCALE...] (e.g. red=2)", raw);
    return { word: match[1], scale };
  });
}

function p2pOptions(values: Values): P2PCommand {
  const common = commonOptions({ ...values, out: values.out ?? "pair.png" });
  const target = stringOption(values, "target", { required: true });
  const mode = stringOption(values, "mode");
  if (mode !== undefined && mode !== "replace" && mode !== "refine") throw badValue("--mode", "replace or refine", mode);
  if (mode === "replace" && promptWords(common.prompt).length !== promptWords(target).length) {
    throw new CliError(`--mode replace (word swap) needs --prompt and --target with the same number of words (${promptWords(common.prompt).length} and ${promptWords(target).length}): use --mode refine`);
  }
  const o = {
    ...common,
    target,
    mode: mode as P2PCommand["mode"],
    crossReplace: numberOption(values, "cross-replace", [0, 1]) ?? 0.8,
    reweight: parseReweight(stringOption(values, "reweight")),
    outSource: stringOption(values, "out-source"),
    outTarget: stringOption(values, "out-target"),
  };
  checkImageOutputs({ "out-source": o.outSource, "out-target": o.outTarget });
  return o;
}

/** Writes `images` (B, C, H, W) to `out` (one file, or out-i per image); returns the files. */
async function writeEach(td: typeof TD, images: TD.Tensor, out: string): Promise<string[]> {
  const files = outputPaths(out, images.shape[0]);
  for (const [i, file] of files.entries()) {
    ensureParent(file);
    const image = images.index(i);
    try {
      await td.writeImage(image, file);
    } finally {
      image.dispose();
    }
  }
  return files;
}

/** `p2p`. @example await runPromptToPrompt({ prompt: "a photo of a shirt", target: "a photo of a dress", out: "pair.png" }, io); */
export async function runPromptToPrompt(values: Values, io: CliIO, signal?: AbortSignal): Promise<void> {
  const o = p2pOptions(values);
  const td: typeof TD = await import("../index");
  const model = loadTextToImage(td, o, "p2p");
  try {
    let pipe: TD.PromptToPromptPipeline;
    try {
      pipe = new td.PromptToPromptPipeline(model);
    } catch (error) {
      throw new CliError(`--model: ${(error as Error).message}`);
    }
    const e = effective(o, model);
    const load = secondsSince(o.started);
    const bar = new ProgressBar(io.stderr, "p2p");
    const started = Date.now();
    let output: TD.PromptToPromptOutput;
    let total = e.steps;
    try {
      output = await pipe.generate({
        prompt: o.prompt, target: o.target, mode: o.mode, crossReplace: o.crossReplace, reweight: o.reweight, negativePrompt: o.negativePrompt,
        numInferenceSteps: e.steps, guidanceScale: e.guidanceScale, numImagesPerPrompt: o.perPrompt, width: o.width, height: o.height,
        generator: new td.Generator(o.seed), signal, onProgress: (p) => { total = p.total; bar.update(p.step, p.total); },
      });
    } finally {
      bar.done();
    }
    const { source, target } = output;
    const [count, , height, width] = source.shape;
    const run = secondsSince(started);
    const mode = o.mode ?? (promptWords(o.prompt).length === promptWords(o.target).length ? "replace" : "refine");
    const injected = Math.floor(o.crossReplace * total);
    io.stderr.write(
      `p2p: ${count} pair${count > 1 ? "s" : ""} ${width}×${height}, ${mode === "replace" ? "word swap" : "refinement"}, cross-attention from the source for ${injected} of ${total} steps of ${model.scheduler.className}, seed ${o.seed}, guidance ${e.guidanceScale}, ${run.toFixed(1)} s\n`,
    );
    const writing = Date.now();
    try {
      const pairs = td.tidy(() => td.cat([source, target], 3)); // (B, C, H, 2W): source left, target right
      const written: { pairs: string[]; source: string[] | null; target: string[] | null; grid: string | null } = { pairs: [], source: null, target: null, grid: null };
      try {
        written.pairs = await writeEach(td, pairs, o.out);
        if (o.outSource !== undefined) written.source = await writeEach(td, source, o.outSource);
        if (o.outTarget !== undefined) written.target = await writeEach(td, target, o.outTarget);
        if (o.grid !== undefined) {
          ensureParent(o.grid);
          const grid = td.imageGrid(pairs, 1);
          await td.writeImage(grid, o.grid).finally(() => grid.dispose());
          written.grid = o.grid;
        }
      } finally {
        pairs.dispose();
      }
      if (o.json) {
        printJson(io, {
          command: "p2p", model: o.dir, ...written, prompt: o.prompt, targetPrompt: o.target, negativePrompt: o.negativePrompt ?? null, mode,
          crossReplace: o.crossReplace, injectedSteps: injected, reweight: o.reweight, seed: o.seed, steps: e.steps, scheduler: model.scheduler.className,
          guidanceScale: e.guidanceScale, width, height,
          timings: { load, run, write: secondsSince(writing), total: secondsSince(o.started) },
        });
      } else {
        io.stdout.write([...written.pairs, ...(written.source ?? []), ...(written.target ?? []), ...(written.grid ? [written.grid] : [])].join("\n") + "\n");
      }
    } finally {
      source.dispose();
      target.dispose();
    }
  } finally {
    model.dispose();
  }
}
