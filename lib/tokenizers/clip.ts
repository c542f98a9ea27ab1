/**
 * CLIP byte-level BPE tokenizer (the text tokenizer of Stable Diffusion 1.x/2.x/XL),
 * pure TypeScript. Follows OpenAI CLIP's `simple_tokenizer`: `ftfy.fix_text` (ported in
 * ./ftfy.ts: mojibake, curly quotes, full-width forms, ligatures, control characters...),
 * `html.unescape` twice, whitespace collapse, lower-casing, the CLIP pre-tokenisation
 * pattern, byte-to-unicode mapping and BPE with `</w>` marking the end of a word.
 *
 * Differences from the Python original (documented, deliberate):
 * - Lone UTF-16 surrogates become U+FFFD (as `ftfy.fix_text` makes them) instead of raising.
 * - transformers' slow `CLIPTokenizer` runs ftfy but not `html.unescape`; ids differ from it
 *   only for text that still holds HTML entities after ftfy (e.g. lines with `<`).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import { packagePath } from "../package_root";
import { BYTE_DECODER, BYTE_ENCODER, BYTE_ORDER, clipClean, firstLines, parseMerges, PRETOKENIZE, pyStrip } from "./clip_text";

/**
 * Options of {@link CLIPTokenizer.encode}.
 * @example
 * const opts: ClipEncodeOptions = { maxLength: 77, padding: "longest", truncation: true };
 */
export interface ClipEncodeOptions {
  /** Total length including `<|startoftext|>`/`<|endoftext|>`; default `modelMaxLength` (77). Must be >= 2. */
  maxLength?: number;
  /** `"max_length"` (default) pads to `maxLength`, `"longest"` to the longest row, `"none"` leaves rows ragged. */
  padding?: "max_length" | "longest" | "none";
  /** Default true: rows longer than `maxLength` keep their first `maxLength - 1` ids, then `<|endoftext|>`. */
  truncation?: boolean;
  /** Overrides the tokenizer's pad id for this call. */
  padTokenId?: number;
}

/**
 * Result of {@link CLIPTokenizer.encode}: one row per input text.
 * @example
 * const { inputIds, attentionMask }: ClipEncoding = tok.encode(["a cat", "a dog"]);
 */
export interface ClipEncoding {
  inputIds: number[][];
  /** 1 for real tokens (specials included), 0 for padding. */
  attentionMask: number[][];
}

/**
 * Options of {@link CLIPTokenizer.decode}.
 * @example
 * tok.decode(ids, { skipSpecialTokens: true });
 */
export interface ClipDecodeOptions {
  /** Drop `<|startoftext|>`, `<|endoftext|>` and the pad id (default false, as in transformers). */
  skipSpecialTokens?: boolean;
}

const BOS = "<|startoftext|>";
const EOS = "<|endoftext|>";
const BUILTIN_FILE = "bpe_simple_vocab_16e6.txt.gz";
const NUM_MERGES = 49152 - 256 - 2; // CLIP keeps merges[1 : 49152-256-2+1]
const DEFAULT_MAX_LENGTH = 77;
const CACHE_LIMIT = 100_000;
const describe = (v: unknown): string =>
  v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "number" && Number.isNaN(v) ? "NaN" : typeof v;

function readText(file: string, who: string, what: string): Buffer {
  if (!fs.existsSync(file)) throw new Error(`${who}: ${what} not found: ${file}`);
  return fs.readFileSync(file);
}

/** Accepts a tokenizer_config token entry: a string or `{ content: string }`. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return undefined;
}

interface TokenizerParts {
  encoder: Map<string, number>;
  merges: [string, string][];
  modelMaxLength?: number;
  padToken?: string;
  source: string;
}

const builtinCache = new Map<string, CLIPTokenizer>();

/**
 * CLIP BPE tokenizer. Ids match OpenAI CLIP's tokenizer with ftfy installed (and transformers'
 * `CLIPTokenizer` wherever no HTML entity survives ftfy).
 * @example
 * const tok = CLIPTokenizer.fromBuiltin();
 * tok.encode("a photo of a cat").inputIds[0].slice(0, 7);
 * // [49406, 320, 1125, 539, 320, 2368, 49407]
 */
export class CLIPTokenizer {
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly modelMaxLength: number;
  readonly vocabSize: number;
  private readonly encoder: Map<string, number>;
  private readonly decoder = new Map<number, string>();
  private readonly ranks = new Map<string, number>();
  private readonly merges: [string, string][];
  private readonly padToken: string;
  private readonly cache = new Map<string, string[]>();

