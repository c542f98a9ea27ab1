import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import * as td from "../lib";

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "td-edit-triplets-"));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

const builtin = td.loadModel(path.join(__dirname, "..", "models", "builtin"));
const edits = td.templateEditCaptions({ nouns: ["shirt", "dress", "pair of trousers"], captionTemplates: ["a photo of {a} {name}"], count: 3 });

/** A Prompt-to-Prompt pipeline that counts its calls. */
function countingPipe(): { pipe: td.PromptToPromptPipeline; calls: () => number } {
  const pipe = new td.PromptToPromptPipeline(builtin);
  let calls = 0;
  const generate = pipe.generate.bind(pipe);
  pipe.generate = (o) => {
    calls++;
    return generate(o);
  };
  return { pipe, calls: () => calls };
}

const settings = { candidatesPerEdit: 2, numInferenceSteps: 2, guidanceScale: 2, batchSize: 2, seed: 5 };
const indexOf = (dir: string) => fs.readFileSync(path.join(dir, td.EDIT_TRIPLETS_INDEX), "utf8").trim().split("\n").map((l) => JSON.parse(l));

describe("makeEditTriplets", () => {
  it("writes filtered Prompt-to-Prompt pairs with their scores, and a killed run resumes to the same folder", async () => {
    const whole = path.join(scratch, "whole");
    const { pipe, calls } = countingPipe();
    const accept = (c: td.EditCandidate) => (c.editIndex === 1 && c.candidate === 0 ? false : { score: c.editIndex * 10 + c.candidate });
    const report = await td.makeEditTriplets(pipe, edits, { ...settings, out: whole, accept });
    // Two word-swap edits in one batch, one refinement edit in another; two candidates each.
    expect(calls()).toBe(4);
    expect(report).toEqual({ candidates: 6, kept: 5, total: 5 });
    const rows = indexOf(whole);
    expect(rows.map((r) => [r.edit_index, r.candidate])).toEqual(expect.arrayContaining([[0, 0], [0, 1], [1, 1], [2, 0], [2, 1]]));
    for (const row of rows) {
      expect(row.score).toBe(row.edit_index * 10 + row.candidate);
      expect(row.edit_prompt).toBe(edits[row.edit_index].instruction);
      expect(row.input_caption).toBe(edits[row.edit_index].input);
      expect(row.cross_replace).toBeGreaterThanOrEqual(0.1);
      expect(row.cross_replace).toBeLessThanOrEqual(0.9);
    }
    // A finished folder: a rerun makes no calls.
    expect(await td.makeEditTriplets(pipe, edits, { ...settings, out: whole, accept })).toEqual({ candidates: 0, kept: 0, total: 5 });
    expect(calls()).toBe(4);

    // Stopped after the first call, then resumed: the same rows and the same images.
    const halves = path.join(scratch, "halves");
    const controller = new AbortController();
    const first = countingPipe();
    await expect(td.makeEditTriplets(first.pipe, edits, { ...settings, out: halves, accept, signal: controller.signal, onProgress: () => controller.abort() })).rejects.toThrow(/abort/i);
    const resumed = countingPipe();
    await td.makeEditTriplets(resumed.pipe, edits, { ...settings, out: halves, accept });
    expect(first.calls() + resumed.calls()).toBe(4);
    expect(indexOf(halves)).toEqual(rows);
    for (const row of rows) {
      for (const file of [row.input_image, row.edited_image]) expect(fs.readFileSync(path.join(halves, file)).equals(fs.readFileSync(path.join(whole, file))), file).toBe(true);
    }
    // The dataset reads them as training triplets.
    const data = new td.EditTripletDataset(whole, { channels: 1 });
    const sample = await data.get(0);
    expect(sample.conditionImage!.shape).toEqual([1, 32, 32]);
  });

  it("refuses to mix settings in one folder, and bad options", async () => {
    const dir = path.join(scratch, "mixed");
    const { pipe } = countingPipe();
    await td.makeEditTriplets(pipe, edits.slice(0, 1), { ...settings, candidatesPerEdit: 1, out: dir });
    await expect(td.makeEditTriplets(pipe, edits.slice(0, 1), { ...settings, candidatesPerEdit: 1, seed: 6, out: dir })).rejects.toThrow(`makeEditTriplets: ${dir} was made with other settings or edits`);
    await expect(td.makeEditTriplets(pipe, [], { out: dir })).rejects.toThrow("makeEditTriplets edits");
    await expect(td.makeEditTriplets(pipe, edits, { out: path.join(scratch, "x"), crossReplaceRange: [0.9, 0.1] })).rejects.toThrow("makeEditTriplets crossReplaceRange");
  });
});
