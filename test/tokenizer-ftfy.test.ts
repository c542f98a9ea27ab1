import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLIPTokenizer } from "../lib/tokenizers";
import { BYTE_ORDER } from "../lib/tokenizers/clip_text";
import { fixEncoding, fixText, isBad } from "../lib/tokenizers/ftfy";

// Reference from scripts/fixtures/clip_ftfy_ref.py (ftfy 6.3.1 in Python; see its docstring).
interface FtfyCase { group: string; text: string; fixed: string; ids: number[]; hfIds?: number[] }
interface FtfyRef {
  ftfy: string;
  vocabSha256: string;
  hfFiles: Record<string, string>;
  cases: FtfyCase[];
  badness: [string, boolean][];
}
const ref: FtfyRef = JSON.parse(fs.readFileSync(path.join(__dirname, "fixtures", "clip_ftfy_ref.json"), "utf8"));
const VOCAB_GZ = path.join(__dirname, "..", "data", "clip", "bpe_simple_vocab_16e6.txt.gz");
const NUM_MERGES = 49152 - 256 - 2;

const show = (s: string) => JSON.stringify(s.length > 60 ? s.slice(0, 60) + "..." : s);
/** Mismatches as readable lines, so one failure shows every failing prompt. */
function mismatches<T>(cases: FtfyCase[], actual: (c: FtfyCase) => T, expected: (c: FtfyCase) => T): string[] {
  const bad: string[] = [];
  for (const c of cases) {
    const got = actual(c);
    if (JSON.stringify(got) !== JSON.stringify(expected(c))) {
      bad.push(`${c.group}: ${show(c.text)} -> ${JSON.stringify(got)}, expected ${JSON.stringify(expected(c))}`);
    }
  }
  return bad;
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "clip-ftfy-"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("fixText (ftfy.fix_text port)", () => {
  it("fixes the basic cases like ftfy 6.3.1", () => {
    expect(fixText("cafÃ©")).toBe("café");
    expect(fixText("“quoted”")).toBe('"quoted"');
    expect(fixText("ﬁne")).toBe("fine");
    expect(fixText("ＡＢＣ")).toBe("ABC");
    expect(fixText("\x1b[31mred\x1b[0m")).toBe("red");
    expect(fixText("\ufeffhi")).toBe("hi");
    expect(fixText("a\x85b")).toBe("a…b");
    expect(fixText("“quoted” ﬁne ＡＢＣ")).toBe('"quoted" fine ABC');
    expect(fixText("The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.")).toBe("The Mona Lisa doesn't have eyebrows.");
    expect(fixText("voilÃ le travail")).toBe("voilà le travail");
    expect(fixText("line1 <tag>\nline2 &amp;")).toBe("line1 <tag>\nline2 &amp;"); // "<" turns unescaping off
    expect(fixEncoding("sÃ³")).toBe("só");
    expect([isBad("cafÃ©"), isBad("café")]).toEqual([true, false]);
  });

  it(`equals ftfy ${ref.ftfy} on every fixture prompt`, () => {
    expect(ref.cases.length).toBeGreaterThanOrEqual(300);
    const bad = mismatches(ref.cases, (c) => fixText(c.text), (c) => c.fixed);
    expect(bad, `${bad.length} prompts differ from ftfy.fix_text:\n${bad.join("\n")}`).toEqual([]);
  });

  it("agrees with ftfy's badness heuristic (is_bad)", () => {
    const bad = ref.badness.filter(([t, expected]) => isBad(t) !== expected).map(([t, e]) => `${show(t)}: expected ${e}`);
    expect(bad, bad.join("\n")).toEqual([]);
  });

  it("returns plain ASCII prompts unchanged and fast", () => {
    const prompt = "a photo of an astronaut riding a horse on mars, highly detailed, 8k, trending on artstation";
    expect(fixText(prompt)).toBe(prompt);
    expect(fixText("tab\tand\nnew line & <b> &#x;")).toBe("tab\tand\nnew line & <b> &#x;");
    const start = performance.now();
    for (let i = 0; i < 20_000; i++) fixText(prompt);
    expect(performance.now() - start).toBeLessThan(1000);
  });

  it("replaces lone surrogates with U+FFFD and keeps pairs", () => {
    expect(fixText("a\ud800b\udc00c")).toBe("a\ufffdb\ufffdc");
    expect(fixText("🐱\ud83d")).toBe("🐱\ufffd");
  });
});

describe("CLIPTokenizer with ftfy matches the Python reference", () => {
  it("uses the vocabulary the fixture was generated from", () => {
    expect(createHash("sha256").update(fs.readFileSync(VOCAB_GZ)).digest("hex")).toBe(ref.vocabSha256);
  });

  it("gives OpenAI CLIP's ids (ftfy + html.unescape) on every fixture prompt", () => {
    const tok = CLIPTokenizer.fromBuiltin();
    const encode = (c: FtfyCase) => tok.encode(c.text, { padding: "none", truncation: false }).inputIds[0];
    const bad = mismatches(ref.cases, encode, (c) => c.ids);
    expect(bad, `${bad.length} prompts get other ids:\n${bad.join("\n")}`).toEqual([]);
    // transformers' slow CLIPTokenizer skips html.unescape: it differs only where an entity is left.
    for (const c of ref.cases.filter((x) => x.hfIds)) expect(c.fixed, c.text).toMatch(/&/);
  });

  it("loads the Hugging Face tokenizer/ folder the fixture used via fromDirectory, same ids", () => {
    const lines = gunzipSync(fs.readFileSync(VOCAB_GZ)).toString("utf8").split("\n").slice(1, NUM_MERGES + 1);
    const merges = lines.map((l) => l.split(" "));
    const vocab = [...BYTE_ORDER, ...BYTE_ORDER.map((b) => b + "</w>"), ...merges.map((m) => m.join("")), "<|startoftext|>", "<|endoftext|>"];
    const dir = path.join(tmp, "tokenizer");
    fs.mkdirSync(dir);
    // Byte for byte what clip_ftfy_ref.py wrote with json.dump(ensure_ascii=False).
    fs.writeFileSync(path.join(dir, "vocab.json"), "{" + vocab.map((t, i) => `${JSON.stringify(t)}: ${i}`).join(", ") + "}");
    fs.writeFileSync(path.join(dir, "merges.txt"), "#version: 0.2\n" + merges.map((m) => m.join(" ") + "\n").join(""));
    for (const [name, sha] of Object.entries(ref.hfFiles)) {
      expect(createHash("sha256").update(fs.readFileSync(path.join(dir, name))).digest("hex"), name).toBe(sha);
    }
    const specials = { bos_token: "<|startoftext|>", eos_token: "<|endoftext|>", unk_token: "<|endoftext|>", pad_token: "<|endoftext|>" };
    fs.writeFileSync(path.join(dir, "special_tokens_map.json"), JSON.stringify(specials));
    fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify({ ...specials, model_max_length: 77, do_lower_case: true }));
    const tok = CLIPTokenizer.fromDirectory(dir);
    expect([tok.vocabSize, tok.padTokenId, tok.modelMaxLength]).toEqual([49408, 49407, 77]);
    const encode = (c: FtfyCase) => tok.encode(c.text, { padding: "none", truncation: false }).inputIds[0];
    const bad = mismatches(ref.cases, encode, (c) => c.ids);
    expect(bad, `${bad.length} prompts get other ids:\n${bad.join("\n")}`).toEqual([]);
  });
});
