/**
 * A folder of images with captions, the layout fine-tuning scripts (DreamBooth, LoRA,
 * text-to-image) read: captions from a sidecar `<name>.txt`, a `captions.json`
 * (`{ "<file>": "<caption>" }`) or a Hugging Face `metadata.jsonl` (`file_name`, `text`).
 * Decoding goes through a small `ImageDecoder` (sharp by default), so any image library can be plugged in.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { assertInteger, invalid } from "../errors";
import { interpolate } from "../functional";
import { decodeImage, pixelsToTensor, type DecodedImage } from "../image";
import { tidy } from "../tensor";

export type { DecodedImage };
import type { Dataset, Sample } from "./data";


/** Turns an image file into pixels. */
export interface ImageDecoder {
  /** File extensions (lower case, with the dot) the decoder reads. */
  readonly extensions: readonly string[];
  decode(file: string): Promise<DecodedImage> | DecodedImage;
}

/**
 * Binary PGM (P5) and PPM (P6) with 8-bit samples: a dependency-free decoder for tests and
 * preprocessed data.
 * @example new ImageFolderDataset("data/pets", { decoder: netpbmDecoder, resolution: 64 })
 */
export const netpbmDecoder: ImageDecoder = {
  extensions: [".pgm", ".ppm"],
  decode(file: string): DecodedImage {
    const bytes = fs.readFileSync(file);
    const fields: string[] = [];
    let i = 0;
    // Header: magic, width, height, maxval, separated by whitespace, '#' comments to end of line.
    while (fields.length < 4 && i < bytes.length) {
      const c = bytes[i];
      if (c === 0x23) while (i < bytes.length && bytes[i] !== 0x0a) i++;
      else if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else {
        let field = "";
        while (i < bytes.length && !/\s/.test(String.fromCharCode(bytes[i]))) field += String.fromCharCode(bytes[i++]);
        fields.push(field);
      }
    }
    i++; // the single whitespace byte after maxval
    const [magic, w, h, max] = fields;
    const channels = magic === "P5" ? 1 : magic === "P6" ? 3 : 0;
    const width = Number(w);
    const height = Number(h);
    if (!channels || max !== "255" || !(width > 0) || !(height > 0)) throw new Error(`netpbmDecoder: "${file}" is not an 8-bit binary PGM/PPM (P5/P6, maxval 255)`);
    const size = width * height * channels;
    if (bytes.length - i < size) throw new Error(`netpbmDecoder: "${file}" is truncated (${bytes.length - i} of ${size} pixel bytes)`);
    return { data: new Uint8Array(bytes.buffer, bytes.byteOffset + i, size), width, height, channels };
  },
};

/**
 * Decodes PNG, JPEG, WebP, GIF, TIFF and AVIF with sharp (what lib/image.ts uses), keeping
 * the file's channels; the dataset converts them. The default decoder.
 * @example new ImageFolderDataset("data/pets", { decoder: sharpDecoder, resolution: 512 })
 */
