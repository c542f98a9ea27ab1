/**
 * The image file formats this package writes, by extension. Its own module, free of sharp and
 * the addon, so the CLI can check `--out` before loading anything.
 */
import * as path from "node:path";

/** What writeImage writes, by file extension (through sharp). */
export const IMAGE_FORMATS = { ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff" } as const;

/**
 * The sharp output format of an image file name, or an error naming the ones written.
 * @example imageFormat("out.webp") // "webp"
 */
export function imageFormat(file: string): (typeof IMAGE_FORMATS)[keyof typeof IMAGE_FORMATS] {
  const ext = path.extname(file).toLowerCase();
  const format = (IMAGE_FORMATS as Record<string, (typeof IMAGE_FORMATS)[keyof typeof IMAGE_FORMATS]>)[ext];
  if (!format) throw new Error(`${file}: cannot write images as "${ext || "(no extension)"}"; use one of ${Object.keys(IMAGE_FORMATS).join(", ")} (PNG, JPEG, WebP, TIFF)`);
  return format;
}
