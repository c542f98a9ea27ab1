/**
 * Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from its gzipped idx files, as the Debian
 * package `dataset-fashion-mnist` installs them: 28×28 grayscale articles in 10 classes,
 * with text captions built from the class names for text-conditioned training.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { assertInteger, assertOneOf, invalid } from "../errors";
import { tensor } from "../tensor";
import type { Dataset, Sample } from "./data";

export const FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

/** The official class names, by label. */
export const FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"] as const;

/** Each class as a noun phrase for captions, by label. */
export const FASHION_MNIST_NOUNS = ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

/** Caption templates: `{a}` becomes "a"/"an" for the noun, `{name}` the noun. */
export const FASHION_MNIST_TEMPLATES = [
  "a photo of {a} {name}",
  "{a} {name}",
  "a picture of {a} {name}",
  "a black and white photo of {a} {name}",
  "a grayscale image of {a} {name}",
  "a product photo of {a} {name}",
  "a low resolution photo of {a} {name}",
];

/**
 * Fills a caption template for a label.
 * @example fashionMnistCaption(9, "{a} {name}"); // "an ankle boot"
 */
export function fashionMnistCaption(label: number, template: string): string {
  const name = FASHION_MNIST_NOUNS[label];
  if (name === undefined) throw invalid("label in [0, 9]", "label", label);
  const article = /^[aeiou]/.test(name) ? "an" : "a";
  return template.replace("{a}", article).replace("{name}", name);
}

/** Byte -> [-1, 1] as float32 `p / 127.5 - 1` (torch's rounding: two float32 ops). */
const TO_UNIT = Float32Array.from({ length: 256 }, (_, p) => Math.fround(Math.fround(p / 127.5) - 1));

/** A 32-bit integer hash (murmur3's finalizer): a stateless seeded choice per sample. */
function hash32(seed: number, index: number): number {
  let h = (Math.imul(seed, 0x9e3779b1) ^ index) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

function readIdx(file: string, magic: number, dims: number): { shape: number[]; data: Uint8Array } {
  if (!fs.existsSync(file)) throw new Error(`FashionMNIST: no such file "${file}" (install the Debian package dataset-fashion-mnist or pass options.dir)`);
  const bytes = zlib.gunzipSync(fs.readFileSync(file));
  const header = 4 + 4 * dims;
  if (bytes.length < header || bytes.readUInt32BE(0) !== magic) throw new Error(`FashionMNIST: "${file}" is not an idx file with magic ${magic}`);
  const shape = Array.from({ length: dims }, (_, i) => bytes.readUInt32BE(4 + 4 * i));
  const size = shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== header + size) throw new Error(`FashionMNIST: "${file}" holds ${bytes.length - header} bytes of data but its header says ${size}`);
  return { shape, data: new Uint8Array(bytes.buffer, bytes.byteOffset + header, size) };
}

export interface FashionMNISTOptions {
  /** Folder of the four *-idx?-ubyte.gz files. Default /usr/share/datasets/fashion-mnist. */
  dir?: string;
  /** "train" (60,000 images) or "test" (10,000). Default "train". */
  split?: "train" | "test";
  /** Pad 28×28 to 32×32 with background (-1), a size UNets divide by 2 three times. Default false. */
  pad32?: boolean;
  /** Caption templates (see FASHION_MNIST_TEMPLATES); each sample's is a seeded choice. */
  templates?: string[];
  /** Seed of the template choice. Default 0. */
  seed?: number;
}

/**
 * Fashion-MNIST as a Dataset: `get(i)` is `{ image: [1, 28 or 32, 28 or 32] in [-1, 1], label,
 * caption }`, the caption e.g. "a photo of a sneaker" for a template chosen by a hash of
 * (seed, i), so it never changes between epochs or runs.
 * @example
 * const ds = new FashionMNIST({ split: "train", pad32: true });
 * const { image, label, caption } = ds.get(0); // [1, 32, 32], 9, "an ankle boot"
 */
export class FashionMNIST implements Dataset {
  readonly length: number;
  readonly size: number;
  readonly classes = FASHION_MNIST_CLASSES;
  private readonly pixels: Uint8Array;
  private readonly labels: Uint8Array;
  private readonly templates: string[];
  private readonly seed: number;
  private readonly pad: number;

  constructor(options: FashionMNISTOptions = {}) {
    const split = options.split ?? "train";
    assertOneOf(split, ["train", "test"] as const, "options.split");
    const prefix = split === "train" ? "train" : "t10k";
    const dir = options.dir ?? FASHION_MNIST_DIR;
    const images = readIdx(path.join(dir, `${prefix}-images-idx3-ubyte.gz`), 2051, 3);
    const labels = readIdx(path.join(dir, `${prefix}-labels-idx1-ubyte.gz`), 2049, 1);
    if (images.shape[0] !== labels.shape[0]) throw new Error(`FashionMNIST: ${images.shape[0]} images but ${labels.shape[0]} labels`);
    if (images.shape[1] !== 28 || images.shape[2] !== 28) throw new Error(`FashionMNIST: expected 28×28 images but found ${images.shape[1]}×${images.shape[2]}`);
    this.templates = options.templates ?? FASHION_MNIST_TEMPLATES;
    if (!Array.isArray(this.templates) || this.templates.length === 0 || !this.templates.every((t) => typeof t === "string")) {
      throw invalid("non-empty array of template strings", "options.templates", options.templates);
    }
    this.seed = options.seed ?? 0;
    assertInteger(this.seed, "options.seed", 0);
    this.pad = options.pad32 ? 2 : 0;
    this.size = 28 + 2 * this.pad;
    this.length = images.shape[0];
    this.pixels = images.data;
    this.labels = labels.data;
  }

  label(index: number): number {
    return this.labels[this.checkIndex(index)];
  }

  caption(index: number): string {
    const template = this.templates[hash32(this.seed, this.checkIndex(index)) % this.templates.length];
    return fashionMnistCaption(this.labels[index], template);
  }

  get(index: number): Sample {
    this.checkIndex(index);
    const size = this.size;
    const out = new Float32Array(size * size).fill(-1);
    const source = this.pixels.subarray(index * 784, (index + 1) * 784);
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) out[(y + this.pad) * size + x + this.pad] = TO_UNIT[source[y * 28 + x]];
    }
    return { image: tensor(out, [1, size, size]), label: this.labels[index], caption: this.caption(index) };
  }

  private checkIndex(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) throw invalid(`integer index in [0, ${this.length})`, "index", index);
    return index;
  }
}