export const sharpDecoder: ImageDecoder = {
  extensions: [".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".avif"],
  async decode(file: string): Promise<DecodedImage> {
    try {
      return await decodeImage(file);
    } catch (error) {
      throw new Error(`sharpDecoder: cannot decode "${file}": ${(error as Error).message}`);
    }
  },
};

export interface ImageFolderOptions {
  /** Default sharpDecoder (PNG, JPEG, WebP, ...). */
  decoder?: ImageDecoder;
  /** Resize the shorter side to this (bilinear, antialiased), then center-crop a square. Default: keep the size. */
  resolution?: number;
  /** Output channels: 3 (gray is repeated, alpha dropped) or 1 (luma). Default 3. */
  channels?: 1 | 3;
  /** Caption of images without one; undefined leaves `caption` unset. */
  defaultCaption?: string;
}

/** Captions from captions.json, metadata.jsonl and sidecar .txt files (later sources win). */
function readCaptions(dir: string, files: string[]): Map<string, string> {
  const captions = new Map<string, string>();
  const json = path.join(dir, "captions.json");
  if (fs.existsSync(json)) {
    const parsed = JSON.parse(fs.readFileSync(json, "utf8")) as unknown;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error(`ImageFolderDataset: "${json}" must map file names to captions`);
    for (const [file, caption] of Object.entries(parsed)) if (typeof caption === "string") captions.set(file, caption);
  }
  const jsonl = path.join(dir, "metadata.jsonl");
  if (fs.existsSync(jsonl)) {
    for (const line of fs.readFileSync(jsonl, "utf8").split("\n")) {
      if (!line.trim()) continue;
      const row = JSON.parse(line) as { file_name?: string; text?: string; caption?: string };
      const text = row.text ?? row.caption;
      if (row.file_name && typeof text === "string") captions.set(row.file_name, text);
    }
  }
  for (const file of files) {
    const sidecar = path.join(dir, `${path.parse(file).name}.txt`);
    if (fs.existsSync(sidecar)) captions.set(file, fs.readFileSync(sidecar, "utf8").trim());
  }
  return captions;
}

/**
 * Images of a folder (sorted by name) as a Dataset of `{ image: [C, H, W] in [-1, 1], caption }`.
 * @example
 * const ds = new ImageFolderDataset("data/dog", { resolution: 512 });
 * const { image, caption } = await ds.get(0);
 */
export class ImageFolderDataset implements Dataset {
  readonly files: string[];
  readonly length: number;
  private readonly captions: Map<string, string>;

  readonly decoder: ImageDecoder;

  constructor(readonly dir: string, readonly options: ImageFolderOptions = {}) {
    if (typeof dir !== "string" || !fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw invalid("existing folder", "ImageFolderDataset dir", dir);
    if (typeof options !== "object" || options === null) throw invalid("options object", "ImageFolderDataset options", options);
    const decoder = options.decoder ?? sharpDecoder;
    if (typeof decoder?.decode !== "function" || !Array.isArray(decoder.extensions)) throw invalid("ImageDecoder (extensions, decode)", "options.decoder", decoder);
    if (options.resolution !== undefined) assertInteger(options.resolution, "options.resolution", 1);
    if (options.channels !== undefined && options.channels !== 1 && options.channels !== 3) throw invalid("1 or 3", "options.channels", options.channels);
    this.decoder = decoder;
    this.files = fs.readdirSync(dir).filter((f) => decoder.extensions.includes(path.extname(f).toLowerCase())).sort();
    if (this.files.length === 0) throw new Error(`ImageFolderDataset: no ${decoder.extensions.join("/")} images in "${dir}"`);
    this.length = this.files.length;
    this.captions = readCaptions(dir, this.files);
  }

  async get(index: number): Promise<Sample> {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) throw invalid(`integer index in [0, ${this.length})`, "index", index);
    const file = this.files[index];
    const decoded = await this.decoder.decode(path.join(this.dir, file));
    const sample: Sample = { image: this.toTensor(decoded, file) };
    const caption = this.captions.get(file) ?? this.options.defaultCaption;
    if (caption !== undefined) sample.caption = caption;
    return sample;
  }

  private toTensor(decoded: DecodedImage, file: string) {
    const { data, width, height, channels } = decoded;
    if (data.length !== width * height * channels) throw new Error(`ImageFolderDataset: decoding "${file}" gave ${data.length} bytes for ${width}×${height}×${channels}`);
    const resolution = this.options.resolution;
    return tidy(() => {
      const x = pixelsToTensor(decoded, { channels: this.options.channels ?? 3, range: "signed" }); // (C, H, W) in [-1, 1]
      if (resolution === undefined) return x;
      const scale = resolution / Math.min(height, width);
      const size = [Math.max(resolution, Math.round(height * scale)), Math.max(resolution, Math.round(width * scale))];
      const resized = interpolate(x.unsqueeze(0), { size, mode: "bilinear", antialias: true }).squeeze(0); // (C, h, w)
      const top = Math.floor((size[0] - resolution) / 2);
      const left = Math.floor((size[1] - resolution) / 2);
      return resized.narrow(1, top, resolution).narrow(2, left, resolution).clamp(-1, 1).contiguous();
    });
  }
}
