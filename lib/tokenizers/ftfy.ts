/**
 * `ftfy.fix_text` (ftfy 6.3.1 by Robyn Speer, MIT licence, https://github.com/rspeer/python-ftfy)
 * ported to TypeScript with its default configuration, for the CLIP tokenizer: OpenAI CLIP
 * and transformers' `CLIPTokenizer` run every prompt through it when ftfy is installed.
 *
 * The steps and their order follow `ftfy/__init__.py` (`fix_text`, `fix_and_explain`,
 * `fix_encoding`, `_fix_encoding_one_step_and_explain`), `ftfy/fixes.py`, `ftfy/badness.py`
 * and ftfy's codecs (`sloppy-windows-125x`, `utf-8-variants`); the tables ftfy computes at
 * import time come from ./ftfy_data.ts (generated). Bytes are handled as "binary strings"
 * (one char per byte, U+0000..U+00FF) so that ftfy's byte regexes apply unchanged.
 *
 * Not ported: the other entry points and options (`fix_and_explain`'s explanations,
 * `apply_plan`, `guess_bytes`, `fix_file`, non-default `TextFixerConfig`, `decode_escapes`,
 * NFKC). Where JavaScript differs from Python: a string cannot hold a surrogate pair as two
 * code points, so `fix_surrogates` only has lone surrogates to replace; `\w`/`\d` in ftfy's
 * regexes and NFC use the JavaScript engine's Unicode version instead of Python's, which
 * matters only for characters assigned after Unicode 14.
 */
import {
  CP1252_UNDEFINED,
  FTFY_CHARMAPS,
  FTFY_CONTROL_CHARS,
  FTFY_LIGATURES,
  FTFY_REGEX,
  FTFY_UPPER_ENTITIES,
  FTFY_WIDTH_MAP,
} from "./ftfy_data";
import { HTML5_ENTITIES, INVALID_CHARREFS, INVALID_CODEPOINTS } from "./html_entities";

const BADNESS = new RegExp(FTFY_REGEX.BADNESS, "u");
const UTF8_DETECTOR = new RegExp(FTFY_REGEX.UTF8_DETECTOR, "u");
const UTF8_DETECTOR_ALL = new RegExp(FTFY_REGEX.UTF8_DETECTOR, "gu");
const ALTERED_UTF8 = new RegExp(FTFY_REGEX.ALTERED_UTF8, "u");
const ALTERED_UTF8_ALL = new RegExp(FTFY_REGEX.ALTERED_UTF8, "gu");
const LOSSY_UTF8_ALL = new RegExp(FTFY_REGEX.LOSSY_UTF8, "gu");
const A_GRAVE_WORD_ALL = new RegExp(FTFY_REGEX.A_GRAVE_WORD, "gu");
const HTML_ENTITY = new RegExp(FTFY_REGEX.HTML_ENTITY, "u");
const HTML_ENTITY_ALL = new RegExp(FTFY_REGEX.HTML_ENTITY, "gu");
const ANSI_ALL = new RegExp(FTFY_REGEX.ANSI, "gu");
const SINGLE_QUOTE_ALL = new RegExp(FTFY_REGEX.SINGLE_QUOTE, "gu");
const DOUBLE_QUOTE_ALL = new RegExp(FTFY_REGEX.DOUBLE_QUOTE, "gu");
const C1_CONTROL = new RegExp(FTFY_REGEX.C1_CONTROL, "u");
const C1_CONTROL_ALL = new RegExp(FTFY_REGEX.C1_CONTROL, "gu");
const ASCII = /^[\x00-\x7f]*$/;
/** Text that no step of fix_text can change unless it holds an HTML entity. */
const PLAIN = /^[\t\n\f\x20-\x7e]*$/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const MAX_DECODE_LENGTH = 1_000_000; // TextFixerConfig.max_decode_length, in code points

/** A single-byte codec: its decoding of the 256 bytes and the reverse map. */
interface Charmap {
  name: string;
  decode: string[];
  encode: Map<number, number>;
}

