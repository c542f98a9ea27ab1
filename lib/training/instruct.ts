/**
 * InstructPix2Pix's training data (Brooks et al., "InstructPix2Pix: Learning to Follow Image
 * Editing Instructions", CVPR 2023, §3.1) and its training conditioning (§3.2):
 *
 * (a) edit captions: (input caption, instruction, edited caption) triples. The paper writes
 *     them with a fine-tuned GPT-3; for a small domain a template generator does
 *     ({@link templateEditCaptions}), and a user's own source plugs in as a JSONL of
 *     `{input, instruction, edited}` ({@link readEditCaptions});
 * (b)–(c) image pairs from the caption pairs through Prompt-to-Prompt, filtered — made by
 *     lib/pipelines/edit_triplets.ts and written here ({@link EditTripletWriter});
 * (d) the triplets as a Dataset ({@link EditTripletDataset}) in the folder layout of
 *     diffusers' InstructPix2Pix dataset: `metadata.jsonl` rows with its columns `input_image`,
 *     `edit_prompt`, `edited_image` (file names relative to the folder), so a user's own data
 *     in that layout trains the same way;
 * and the paper's condition dropout for training both guidance scales ({@link instructDropout}).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { noGrad } from "../autograd";
import { assertInteger, assertNumber, invalid } from "../errors";
import { readImage, writeImage } from "../image";
import type { DiffusionModel, TextToImageModel } from "../models";
import { Generator, cat, isTensor, rand, tensor, tidy, type Tensor } from "../tensor";
import type { Dataset, Sample } from "./data";

/** The triplet folder's index: one JSON object per line. */
export const EDIT_TRIPLETS_INDEX = "metadata.jsonl";

/** One edit in words: what the input shows, the instruction, what the edited image shows. */
export interface EditCaptions {
  input: string;
  instruction: string;
  edited: string;
}

/** Instruction templates: `{a}` is "a"/"an" for the edited noun `{name}`, `{source}` the input's noun. */
export const INSTRUCTION_TEMPLATES = [
  "turn it into {a} {name}",
  "make it {a} {name}",
  "change the {source} into {a} {name}",
  "replace the {source} with {a} {name}",
  "what if it were {a} {name}?",
  "transform the {source} into {a} {name}",
  "make the {source} {a} {name}",
];

function article(noun: string): string {
  return /^[aeiou]/.test(noun) ? "an" : "a";
}

/**
 * Fills a caption or instruction template for a noun (and the input's noun).
 * @example fillEditTemplate("change the {source} into {a} {name}", "ankle boot", "sneaker") // "change the sneaker into an ankle boot"
 */
export function fillEditTemplate(template: string, noun: string, source = ""): string {
  for (const [value, name] of [[template, "template"], [noun, "noun"], [source, "source"]] as const) {
    if (typeof value !== "string") throw invalid("string", `fillEditTemplate ${name}`, value);
  }
  return template.replaceAll("{a}", article(noun)).replaceAll("{name}", noun).replaceAll("{source}", source);
}

export interface TemplateEditOptions {
  /** The domain's nouns, e.g. ["t-shirt", "dress", "sneaker"]; every ordered pair of two different ones is an edit. */
  nouns: string[];
  /** Caption templates with `{a}` and `{name}` (e.g. FASHION_MNIST_TEMPLATES); input and edited caption share one. */
  captionTemplates: string[];
  /** Default INSTRUCTION_TEMPLATES. */
  instructionTemplates?: string[];
  /** How many to make; default every (source, target) noun pair once. */
  count?: number;
  /** Seed of the template choices and the order. Default 0. */
  seed?: number;
}

/**
 * Edit captions from templates: for noun pairs (source ≠ target), a caption template filled
 * with each noun and an instruction naming the target (and perhaps the source). Pairs cycle
 * through every ordered noun pair before repeating one, in a seeded order.
 * @example templateEditCaptions({ nouns: ["shirt", "dress"], captionTemplates: ["a photo of {a} {name}"] })
 * // [{ input: "a photo of a shirt", instruction: "make it a dress", edited: "a photo of a dress" }, ...]
 */
