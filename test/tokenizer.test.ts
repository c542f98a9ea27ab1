import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLIPTokenizer } from "../lib/tokenizers";
import { withEnv } from "./helpers";

// Expected ids come from scripts/fixtures/clip_tokenizer_ref.py (see its docstring to regenerate).
interface RefCase { group: string; text: string; ids: number[]; decoded: string; ids77?: number[] }
interface Ref {
  vocabSha256: string;
  vocabSize: number;
  firstTokens: string[];
  cases: RefCase[];
  decodes: { ids: number[]; skipSpecialTokens: boolean; text: string }[];
}
const ref: Ref = JSON.parse(fs.readFileSync(path.join(__dirname, "fixtures", "clip_tokenizer_ref.json"), "utf8"));
const VOCAB_GZ = path.join(__dirname, "..", "data", "clip", "bpe_simple_vocab_16e6.txt.gz");
const BOS = 49406;
const EOS = 49407;

let tok: CLIPTokenizer;
let tmp: string;
beforeAll(() => {
  tok = CLIPTokenizer.fromBuiltin();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "clip-tok-"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const label = (c: RefCase) => `${c.group}: ${JSON.stringify(c.text.length > 50 ? c.text.slice(0, 50) + "..." : c.text)}`;
const padTo = (ids: number[], n: number, pad: number) => ids.concat(new Array(Math.max(0, n - ids.length)).fill(pad));

describe("CLIPTokenizer matches the Python reference", () => {
  it("uses the vocabulary the fixture was generated from", () => {
    const sha = createHash("sha256").update(fs.readFileSync(VOCAB_GZ)).digest("hex");
    expect(sha).toBe(ref.vocabSha256);
    expect(tok.vocabSize).toBe(ref.vocabSize);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.modelMaxLength]).toEqual([BOS, EOS, EOS, 77]);
    expect(CLIPTokenizer.fromBuiltin()).toBe(tok); // cached
  });

  it.each(ref.cases.map((c) => [label(c), c] as const))("ids of %s", (_name, c) => {
    expect(tok.encode(c.text, { padding: "none", truncation: false }).inputIds).toEqual([c.ids]);
    expect(tok.tokenize(c.text)).toHaveLength(c.ids.length - 2);
    expect(tok.decode(c.ids, { skipSpecialTokens: true })).toBe(c.decoded);
  });

  it("pads to 77 with <|endoftext|> and truncates keeping <|endoftext|> last, like clip.tokenize", () => {
    const { inputIds, attentionMask } = tok.encode(ref.cases.map((c) => c.text));
    ref.cases.forEach((c, i) => {
      const expected = c.ids77 ?? padTo(c.ids, 77, EOS);
      expect(inputIds[i], label(c)).toEqual(expected);
      expect(attentionMask[i]).toEqual(padTo(new Array(Math.min(c.ids.length, 77)).fill(1), 77, 0));
    });
    const over = ref.cases.filter((c) => c.ids.length > 77);
    expect(over.length).toBeGreaterThanOrEqual(2);
    expect(ref.cases.some((c) => c.ids.length === 77)).toBe(true);
    for (const c of over) expect(c.ids77?.[76]).toBe(EOS);
  });

  it.each(ref.decodes.map((d, i) => [i, d] as const))("decode case %i", (_i, d) => {
    expect(tok.decode(d.ids, { skipSpecialTokens: d.skipSpecialTokens })).toBe(d.text);
  });
});