const CHARMAPS: Charmap[] = FTFY_CHARMAPS.map(([name, upper]) => {
  const decode = new Array<string>(256);
  const encode = new Map<number, number>();
  for (let b = 0; b < 256; b++) {
    const ch = b < 0x80 ? (b === 0x1a ? upper[128] : String.fromCharCode(b)) : upper[b - 0x80];
    decode[b] = ch;
    encode.set(ch.codePointAt(0)!, b);
  }
  return { name, decode, encode };
});
const SLOPPY_1252 = CHARMAPS.find((c) => c.name === "sloppy-windows-1252")!;

function classOf(chars: Iterable<string>, flags = "g"): RegExp {
  const body = [...chars].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`).join("");
  return new RegExp(`[${body}]`, flags);
}
const LIGATURE_ALL = classOf(FTFY_LIGATURES.keys());
const WIDTH_ALL = classOf(FTFY_WIDTH_MAP.keys());
const CONTROL_ALL = classOf(FTFY_CONTROL_CHARS.map((c) => String.fromCharCode(c)));

let entities: Map<string, string> | undefined;
/** `chardata.HTML_ENTITIES`: `&name;` for HTML5 names ending in `;`, plus ftfy's upper-case ones. */
function ftfyEntities(): Map<string, string> {
  if (!entities) {
    entities = new Map(FTFY_UPPER_ENTITIES);
    for (const [name, value] of HTML5_ENTITIES) if (name.endsWith(";")) entities.set("&" + name, value);
  }
  return entities;
}

/** What Python's `html.unescape` makes of `&#...;`, or undefined if it leaves it (partly) alone. */
function numericCharref(ref: string): string | undefined {
  const body = ref.slice(2, -1);
  let num: number;
  if (/^[0-9]+$/.test(body)) num = parseInt(body, 10);
  else if (/^[xX][0-9a-fA-F]+$/.test(body)) num = parseInt(body.slice(1), 16);
  else return undefined;
  const fixed = INVALID_CHARREFS.get(num);
  if (fixed !== undefined) return fixed;
  if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return "\ufffd";
  if (INVALID_CODEPOINTS.has(num)) return "";
  return String.fromCodePoint(num);
}

/** `fixes.unescape_html`: entities that end in `;` (and ftfy's all-caps ones), numeric references. */
function unescapeHtml(text: string): string {
  if (!text.includes("&")) return text;
  return text.replace(HTML_ENTITY_ALL, (ref) => {
    const named = ftfyEntities().get(ref);
    if (named !== undefined) return named;
    if (!ref.startsWith("&#")) return ref;
    const value = numericCharref(ref);
    // ftfy keeps the reference when html.unescape would leave a ";" behind.
    return value === undefined || value.includes(";") ? ref : value;
  });
}

/** `text.encode(charmap)` as a binary string, or undefined when ftfy's `possible_encoding` fails. */
function encodeCharmap(text: string, cm: Charmap): string | undefined {
  let out = "";
  for (const ch of text) {
    const b = cm.encode.get(ch.codePointAt(0)!);
    if (b === undefined) return undefined;
    out += String.fromCharCode(b);
  }
  return out;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/** Python's strict `bytes.decode("utf-8")` of a binary string, or undefined on UnicodeDecodeError. */
function decodeUtf8(bin: string): string | undefined {
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * ftfy's `utf-8-variants` codec (bad_codecs/utf8_variants.py, decoding with final=True):
 * UTF-8 plus CESU-8 surrogate pairs and Java's `C0 80` for U+0000. Mirrors its regex search,
 * including Python's `$`, which also matches before a final `\n`.
 */
function decodeUtf8Variants(b: string): string | undefined {
  const n = b.length;
  const at = (i: number) => (i < n ? b.charCodeAt(i) : -1);
  const dollar = (i: number) => i === n || (i === n - 1 && at(i) === 0x0a);
  // Position after `([lo-hi]|$)` matched at i, or -1.
  const step = (i: number, lo: number, hi: number) => (i < 0 ? -1 : at(i) >= lo && at(i) <= hi ? i + 1 : dollar(i) ? i : -1);
  // SPECIAL_BYTES_RE = NULL_EXPR | CESU8_EXPR | SURROGATE_EXPR; CESU8 implies SURROGATE's start.
  const special = (p: number) =>
    at(p) === 0xc0 ? step(p + 1, 0x80, 0x80) >= 0 : at(p) === 0xed && step(step(p + 1, 0xa0, 0xbf), 0x80, 0xbf) >= 0;
  let out = "";
  let pos = 0;
  while (pos < n) {
    let p = pos;
    while (p < n && !special(p)) p++;
    if (p > pos) {
      const chunk = decodeUtf8(b.slice(pos, p));
      if (chunk === undefined) return undefined;
      out += chunk;
      pos = p;
      continue;
    }
    if (at(pos) === 0xc0) {
      if (n - pos === 1) return undefined; // a lone C0 at the end: invalid UTF-8
      out += "\u0000";
      pos += 2;
    } else if (n - pos < 6) {
      const rest = decodeUtf8(b.slice(pos));
      return rest === undefined ? undefined : out + rest;
    } else {
      let s = pos + 1;
      for (const [lo, hi] of [[0xa0, 0xaf], [0x80, 0xbf], [0xed, 0xed], [0xb0, 0xbf], [0x80, 0xbf]]) s = step(s, lo, hi);
      if (s < 0) return undefined; // an encoded lone surrogate
      const cp = ((at(pos + 1) & 0x0f) << 16) + ((at(pos + 2) & 0x3f) << 10) + ((at(pos + 4) & 0x0f) << 6) + (at(pos + 5) & 0x3f);
      out += String.fromCodePoint(cp + 0x10000);
      pos += 6;
    }
  }
  return out;
}

/** `fixes.restore_byte_a0` on a binary string. */
function restoreByteA0(bin: string): string {
  return bin.replace(A_GRAVE_WORD_ALL, "\xc3\xa0 ").replace(ALTERED_UTF8_ALL, (m) => m.replace(/ /g, "\xa0"));
}

/** `fixes.replace_lossy_sequences` on a binary string: lossy UTF-8 sequences become U+FFFD's bytes. */
function replaceLossySequences(bin: string): string {
  return bin.replace(LOSSY_UTF8_ALL, "\xef\xbf\xbd");
}

/** `fixes.fix_c1_controls`: C1 controls read as sloppy Windows-1252. */
function fixC1Controls(text: string): string {
  return text.replace(C1_CONTROL_ALL, (c) => SLOPPY_1252.decode[c.charCodeAt(0)]);
}

/** `fixes.decode_inconsistent_utf8`: fixes UTF-8 mojibake embedded in other text. */
function decodeInconsistentUtf8(text: string): string {
  return text.replace(UTF8_DETECTOR_ALL, (sub) => (sub.length < text.length && isBad(sub) ? fixEncoding(sub) : sub));
}

/** Python's strict `text.encode("latin-1").decode("windows-1252")`, or undefined if it raises. */
function latin1ToCp1252(text: string): string | undefined {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) return undefined;
    if (CP1252_UNDEFINED.includes(c)) return undefined;
    out += SLOPPY_1252.decode[c];
  }
  return out;
}

/** One step of ftfy's `_fix_encoding_one_step_and_explain` (default config). */
function fixEncodingOneStep(text: string): string {
  if (text.length === 0 || ASCII.test(text) || !isBad(text)) return text;
  const possible: string[] = [];
  for (const cm of CHARMAPS) {
    let bytes = encodeCharmap(text, cm);
    if (bytes === undefined) continue;
    possible.push(cm.name);
    if (cm.name !== "macroman" && ALTERED_UTF8.test(bytes)) bytes = restoreByteA0(bytes);
    if (cm.name.startsWith("sloppy")) bytes = replaceLossySequences(bytes);
    const variants = bytes.includes("\xed") || bytes.includes("\xc0");
    const fixed = variants ? decodeUtf8Variants(bytes) : decodeUtf8(bytes);
    if (fixed !== undefined) return fixed;
  }
  if (UTF8_DETECTOR.test(text)) {
    const fixed = decodeInconsistentUtf8(text);
    if (fixed !== text) return fixed;
  }
  // ftfy then returns early when "windows-1252" is among the possible encodings, a name its
  // list never holds ("sloppy-windows-1252" is), so Latin-1 text always gets this try.
  if (possible.includes("latin-1")) {
    const fixed = latin1ToCp1252(text);
    if (fixed !== undefined && fixed !== text) return fixed;
  }
  if (C1_CONTROL.test(text)) return fixC1Controls(text);
  return text;
}

/**
 * ftfy's mojibake heuristic `badness.is_bad`: does the text hold a character sequence that is
 * much more likely to be mojibake than intended?
 * @example
 * isBad("cafÃ©"); // true
 * isBad("café"); // false
 */
export function isBad(text: string): boolean {
  return BADNESS.test(text);
}

/**
 * `ftfy.fix_encoding`: repeatedly undoes mojibake (UTF-8 read as Latin-1, Windows-125x,
 * ISO-8859-2, MacRoman or CP437), while ftfy's badness heuristic finds any.
 * @example
 * fixEncoding("sÃ³"); // "só"
 */
export function fixEncoding(text: string): string {
  for (;;) {
    const fixed = fixEncodingOneStep(text);
    if (fixed === text) return fixed;
    text = fixed;
  }
}

/** `fix_and_explain` on one segment with the default fixers, until nothing changes. */
function fixSegment(text: string, unescape: boolean): string {
  for (;;) {
    const orig = text;
    if (unescape) text = unescapeHtml(text);
    text = fixEncoding(text);
    text = fixC1Controls(text);
    text = text.replace(LIGATURE_ALL, (c) => FTFY_LIGATURES.get(c)!);
    text = text.replace(WIDTH_ALL, (c) => FTFY_WIDTH_MAP.get(c)!);
    text = text.replace(DOUBLE_QUOTE_ALL, '"').replace(SINGLE_QUOTE_ALL, "'");
    text = text.replace(/\r\n/g, "\n").replace(/[\r\u2028\u2029\u0085]/g, "\n");
    text = text.replace(LONE_SURROGATE, "\ufffd");
    text = text.replace(ANSI_ALL, "");
    text = text.replace(CONTROL_ALL, "");
    text = text.normalize("NFC");
    if (text === orig) return text;
  }
}

/** End of the segment that starts at `pos` and ends at `end`, cut at max_decode_length code points. */
function capSegment(text: string, pos: number, end: number): number {
  if (end - pos <= MAX_DECODE_LENGTH) return end;
  let i = pos;
  for (let n = 0; n < MAX_DECODE_LENGTH && i < end; n++) i += text.codePointAt(i)! > 0xffff ? 2 : 1;
  return i;
}

/**
 * `ftfy.fix_text(text)` with ftfy 6.3.1's default settings: HTML entities (unless a line
 * holds `<`; from then on they are kept, as in ftfy), mojibake (with ftfy's badness
 * heuristic, sloppy Windows codecs, restored non-breaking spaces, lossy sequences, UTF-8
 * embedded in other text, C1 controls), Latin ligatures, full-width and half-width forms,
 * curly quotes, line breaks, surrogates, terminal escapes, control characters and BOMs,
 * then NFC. Fixed line by line. Plain ASCII text without `&...;` is returned at once.
 * @example
 * fixText("cafÃ©"); // "café"
 * fixText("“quoted” ﬁne ＡＢＣ"); // "\"quoted\" fine ABC"
 * fixText("\x1b[31mred\x1b[0m"); // "red"
 * fixText("a\x85b"); // "a…b"
 */
export function fixText(text: string): string {
  if (PLAIN.test(text) && !HTML_ENTITY.test(text)) return text;
  let unescape = true;
  let out = "";
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf("\n", pos) + 1;
    if (end === 0) end = text.length;
    end = capSegment(text, pos, end);
    const segment = text.slice(pos, end);
    if (unescape && segment.includes("<")) unescape = false;
    out += fixSegment(segment, unescape);
    pos = end;
  }
  return out;
}
