/**
 * The image commands — generate, edit (SDEdit or DiffEdit), inpaint — from checked option values to
 * written PNGs. Options are checked before libtorch or the model is loaded, so a typo fails
 * in well under a second. Steps and guidance not given come from the model's recommended
 * defaults (model_index.json's `torch_diffusion.defaults`), else diffusers' 50 and 7.5. With
 * `--json` the result is one JSON object on stdout instead of the file names.
 */
import type * as TD from "../index";
import { imageFormat } from "../image_format";
import { BUILTIN_INSTRUCT_MODEL_NAME } from "../models/directory";
import { CliError, badValue, deviceOption, guidanceIntervalOption, intOption, numberOption, schedulerClassName, stringOption, type Values } from "./args";
import { ProgressBar, ensureParent, outputPaths, printJson, requireFile, resolveModelDir, secondsSince, type CliIO } from "./output";

/** The options every image command shares, checked. */
/** The options every image command shares, checked before libtorch or the model loads. */
export interface Common {
  dir: string;
  device: string;
  verify: boolean;
  prompt: string;
  negativePrompt?: string;
  steps?: number;
  guidanceScale?: number;
  seed: number;
  scheduler?: string;
  perPrompt: number;
  clipSkip?: number;
  out: string;
  grid?: string;
  width?: number;
  height?: number;
  json: boolean;
  /** When the command started (Date.now()), for the timings. */
  started: number;
}

/** The values a run uses once the model is loaded: the caller's, else the model's defaults, else diffusers'. */
interface Effective {
  steps: number;
  guidanceScale: number;
}

export function commonOptions(values: Values): Common {
  return {
    prompt: stringOption(values, "prompt", { required: true }),
    negativePrompt: stringOption(values, "negative-prompt"),
    clipSkip: intOption(values, "clip-skip", 0),
    ...samplingOptions(values),
    dir: resolveModelDir(stringOption(values, "model")),
  };
}

/**
 * The sampling and output options of every image command, text or class-conditional: steps,
 * guidance, seed, scheduler, --batch as `perPrompt`, outputs (their formats checked), size,
 * device, verification, --json.
 * @example const o = samplingOptions(values); // { steps, guidanceScale, seed, ..., started }
 */
export function samplingOptions(values: Values): Omit<Common, "dir" | "prompt" | "negativePrompt" | "clipSkip"> {
  const started = Date.now();
  const o = {
    steps: intOption(values, "steps", 1),
    guidanceScale: numberOption(values, "guidance"),
    seed: intOption(values, "seed", 0) ?? Math.floor(Math.random() * 2 ** 31),
    scheduler: stringOption(values, "scheduler"),
    perPrompt: intOption(values, "batch", 1) ?? 1,
    out: stringOption(values, "out") ?? "out.png",
    grid: stringOption(values, "grid"),
    width: intOption(values, "width", 1),
    height: intOption(values, "height", 1),
    device: deviceOption(values),
    verify: values["no-verify"] !== true,
    json: values.json === true,
    started,
  };
  checkImageOutputs({ out: o.out, grid: o.grid });
  return o;
}

/** Refuses output image files of a format we cannot write, naming the option. @example checkImageOutputs({ out: "x.gif" }) // throws "--out: ..." */
export function checkImageOutputs(files: Record<string, string | undefined>): void {
  for (const [option, file] of Object.entries(files)) {
    if (file === undefined) continue;
    try {
      imageFormat(file);
    } catch (error) {
      throw new CliError(`--${option}: ${(error as Error).message}`);
    }
  }
}

/**
 * Steps and guidance for this run: the options given, else the model's defaults, else 50 and 7.5.
 * @example effective({ steps: undefined, guidanceScale: 3 }, model) // { steps: 30, guidanceScale: 3 } on the built-in model
 */
export function effective(o: { steps?: number; guidanceScale?: number }, model: TD.DiffusionModel): Effective {
  return { steps: o.steps ?? model.defaults.numInferenceSteps ?? 50, guidanceScale: o.guidanceScale ?? model.defaults.guidanceScale ?? 7.5 };
}

