/**
 * Text tokenizers.
 * @example
 * import { CLIPTokenizer } from "torch-diffusion";
 * const ids = CLIPTokenizer.fromBuiltin().encode("a photo of a cat").inputIds;
 */
export { CLIPTokenizer } from "./clip";
export type { ClipEncodeOptions, ClipEncoding, ClipDecodeOptions } from "./clip";
export { fixText } from "./ftfy";
