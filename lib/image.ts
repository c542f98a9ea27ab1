/**
 * Images <-> tensors through sharp: the one place pixels become tensors and back. Tensors are
 * [B, C, H, W] float32 in [0, 1] (or [-1, 1] where training data asks for it); files and
 * Buffers are anything sharp reads (PNG, JPEG, WebP...).
 */
import sharp from "sharp";
import { invalid } from "./errors";
import { imageFormat } from "./image_format";
import { writeFileAtomic } from "./serialize";
import { cat, tensor, tidy, type Tensor } from "./tensor";

export type ImageSource = string | Buffer | Tensor;

/** Decoded pixels: `height × width × channels` bytes, row-major, interleaved. */
export interface DecodedImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

/**
 * Decodes an image file or Buffer with sharp, keeping its channels (gray, gray + alpha, RGB, RGBA).
 * @example const { width, height, channels } = await decodeImage("cat.png");
 */
export async function decodeImage(source: string | Buffer): Promise<DecodedImage> {
  const { data, info } = await sharp(source).raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: info.channels };
}

/**
 * Decoded pixels -> a (C, H, W) float32 tensor: alpha dropped, gray repeated to RGB or RGB
 * reduced to ITU-R 601 luma as `channels` asks (default: the image's), scaled to [0, 1]
 * (`range: "unit"`, default) or [-1, 1] (`"signed"`).
 * @example const x = pixelsToTensor(await decodeImage("cat.png"), { channels: 3, range: "signed" }); // (3, H, W)
 */
export function pixelsToTensor(image: DecodedImage, options: { channels?: 1 | 3; range?: "unit" | "signed" } = {}): Tensor {
  const { data, width, height, channels } = image;
  if (data.length !== width * height * channels) throw new Error(`pixelsToTensor: ${data.length} bytes for ${width}×${height}×${channels}`);
  return tidy(() => {
    let x = tensor(data, [height, width, channels], { dtype: "uint8" }).permute([2, 0, 1]).float(); // (C, H, W) in [0, 255]
    if (channels === 2 || channels === 4) x = x.narrow(0, 0, channels - 1); // drop alpha
    const want = options.channels ?? x.shape[0];
    if (want === 3 && x.shape[0] === 1) x = x.expand([3, height, width]);
    if (want === 1 && x.shape[0] === 3) x = x.mul(tensor([0.299, 0.587, 0.114], [3, 1, 1])).sum(0, true); // ITU-R 601 luma
    return (options.range === "signed" ? x.div(127.5).sub(1) : x.div(255)).contiguous();
  });
}

export interface ReadImageOptions {
  /** 3 (RGB, default) or 1 (gray). */
  channels?: 1 | 3;
  width?: number;
  height?: number;
  /** How to fit when both width and height are given (sharp's fit): default "fill". */
  fit?: "fill" | "cover" | "contain" | "inside" | "outside";
}

/**
 * Decodes an image file or Buffer into a [1, C, H, W] float32 tensor in [0, 1].
 * @example const x = await readImage("cat.png", { width: 512, height: 512 });
 */
export async function readImage(source: string | Buffer, options: ReadImageOptions = {}): Promise<Tensor> {
  if (typeof source !== "string" && !Buffer.isBuffer(source)) throw invalid("file path or Buffer", "image source", source);
  if (options.channels !== undefined && options.channels !== 1 && options.channels !== 3) throw invalid("1 or 3", "readImage options.channels", options.channels);
  const channels = options.channels ?? 3;
  const name = typeof source === "string" ? `"${source}"` : `<Buffer of ${source.length} bytes>`;
  let pixels: { data: Buffer; info: sharp.OutputInfo };
  try {
    let image = sharp(source).removeAlpha();
    if (options.width || options.height) image = image.resize(options.width, options.height, { fit: options.fit ?? "fill" });
    image = channels === 1 ? image.grayscale() : image.toColourspace("srgb");
    pixels = await image.raw().toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw new Error(`readImage(${name}): ${(error as Error).message}`);
  }
  const { width, height, channels: got } = pixels.info;
  return tidy(() => pixelsToTensor({ data: new Uint8Array(pixels.data.buffer, pixels.data.byteOffset, pixels.data.length), width, height, channels: got }).unsqueeze(0)); // (1, C, H, W)
}

/** Loads a tensor, file or Buffer as a [B, C, H, W] tensor in [0, 1] (tensors pass through unchanged). */
export async function toImageTensor(source: ImageSource, options: ReadImageOptions = {}): Promise<Tensor> {
  if (typeof source === "string" || Buffer.isBuffer(source)) return readImage(source, options);
  if (source.ndim === 3) return source.unsqueeze(0);
  if (source.ndim !== 4) throw new Error(`image tensor: expected [C, H, W] or [B, C, H, W] but received shape [${source.shape.join(", ")}]`);
  return source.clone();
}

function toUint8Hwc(image: Tensor): { data: Uint8Array; width: number; height: number; channels: 1 | 3 | 4 } {
  if (image.ndim !== 3) throw new Error(`expected an image tensor [C, H, W] but received shape [${image.shape.join(", ")}]`);
  const [channels, height, width] = image.shape;
  if (channels !== 1 && channels !== 3 && channels !== 4) throw new Error(`expected 1, 3 or 4 channels but received ${channels}`);
  const data = tidy(() => image.float().clamp(0, 1).mul(255).round().to("uint8").permute([1, 2, 0]).contiguous().data()) as Uint8Array;
  return { data, width, height, channels };
}

/**
 * Encodes one [C, H, W] (or [1, C, H, W]) tensor in [0, 1] as PNG bytes.
 * @example fs.writeFileSync("out.png", await encodePng(images.index(0)));
 */
export async function encodePng(image: Tensor): Promise<Buffer> {
  const single = image.ndim === 4 && image.shape[0] === 1 ? image.index(0) : image;
  try {
    const { data, width, height, channels } = toUint8Hwc(single);
    return await sharp(Buffer.from(data.buffer, data.byteOffset, data.length), { raw: { width, height, channels } }).png().toBuffer();
  } finally {
    if (single !== image) single.dispose();
  }
}

/** Writes one image tensor in [0, 1] to a file; the extension picks the format. */
export async function writeImage(image: Tensor, file: string): Promise<void> {
  if (typeof file !== "string") throw invalid("file path", "writeImage file", file);
  const format = imageFormat(file);
  const png = await encodePng(image);
  const bytes = format === "png" ? png : await sharp(png).toFormat(format).toBuffer();
  // Encoded in memory first, then written atomically: a full disk or a kill leaves the old file (or none), never a truncated one.
  writeFileAtomic(file, bytes);
}

/**
 * Tiles a batch [B, C, H, W] into one [C, rows·H, cols·W] image.
 * @example await writeImage(imageGrid(images, 4), "grid.png");
 */
export function imageGrid(images: Tensor, columns = Math.ceil(Math.sqrt(images.shape[0]))): Tensor {
  if (images.ndim !== 4) throw new Error(`imageGrid: expected [B, C, H, W] but received shape [${images.shape.join(", ")}]`);
  return tidy(() => {
    const [count, channels, height, width] = images.shape;
    const rows = Math.ceil(count / columns);
    const cells = Array.from({ length: rows * columns }, (_, i) => (i < count ? images.index(i) : images.index(0).mul(0)));
    const rowImages = Array.from({ length: rows }, (_, r) => cat(cells.slice(r * columns, (r + 1) * columns), 2)); // (C, H, cols·W)
    return cat(rowImages, 1).reshape([channels, rows * height, columns * width]);
  });
}