/**
 * The guidance interval of a call: `--guidance-interval` (parsed before the model loads), else
 * the model's recommended one; `reported` is what the summary line and --json show (null: every step).
 * @example const { guidanceInterval, reported } = intervalFor(guidanceIntervalOption(values), model);
 */
function intervalFor(given: [number, number] | undefined, model: TD.DiffusionModel): { guidanceInterval?: [number, number]; reported: [number, number] | null } {
  const guidanceInterval = given ?? model.defaults.guidanceInterval;
  return { guidanceInterval, reported: guidanceInterval && guidanceInterval.every(Number.isFinite) ? guidanceInterval : null };
}

/** The pipeline options every image command passes the same way. */
function textOptions(o: Common, e: Effective) {
  return { prompt: o.prompt, negativePrompt: o.negativePrompt, numInferenceSteps: e.steps, guidanceScale: e.guidanceScale, numImagesPerPrompt: o.perPrompt, clipSkip: o.clipSkip };
}

/** Loaded lazily: `--help` and usage errors need neither libtorch nor sharp. */
async function loadLibrary(): Promise<typeof TD> {
  return import("../index");
}

/** Fails with one line when `--device cuda` asks for what this libtorch or machine lacks. */
export function requireDevice(td: typeof TD, device: string): void {
  if (device.startsWith("cuda") && !td.cuda.isAvailable()) {
    throw new CliError(`--device ${device}: CUDA is not available (${td.buildInfo.cuda ? "no CUDA device found" : "this libtorch is a CPU build"})`);
  }
}

/**
 * The model of a command, checked for text-to-image use (one-line errors), with `--scheduler`
 * as its default scheduler when given; `who` names the command in messages.
 * @example const model = loadTextToImage(td, o, "train");
 */
export function loadTextToImage(td: typeof TD, o: { dir: string; device: string; verify: boolean; scheduler?: string }, who: string): TD.TextToImageModel {
  requireDevice(td, o.device);
  const className = o.scheduler === undefined ? undefined : schedulerClassName(o.scheduler, Object.keys(td.SCHEDULERS));
  const model = td.loadModel(o.dir, { device: o.device, verify: o.verify });
  try {
    if (className !== undefined) {
      try {
        model.scheduler = model.newScheduler(className);
      } catch (error) {
        throw new CliError(`--scheduler ${o.scheduler}: ${(error as Error).message}`);
      }
    }
    try {
      return model.requireTextToImage(who);
    } catch (error) {
      throw new CliError(`${(error as Error).message}${model.scheduler ? "" : "; pick one with --scheduler"}`);
    }
  } catch (error) {
    model.dispose();
    throw error;
  }
}

/** Writes each image (and the grid) and, without --json, prints the file names on stdout; returns them. */
export async function writeOutputs(td: typeof TD, images: TD.Tensor, o: Pick<Common, "out" | "grid" | "json">, io: CliIO): Promise<{ images: string[]; grid: string | null }> {
  const files = outputPaths(o.out, images.shape[0]);
  for (const [i, file] of files.entries()) {
    ensureParent(file);
    const image = images.index(i);
    await td.writeImage(image, file);
    image.dispose();
    if (!o.json) io.stdout.write(`${file}\n`);
  }
  if (o.grid !== undefined) {
    ensureParent(o.grid);
    const grid = td.imageGrid(images);
    await td.writeImage(grid, o.grid);
    grid.dispose();
    if (!o.json) io.stdout.write(`${o.grid}\n`);
  }
  return { images: files, grid: o.grid ?? null };
}

