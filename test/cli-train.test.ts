import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { runCli } from "./helpers/cli";
import { fixtures } from "./helpers";

const tinySd = path.join(fixtures, "models", "tiny-sd"); // latent: VAE, 3-channel 16×16 images
const builtin = path.join(__dirname, "..", "models", "builtin"); // pixel space, 1-channel 32×32
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-cli-train-"));

/** The command in-process; `onStderr` sees each stderr write (to abort on a progress line). */
const train = (args: string[], options: { signal?: AbortSignal; onStderr?: (text: string) => void } = {}) => runCli(["train", ...args], options);

/** The U-Net weights of a model directory, by name, as plain arrays. */
function unetWeights(dir: string): Record<string, number[]> {
  const unet = td.loadComponent(path.join(dir, "unet"));
  try {
    return td.tidy(() => Object.fromEntries(Object.entries(unet.namedParameters()).map(([name, p]) => [name, Array.from(p.toFloat32Array())])));
  } finally {
    unet.dispose();
  }
}

const maxDifference = (a: Record<string, number[]>, b: Record<string, number[]>) =>
  Math.max(...Object.keys(a).map((name) => Math.max(...a[name].map((v, i) => Math.abs(v - b[name][i])))));

describe("torch-diffusion train", () => {
  const fashionOnTinySd = ["--model", tinySd, "--data", "fashion-mnist", "--steps", "4", "--batch", "2", "--checkpoint-every", "2", "--lr", "1e-3"];

  it("fine-tunes a latent model on Fashion-MNIST into a new model directory that generates", async () => {
    const out = path.join(tmp, "fashion-tiny-sd");
    const result = await train([...fashionOnTinySd, "--out", out]);
    expect(result.stderr).toMatch(/train: step 2\/4 loss \d\.\d{4}\ntrain: step 4\/4 loss \d\.\d{4}\ntrain: 4 steps in [\d.]+ s, loss \(mean of the last 4\) \d\.\d{4}\n$/);
    expect(result).toMatchObject({ code: 0, stdout: `${out}\n` });
    const record = JSON.parse(fs.readFileSync(path.join(out, "training.json"), "utf8"));
    expect(record).toMatchObject({ steps: 4, batchSize: 2, objective: "epsilon", data: "fashion-mnist" });
    // Every file written is recorded (and so checked by loadModel); the checkpoints are not part of the model.
    const recorded = fs.readFileSync(path.join(out, td.CHECKSUMS_FILE), "utf8").trim().split("\n").map((line) => line.slice(66));
    expect(recorded).toContain("unet/model.pt");
    expect(recorded).toContain("training.json");
    expect(recorded.some((f) => f.startsWith("checkpoints"))).toBe(false);
    td.verifyDirectoryChecksums(out);
    // Only the U-Net changed; the text encoder and VAE are the source's files.
    expect(maxDifference(unetWeights(out), unetWeights(tinySd))).toBeGreaterThan(1e-5);
    for (const file of ["text_encoder/model.pt", "vae/model.pt", "scheduler/scheduler_config.json", "tokenizer/vocab.json"]) {
      expect(fs.readFileSync(path.join(out, file)).equals(fs.readFileSync(path.join(tinySd, file))), file).toBe(true);
    }
    const pipe = td.Text2ImagePipeline.fromPretrained(out);
    const { images } = await pipe.generate({ prompt: "a photo of a sneaker", numInferenceSteps: 2, generator: new td.Generator(0) });
    expect(images.shape).toEqual([1, 3, 16, 16]);
    images.dispose();
  });

  it("a run stopped by Ctrl-C resumes from its checkpoint to the same weights as an uninterrupted run", async () => {
    const whole = path.join(tmp, "whole");
    const split = path.join(tmp, "split");
    expect((await train([...fashionOnTinySd, "--out", whole])).code).toBe(0);
    const controller = new AbortController();
    const stopped = await train([...fashionOnTinySd, "--out", split], { signal: controller.signal, onStderr: (s) => s.startsWith("train: step 2/4") && controller.abort() });
    expect(stopped.code).toBe(130);
    expect(stopped.stderr).toContain(`train: stopped at step 2; a checkpoint is in ${path.join(split, "checkpoints")}: rerun the same command to resume\n`);
    expect(fs.existsSync(path.join(split, "unet"))).toBe(false);
    const resumed = await train([...fashionOnTinySd, "--out", split]);
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toContain("train: resuming from step 2 (");
    expect(maxDifference(unetWeights(split), unetWeights(whole))).toBe(0);
  });

  it("--ema writes the averaged weights: between the start and the trained ones", async () => {
    const out = path.join(tmp, "ema");
    expect((await train([...fashionOnTinySd, "--ema", "0.5", "--out", out])).code).toBe(0);
    expect(JSON.parse(fs.readFileSync(path.join(out, "training.json"), "utf8")).emaDecay).toBe(0.5);
    const plain = path.join(tmp, "whole"); // the same run without EMA, from the test above
    if (!fs.existsSync(path.join(plain, "unet"))) await train([...fashionOnTinySd, "--out", plain]);
    const [start, trained, averaged] = [unetWeights(tinySd), unetWeights(plain), unetWeights(out)];
    const moved = (w: Record<string, number[]>) => Math.sqrt(Object.keys(w).reduce((sum, n) => sum + w[n].reduce((a, v, i) => a + (v - start[n][i]) ** 2, 0), 0));
    expect(moved(averaged)).toBeGreaterThan(0);
    expect(moved(averaged)).toBeLessThan(moved(trained));
  });

  it("--lora-rank and --train-text-encoder reach fineTune: adapters on both networks, fused into OUT and in one PEFT file", async () => {
    const out = path.join(tmp, "lora-text-encoder");
    const result = await train([...fashionOnTinySd, "--out", out, "--lora-rank", "2", "--lora-alpha", "4", "--train-text-encoder", "--json"]);
    expect(result.code, result.stderr).toBe(0);
    const { record } = JSON.parse(result.stdout);
    expect(record).toMatchObject({ trainTextEncoder: true, lora: { rank: 2, alpha: 4, targets: ["to_q", "to_k", "to_v", "to_out.0"], textEncoderTargets: ["q_proj", "k_proj", "v_proj", "out_proj"], file: td.LORA_WEIGHTS_FILE } });
    const { tensors } = td.readSafetensors(path.join(out, td.LORA_WEIGHTS_FILE));
    expect(Object.keys(tensors).filter((k) => k.startsWith("text_encoder.")).length).toBe(16);
    expect(Object.keys(tensors).filter((k) => k.startsWith("unet.")).length).toBe(64);
    Object.values(tensors).forEach((t) => t.dispose());
    // Both written networks differ from the base; the VAE is the source's file.
    const weightsOf = (dir: string, component: string) => {
      const module = td.loadComponent(path.join(dir, component));
      try {
        return td.tidy(() => Object.fromEntries(Object.entries(module.namedParameters()).map(([name, p]) => [name, Array.from(p.toFloat32Array())])));
      } finally {
        module.dispose();
      }
    };
    expect(maxDifference(weightsOf(out, "text_encoder"), weightsOf(tinySd, "text_encoder"))).toBeGreaterThan(1e-5);
    expect(maxDifference(unetWeights(out), unetWeights(tinySd))).toBeGreaterThan(1e-5);
    expect(fs.readFileSync(path.join(out, "vae", "model.pt")).equals(fs.readFileSync(path.join(tinySd, "vae", "model.pt")))).toBe(true);
    td.verifyDirectoryChecksums(out);
    // Without --lora-rank: the whole text encoder trains, and no LoRA file is written.
    const full = path.join(tmp, "full-text-encoder");
    expect((await train([...fashionOnTinySd, "--steps", "2", "--out", full, "--train-text-encoder"])).code).toBe(0);
    expect(fs.existsSync(path.join(full, td.LORA_WEIGHTS_FILE))).toBe(false);
    expect(JSON.parse(fs.readFileSync(path.join(full, "training.json"), "utf8")).trainTextEncoder).toBe(true);
  });

  it("trains the pixel-space built-in model on an image folder with captions", async () => {
    const data = path.join(tmp, "folder");
    fs.mkdirSync(data);
    const captions: Record<string, string> = {};
    for (let i = 0; i < 3; i++) {
      await td.writeImage(td.rand([1, 40, 36], { generator: new td.Generator(i) }), path.join(data, `img${i}.png`)); // resized and cropped to 32×32
      captions[`img${i}.png`] = `a photo of a bag number ${i}`;
    }
    fs.writeFileSync(path.join(data, "captions.json"), JSON.stringify(captions));
    const out = path.join(tmp, "folder-builtin");
    const result = await train(["--model", builtin, "--data", data, "--steps", "2", "--batch", "2", "--out", out]);
    expect(result).toMatchObject({ code: 0, stdout: `${out}\n` });
    expect(JSON.parse(fs.readFileSync(path.join(out, "training.json"), "utf8"))).toMatchObject({ objective: "v_prediction", steps: 2 });
    expect(td.loadModel(out).unet?.config.in_channels).toBe(1);

    fs.rmSync(path.join(data, "captions.json"));
    const uncaptioned = await train(["--model", builtin, "--data", data, "--steps", "1", "--batch", "2", "--out", path.join(tmp, "uncaptioned")]);
    expect(uncaptioned.code).toBe(1);
    expect(uncaptioned.stderr).toMatch(/^torch-diffusion: --data: img(\d)\.png has no caption \(add captions\.json, metadata\.jsonl or img\1\.txt, or pass --caption\)\n$/);
    const oneCaption = await train(["--model", builtin, "--data", data, "--steps", "1", "--batch", "3", "--caption", "a bag", "--out", path.join(tmp, "one-caption")]);
    expect(oneCaption.code).toBe(0);
  });

  it("a finished run asked again (or for fewer steps) says so, trains nothing and keeps its record; stale temp files go", async () => {
    const out = path.join(tmp, "finished");
    const args = [...fashionOnTinySd, "--out", out];
    expect((await train(args)).code).toBe(0);
    const record = fs.readFileSync(path.join(out, "training.json"), "utf8");
    const model = fs.readFileSync(path.join(out, "unet", "model.pt"));
    const stale = path.join(out, "unet", ".model.pt.999999999.1700000000000.tmp"); // a killed writer's leftover
    fs.writeFileSync(stale, "partial");
    for (const steps of ["4", "2"]) {
      const again = await train([...args, "--steps", steps]);
      expect(again.code).toBe(0);
      expect(again.stderr).toContain(`checkpoints is at step 4, and ${steps} steps were asked: nothing to train; the model and its training.json are kept as they are`);
      expect(fs.readFileSync(path.join(out, "training.json"), "utf8")).toBe(record);
      expect(fs.readFileSync(path.join(out, "unet", "model.pt")).equals(model)).toBe(true);
    }
    expect(fs.existsSync(stale)).toBe(false);
  });

  it("fails before training when the output cannot be written", async () => {
    const out = path.join(__filename, "model"); // under a file: mkdir fails as on a read-only mount
    const result = await train([...fashionOnTinySd, "--out", out]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^torch-diffusion: fineTune: cannot write the output directory .*model: ENOTDIR/);
    expect(result.stderr).not.toContain("step");
  });

  it("rejects bad options with one line before loading anything", async () => {
    const cases: [string[], string][] = [
      [["--out", tmp], "--data is required"],
      [["--data", "mnist", "--out", tmp], '--data: expected fashion-mnist or an image folder but got "mnist"'],
      [["--data", "fashion-mnist"], "--out is required"],
      [["--data", "fashion-mnist", "--out", tmp, "--lr", "fast"], '--lr: expected a number in [0, 1] but got "fast"'],
      [["--data", "fashion-mnist", "--out", tmp, "--caption-dropout", "2"], '--caption-dropout: expected a number in [0, 1] but got "2"'],
      [["--data", "fashion-mnist", "--out", tmp, "--steps", "0"], '--steps: expected a positive integer but got "0"'],
      [["--data", "fashion-mnist", "--out", tmp, "--lora-rank", "0"], '--lora-rank: expected a positive integer but got "0"'],
      [["--data", "fashion-mnist", "--out", tmp, "--lora-rank", "2", "--lora-alpha", "big"], '--lora-alpha: expected a number but got "big"'],
      [["--data", "fashion-mnist", "--out", tmp, "--lora-alpha", "4"], "--lora-alpha needs --lora-rank"],
      [["--data", "fashion-mnist", "--out", tmp, "--train-text-encoder=yes"], "train: --train-text-encoder takes no value (see torch-diffusion train --help)"],
      [["--model", tinySd, "--data", "fashion-mnist", "--out", tinySd], "--out must differ from --model: the trained model is written as a new directory"],
      [["--model", tinySd, "--data", "fashion-mnist", "--out", __filename], `--out: ${__filename} exists and is not a directory`],
    ];
    for (const [args, message] of cases) {
      expect(await train(args), args.join(" ")).toEqual({ code: 1, stdout: "", stderr: `torch-diffusion: ${message}\n` });
    }
    const component = await train(["--model", path.join(fixtures, "models", "tiny-unet"), "--data", "fashion-mnist", "--out", path.join(tmp, "component")]);
    expect(component.code).toBe(1);
    expect(component.stderr).toMatch(/^torch-diffusion: loadModel: .*tiny-unet\/model_index.json is missing/);
  });
});
