/**
 * The `torch-diffusion` command line: every option defined once (type, placeholder, help),
 * each command picking the ones it takes, strict parsing with node:util's parseArgs and
 * value checks that fail with one `CliError` line naming the option.
 */
import { parseArgs } from "node:util";

/**
 * A failure to report as `torch-diffusion: <message>` and exit with `exitCode`, no stack trace.
 * @example throw new CliError("--prompt is required");
 */
export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = "CliError";
  }
}

/**
 * The one error factory for bad option values.
 * @example throw badValue("--steps", "a positive integer", "-3"); // --steps: expected a positive integer but got "-3"
 */
export function badValue(option: string, expected: string, got: string): CliError {
  return new CliError(`${option}: expected ${expected} but got ${JSON.stringify(got)}`);
}

interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  /** Placeholder in help: `--steps N`. */
  arg?: string;
  help: string;
}

/** Short scheduler names -> diffusers class names. @example SCHEDULER_ALIASES["euler-a"] // "EulerAncestralDiscreteScheduler" */
export const SCHEDULER_ALIASES: Record<string, string> = {
  ddim: "DDIMScheduler",
  ddpm: "DDPMScheduler",
  euler: "EulerDiscreteScheduler",
  "euler-a": "EulerAncestralDiscreteScheduler",
  "dpm++2m": "DPMSolverMultistepScheduler",
  unipc: "UniPCMultistepScheduler",
  heun: "HeunDiscreteScheduler",
  lms: "LMSDiscreteScheduler",
  pndm: "PNDMScheduler",
  lcm: "LCMScheduler",
};