/** What `--json` prints for an image command (before the command's own fields). */
function jsonResult(command: string, o: Common, e: Effective, scheduler: string, written: { images: string[]; grid: string | null }, size: { width: number; height: number }, stepsRun: number, timings: Record<string, number>) {
  return {
    command, model: o.dir, ...written, prompt: o.prompt, negativePrompt: o.negativePrompt ?? null, seed: o.seed, steps: e.steps, stepsRun, scheduler,
    guidanceScale: e.guidanceScale, width: size.width, height: size.height, timings,
  };
}

/** Runs one pipeline call with a progress bar and a summary line on stderr, then writes (and with --json prints the result). */
async function runPipeline(
  td: typeof TD,
  o: Common,
  e: Effective,
  io: CliIO,
  label: string,
  scheduler: TD.Scheduler,
  call: (loop: { generator: TD.Generator; onProgress: (p: TD.ProgressInfo) => void }) => Promise<TD.PipelineOutput>,
  extra: Record<string, unknown> = {},
): Promise<void> {
  const bar = new ProgressBar(io.stderr, label);
  const started = Date.now();
  const load = secondsSince(o.started);
  let steps = 0;
  let images: TD.Tensor;
  try {
    images = (await call({ generator: new td.Generator(o.seed), onProgress: ({ step, total }) => { steps = step; bar.update(step, total); } })).images;
  } finally {
    bar.done();
  }
  const [count, , height, width] = images.shape;
  const run = secondsSince(started);
  const interval = Array.isArray(extra.guidanceInterval) ? ` on timesteps ${extra.guidanceInterval.join("–")}` : "";
  io.stderr.write(`${label}: ${count} image${count > 1 ? "s" : ""} ${width}×${height}, ${steps} steps of ${scheduler.className}, seed ${o.seed}, guidance ${e.guidanceScale}${interval}, ${run.toFixed(1)} s\n`);
  const writing = Date.now();
  const written = await writeOutputs(td, images, o, io);
  images.dispose();
  if (o.json) printJson(io, { ...jsonResult(label, o, e, scheduler.className, written, { width, height }, steps, { load, run, write: secondsSince(writing), total: secondsSince(o.started) }), ...extra });
}

/** `generate`: text-to-image. @example await runGenerate({ prompt: "a cat", steps: "20" }, io); */
export async function runGenerate(values: Values, io: CliIO, signal?: AbortSignal): Promise<void> {
  const o = commonOptions(values);
  const interval = guidanceIntervalOption(values);
  const td = await loadLibrary();
  const model = loadTextToImage(td, o, "generate");
  const e = effective(o, model);
  const { guidanceInterval, reported } = intervalFor(interval, model);
  const pipe = new td.Text2ImagePipeline(model);
  await runPipeline(td, o, e, io, "generate", model.scheduler, (loop) =>
    pipe.generate({ ...textOptions(o, e), guidanceInterval, width: o.width, height: o.height, signal, ...loop }),
    { guidanceInterval: reported },
  );
}

/** `edit`: SDEdit img2img, or DiffEdit with `--method diffedit`. @example await runEdit({ image: "strokes.png", prompt: "a dress" }, io); */
export async function runEdit(values: Values, io: CliIO, signal?: AbortSignal): Promise<void> {
  const method = stringOption(values, "method") ?? "sdedit";
  if (method !== "sdedit" && method !== "diffedit") throw badValue("--method", "sdedit or diffedit", method);
  if (method === "diffedit") return runDiffEdit(values, io, signal);
  for (const option of ["source-prompt", "mask", "mask-out", "inversion-iterations"] as const) {
    if (values[option] !== undefined) throw new CliError(`--${option}: only with --method diffedit`);
  }
  const file = requireFile("image", stringOption(values, "image", { required: true }));
  const strength = numberOption(values, "strength", [0, 1]);
  const interval = guidanceIntervalOption(values);
  const o = commonOptions(values);
  const td = await loadLibrary();
  const model = loadTextToImage(td, o, "edit");
  const e = effective(o, model);
  const { guidanceInterval, reported } = intervalFor(interval, model);
  const image = await model.readImages(file, { width: o.width, height: o.height, who: "--image" });
  const pipe = new td.Img2ImagePipeline(model);
  await runPipeline(td, o, e, io, "edit", model.scheduler, (loop) =>
    pipe.edit({ image, strength, ...textOptions(o, e), guidanceInterval, signal, ...loop }),
    { method: "sdedit", input: file, strength: strength ?? 0.8, guidanceInterval: reported },
  );
}

