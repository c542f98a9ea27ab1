import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import * as td from "../lib";

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "td-instruct-data-"));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe("InstructPix2Pix edit captions", () => {
  it("templates: every ordered pair of different nouns once per round, the same noun's template on both sides, seeded", () => {
    const nouns = ["shirt", "dress", "ankle boot"];
    const edits = td.templateEditCaptions({ nouns, captionTemplates: ["a photo of {a} {name}", "{a} {name}"], seed: 3 });
    expect(edits).toHaveLength(6);
    const pairs = edits.map((e) => `${e.input} -> ${e.edited}`);
    for (const e of edits) {
      const source = nouns.find((n) => e.input.endsWith(` ${n}`))!;
      const target = nouns.find((n) => e.edited.endsWith(` ${n}`))!;
      expect(source).not.toBe(target);
      expect(e.input.replace(source, "X").replace(/\ban? X$/, "A X")).toBe(e.edited.replace(target, "X").replace(/\ban? X$/, "A X")); // one caption template
      expect(e.instruction).toContain(target);
      expect(e.instruction).not.toMatch(/\{|\}/);
    }
    expect(new Set(edits.map((e) => `${nouns.findIndex((n) => e.input.endsWith(n))}${nouns.findIndex((n) => e.edited.endsWith(n))}`)).size).toBe(6);
    expect(edits.some((e) => e.edited.endsWith("an ankle boot"))).toBe(true);
    expect(td.templateEditCaptions({ nouns, captionTemplates: ["{a} {name}", "a photo of {a} {name}"], seed: 3 })).not.toEqual(edits);
    expect(td.templateEditCaptions({ nouns, captionTemplates: ["a photo of {a} {name}", "{a} {name}"], seed: 3 }).map((e) => `${e.input} -> ${e.edited}`)).toEqual(pairs);
    const twelve = td.templateEditCaptions({ nouns, captionTemplates: ["{a} {name}"], count: 12 });
    const counts = new Map<string, number>();
    for (const e of twelve) counts.set(`${e.input}>${e.edited}`, (counts.get(`${e.input}>${e.edited}`) ?? 0) + 1);
    expect([...counts.values()]).toEqual([2, 2, 2, 2, 2, 2]); // two full rounds
    expect(td.fillEditTemplate("change the {source} into {a} {name}", "ankle boot", "sneaker")).toBe("change the sneaker into an ankle boot");
  });

  it("templates and a user's JSONL: bad input is named", () => {
    expect(() => td.templateEditCaptions({ nouns: ["shirt"], captionTemplates: ["{a} {name}"] })).toThrow("templateEditCaptions: an edit needs at least two different nouns");
    expect(() => td.templateEditCaptions({ nouns: ["a", "b"], captionTemplates: [] })).toThrow("templateEditCaptions captionTemplates");
    const file = path.join(scratch, "edits.jsonl");
    fs.writeFileSync(file, `${JSON.stringify({ input: "a shirt", instruction: "make it red", edited: "a red shirt" })}\n\n`);
    expect(td.readEditCaptions(file)).toEqual([{ input: "a shirt", instruction: "make it red", edited: "a red shirt" }]);
    fs.appendFileSync(file, `${JSON.stringify({ input: "a shirt", edited: "a bag" })}\n`);
    expect(() => td.readEditCaptions(file)).toThrow(`readEditCaptions: ${file}:3 has no "instruction" text`);
    fs.writeFileSync(file, "{oops\n");
    expect(() => td.readEditCaptions(file)).toThrow(`readEditCaptions: ${file}:1 is not JSON`);
  });
});