/** Every option of every command; commands reword `help` where their default differs. @example OPTIONS.steps.arg // "N" */
export const OPTIONS = {
  model: { type: "string", arg: "DIR", help: "model directory from torch-diffusion convert or train (default: builtin, the built-in model)" },
  prompt: { type: "string", short: "p", arg: "TEXT", help: "what the image should show (required)" },
  "negative-prompt": { type: "string", arg: "TEXT", help: "what to steer away from" },
  steps: { type: "string", arg: "N", help: "denoising steps (default: the model's, else 50)" },
  guidance: { type: "string", arg: "S", help: "classifier-free guidance scale, ≤ 1 turns it off (default: the model's, else 7.5)" },
  "clip-skip": { type: "string", arg: "N", help: "condition on the text encoder's layer N before the last (default 0)" },
  "guidance-interval": { type: "string", arg: "LOW,HIGH", help: "guide only the steps whose timestep is in [LOW, HIGH], or all (default: the model's, else all)" },
  seed: { type: "string", arg: "N", help: "random seed (default: a random one, printed)" },
  scheduler: { type: "string", arg: "NAME", help: `sampler: ${Object.keys(SCHEDULER_ALIASES).join(", ")} or a diffusers class name (default: the model's)` },
  width: { type: "string", arg: "PX", help: "image width (default: the model's)" },
  height: { type: "string", arg: "PX", help: "image height (default: the model's)" },
  batch: { type: "string", arg: "N", help: "images per prompt (default 1)" },
  grid: { type: "string", arg: "FILE", help: "also write all images tiled into one image file" },
  out: { type: "string", short: "o", arg: "FILE", help: "output image: .png, .jpg, .webp or .tif (default out.png; with --batch N > 1: out-0.png, out-1.png, ...)" },
  device: { type: "string", arg: "DEV", help: "cpu (default), cuda or cuda:N" },
  image: { type: "string", arg: "FILE", help: "input image (required)" },
  mask: { type: "string", arg: "FILE", help: "mask of the image's size: white = repaint, black = keep (required)" },
  strength: { type: "string", arg: "S", help: "how far toward noise to go, in [0, 1]" },
  method: { type: "string", arg: "NAME", help: "sdedit (default: redraw the whole image) or diffedit (change only what the prompt changes)" },
  "source-prompt": { type: "string", arg: "TEXT", help: "DiffEdit: what the input image shows (required with --method diffedit)" },
  "mask-out": { type: "string", arg: "FILE", help: "DiffEdit: also write the mask it used (white = edited) as an image" },
  "inversion-iterations": { type: "string", arg: "N", help: "DiffEdit: fixed-point refinements of each inversion step, one model call each (default 0: plain DDIM inversion)" },
  target: { type: "string", arg: "TEXT", help: "Prompt-to-Prompt: the edited prompt (required)" },
  mode: { type: "string", arg: "NAME", help: "Prompt-to-Prompt: replace (word swap) or refine (prompts that add or drop words) (default: replace when both have as many words)" },
  "cross-replace": { type: "string", arg: "T", help: "Prompt-to-Prompt: fraction of the steps, from the first, whose cross-attention maps come from the source, in [0, 1] (default 0.8)" },
  reweight: { type: "string", arg: "W=S,...", help: "Prompt-to-Prompt: scale the target's attention to these words, e.g. red=2,shirt=0.5" },
  "out-source": { type: "string", arg: "FILE", help: "Prompt-to-Prompt: also write the source image(s) on their own" },
  "out-target": { type: "string", arg: "FILE", help: "Prompt-to-Prompt: also write the edited image(s) on their own" },
  data: { type: "string", arg: "SET", help: "fashion-mnist or an image folder" },
  lr: { type: "string", arg: "LR", help: "learning rate (default 1e-4, constant after a short warmup)" },
  caption: { type: "string", arg: "TEXT", help: "caption of images that have none (default: they must have one)" },
  "caption-dropout": { type: "string", arg: "P", help: "fraction of captions dropped, so guidance keeps working (default 0.1)" },
  "checkpoint-every": { type: "string", arg: "N", help: "steps between checkpoints (default 100)" },
  ema: { type: "string", arg: "DECAY", help: "keep an EMA of the weights (e.g. 0.999) and write it as the model (default off)" },
  "no-verify": { type: "boolean", help: "load the model even if its files do not match its checksums.sha256" },
  eta: { type: "string", arg: "E", help: "Imagic: weight of the target text's embedding, η (default 0.7)" },
  sweep: { type: "boolean", help: "Imagic: one image for each η of the paper's sweep 0.6, 0.65, 0.7, 0.75, 0.8" },
  "embedding-steps": { type: "string", arg: "N", help: "Imagic stage 1: steps optimizing the text embedding (default 100)" },
  "embedding-lr": { type: "string", arg: "LR", help: "Imagic stage 1: its learning rate (default 1e-3)" },
  "train-steps": { type: "string", arg: "N", help: "Imagic stage 2: steps fine-tuning the U-Net (default 1500)" },
  from: { type: "string", arg: "DIR", help: "Hugging Face diffusers folder: a pipeline (model_index.json), one component, or a models--org--name cache folder (required)" },
  to: { type: "string", arg: "DIR", help: "model directory to write (required; new, empty, or an earlier conversion)" },
  dtype: { type: "string", arg: "TYPE", help: "float32 (default), float16 (GPU; the VAE stays float32) or bfloat16" },
  "fused-attention": { type: "boolean", help: "use this package's fused attention kernel in the networks (less memory; needs this package to run them)" },
  json: { type: "boolean", help: "print one JSON object with the result on stdout instead of the file names (notes stay on stderr)" },
  images: { type: "string", arg: "DIR", help: "DreamBooth: a folder of 3-5 images of the subject (required)" },
  "class-noun": { type: "string", arg: "NOUN", help: "DreamBooth: what the subject is, e.g. sneaker, dog (required)" },
  identifier: { type: "string", arg: "V", help: "DreamBooth: the subject's identifier, e.g. sks (default: a rare token of the model's tokenizer, printed)" },
  "prior-loss-weight": { type: "string", arg: "L", help: "DreamBooth: weight λ of the class-prior loss (default 1)" },
  "num-class-images": { type: "string", arg: "N", help: "DreamBooth: class images sampled (once, cached in OUT/class_images) for the prior loss (default 200)" },
  "no-prior-preservation": { type: "boolean", help: "DreamBooth: train on the subject's images alone (no class images, no prior loss)" },
  "lora-rank": { type: "string", arg: "R", help: "train rank-R low-rank adapters on the attention projections instead of whole weights (the text encoder's too with --train-text-encoder)" },
  "lora-alpha": { type: "string", arg: "A", help: "LoRA alpha: the adapters are scaled by A/R (default R)" },
  "train-text-encoder": { type: "boolean", help: "train the text encoder too, at the same learning rate (diffusers' --train_text_encoder; with --lora-rank, adapters on it)" },
  "center-crop": { type: "boolean", help: "center-crop the images after resizing (default: a random crop)" },
  "random-flip": { type: "boolean", help: "mirror training images left-right at random" },
  "validation-prompt": { type: "string", arg: "TEXT", help: "render this prompt every --validation-every steps into OUT/validation" },
  "validation-every": { type: "string", arg: "N", help: "steps between validation images (default 100)" },
  "nproc-per-node": { type: "string", arg: "N", help: "train data-parallel in N processes on this machine (Gloo over 127.0.0.1; --batch is the global batch)" },
  "dist-timeout": { type: "string", arg: "S", help: "data-parallel: give up on a rank that does not answer for S seconds (default 60)" },
  instruction: { type: "string", arg: "TEXT", help: "InstructPix2Pix: what to do to the image, e.g. \"make it a bag\" (required)" },
  "image-guidance": { type: "string", arg: "S", help: "InstructPix2Pix: how strongly to stay with the input image, s_I (default 1.5)" },
  verbose: { type: "boolean", help: "on failure, print the whole error (TorchScript tracebacks included), not just its first line" },
  help: { type: "boolean", short: "h", help: "show this help" },
  class: { type: "string", arg: "C[,C...]", help: "class-conditional models (DiT, U-ViT): class ids or label names, e.g. 7 or sneaker,bag, instead of a prompt (default model: builtin-dit)" },
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTIONS;
export type Values = Partial<Record<OptionName, string | boolean>>;

export interface CommandSpec {
  summary: string;
  usage: string;
  /** The options it takes, with help rewordings where they differ. */
  options: Partial<Record<OptionName, string | null>>;
  notes?: string[];
}

const GENERATION: Partial<Record<OptionName, string | null>> = {
  model: null, prompt: null, "negative-prompt": null, steps: null, guidance: null, "clip-skip": null, seed: null, scheduler: null,
  batch: null, grid: null, out: null, device: null, "no-verify": null, json: null,
};
const RESIZE = "resize the input image (and mask) to this";

/** The commands, their usage lines and the options each takes. @example Object.keys(COMMANDS) // ["generate", "edit", ...] */
export const COMMANDS: Record<string, CommandSpec> = {
  generate: {
    summary: "text-to-image",
    usage: "torch-diffusion generate [--prompt] TEXT [options]",
    options: { ...GENERATION, "guidance-interval": null, width: null, height: null, help: null, class: null },
  },
  edit: {
    summary: "redraw an image along a prompt: SDEdit, or DiffEdit (only the part the prompt changes)",
    usage: "torch-diffusion edit --image FILE --prompt TEXT [--method diffedit --source-prompt TEXT] [options]",
    options: {
      ...GENERATION, "guidance-interval": null, image: null, method: null, strength: "how far toward noise to go, in [0, 1] (default 0.8)",
      "source-prompt": null, mask: "DiffEdit: edit where this mask is white instead of inferring the mask", "mask-out": null, "inversion-iterations": null,
      width: `${RESIZE} width`, height: `${RESIZE} height`, help: null,
    },
    notes: [
      "",
      "--method diffedit infers where --prompt and --source-prompt disagree about the image, DDIM-inverts",
      "the image under --source-prompt up to --strength, and redraws only that region (DDIM, --batch 1).",
    ],
  },
  p2p: {
    summary: "Prompt-to-Prompt: an image and its edit from one seed, the edit reusing the image's cross-attention",
    usage: "torch-diffusion p2p --prompt TEXT --target TEXT [--cross-replace T] [--mode replace|refine] [--reweight W=S,...] [options]",
    options: {
      model: null, prompt: "the source prompt (required)", target: null, mode: null, "cross-replace": null, reweight: null,
      "negative-prompt": null, steps: null, guidance: null, seed: null, scheduler: null, batch: "image pairs (default 1)", width: null, height: null,
      out: "each pair side by side, source left, target right (default pair.png; with --batch N > 1: pair-0.png, ...)",
      "out-source": null, "out-target": null, grid: "also write all pairs into one image, a pair per row",
      device: null, "no-verify": null, json: null, help: null,
    },
    notes: [
      "",
      "Both images start from the same noise; for the first T of the steps the target attends to its text",
      "through the source's cross-attention maps (word swap: token for token; refine: words both prompts share),",
      "so the layout stays and the changed words change. The source is exactly what generate draws.",
    ],
  },
  inpaint: {
    summary: "repaint the white part of a mask",
    usage: "torch-diffusion inpaint --image FILE --mask FILE --prompt TEXT [options]",
    options: { ...GENERATION, "guidance-interval": null, image: null, mask: null, strength: "noise level the masked region starts from, in [0, 1] (default 1)", width: `${RESIZE} width`, height: `${RESIZE} height`, help: null },
  },
  train: {
    summary: "fine-tune a model's U-Net (and text encoder) on Fashion-MNIST or an image folder",
    usage: "torch-diffusion train --data fashion-mnist|DIR --out DIR [options]",
    options: {
      model: "model to start from (default: the built-in model)",
      data: "fashion-mnist, or a folder of images with captions (captions.json, metadata.jsonl or NAME.txt) (required)",
      out: "directory to write the trained model to (required)",
      steps: "optimizer steps (default 1000)",
      batch: "images per step (default 16)",
      lr: null,
      "caption-dropout": null,
      caption: null,
      "checkpoint-every": null,
      ema: null,
      "lora-rank": null,
      "lora-alpha": null,
      "train-text-encoder": null,
      seed: "random seed (default 0)",
      device: null,
      "nproc-per-node": null,
      "dist-timeout": null,
      "no-verify": null,
      json: "print one JSON object (the output directory, timings and the training record) on stdout",
      help: null,
    },
    notes: [
      "",
      "The text encoder stays frozen unless --train-text-encoder; the objective and noise schedule come from",
      "the model's scheduler. With --lora-rank the adapters are fused into OUT and also written as",
      "OUT/pytorch_lora_weights.safetensors (diffusers' load_lora_weights reads it).",
      "Checkpoints go to DIR/checkpoints: rerun the same command to resume; Ctrl-C stops with a checkpoint.",
      "Several machines: torchrun --no-python --nnodes M --nproc-per-node N ... npx torch-diffusion train ...",
      "(each process reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK as PyTorch's env:// does).",
    ],
  },
  instruct: {
    summary: "InstructPix2Pix: edit an image by following a written instruction",
    usage: "torch-diffusion instruct --image FILE --instruction TEXT [--image-guidance S] [--guidance S] [options]",
    options: {
      model: "an image-conditioned (InstructPix2Pix) model directory (default: builtin-instruct, the built-in one)",
      image: null, instruction: null, "image-guidance": null, guidance: "how strongly to follow the instruction, s_T (default: the model's, else 7.5)", "guidance-interval": null,
      "negative-prompt": null, steps: null, seed: null, scheduler: null, batch: null, grid: null, out: null, device: null, "no-verify": null, json: null,
      width: `${RESIZE} width`, height: `${RESIZE} height`, help: null,
    },
    notes: [
      "",
      "Dual guidance (the paper's Eq. 3): e(0,0) + s_I (e(I,0) - e(0,0)) + s_T (e(I,T) - e(I,0)), one batched U-Net call.",
      "Raise --image-guidance to keep more of the input, --guidance to follow the instruction more.",
    ],
  },
  imagic: {
    summary: "Imagic: edit a real image along a text by optimizing its embedding and fine-tuning on it",
    usage: "torch-diffusion imagic --image FILE --prompt TEXT --out DIR [--eta E | --sweep] [options]",
    options: {
      model: null, image: null, prompt: "what the edited image should show (required)", out: "folder for the stages' results and the images eta-E.png (required)",
      eta: null, sweep: null, steps: null, guidance: null, seed: "random seed (default 0)",
      "embedding-steps": null, "embedding-lr": null, "train-steps": null, lr: "Imagic stage 2: its learning rate (default 2e-6)",
      device: null, "no-verify": null, json: null, help: null,
    },
    notes: [
      "",
      "Stages 1-2 run once per --out folder (Ctrl-C stops with a checkpoint; rerun to resume); later runs with",
      "other --eta values reuse them. The defaults are the paper's; small models want larger learning rates",
      "(the built-in model: --embedding-lr 0.1 --train-steps 60 --lr 2e-5, see the README's Imagic table).",
    ],
  },
  convert: {
    summary: "turn a Hugging Face diffusers folder into a model directory the other commands run",
    usage: "torch-diffusion convert --from DIR --to DIR [--dtype float32|float16|bfloat16] [--fused-attention]",
    options: { from: null, to: null, dtype: null, "fused-attention": null, json: "print one JSON object (the model directory, components, timings) on stdout", help: null },
    notes: [
      "",
      "Runs the package's exporter (scripts/export.py) with the first Python that has PyTorch ≥ 1.13:",
      "TORCH_DIFFUSION_PYTHON if set, else python3 on PATH, then /usr/bin/python3. It needs neither",
      "diffusers nor safetensors; the weights may be .safetensors (sharded too) or .bin. The result",
      "gets a checksums.sha256 that every command checks. Run it once per model and dtype.",
    ],
  },
  dreambooth: {
    summary: "DreamBooth: teach a model one subject from a few images, with class-prior preservation (optionally LoRA)",
    usage: "torch-diffusion dreambooth --images DIR --class-noun NOUN --out DIR [--identifier V] [--lora-rank R] [options]",
    options: {
      model: "model to start from (default: the built-in model)", images: null, "class-noun": null, out: "model directory to write (required)",
      identifier: null, "prior-loss-weight": null, "num-class-images": null, "no-prior-preservation": null, "lora-rank": null, "lora-alpha": null, "train-text-encoder": null,
      steps: "optimizer steps (default 400)", batch: "subject images per step; as many class images join them (default 1)",
      lr: "learning rate, constant (default 5e-6, with --lora-rank 1e-4)", seed: "seed of the identifier, class images and training (default 0)",
      "center-crop": null, "random-flip": null, "validation-prompt": null, "validation-every": null, "checkpoint-every": null,
      device: null, "nproc-per-node": "train data-parallel in N processes on this machine (Gloo over 127.0.0.1; they share out the class images)",
      "dist-timeout": null, "no-verify": null, json: "print one JSON object (the output directory, identifier, prompts, timings) on stdout", help: null,
    },
    notes: [
      "",
      "Prompts are \"a V NOUN\" for the subject and \"a NOUN\" for the class images; the identifier is printed at",
      "the end. OUT is a model directory for generate --model OUT; with --lora-rank the adapters are fused into",
      "it and also written as OUT/pytorch_lora_weights.safetensors (diffusers' load_lora_weights reads it).",
      "The text encoder stays frozen unless --train-text-encoder. Rerun the same command to resume; Ctrl-C stops",
      "with a checkpoint. With --nproc-per-node N the subject and class images of a step (2 x --batch) must",
      "split evenly over the N ranks; rank 0 renders validation images while the others wait (--dist-timeout).",
    ],
  },
  info: {
    summary: "show a model directory's components, the libtorch build, CUDA and threads",
    usage: "torch-diffusion info [--model DIR]",
    options: { model: null, help: null },
  },
};

// Every command takes --verbose (listed before --help).
for (const command of Object.values(COMMANDS)) {
  const { help, ...rest } = command.options;
  command.options = { ...rest, verbose: null, ...(help === undefined ? {} : { help }) };
}

/** `torch-diffusion --help`. @example process.stdout.write(`${TOP_HELP}\n`); */
export const TOP_HELP = [
  "Usage: torch-diffusion <command> [options]",
  "",
  "Run, edit with and fine-tune diffusion image models on libtorch.",
  "",
  "Commands:",
  ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`),
  "",
  "Run `torch-diffusion <command> --help` for a command's options.",
  "Example: torch-diffusion generate --prompt \"a photo of a sneaker\" --steps 30 --scheduler dpm++2m --out sneaker.png",
  "Edit it: torch-diffusion p2p --prompt \"a photo of a shirt\" --target \"a photo of a dress\" --seed 0 --out pair.png",
  "A Hugging Face diffusers folder: torch-diffusion convert --from DIR --to OUT, then --model OUT.",
].join("\n");

/** The help page of one command, built from its option table. @example console.log(commandHelp("inpaint")); */
export function commandHelp(name: string): string {
  const command = COMMANDS[name];
  const rows = Object.entries(command.options).map(([option, reworded]) => {
    const spec: OptionSpec = OPTIONS[option as OptionName];
    const flag = `${spec.short ? `-${spec.short}, ` : "    "}--${option}${spec.arg ? ` ${spec.arg}` : ""}`;
    return `  ${flag.padEnd(28)}${reworded ?? spec.help}`;
  });
  return [`Usage: ${command.usage}`, "", `${name}: ${command.summary}`, "", "Options:", ...rows, ...(command.notes ?? [])].join("\n");
}

/** Options that take a value: `--steps -3` is read as the value -3, not as an option. */
function joinNegativeNumbers(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith("--") ? argv[i].slice(2) : undefined;
    const spec = name && (OPTIONS as Record<string, OptionSpec>)[name];
    if (spec && spec.type === "string" && /^-\d|^-\.\d/.test(argv[i + 1] ?? "")) out.push(`${argv[i]}=${argv[++i]}`);
    else out.push(argv[i]);
  }
  return out;
}

/**
 * Parses one command's arguments strictly: unknown options, stray positionals and missing
 * values are usage errors.
 * @example const values = parseCommand("generate", ["--prompt", "a cat", "--steps", "20"]);
 */
export function parseCommand(command: string, argv: string[]): Values {
  const spec = COMMANDS[command];
  const options = Object.fromEntries(Object.keys(spec.options).map((name) => {
    const o: OptionSpec = OPTIONS[name as OptionName];
    return [name, o.short ? { type: o.type, short: o.short } : { type: o.type }];
  }));
  const seeHelp = `(see torch-diffusion ${command} --help)`;
  try {
    const { values, positionals } = parseArgs({ args: joinNegativeNumbers(argv), options, strict: true, allowPositionals: true });
    // The prompt may also be given as the one positional: `torch-diffusion generate "a photo of a sneaker"`.
    const takesPrompt = "prompt" in spec.options;
    if (takesPrompt && positionals.length === 1 && values.prompt === undefined) return { ...values, prompt: positionals[0] } as Values;
    if (positionals.length > 0) throw new CliError(`${command}: unexpected argument ${JSON.stringify(positionals[takesPrompt && values.prompt === undefined ? 1 : 0])} ${seeHelp}`);
    return values as Values;
  } catch (error) {
    if (error instanceof CliError) throw error;
    const e = error as Error & { code?: string };
    const option = /--[\w+-]+/.exec(e.message)?.[0] ?? /'(-\w)/.exec(e.message)?.[1] ?? "";
    if (e.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") throw new CliError(`${command}: unknown option ${option} ${seeHelp}`);
    if (e.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      const takesValue = (OPTIONS as Record<string, OptionSpec>)[option.replace(/^-+/, "")]?.type === "string";
      throw new CliError(takesValue ? `${command}: ${option} needs a value ${seeHelp}` : `${command}: ${option} takes no value ${seeHelp}`);
    }
    throw new CliError(`${command}: ${e.message.split("\n")[0]} ${seeHelp}`);
  }
}

/** A string option, required or not. @example const prompt = stringOption(values, "prompt", { required: true }); */
export function stringOption(values: Values, name: OptionName, options: { required: true }): string;
export function stringOption(values: Values, name: OptionName, options?: { required?: boolean }): string | undefined;
export function stringOption(values: Values, name: OptionName, options: { required?: boolean } = {}): string | undefined {
  const value = values[name];
  if (typeof value === "string") {
    if (value === "" && options.required) throw badValue(`--${name}`, "a non-empty value", value);
    return value;
  }
  if (options.required) throw new CliError(`--${name} is required`);
  return undefined;
}

/** An integer option ≥ `min`. @example const steps = intOption(values, "steps", 1) ?? 50; */
export function intOption(values: Values, name: OptionName, min: number): number | undefined {
  const raw = stringOption(values, name);
  if (raw === undefined) return undefined;
  const n = /^[+-]?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
  const expected = min === 1 ? "a positive integer" : min === 0 ? "a non-negative integer" : `an integer ≥ ${min}`;
  if (!Number.isSafeInteger(n) || n < min) throw badValue(`--${name}`, expected, raw);
  return n;
}

/** A finite number option, optionally within [min, max]. @example const strength = numberOption(values, "strength", [0, 1]); */
export function numberOption(values: Values, name: OptionName, range?: [number, number]): number | undefined {
  const raw = stringOption(values, name);
  if (raw === undefined) return undefined;
  const n = raw.trim() === "" ? NaN : Number(raw);
  if (!Number.isFinite(n) || (range && (n < range[0] || n > range[1]))) {
    throw badValue(`--${name}`, range ? `a number in [${range[0]}, ${range[1]}]` : "a number", raw);
  }
  return n;
}

/**
 * `--lora-rank R [--lora-alpha A]` as LoRA options (undefined without --lora-rank), for every
 * command that trains adapters.
 * @example loraOption({ "lora-rank": "4" }) // { rank: 4, alpha: undefined }
 */
export function loraOption(values: Values): { rank: number; alpha?: number } | undefined {
  const alpha = numberOption(values, "lora-alpha");
  const rank = intOption(values, "lora-rank", 1);
  if (alpha !== undefined && rank === undefined) throw new CliError("--lora-alpha needs --lora-rank");
  return rank === undefined ? undefined : { rank, alpha };
}

/** `--device`: cpu, cuda or cuda:N. @example deviceOption({ device: "cuda:1" }) // "cuda:1" */
export function deviceOption(values: Values): string {
  const device = stringOption(values, "device") ?? "cpu";
  if (!/^(cpu|cuda(:\d+)?)$/.test(device)) throw badValue("--device", "cpu, cuda or cuda:N", device);
  return device;
}

/**
 * `--scheduler`: an alias or a class name (case-insensitive) -> the class name.
 * @example schedulerClassName("dpm++2m", ["DPMSolverMultistepScheduler"]) // "DPMSolverMultistepScheduler"
 */
export function schedulerClassName(name: string, classes: string[]): string {
  const lower = name.toLowerCase();
  const found = SCHEDULER_ALIASES[lower] ?? classes.find((c) => c.toLowerCase() === lower || c.toLowerCase() === `${lower}scheduler`);
  if (!found || !classes.includes(found)) {
    throw badValue("--scheduler", `one of ${Object.keys(SCHEDULER_ALIASES).join(", ")} or a class name (${classes.join(", ")})`, name);
  }
  return found;
}

/**
 * `--guidance-interval LOW,HIGH` as [LOW, HIGH], `all` as every timestep, undefined when absent.
 * @example guidanceIntervalOption({ "guidance-interval": "200,900" }); // [200, 900]
 */
export function guidanceIntervalOption(values: Values): [number, number] | undefined {
  const raw = stringOption(values, "guidance-interval");
  if (raw === undefined) return undefined;
  if (raw.trim() === "all") return [-Infinity, Infinity];
  const parts = raw.split(",").map((v) => (v.trim() === "" ? NaN : Number(v)));
  if (parts.length !== 2 || parts.some((v) => !Number.isFinite(v)) || parts[0] > parts[1]) throw badValue("--guidance-interval", "LOW,HIGH timesteps with LOW ≤ HIGH, or all", raw);
  return [parts[0], parts[1]];
}