/** `edit --method diffedit`: infer the mask, invert, redraw inside the mask. @example await runEdit({ method: "diffedit", image: "shirt.png", "source-prompt": "a shirt", prompt: "a dress" }, io); */
async function runDiffEdit(values: Values, io: CliIO, signal?: AbortSignal): Promise<void> {
  const file = requireFile("image", stringOption(values, "image", { required: true }));
  const sourcePrompt = stringOption(values, "source-prompt", { required: true });
  const maskOption = stringOption(values, "mask");
  const maskFile = maskOption === undefined ? undefined : requireFile("mask", maskOption);
  const maskOut = stringOption(values, "mask-out");
  checkImageOutputs({ "mask-out": maskOut });
  const strength = numberOption(values, "strength", [0, 1]);
  const interval = guidanceIntervalOption(values);
  const inversionIterations = intOption(values, "inversion-iterations", 0) ?? 0;
  const o = commonOptions(values);
  if (o.perPrompt !== 1) throw new CliError("--batch: --method diffedit makes one image per prompt (its DDIM decoding is deterministic)");
  const td = await loadLibrary();
  if (o.scheduler !== undefined && schedulerClassName(o.scheduler, Object.keys(td.SCHEDULERS)) !== "DDIMScheduler") {
    throw new CliError(`--scheduler ${o.scheduler}: --method diffedit runs DDIM (its inversion is DDIM's); leave --scheduler out or give ddim`);
  }
  const model = loadTextToImage(td, o, "edit");
  const e = effective(o, model);
  const { guidanceInterval, reported } = intervalFor(interval, model);
  const image = await model.readImages(file, { width: o.width, height: o.height, who: "--image" });
  const [, , height, width] = image.shape;
  // A resized image takes its mask along; otherwise the mask must be of the image's (or the latents') size.
  const mask = maskFile !== undefined && (o.width !== undefined || o.height !== undefined) ? await td.readImage(maskFile, { channels: 1, width, height }) : maskFile;
  const pipe = new td.DiffEditPipeline(model);
  const bar = new ProgressBar(io.stderr, "diffedit");
  const load = secondsSince(o.started);
  const started = Date.now();
  const stages: Record<string, number> = {};
  let output: TD.DiffEditOutput;
  try {
    output = await pipe.edit({
      image, mask, sourcePrompt, targetPrompt: o.prompt, negativePrompt: o.negativePrompt, numInferenceSteps: e.steps, guidanceScale: e.guidanceScale, guidanceInterval,
      clipSkip: o.clipSkip, inpaintStrength: strength, inversionFixedPointIterations: inversionIterations, generator: new td.Generator(o.seed), signal,
      onProgress: ({ step, total, stage }) => { stages[stage] = (stages[stage] ?? 0) + 1; bar.update(step, total); },
    });
  } finally {
    bar.done();
  }
  const run = secondsSince(started);
  const maskNote = maskFile === undefined ? `mask from ${stages.mask ?? 0} noise draws, ` : "";
  io.stderr.write(`diffedit: 1 image ${width}×${height}, ${maskNote}${stages.invert ?? 0} inversion${inversionIterations > 0 ? ` (${inversionIterations} fixed-point refinements each)` : ""} + ${stages.denoise ?? 0} denoising steps of DDIMScheduler, seed ${o.seed}, guidance ${e.guidanceScale}${reported ? ` on timesteps ${reported.join("–")}` : ""}, ${run.toFixed(1)} s\n`);
  const writing = Date.now();
  const written = await writeOutputs(td, output.images, o, io);
  if (maskOut !== undefined) {
    ensureParent(maskOut);
    await td.writeImage(output.imageMask.index(0), maskOut);
    if (!o.json) io.stdout.write(`${maskOut}\n`);
  }
  for (const t of [output.images, output.mask, output.imageMask]) t.dispose();
  if (o.json) {
    const timings = { load, run, write: secondsSince(writing), total: secondsSince(o.started) };
    printJson(io, {
      ...jsonResult("edit", o, e, "DDIMScheduler", written, { width, height }, stages.denoise ?? 0, timings),
      method: "diffedit", input: file, sourcePrompt, strength: strength ?? 0.8, mask: maskFile ?? null, maskOut: maskOut ?? null,
      maskDraws: stages.mask ?? 0, inversionSteps: stages.invert ?? 0, inversionIterations, guidanceInterval: reported,
    });
  }
}