describe("edit-triplet folders", () => {
  it("round trip: written triplets read back as (edited, instruction, input) in [-1, 1], in diffusers' columns", async () => {
    const dir = path.join(scratch, "triplets");
    const writer = new td.EditTripletWriter(dir);
    const g = new td.Generator(0);
    const written = Array.from({ length: 3 }, () => ({ input: td.rand([1, 8, 8], { generator: g }), edited: td.rand([1, 8, 8], { generator: g }) }));
    for (const [k, t] of written.entries()) await writer.add({ ...t, instruction: `edit ${k}`, inputCaption: "a shirt", editedCaption: "a bag", extra: { score: k } });
    expect(writer.count).toBe(3);
    const rows = fs.readFileSync(path.join(dir, td.EDIT_TRIPLETS_INDEX), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(rows[1]).toEqual({ input_image: "input/000001.png", edit_prompt: "edit 1", edited_image: "edited/000001.png", input_caption: "a shirt", edited_caption: "a bag", score: 1 });

    const data = new td.EditTripletDataset(dir, { channels: 1 });
    expect(data.length).toBe(3);
    for (const [k, t] of written.entries()) {
      const sample = await data.get(k);
      expect(sample.caption).toBe(`edit ${k}`);
      // 8-bit PNG: within half a level of 1/255, times 2 for [-1, 1]
      expect(td.tidy(() => sample.image.add(1).div(2).sub(t.edited).abs().max().item())).toBeLessThan(1 / 255 + 1e-6);
      expect(td.tidy(() => sample.conditionImage!.add(1).div(2).sub(t.input).abs().max().item())).toBeLessThan(1 / 255 + 1e-6);
      sample.image.dispose();
      sample.conditionImage!.dispose();
    }
    const batch = td.collate([await data.get(0), await data.get(2)], [0, 2]);
    expect(batch.conditionImages!.shape).toEqual([2, 1, 8, 8]);
    expect(batch.captions).toEqual(["edit 0", "edit 2"]);

    // A writer continues the numbering; a torn last line (killed mid-append) is dropped; filters select rows.
    const again = new td.EditTripletWriter(dir);
    expect(again.count).toBe(3);
    fs.appendFileSync(path.join(dir, td.EDIT_TRIPLETS_INDEX), '{"input_image": "input/0000');
    expect(new td.EditTripletDataset(dir).length).toBe(3);
    expect(new td.EditTripletDataset(dir, { filter: (row) => (row.score as number) >= 1 }).length).toBe(2);
    expect(() => new td.EditTripletDataset(dir, { filter: () => false })).toThrow("that options.filter keeps (of 3)");
    const sized = await new td.EditTripletDataset(dir, { size: 4, channels: 3 }).get(0);
    expect(sized.image.shape).toEqual([3, 4, 4]);
    expect(sized.conditionImage!.shape).toEqual([3, 4, 4]);
  });

  it("names what is wrong with a folder", async () => {
    expect(() => new td.EditTripletDataset(path.join(scratch, "nope"))).toThrow("EditTripletDataset dir");
    const dir = path.join(scratch, "bad");
    fs.mkdirSync(dir, { recursive: true });
    expect(() => new td.EditTripletDataset(dir)).toThrow(`EditTripletDataset: ${dir} has no metadata.jsonl rows`);
    fs.writeFileSync(path.join(dir, td.EDIT_TRIPLETS_INDEX), `${JSON.stringify({ input_image: "a.png", edited_image: "b.png" })}\n${JSON.stringify({ input_image: "a.png" })}\n`);
    expect(() => new td.EditTripletDataset(dir)).toThrow(`${td.EDIT_TRIPLETS_INDEX}:1 has no "edit_prompt"`);
    fs.writeFileSync(path.join(dir, td.EDIT_TRIPLETS_INDEX), `${JSON.stringify({ input_image: "a.png", edit_prompt: "x", edited_image: "b.png" })}\n`);
    await expect(new td.EditTripletDataset(dir).get(0)).rejects.toThrow(`EditTripletDataset: row 0 names b.png, which is not in ${dir}`);
  });
});

describe("InstructPix2Pix condition dropout", () => {
  it("one draw u splits as diffusers' script does: u < p text, p ≤ u < 2p both, 2p ≤ u < 3p image", () => {
    const p = 0.05;
    const tally = { text: 0, image: 0, both: 0, none: 0 };
    const n = 100_000;
    for (let i = 0; i < n; i++) {
      const { text, image } = td.instructDropout((i + 0.5) / n, p);
      if (text && image) tally.both++;
      else if (text) tally.text++;
      else if (image) tally.image++;
      else tally.none++;
    }
    expect(tally).toEqual({ text: 5000, both: 5000, image: 5000, none: 85000 });
    expect(td.instructDropout(0.04, p)).toEqual({ text: true, image: false });
    expect(td.instructDropout(0.07, p)).toEqual({ text: true, image: true });
    expect(td.instructDropout(0.12, p)).toEqual({ text: false, image: true });
    expect(td.instructDropout(1, p)).toEqual({ text: false, image: false }); // no dropout drawn
  });

  it("bad input to the helpers is named (a child-process fuzz of 4,000 calls found these unnamed)", () => {
    expect(() => td.instructDropout(Number.NaN, 0.05)).toThrow("instructDropout draw");
    expect(() => td.fillEditTemplate(null as never, "dress")).toThrow("Expected string for fillEditTemplate template but received null");
    expect(() => td.imageConditionedInput(td.rand([2, 1, 4, 4]), null as never, 0.05)).toThrow("imageConditionedInput batch");
    expect(() => td.imageConditionedInput(td.rand([2, 1, 4, 4]), { conditionImages: td.rand([2, 1, 2, 2]), dropDraws: [0, 1] }, 0.05)).toThrow(
      "imageConditionedInput: condition images of shape [2, 1, 2, 2] for a sample of shape [2, 1, 4, 4]",
    );
    expect(() => td.imageConditionedInput(td.rand([2, 1, 4, 4]), { conditionImages: td.rand([2, 1, 4, 4]), dropDraws: [0] }, 0.05)).toThrow("array of 2 dropout draws");
    expect(() => td.readEditCaptions(scratch)).toThrow("Expected existing JSONL file for readEditCaptions file");
    expect(() => new td.EditTripletDataset(scratch, null as never)).toThrow("Expected options object for EditTripletDataset options");
    expect(() => new td.EditTripletWriter("/dev/null/edits")).toThrow("EditTripletWriter: cannot create the triplet folder /dev/null/edits");
  });
});
