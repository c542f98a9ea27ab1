/**
 * `torch-diffusion imagic`: Imagic on one image (library `imagic`). Stages 1–2 run once per
 * `--out` folder (and resume there after Ctrl-C); every run then writes one image per η:
 * `--eta E` (default 0.7) or `--sweep` (the paper's 0.6–0.8).
 */
import * as path from "node:path";
import type * as TD from "../index";
import { CliError, badValue, deviceOption, intOption, numberOption, stringOption, type Values } from "./args";
import { ProgressBar, printJson, requireFile, resolveModelDir, secondsSince, type CliIO } from "./output";
import { effective, loadTextToImage } from "./run";

interface ImagicCommand {
  dir: string;
  image: string;
  prompt: string;
  out: string;
  etas: number[];
  steps?: number;
  guidanceScale?: number;
  seed: number;
  embeddingSteps?: number;
  embeddingLr?: number;
  trainSteps?: number;
  lr?: number;
  device: string;
  verify: boolean;
  json: boolean;
}

const SWEEP = [0.6, 0.65, 0.7, 0.75, 0.8];

function imagicOptions(values: Values): ImagicCommand {
  const image = requireFile("image", stringOption(values, "image", { required: true }));
  const prompt = stringOption(values, "prompt", { required: true });
  const out = path.resolve(stringOption(values, "out", { required: true }));
  const eta = numberOption(values, "eta");
  if (eta !== undefined && values.sweep === true) throw new CliError("--eta and --sweep: give one");
  const o = {
    image,
    prompt,
    out,
    etas: values.sweep === true ? SWEEP : [eta ?? 0.7],
    steps: intOption(values, "steps", 1),
    guidanceScale: numberOption(values, "guidance"),
    seed: intOption(values, "seed", 0) ?? 0,
    embeddingSteps: intOption(values, "embedding-steps", 0),
    embeddingLr: numberOption(values, "embedding-lr", [0, 10]),
    trainSteps: intOption(values, "train-steps", 0),
    lr: numberOption(values, "lr", [0, 1]),
    device: deviceOption(values),
    verify: values["no-verify"] !== true,
    json: values.json === true,
  };
  if (o.etas.some((e) => !Number.isFinite(e))) throw badValue("--eta", "a number", String(eta));
  return { ...o, dir: resolveModelDir(stringOption(values, "model")) };
}

/** `imagic`. @example await runImagic({ image: "shirt.png", prompt: "a photo of a dress", out: "edit" }, io); */
export async function runImagic(values: Values, io: CliIO, signal?: AbortSignal): Promise<number> {
  const commandStarted = Date.now();
  const o = imagicOptions(values);
  const td: typeof TD = await import("../index");
  const model = loadTextToImage(td, o, "imagic");
  try {
    const image = await model.readImages(o.image, { who: "--image" });
    // One bar per stage: each has its own step rate.
    let bar = new ProgressBar(io.stderr, "imagic 1/2 embedding");
    let stage: TD.ImagicProgress["stage"] = "embedding";
    const load = secondsSince(commandStarted);
    const started = Date.now();
    let result: TD.ImagicResult;
    try {
      result = await td.imagic({
        model, image, targetPrompt: o.prompt, seed: o.seed, dir: o.out, signal,
        embeddingSteps: o.embeddingSteps, embeddingLr: o.embeddingLr, fineTuneSteps: o.trainSteps, fineTuneLr: o.lr,
        onProgress: (p) => {
          if (p.stage !== stage) {
            bar.done();
            [bar, stage] = [new ProgressBar(io.stderr, "imagic 2/2 fine-tune"), p.stage];
          }
          bar.update(p.step, p.total);
        },
      });
    } catch (error) {
      bar.done();
      if ((error as Error).name === "AbortError") {
        io.stderr.write(`imagic: stopped; ${o.out} holds what is done: rerun the same command to resume\n`);
        return 130;
      }
      throw error;
    } finally {
      image.dispose();
    }
    bar.done();
    const optimize = secondsSince(started);
    const generating = Date.now();
    const e = effective(o, model);
    const files: string[] = [];
    try {
      for (const eta of o.etas) {
        const { images } = await result.generate({ eta, numInferenceSteps: e.steps, guidanceScale: e.guidanceScale, generator: new td.Generator(o.seed), signal });
        const file = path.join(o.out, `eta-${eta.toFixed(2)}.png`);
        const first = images.index(0);
        await td.writeImage(first, file);
        first.dispose();
        images.dispose();
        files.push(file);
        if (!o.json) io.stdout.write(`${file}\n`);
      }
    } finally {
      result.dispose();
    }
    io.stderr.write(`imagic: ${o.etas.length} image${o.etas.length > 1 ? "s" : ""} (η ${o.etas.join(", ")}), seed ${o.seed}, ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    if (o.json) {
      printJson(io, {
        command: "imagic", model: o.dir, out: o.out, images: files, etas: o.etas, input: o.image, prompt: o.prompt, seed: o.seed, steps: e.steps,
        scheduler: model.scheduler?.className ?? null, guidanceScale: e.guidanceScale,
        timings: { load, optimize, generate: secondsSince(generating), total: secondsSince(commandStarted) },
      });
    }
    return 0;
  } finally {
    model.dispose();
  }
}