/** `instruct`: InstructPix2Pix. @example await runInstruct({ image: "shirt.png", instruction: "make it a bag" }, io); */
export async function runInstruct(values: Values, io: CliIO, signal?: AbortSignal): Promise<void> {
  const file = requireFile("image", stringOption(values, "image", { required: true }));
  const instruction = stringOption(values, "instruction", { required: true });
  const imageGuidanceScale = numberOption(values, "image-guidance");
  const interval = guidanceIntervalOption(values);
  const o = commonOptions({ ...values, prompt: instruction, model: stringOption(values, "model") ?? BUILTIN_INSTRUCT_MODEL_NAME });
  const td = await loadLibrary();
  const model = loadTextToImage(td, o, "instruct");
  const e = effective(o, model);
  const { guidanceInterval, reported } = intervalFor(interval, model);
  let pipe: TD.InstructPix2PixPipeline;
  try {
    pipe = new td.InstructPix2PixPipeline(model);
  } catch (error) {
    throw new CliError(`--model: ${(error as Error).message}; instruct needs an InstructPix2Pix model (e.g. builtin-instruct)`);
  }
  const image = await model.readImages(file, { width: o.width, height: o.height, who: "--image" });
  await runPipeline(td, o, e, io, "instruct", model.scheduler, (loop) =>
    pipe.edit({
      image, instruction, negativePrompt: o.negativePrompt, imageGuidanceScale, guidanceScale: e.guidanceScale, guidanceInterval, numInferenceSteps: e.steps,
      numImagesPerPrompt: o.perPrompt, signal, ...loop,
    }),
    { input: file, instruction, imageGuidanceScale: imageGuidanceScale ?? 1.5, guidanceInterval: reported },
  );
}

/** `inpaint`: repaint the mask's white part. @example await runInpaint({ image: "room.png", mask: "m.png", prompt: "a sofa" }, io); */
export async function runInpaint(values: Values, io: CliIO, signal?: AbortSignal): Promise<void> {
  const file = requireFile("image", stringOption(values, "image", { required: true }));
  const maskFile = requireFile("mask", stringOption(values, "mask", { required: true }));
  const strength = numberOption(values, "strength", [0, 1]);
  const interval = guidanceIntervalOption(values);
  const o = commonOptions(values);
  const td = await loadLibrary();
  const model = loadTextToImage(td, o, "inpaint");
  const e = effective(o, model);
  const { guidanceInterval, reported } = intervalFor(interval, model);
  const image = await model.readImages(file, { width: o.width, height: o.height, who: "--image" });
  const [, , height, width] = image.shape;
  // A resized image takes its mask along; otherwise the mask must already match.
  const mask = o.width !== undefined || o.height !== undefined ? await td.readImage(maskFile, { channels: 1, width, height }) : maskFile;
  const pipe = new td.InpaintPipeline(model);
  await runPipeline(td, o, e, io, "inpaint", model.scheduler, (loop) =>
    pipe.inpaint({ image, mask, strength, ...textOptions(o, e), guidanceInterval, signal, ...loop }),
    { input: file, mask: maskFile, strength: strength ?? 1, guidanceInterval: reported },
  );
}