describe("CLIPTokenizer.encode options", () => {
  it("padding longest / none / max_length with attention masks", () => {
    const texts = ["a cat", "a photo of a red dog", ""];
    const raw = texts.map((t) => tok.encode(t, { padding: "none" }).inputIds[0]);
    const longest = tok.encode(texts, { padding: "longest" });
    const n = Math.max(...raw.map((r) => r.length));
    expect(longest.inputIds).toEqual(raw.map((r) => padTo(r, n, EOS)));
    expect(longest.attentionMask).toEqual(raw.map((r) => padTo(r.map(() => 1), n, 0)));
    expect(longest.inputIds[2]).toEqual(padTo([BOS, EOS], n, EOS));

    const none = tok.encode(texts, { padding: "none" });
    expect(none.inputIds.map((r) => r.length)).toEqual(raw.map((r) => r.length));
    expect(none.attentionMask.flat().every((m) => m === 1)).toBe(true);

    const fixed = tok.encode(texts, { maxLength: 10, padTokenId: 0 });
    expect(fixed.inputIds.every((r) => r.length === 10)).toBe(true);
    expect(fixed.inputIds[0]).toEqual(padTo(raw[0], 10, 0));
    expect(tok.encode([], { padding: "longest" })).toEqual({ inputIds: [], attentionMask: [] });
  });

  it("truncation keeps the first maxLength-1 ids then <|endoftext|>; truncation:false keeps all", () => {
    const long = ref.cases.find((c) => c.ids.length > 100)!;
    const five = tok.encode(long.text, { maxLength: 5 });
    expect(five.inputIds[0]).toEqual([...long.ids.slice(0, 4), EOS]);
    expect(five.attentionMask[0]).toEqual([1, 1, 1, 1, 1]);
    expect(tok.encode(long.text, { maxLength: 2 }).inputIds[0]).toEqual([BOS, EOS]);
    expect(tok.encode(long.text, { truncation: false }).inputIds[0]).toEqual(long.ids);
  });

  it("decode round trip gives lower-cased, whitespace-normalized text", () => {
    const prompts = ["  A Photo\tof the   Eiffel Tower at NIGHT\n", "Café au lait 東京 🐱", "ok"];
    const enc = tok.encode(prompts, { padding: "max_length" });
    expect(tok.batchDecode(enc.inputIds, { skipSpecialTokens: true })).toEqual([
      "a photo of the eiffel tower at night",
      "café au lait 東京 🐱",
      "ok",
    ]);
    expect(tok.decode(enc.inputIds[2])).toBe(`<|startoftext|>ok <|endoftext|>${"<|endoftext|>".repeat(74)}`);
  });

  it("encodes lone surrogates as U+FFFD instead of throwing", () => {
    expect(tok.encode("a\ud800b").inputIds).toEqual(tok.encode("a\ufffdb").inputIds);
  });
});

describe("CLIPTokenizer files", () => {
  beforeAll(() => tok.saveDirectory(path.join(tmp, "sd15")));

  it("saveDirectory / fromDirectory / fromFiles round trip gives equal ids", () => {
    const dir = path.join(tmp, "sd15");
    expect(fs.readdirSync(dir).sort()).toEqual(["merges.txt", "tokenizer_config.json", "vocab.json"]);
    const vocab: Record<string, number> = JSON.parse(fs.readFileSync(path.join(dir, "vocab.json"), "utf8"));
    const byId = new Map(Object.entries(vocab).map(([t, id]) => [id, t]));
    expect([0, 255, 256, 511, 512, 49405].map((id) => byId.get(id))).toEqual(ref.firstTokens);
    expect(fs.readFileSync(path.join(dir, "merges.txt"), "utf8").split("\n", 2)).toEqual(["#version: 0.2", "i n"]);
    const back = CLIPTokenizer.fromDirectory(dir);
    const viaFiles = CLIPTokenizer.fromFiles(path.join(dir, "vocab.json"), path.join(dir, "merges.txt"));
    const texts = ref.cases.map((c) => c.text);
    expect(back.encode(texts)).toEqual(tok.encode(texts));
    expect(viaFiles.encode(texts, { padding: "none", truncation: false }).inputIds).toEqual(ref.cases.map((c) => c.ids));
    expect([back.vocabSize, back.padTokenId, back.modelMaxLength]).toEqual([tok.vocabSize, EOS, 77]);
  });

  it("reads pad_token and model_max_length from tokenizer_config.json (SD 2.x pads with '!')", () => {
    const dir = path.join(tmp, "sd2");
    fs.mkdirSync(dir);
    for (const f of ["vocab.json", "merges.txt", "tokenizer_config.json"]) fs.copyFileSync(path.join(tmp, "sd15", f), path.join(dir, f));
    const cfgPath = path.join(dir, "tokenizer_config.json");
    const cfg = JSON.parse(fs.readFileSync(cfgPath, "utf8"));
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, pad_token: { content: "!", lstrip: false }, model_max_length: 20 }));
    const sd2 = CLIPTokenizer.fromDirectory(dir);
    expect([sd2.padTokenId, sd2.modelMaxLength]).toEqual([0, 20]);
    const { inputIds, attentionMask } = sd2.encode("a cat");
    expect(inputIds[0]).toEqual(padTo(tok.encode("a cat", { padding: "none" }).inputIds[0], 20, 0));
    expect(attentionMask[0].filter((m) => m === 1)).toHaveLength(4);
    expect(sd2.decode(inputIds[0], { skipSpecialTokens: true })).toBe("a cat");
    sd2.saveDirectory(dir);
    expect(JSON.parse(fs.readFileSync(cfgPath, "utf8"))).toMatchObject({ pad_token: "!", model_max_length: 20 });
  });

  it("builds a small vocabulary from a custom merges .gz", () => {
    const file = path.join(tmp, "tiny.txt.gz");
    fs.writeFileSync(file, gzipSync("#header\nc a\nca t</w>\n"));
    const tiny = CLIPTokenizer.fromMergesGz(file);
    expect([tiny.vocabSize, tiny.bosTokenId, tiny.eosTokenId]).toEqual([516, 514, 515]);
    expect(tiny.tokenize("Cat cab")).toEqual(["cat</w>", "ca", "b</w>"]);
    expect(tiny.encode("cat", { padding: "none" }).inputIds[0]).toEqual([514, 513, 515]);
  });

  it("TORCH_DIFFUSION_CLIP_VOCAB selects the builtin file", () => {
    withEnv({ TORCH_DIFFUSION_CLIP_VOCAB: path.join(tmp, "missing.txt.gz") }, () =>
      expect(() => CLIPTokenizer.fromBuiltin()).toThrow(/TORCH_DIFFUSION_CLIP_VOCAB.*missing\.txt\.gz/));
    withEnv({ TORCH_DIFFUSION_CLIP_VOCAB: VOCAB_GZ }, () => expect(CLIPTokenizer.fromBuiltin().vocabSize).toBe(49408));
  });
});

