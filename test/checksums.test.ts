import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { main } from "../lib/cli";
import { fixtures } from "./helpers";

const builtin = path.join(__dirname, "..", "models", "builtin");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-checksums-"));

/** Flips `count` bytes in the middle of a file (tensor data of a TorchScript archive), as bit rot or a bad copy would. */
function damage(file: string, count = 4000): void {
  const bytes = fs.readFileSync(file);
  const start = Math.floor(bytes.length / 2) - count / 2;
  for (let i = start; i < start + count; i++) bytes[i] ^= 0x5a;
  fs.writeFileSync(file, bytes);
}

describe("SHA-256 records of written files", () => {
  it("the shipped built-in model carries a sha256sum-format record that loadModel checks", () => {
    const record = fs.readFileSync(path.join(builtin, td.CHECKSUMS_FILE), "utf8").trim().split("\n");
    const files = record.map((line) => line.slice(66));
    expect(files).toContain("unet/model.pt");
    for (const line of record) expect(td.sha256File(path.join(builtin, line.slice(66)))).toBe(line.slice(0, 64));
    td.loadModel(builtin).dispose();
  });

  it("a damaged model file is an error naming it; verify: false and --no-verify load it anyway", async () => {
    const dir = path.join(tmp, "damaged");
    fs.cpSync(builtin, dir, { recursive: true });
    damage(path.join(dir, "unet", "model.pt"));
    const recorded = fs.readFileSync(path.join(builtin, td.CHECKSUMS_FILE), "utf8").split("\n").find((line) => line.endsWith("  unet/model.pt"))!.slice(0, 16);
    expect(() => td.loadModel(dir)).toThrow(`loadModel: ${path.join(dir, "unet", "model.pt")} does not match its recorded SHA-256 (expected ${recorded}…, got `);
    // Components not asked for are not read.
    td.loadModel(dir, { components: ["text_encoder", "tokenizer"] }).dispose();
    td.loadModel(dir, { verify: false }).dispose();
    let stderr = "";
    const io = { stdout: { write: () => true }, stderr: { write: (s: string) => (stderr += s), isTTY: false } };
    const args = ["generate", "a bag", "--model", dir, "--steps", "1", "--out", path.join(tmp, "x.png")];
    expect(await main(args, io)).toBe(1);
    expect(stderr).toMatch(/^torch-diffusion: loadModel: .*unet\/model\.pt does not match its recorded SHA-256 .*--no-verify loads it anyway\)\n$/);
    expect(await main([...args, "--no-verify"], io)).toBe(0);
  });

  it("checkpoints: a damaged one is refused by name, and resuming falls back to the one before", async () => {
    const dir = path.join(tmp, "ckpt");
    const model = td.load(path.join(fixtures, "training", "tiny_denoiser.pt"));
    const data = td.tensorDataset(td.keep(td.randn([8, 1, 8, 8], { generator: new td.Generator(0) })), { labels: [0, 1, 2, 3, 4, 5, 6, 7] });
    const options = { objective: "epsilon" as const, steps: 4, batchSize: 4, checkpoint: { dir, every: 2 }, condition: td.labelCondition({ nullLabel: 10 }) };
    const trainer = new td.Trainer(model, data, options);
    await trainer.run();
    trainer.dispose();
    const [first, second] = td.listCheckpoints(dir).map((c) => c.file);
    expect(fs.readFileSync(`${second}.sha256`, "utf8")).toBe(`${td.sha256File(second)}  ${path.basename(second)}\n`);
    damage(second, 64);
    expect(() => td.loadCheckpoint(second)).toThrow(`loadCheckpoint("${second}"): ${second} does not match its recorded SHA-256`);
    const latest = td.latestCheckpoint(dir);
    expect(latest?.file).toBe(first);
    td.disposeCheckpoint(latest!.checkpoint);
    model.dispose();
  });
});