export function templateEditCaptions(options: TemplateEditOptions): EditCaptions[] {
  const { nouns, captionTemplates } = options ?? ({} as TemplateEditOptions);
  const instructions = options?.instructionTemplates ?? INSTRUCTION_TEMPLATES;
  for (const [list, name] of [[nouns, "nouns"], [captionTemplates, "captionTemplates"], [instructions, "instructionTemplates"]] as const) {
    if (!Array.isArray(list) || list.length === 0 || !list.every((s) => typeof s === "string" && s.trim() !== "")) throw invalid("non-empty array of non-empty strings", `templateEditCaptions ${name}`, list);
  }
  if (new Set(nouns).size < 2) throw new Error("templateEditCaptions: an edit needs at least two different nouns");
  const pairs = nouns.flatMap((source, i) => nouns.filter((_, j) => j !== i).map((target) => [source, target] as const));
  const count = options.count ?? pairs.length;
  assertInteger(count, "templateEditCaptions count", 0);
  const seed = options.seed ?? 0;
  assertInteger(seed, "templateEditCaptions seed", 0);
  // Three uniform draws per caption (pair order, caption template, instruction template), from one seeded stream.
  const draws = tidy(() => Array.from(rand([Math.max(1, count), 3], { generator: new Generator(seed) }).toFloat64Array()));
  const out: EditCaptions[] = [];
  let order: number[] = [];
  for (let k = 0; k < count; k++) {
    if (order.length === 0) order = pairs.map((_, i) => i); // the next round of pairs
    const [source, target] = pairs[order.splice(Math.floor(draws[3 * k] * order.length), 1)[0]];
    const caption = captionTemplates[Math.floor(draws[3 * k + 1] * captionTemplates.length)];
    const instruction = instructions[Math.floor(draws[3 * k + 2] * instructions.length)];
    out.push({ input: fillEditTemplate(caption, source), instruction: fillEditTemplate(instruction, target, source), edited: fillEditTemplate(caption, target) });
  }
  return out;
}

/**
 * A user's own edit captions: a JSONL file of `{"input": ..., "instruction": ..., "edited": ...}`.
 * @example const captions = readEditCaptions("my-edits.jsonl");
 */
export function readEditCaptions(file: string): EditCaptions[] {
  if (typeof file !== "string" || !fs.existsSync(file) || !fs.statSync(file).isFile()) throw invalid("existing JSONL file", "readEditCaptions file", file);
  const out: EditCaptions[] = [];
  fs.readFileSync(file, "utf8").split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let row: Partial<EditCaptions>;
    try {
      row = JSON.parse(line) as Partial<EditCaptions>;
    } catch (error) {
      throw new Error(`readEditCaptions: ${file}:${i + 1} is not JSON (${(error as Error).message})`);
    }
    for (const key of ["input", "instruction", "edited"] as const) {
      if (typeof row?.[key] !== "string" || row[key]!.trim() === "") throw new Error(`readEditCaptions: ${file}:${i + 1} has no "${key}" text (each line needs input, instruction and edited)`);
    }
    out.push({ input: row.input!, instruction: row.instruction!, edited: row.edited! });
  });
  if (out.length === 0) throw new Error(`readEditCaptions: ${file} holds no edits`);
  return out;
}

/** A metadata.jsonl row: diffusers' InstructPix2Pix columns, plus the captions and how the pair was made. */
export interface EditTripletRow {
  input_image: string;
  edit_prompt: string;
  edited_image: string;
  input_caption?: string;
  edited_caption?: string;
  [more: string]: unknown;
}

/**
 * The rows of a triplet folder's metadata.jsonl (none without one); a torn last line, left by a
 * run killed while appending, is dropped.
 * @example readEditTripletRows("data/edits").length
 */
export function readEditTripletRows(dir: string): EditTripletRow[] {
  const index = path.join(dir, EDIT_TRIPLETS_INDEX);
  if (!fs.existsSync(index)) return [];
  const rows: EditTripletRow[] = [];
  const lines = fs.readFileSync(index, "utf8").split("\n");
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let row: EditTripletRow;
    try {
      row = JSON.parse(line) as EditTripletRow;
    } catch (error) {
      // A torn last line (killed while appending) is dropped; one in the middle is damage.
      if (i >= lines.length - 2) return;
      throw new Error(`EditTripletDataset: ${index}:${i + 1} is not JSON (${(error as Error).message})`);
    }
    for (const key of ["input_image", "edit_prompt", "edited_image"] as const) {
      if (typeof row?.[key] !== "string") throw new Error(`EditTripletDataset: ${index}:${i + 1} has no "${key}" (rows need input_image, edit_prompt, edited_image)`);
    }
    rows.push(row);
  });
  return rows;
}

/**
 * Appends triplets to a folder: `input/NNNNNN.png`, `edited/NNNNNN.png` and a metadata.jsonl
 * row each. Images are written (atomically) before their row, so a killed run leaves at most
 * unindexed images, which the next writer overwrites; `count` continues from the rows there.
 * @example
 * const writer = new EditTripletWriter("data/edits");
 * await writer.add({ input, edited, instruction: "make it a bag", inputCaption: "a shirt", editedCaption: "a bag" });
 */
