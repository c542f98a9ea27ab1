/**
 * Text helpers of the CLIP tokenizer (./clip.ts): the cleaning steps of OpenAI CLIP's
 * `simple_tokenizer` (`ftfy.fix_text` from ./ftfy.ts, then Python-compatible `html.unescape`,
 * `str.strip` and `\s`), the pre-tokenisation pattern, the byte-to-unicode tables and
 * merges-file parsing.
 */
import { fixText } from "./ftfy";
import { HTML5_ENTITIES, INVALID_CHARREFS, INVALID_CODEPOINTS } from "./html_entities";

// Unicode White_Space: what Python `regex`'s \s matches. JS \s differs (it has U+FEFF, lacks U+0085).
const WS = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WS_RUN = new RegExp(`[${WS}]+`, "gu");
// Python's str.isspace(): White_Space plus U+001C..U+001F.
const PY_SPACE = new RegExp(`^[${WS}\\x1c-\\x1f]$`, "u");
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

/**
 * CLIP's pre-tokenisation pattern (use with `matchAll`). Python compiles it with IGNORECASE;
 * it is applied to lower-cased text, so the flag is left out here (under `/iu`, `\p{L}`
 * would also match U+0345, unlike Python's `regex`).
 * @example
 * [..."it's 8k!".matchAll(PRETOKENIZE)].map((m) => m[0]); // ["it", "'s", "8", "k", "!"]
 */
export const PRETOKENIZE = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^${WS}\\p{L}\\p{N}]+`,
  "gu",
);

/**
 * bytes_to_unicode: byte -> character. Printable latin-1 bytes map to themselves, the
 * others to U+0100 upwards.
 * @example
 * BYTE_ENCODER[0x20]; // "Ġ"
 */
export const BYTE_ENCODER: string[] = new Array<string>(256);
/**
 * Inverse of {@link BYTE_ENCODER}.
 * @example
 * BYTE_DECODER.get("Ġ"); // 32
 */
export const BYTE_DECODER = new Map<string, number>();
/**
 * The 256 byte characters in CLIP's vocabulary order (printable bytes first): ids 0..255.
 * @example
 * BYTE_ORDER[0]; // "!"
 */
export const BYTE_ORDER: string[] = [];
{
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const printable = bs.length;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) bs.push(b);
  bs.forEach((b, i) => {
    const ch = String.fromCharCode(i < printable ? b : 256 + i - printable);
    BYTE_ENCODER[b] = ch;
    BYTE_DECODER.set(ch, b);
    BYTE_ORDER.push(ch);
  });
}

/**
 * Python's `html.unescape`: decimal/hex references (with its replacements for invalid
 * ones) and HTML5 named references, including legacy names without `;` (longest prefix).
 * @example
 * htmlUnescape("Tom &amp; Jerry &ampx &#39;"); // "Tom & Jerry &x '"
 */
export function htmlUnescape(s: string): string {
  if (!s.includes("&")) return s;
  return s.replace(CHARREF, (_m, ref: string) => {
    if (ref[0] === "#") {
      const hex = ref[1] === "x" || ref[1] === "X";
      const num = parseInt(ref.slice(hex ? 2 : 1).replace(/;$/, ""), hex ? 16 : 10);
      const fixed = INVALID_CHARREFS.get(num);
      if (fixed !== undefined) return fixed;
      if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return "\ufffd";
      if (INVALID_CODEPOINTS.has(num)) return "";
      return String.fromCodePoint(num);
    }
    const exact = HTML5_ENTITIES.get(ref);
    if (exact !== undefined) return exact;
    const cps = Array.from(ref);
    for (let x = cps.length - 1; x > 1; x--) {
      const hit = HTML5_ENTITIES.get(cps.slice(0, x).join(""));
      if (hit !== undefined) return hit + cps.slice(x).join("");
    }
    return "&" + ref;
  });
}

/**
 * Python's `str.strip()` with no argument (strips what `str.isspace()` accepts).
 * @example
 * pyStrip("\u3000 a b \x1c"); // "a b"
 */
export function pyStrip(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && PY_SPACE.test(s[start])) start++;
  while (end > start && PY_SPACE.test(s[end - 1])) end--;
  return s.slice(start, end);
}

/**
 * The text CLIP tokenizes (OpenAI's `basic_clean` + `whitespace_clean` + lower): `ftfy.fix_text`
 * (./ftfy.ts), `html.unescape` twice, strip, whitespace runs to one space, lower-case.
 * @example
 * clipClean("  A &amp;amp;  B\n"); // "a & b"
 * clipClean("CafÃ© “Noir”"); // "café \"noir\""
 */
export function clipClean(text: string): string {
  const basic = pyStrip(htmlUnescape(htmlUnescape(fixText(text))));
  return pyStrip(basic.replace(WS_RUN, " ")).toLowerCase();
}

/**
 * The first `n` lines of `text`, without splitting the rest of a large file.
 * @example
 * firstLines("a\nb\nc", 2); // ["a", "b"]
 */
export function firstLines(text: string, n: number): string[] {
  const lines: string[] = [];
  let pos = 0;
  while (lines.length < n && pos <= text.length) {
    let end = text.indexOf("\n", pos);
    if (end < 0) end = text.length;
    lines.push(text.slice(pos, end));
    pos = end + 1;
  }
  return lines;
}

/**
 * Parses `a b` merge lines (blank lines skipped); errors name `file:line`.
 * @example
 * parseMerges(["i n", "t h"], "merges.txt", "load", 2); // [["i", "n"], ["t", "h"]]
 */
export function parseMerges(lines: string[], file: string, who: string, firstLine: number): [string, string][] {
  const merges: [string, string][] = [];
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    const sp = line.indexOf(" ");
    const a = line.slice(0, sp);
    const b = line.slice(sp + 1);
    if (sp <= 0 || b === "" || /\s/.test(b)) {
      throw new Error(`${who}: ${file}:${firstLine + i}: expected "a b" but found ${JSON.stringify(raw)}`);
    }
    merges.push([a, b]);
  });
  return merges;
}