  private constructor(parts: TokenizerParts) {
    const who = `CLIPTokenizer (${parts.source})`;
    this.encoder = parts.encoder;
    this.merges = parts.merges;
    for (const [tok, id] of this.encoder) this.decoder.set(id, tok);
    this.merges.forEach(([a, b], i) => this.ranks.set(`${a} ${b}`, i)); // last wins, like Python's dict()
    const idOf = (tok: string): number => {
      const id = this.encoder.get(tok);
      if (id === undefined) throw new Error(`${who}: token ${JSON.stringify(tok)} is not in the vocabulary`);
      return id;
    };
    this.bosTokenId = idOf(BOS);
    this.eosTokenId = idOf(EOS);
    this.padToken = parts.padToken ?? EOS;
    this.padTokenId = idOf(this.padToken);
    const mml = parts.modelMaxLength;
    // transformers writes a huge sentinel (1e30) when no length is set: fall back to 77.
    this.modelMaxLength = mml !== undefined && Number.isInteger(mml) && mml >= 2 && mml <= 1e6 ? mml : DEFAULT_MAX_LENGTH;
    this.vocabSize = this.encoder.size;
  }

  /**
   * The tokenizer of the CLIP vocabulary shipped with this project (cached):
   * `$TORCH_DIFFUSION_CLIP_VOCAB` if set, else `<package root>/data/clip/bpe_simple_vocab_16e6.txt.gz`.
   * @example
   * const tok = CLIPTokenizer.fromBuiltin();
   * tok.vocabSize; // 49408
   */
  static fromBuiltin(): CLIPTokenizer {
    const env = process.env.TORCH_DIFFUSION_CLIP_VOCAB;
    let file: string;
    if (env) {
      if (!fs.existsSync(env)) {
        throw new Error(`CLIPTokenizer.fromBuiltin: TORCH_DIFFUSION_CLIP_VOCAB points at a missing file: ${env}`);
      }
      file = env;
    } else {
      file = packagePath("data", "clip", BUILTIN_FILE);
      if (!fs.existsSync(file)) {
        throw new Error(`CLIPTokenizer.fromBuiltin: ${BUILTIN_FILE} not found at ${file}; set TORCH_DIFFUSION_CLIP_VOCAB to its path`);
      }
    }
    const key = path.resolve(file);
    let tok = builtinCache.get(key);
    if (!tok) {
      tok = CLIPTokenizer.fromMergesGz(key);
      builtinCache.set(key, tok);
    }
    return tok;
  }

  /**
   * From OpenAI's merges file (`bpe_simple_vocab_16e6.txt.gz`: a header line, then `a b`
   * merges). The vocabulary is rebuilt as bytes, bytes + `</w>`, merges, then the specials.
   * @example
   * const tok = CLIPTokenizer.fromMergesGz("data/clip/bpe_simple_vocab_16e6.txt.gz");
   */
  static fromMergesGz(file: string): CLIPTokenizer {
    const who = "CLIPTokenizer.fromMergesGz";
    if (typeof file !== "string") throw new Error(`${who}: expected a path string but received ${describe(file)}`);
    const raw = readText(file, who, "merges file");
    let text: string;
    try {
      text = (raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw).toString("utf8");
    } catch (e) {
      throw new Error(`${who}: could not gunzip ${file}: ${(e as Error).message}`);
    }
    const merges = parseMerges(firstLines(text, NUM_MERGES + 1).slice(1), file, who, 2);
    const vocab = [...BYTE_ORDER, ...BYTE_ORDER.map((c) => c + "</w>"), ...merges.map(([a, b]) => a + b), BOS, EOS];
    const encoder = new Map<string, number>();
    vocab.forEach((tok, i) => encoder.set(tok, i));
    return new CLIPTokenizer({ encoder, merges, source: file });
  }

  /**
   * From the transformers layout: `vocab.json` (token to id) and `merges.txt`
   * (`#version` header, then `a b` merges).
   * @example
   * const tok = CLIPTokenizer.fromFiles("model/tokenizer/vocab.json", "model/tokenizer/merges.txt");
   */
  static fromFiles(vocabJsonPath: string, mergesTxtPath: string): CLIPTokenizer {
    return CLIPTokenizer.load("CLIPTokenizer.fromFiles", vocabJsonPath, mergesTxtPath, {});
  }