export class EditTripletWriter {
  private next: number;

  constructor(readonly dir: string) {
    if (typeof dir !== "string" || dir === "") throw invalid("folder path", "EditTripletWriter dir", dir);
    try {
      fs.mkdirSync(path.join(dir, "input"), { recursive: true });
      fs.mkdirSync(path.join(dir, "edited"), { recursive: true });
    } catch (error) {
      throw new Error(`EditTripletWriter: cannot create the triplet folder ${dir}: ${(error as Error).message}`);
    }
    this.next = readEditTripletRows(dir).length;
  }

  /** Triplets in the folder. */
  get count(): number {
    return this.next;
  }

  /** Writes one triplet; `input` and `edited` are (C, H, W) or (1, C, H, W) in [0, 1]. Returns its row. */
  async add(triplet: { input: Tensor; edited: Tensor; instruction: string; inputCaption?: string; editedCaption?: string; extra?: Record<string, unknown> }): Promise<EditTripletRow> {
    if (typeof triplet?.instruction !== "string" || triplet.instruction.trim() === "") throw invalid("non-empty instruction", "EditTripletWriter.add instruction", triplet?.instruction);
    const name = `${String(this.next).padStart(6, "0")}.png`;
    const row: EditTripletRow = {
      input_image: `input/${name}`, edit_prompt: triplet.instruction, edited_image: `edited/${name}`,
      ...(triplet.inputCaption !== undefined ? { input_caption: triplet.inputCaption } : {}),
      ...(triplet.editedCaption !== undefined ? { edited_caption: triplet.editedCaption } : {}),
      ...triplet.extra,
    };
    await writeImage(triplet.input, path.join(this.dir, row.input_image));
    await writeImage(triplet.edited, path.join(this.dir, row.edited_image));
    fs.appendFileSync(path.join(this.dir, EDIT_TRIPLETS_INDEX), `${JSON.stringify(row)}\n`);
    this.next++;
    return row;
  }
}

export interface EditTripletDatasetOptions {
  /** Read images at this size (square; resized). Default: the files' own size. */
  size?: number;
  /** Image channels: 1 (luma) or 3. Default 3. */
  channels?: 1 | 3;
  /** Keep only the rows this accepts (e.g. by scores a generator recorded in them). Default: all. */
  filter?: (row: EditTripletRow) => boolean;
}

/**
 * A triplet folder (metadata.jsonl with `input_image`, `edit_prompt`, `edited_image`) as a
 * Dataset of `{ image: edited, caption: edit_prompt, conditionImage: input }`, images
 * (C, H, W) in [-1, 1]: what InstructPix2Pix trains on.
 * @example const data = new EditTripletDataset("data/edits", { size: 32, channels: 1 });
 */
export class EditTripletDataset implements Dataset {
  readonly rows: EditTripletRow[];
  readonly length: number;

  constructor(readonly dir: string, readonly options: EditTripletDatasetOptions = {}) {
    if (typeof dir !== "string" || !fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw invalid("existing folder", "EditTripletDataset dir", dir);
    if (options === null || typeof options !== "object") throw invalid("options object", "EditTripletDataset options", options);
    if (options.size !== undefined) assertInteger(options.size, "EditTripletDataset options.size", 1);
    if (options.channels !== undefined && options.channels !== 1 && options.channels !== 3) throw invalid("1 or 3", "EditTripletDataset options.channels", options.channels);
    if (options.filter !== undefined && typeof options.filter !== "function") throw invalid("function (row) => boolean", "EditTripletDataset options.filter", options.filter);
    const rows = readEditTripletRows(dir);
    this.rows = options.filter ? rows.filter(options.filter) : rows;
    if (this.rows.length === 0) throw new Error(`EditTripletDataset: ${dir} has no ${EDIT_TRIPLETS_INDEX} rows (input_image, edit_prompt, edited_image)${rows.length > 0 ? ` that options.filter keeps (of ${rows.length})` : ""}`);
    this.length = this.rows.length;
  }

  async get(index: number): Promise<Sample> {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) throw invalid(`integer index in [0, ${this.length})`, "index", index);
    const row = this.rows[index];
    const read = async (file: string) => {
      const full = path.join(this.dir, file);
      if (!fs.existsSync(full)) throw new Error(`EditTripletDataset: row ${index} names ${file}, which is not in ${this.dir}`);
      const size = this.options.size;
      const image = await readImage(full, { channels: this.options.channels ?? 3, ...(size ? { width: size, height: size } : {}) }); // (1, C, H, W) in [0, 1]
      return tidy(() => image.squeeze(0).mul(2).sub(1));
    };
    const image = await read(row.edited_image);
    const conditionImage = await read(row.input_image);
    return { image, caption: row.edit_prompt, conditionImage };
  }
}