describe("CLIPTokenizer errors", () => {
  const bad = (v: unknown) => v as never;
  it("rejects bad inputs with messages naming the problem", () => {
    expect(() => tok.encode(bad(42))).toThrow(
      "CLIPTokenizer.encode: expected text to be a string or string[] but received number",
    );
    expect(() => tok.encode(bad(["ok", null]))).toThrow("expected text[1] to be a string but received null");
    expect(() => tok.encode("a", { maxLength: 1 })).toThrow(/maxLength must be an integer >= 2.*received 1/);
    expect(() => tok.encode("a", { maxLength: 7.5 })).toThrow(/maxLength/);
    expect(() => tok.encode("a", { padding: bad("max") })).toThrow(/padding must be .*"max"/);
    expect(() => tok.encode("a", { truncation: bad("yes") })).toThrow(/truncation must be a boolean/);
    expect(() => tok.encode("a", { padTokenId: -1 })).toThrow(/padTokenId/);
    expect(() => tok.tokenize(bad(undefined))).toThrow("CLIPTokenizer.tokenize: expected text to be a string but received undefined");
    expect(() => tok.decode([320, 99999])).toThrow("CLIPTokenizer.decode: ids[1] = 99999 is not a token id");
    expect(() => tok.decode(bad("320"))).toThrow(/expected ids to be number\[\]/);
  });

  it("names missing or malformed files", () => {
    const missing = path.join(tmp, "nope");
    expect(() => CLIPTokenizer.fromMergesGz(path.join(missing, "v.txt.gz"))).toThrow(
      `CLIPTokenizer.fromMergesGz: merges file not found: ${path.join(missing, "v.txt.gz")}`,
    );
    expect(() => CLIPTokenizer.fromDirectory(missing)).toThrow(`directory not found: ${missing}`);
    fs.mkdirSync(missing);
    expect(() => CLIPTokenizer.fromDirectory(missing)).toThrow(`vocab file not found: ${path.join(missing, "vocab.json")}`);
    fs.writeFileSync(path.join(missing, "vocab.json"), "{}");
    expect(() => CLIPTokenizer.fromFiles(path.join(missing, "vocab.json"), path.join(missing, "merges.txt"))).toThrow(
      `CLIPTokenizer.fromFiles: merges file not found: ${path.join(missing, "merges.txt")}`,
    );
    fs.writeFileSync(path.join(missing, "merges.txt"), "#version: 0.2\ni n\nbroken\n");
    expect(() => CLIPTokenizer.fromDirectory(missing)).toThrow(`${path.join(missing, "merges.txt")}:3: expected "a b"`);
    fs.writeFileSync(path.join(missing, "merges.txt"), "#version: 0.2\ni n\n");
    expect(() => CLIPTokenizer.fromDirectory(missing)).toThrow(/token "<\|startoftext\|>" is not in the vocabulary/);
    fs.writeFileSync(path.join(missing, "vocab.json"), "[1, 2");
    expect(() => CLIPTokenizer.fromDirectory(missing)).toThrow(`invalid JSON in ${path.join(missing, "vocab.json")}`);
  });
});