  /**
   * From a folder holding `vocab.json` + `merges.txt` and optionally `tokenizer_config.json`
   * / `special_tokens_map.json` (`model_max_length`, `pad_token`: SD 2.x pads with "!").
   * @example
   * const tok = CLIPTokenizer.fromDirectory("stable-diffusion-2-1/tokenizer");
   * tok.padTokenId; // 0
   */
  static fromDirectory(dir: string): CLIPTokenizer {
    const who = "CLIPTokenizer.fromDirectory";
    if (typeof dir !== "string") throw new Error(`${who}: expected a directory path but received ${describe(dir)}`);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`${who}: directory not found: ${dir}`);
    const config: Record<string, unknown> = {};
    for (const name of ["special_tokens_map.json", "tokenizer_config.json"]) {
      const file = path.join(dir, name);
      if (!fs.existsSync(file)) continue;
      try {
        Object.assign(config, JSON.parse(fs.readFileSync(file, "utf8")));
      } catch (e) {
        throw new Error(`${who}: invalid JSON in ${file}: ${(e as Error).message}`);
      }
    }
    const mml = config.model_max_length;
    return CLIPTokenizer.load(who, path.join(dir, "vocab.json"), path.join(dir, "merges.txt"), {
      modelMaxLength: typeof mml === "number" ? mml : undefined,
      padToken: tokenContent(config.pad_token),
    });
  }

  private static load(who: string, vocabPath: string, mergesPath: string, extra: Partial<TokenizerParts>): CLIPTokenizer {
    if (typeof vocabPath !== "string" || typeof mergesPath !== "string") {
      throw new Error(`${who}: expected path strings but received ${describe(vocabPath)}, ${describe(mergesPath)}`);
    }
    const vocabText = readText(vocabPath, who, "vocab file").toString("utf8");
    let json: unknown;
    try {
      json = JSON.parse(vocabText);
    } catch (e) {
      throw new Error(`${who}: invalid JSON in ${vocabPath}: ${(e as Error).message}`);
    }
    if (!json || typeof json !== "object" || Array.isArray(json)) {
      throw new Error(`${who}: ${vocabPath} must hold a JSON object of token -> id`);
    }
    const encoder = new Map<string, number>();
    for (const [tok, id] of Object.entries(json)) {
      if (!Number.isInteger(id) || (id as number) < 0) {
        throw new Error(`${who}: ${vocabPath}: id of ${JSON.stringify(tok)} must be a non-negative integer`);
      }
      encoder.set(tok, id as number);
    }
    const lines = firstLines(readText(mergesPath, who, "merges file").toString("utf8").trim(), NUM_MERGES + 1);
    const start = lines[0]?.startsWith("#") ? 1 : 0;
    const merges = parseMerges(lines.slice(start, start + NUM_MERGES), mergesPath, who, start + 1);
    return new CLIPTokenizer({ ...extra, encoder, merges, source: vocabPath });
  }

  /**
   * BPE tokens of `text` (no `<|startoftext|>`/`<|endoftext|>` added).
   * @example
   * tok.tokenize("Hello, world!"); // ["hello</w>", ",</w>", "world</w>", "!</w>"]
   */
  tokenize(text: string): string[] {
    if (typeof text !== "string") {
      throw new Error(`CLIPTokenizer.tokenize: expected text to be a string but received ${describe(text)}`);
    }
    const out: string[] = [];
    for (const m of clipClean(text).matchAll(PRETOKENIZE)) {
      const piece = m[0];
      if (piece === BOS || piece === EOS) {
        out.push(piece);
        continue;
      }
      let mapped = "";
      for (const b of Buffer.from(piece, "utf8")) mapped += BYTE_ENCODER[b];
      for (const t of this.bpe(mapped)) out.push(t);
    }
    return out;
  }

  /**
   * Ids with `<|startoftext|>` ... `<|endoftext|>`, truncated and padded per `options`.
   * @example
   * const { inputIds, attentionMask } = tok.encode(["a cat", "a red dog"], { padding: "longest" });
   * // inputIds: [[49406, 320, 2368, 49407, 49407], [49406, 320, 736, 1929, 49407]]
   * // attentionMask: [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
   */
  encode(text: string | string[], options: ClipEncodeOptions = {}): ClipEncoding {
    const who = "CLIPTokenizer.encode";
    const texts = Array.isArray(text) ? text : [text];
    if (!Array.isArray(text) && typeof text !== "string") {
      throw new Error(`${who}: expected text to be a string or string[] but received ${describe(text)}`);
    }
    texts.forEach((t, i) => {
      if (typeof t !== "string") throw new Error(`${who}: expected text[${i}] to be a string but received ${describe(t)}`);
    });
    if (options === null || typeof options !== "object") {
      throw new Error(`${who}: expected options to be an object but received ${describe(options)}`);
    }
    const { maxLength = this.modelMaxLength, padding = "max_length", truncation = true } = options;
    const padId = options.padTokenId ?? this.padTokenId;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new Error(`${who}: maxLength must be an integer >= 2 (room for <|startoftext|> and <|endoftext|>) but received ${String(maxLength)}`);
    }
    if (padding !== "max_length" && padding !== "longest" && padding !== "none") {
      throw new Error(`${who}: padding must be "max_length", "longest" or "none" but received ${JSON.stringify(padding)}`);
    }
    if (typeof truncation !== "boolean") throw new Error(`${who}: truncation must be a boolean but received ${describe(truncation)}`);
    if (!Number.isInteger(padId) || padId < 0) {
      throw new Error(`${who}: padTokenId must be a non-negative integer but received ${String(padId)}`);
    }
    const rows = texts.map((t) => {
      const ids = [this.bosTokenId, ...this.tokenize(t).map((tok) => this.encoder.get(tok) ?? this.eosTokenId), this.eosTokenId];
      return truncation && ids.length > maxLength ? [...ids.slice(0, maxLength - 1), this.eosTokenId] : ids;
    });
    const target = padding === "max_length" ? maxLength : padding === "longest" ? rows.reduce((m, r) => Math.max(m, r.length), 0) : 0;
    const inputIds = rows.map((r) => (r.length < target ? r.concat(new Array<number>(target - r.length).fill(padId)) : r));
    const attentionMask = rows.map((r, i) => inputIds[i].map((_, j) => (j < r.length ? 1 : 0)));
    return { inputIds, attentionMask };
  }

  /**
   * Text of `ids`: byte-level tokens back to UTF-8 (invalid bytes become U+FFFD), `</w>` to
   * spaces, trimmed. Text comes back lower-cased and whitespace-normalized.
   * @example
   * tok.decode([49406, 320, 2368, 49407], { skipSpecialTokens: true }); // "a cat"
   */
  decode(ids: number[], options: ClipDecodeOptions = {}): string {
    const who = "CLIPTokenizer.decode";
    if (!Array.isArray(ids)) throw new Error(`${who}: expected ids to be number[] but received ${describe(ids)}`);
    const skip = options?.skipSpecialTokens ?? false;
    const bytes: number[] = [];
    ids.forEach((id, i) => {
      if (skip && (id === this.bosTokenId || id === this.eosTokenId || id === this.padTokenId)) return;
      const tok = Number.isInteger(id) ? this.decoder.get(id) : undefined;
      if (tok === undefined) throw new Error(`${who}: ids[${i}] = ${String(id)} is not a token id of this vocabulary`);
      for (const ch of tok) {
        const b = BYTE_DECODER.get(ch);
        if (b !== undefined) bytes.push(b);
        else for (const x of Buffer.from(ch, "utf8")) bytes.push(x);
      }
    });
    const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(Uint8Array.from(bytes));
    return pyStrip(text.replace(/<\/w>/g, " "));
  }

  /**
   * {@link decode} for each row.
   * @example
   * tok.batchDecode(tok.encode(["a cat", "a dog"]).inputIds, { skipSpecialTokens: true }); // ["a cat", "a dog"]
   */
  batchDecode(ids: number[][], options: ClipDecodeOptions = {}): string[] {
    if (!Array.isArray(ids)) {
      throw new Error(`CLIPTokenizer.batchDecode: expected ids to be number[][] but received ${describe(ids)}`);
    }
    return ids.map((row) => this.decode(row, options));
  }

  /**
   * Writes `vocab.json`, `merges.txt` and `tokenizer_config.json` (transformers layout)
   * so that {@link fromDirectory} gives the same tokenizer back.
   * @example
   * tok.saveDirectory("out/tokenizer");
   * CLIPTokenizer.fromDirectory("out/tokenizer").encode("a cat"); // same ids
   */
  saveDirectory(dir: string): void {
    if (typeof dir !== "string") {
      throw new Error(`CLIPTokenizer.saveDirectory: expected a directory path but received ${describe(dir)}`);
    }
    fs.mkdirSync(dir, { recursive: true });
    const entries = [...this.encoder].sort((a, b) => a[1] - b[1]);
    const vocab = "{" + entries.map(([t, id]) => `${JSON.stringify(t)}: ${id}`).join(", ") + "}";
    fs.writeFileSync(path.join(dir, "vocab.json"), vocab + "\n");
    fs.writeFileSync(path.join(dir, "merges.txt"), "#version: 0.2\n" + this.merges.map((m) => m.join(" ") + "\n").join(""));
    const config = {
      add_prefix_space: false,
      bos_token: BOS,
      do_lower_case: true,
      eos_token: EOS,
      errors: "replace",
      model_max_length: this.modelMaxLength,
      pad_token: this.padToken,
      tokenizer_class: "CLIPTokenizer",
      unk_token: EOS,
    };
    fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(config, null, 2) + "\n");
  }

  /** BPE of one byte-mapped piece; results cached per piece. */
  private bpe(piece: string): string[] {
    const hit = this.cache.get(piece);
    if (hit) return hit;
    let word = Array.from(piece);
    word[word.length - 1] += "</w>";
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best];
      const second = word[best + 1];
      const merged: string[] = [];
      let i = 0;
      while (i < word.length) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(word[i++]);
        }
      }
      word = merged;
    }
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(piece, word);
    return word;
  }
}