/**
 * The paper's condition dropout (§3.2.1), from one uniform draw u per example as diffusers'
 * `train_instruct_pix2pix.py` draws it: u < p drops the text, p ≤ u < 2p both, 2p ≤ u < 3p
 * the image — p each, 3p in all (the Trainer's `conditionDropout`).
 * @example instructDropout(0.07, 0.05) // { text: false, image: true }
 */
export function instructDropout(draw: number, p: number): { text: boolean; image: boolean } {
  assertNumber(draw, "instructDropout draw");
  assertNumber(p, "instructDropout p");
  // torch compares float32 draws with float32 thresholds
  return { text: draw < Math.fround(2 * p), image: draw >= Math.fround(p) && draw < Math.fround(3 * p) };
}

/** Checks the InstructPix2Pix dropout probability p (each of text, image, both). */
export function checkInstructDropout(p: unknown, name: string): number {
  assertNumber(p, name);
  if (p < 0 || p > 1 / 3) throw invalid("number in [0, 1/3] (each of text, image and both is dropped with it)", name, p);
  return p;
}

/**
 * The image conditioning's channels: the VAE's latent channels for latent models (the image
 * enters as its posterior's mode), the image channels for pixel models.
 */
export function imageConditionChannels(model: TextToImageModel): number {
  return model.vae ? model.vae.config.latent_channels : model.imageChannels;
}

/**
 * True when the U-Net also takes an image: its input channels are the noisy sample's plus the
 * image conditioning's (an InstructPix2Pix model, or one widened by widenInputChannels).
 */
export function isImageConditioned(model: TextToImageModel): boolean {
  return model.unet.config.in_channels === model.latentChannels + imageConditionChannels(model);
}

/**
 * What an InstructPix2Pix U-Net is conditioned on for images (B, C, H, W) in [-1, 1]: the VAE
 * posterior's mode, unscaled (as `timbrooks/instruct-pix2pix` was trained and diffusers'
 * pipeline and training script do), or the images themselves for pixel models.
 * @example const c = await imageCondition(model, images.mul(2).sub(1)); // (B, 4, H/8, W/8)
 */
export async function imageCondition(model: DiffusionModel, images: Tensor): Promise<Tensor> {
  const vae = model.vae;
  if (!vae) return noGrad(() => images.clone());
  const scaled = await model.encode(images, undefined, { mean: true });
  try {
    return noGrad(() => tidy(() => vae.unscaleLatents(scaled)));
  } finally {
    scaled.dispose();
  }
}

/**
 * The U-Net's input in InstructPix2Pix training: the noisy sample (B, c, h, w) with the batch's
 * image conditioning concatenated on the channels, zero (the ∅ image) where the example's
 * dropout draw drops the image.
 * @example forward: (m, x, t, batch) => model.predictSync({ sample: imageConditionedInput(x, batch, 0.05), ... })
 */
export function imageConditionedInput(sample: Tensor, batch: { conditionImages?: Tensor; dropDraws: number[] }, p: number): Tensor {
  if (!isTensor(sample) || sample.ndim !== 4) throw invalid("(B, C, H, W) tensor", "imageConditionedInput sample", sample);
  if (batch === null || typeof batch !== "object") throw invalid("batch object", "imageConditionedInput batch", batch);
  if (!batch.conditionImages) throw new Error("imageConditionedInput: the batch has no condition images (samples need a conditionImage)");
  const [b, , h, w] = sample.shape;
  const images = batch.conditionImages;
  if (!isTensor(images) || images.ndim !== 4 || images.shape[0] !== b || images.shape[2] !== h || images.shape[3] !== w) {
    throw new Error(`imageConditionedInput: condition images of shape [${isTensor(images) ? images.shape.join(", ") : typeof images}] for a sample of shape [${sample.shape.join(", ")}] (want (B, C, H, W) with the sample's B, H, W)`);
  }
  if (!Array.isArray(batch.dropDraws) || batch.dropDraws.length !== b) throw invalid(`array of ${b} dropout draws`, "imageConditionedInput batch.dropDraws", batch.dropDraws);
  const keep = batch.dropDraws.map((u) => (instructDropout(u, p).image ? 0 : 1));
  return tidy(() => {
    const mask = tensor(Float64Array.from(keep), [keep.length, 1, 1, 1], { dtype: sample.dtype, device: sample.device });
    return cat([sample, batch.conditionImages!.to({ device: sample.device, dtype: sample.dtype }).mul(mask)], 1); // (B, c + c_image, h, w)
  });
}
