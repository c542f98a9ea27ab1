import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { fixtures, fromEncoded, maxRelativeError, readFixture, type EncodedTensor } from "./helpers";
import { settledTensorCount } from "./helpers/training";

const tinySd = path.join(fixtures, "models", "tiny-sd");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-lora-"));
const bytes = (t: td.Tensor) => Buffer.from(t.toFloat32Array().buffer);

/** A fixed U-Net input for tiny-sd: (2, 4, 8, 8) latents, two timesteps, (2, 77, 16) context. */
function fixedInput() {
  const g = new td.Generator(5);
  return { sample: td.keep(td.randn([2, 4, 8, 8], { generator: g })), timestep: [10, 500], encoderHiddenStates: td.keep(td.randn([2, 77, 16], { generator: g })) };
}
const input = fixedInput();
const predict = (model: td.DiffusionModel) => td.noGrad(() => model.predictSync(input));
/** Every U-Net parameter's bytes, by name. */
const weightBytes = (module: td.Module) => td.tidy(() => Object.fromEntries(Object.entries(module.namedParameters() as Record<string, td.Tensor>).map(([k, v]) => [k, bytes(v)])));

describe("safetensors", () => {
  it("round-trips every dtype, pads the header to 8 bytes and keeps metadata", () => {
    const tensors = {
      f32: td.tensor([[1.5, -2], [3, 4e-8]]),
      f16: td.tensor([0.5, -1, 65504], [3], { dtype: "float16" }),
      bf16: td.tensor([0.5, -1, 3.0e38], [3], { dtype: "bfloat16" }),
      i64: td.tensor(BigInt64Array.from([1n, -2n, 9007199254740993n]), [3]),
      u8: td.tensor(Uint8Array.from([0, 7, 255]), [3]),
      flag: td.tensor([true, false]),
      empty: td.zeros([0, 3]),
    };
    const buffer = td.safetensorsBytes(tensors, { format: "pt", note: "hi" });
    const headerLength = Number(buffer.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    expect(Object.keys(JSON.parse(buffer.subarray(8, 8 + headerLength).toString()))).toEqual(["__metadata__", "bf16", "empty", "f16", "f32", "flag", "i64", "u8"]);
    const back = td.readSafetensors(buffer);
    expect(back.metadata).toEqual({ format: "pt", note: "hi" });
    for (const [name, t] of Object.entries(tensors)) {
      expect(back.tensors[name].dtype).toBe(t.dtype);
      expect(back.tensors[name].shape).toEqual(t.shape);
      expect(Buffer.from(back.tensors[name].data().buffer)).toEqual(Buffer.from(t.data().buffer));
    }
    for (const t of [...Object.values(tensors), ...Object.values(back.tensors)]) t.dispose();
  });

  it("refuses damaged files with a message naming the problem", () => {
    const good = td.safetensorsBytes({ w: td.tidy(() => td.ones([4])) });
    expect(() => td.readSafetensors(good.subarray(0, 6))).toThrow("too short for a safetensors header");
    expect(() => td.readSafetensors(good.subarray(0, good.length - 4))).toThrow('"w" (F32 [4]) has data_offsets [0, 16] that do not match');
    const bad = Buffer.from(good);
    bad.write("{", 8 + 3);
    expect(() => td.readSafetensors(bad)).toThrow("the header is not JSON");
    expect(() => td.readSafetensors(path.join(tmp, "missing.safetensors"))).toThrow("no such file");
  });
});

describe("LoRA", () => {
  it("targets the attention projections; with B = 0 the model computes bit for bit as before", () => {
    const model = td.loadModel(tinySd);
    const before = bytes(predict(model));
    const lora = td.LoRA.create(model.unet!.module, { rank: 4 });
    // tiny-sd: 4 transformer blocks × (attn1, attn2) × (to_q, to_k, to_v, to_out.0).
    expect(lora.layers.length).toBe(32);
    expect(lora.layers.every((l) => /\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/.test(l.path))).toBe(true);
    const q = lora.layers.find((l) => l.path.endsWith("attn2.to_k"))!;
    expect(q.down.shape).toEqual([4, 16]); // A (r, in): cross-attention keys read the 16-d context
    expect(q.up.shape).toEqual([8, 4]); // B (out, r)
    lora.apply();
    expect(bytes(predict(model))).toEqual(before);
    lora.fuse();
    expect(bytes(predict(model))).toEqual(before);
    lora.dispose();
    model.dispose();
  });

  it("gradients reach A and B through the TorchScript module call, and no base weight", () => {
    const model = td.loadModel(tinySd);
    const lora = td.LoRA.create(model.unet!.module, { rank: 2, targets: [...td.LORA_ATTENTION_TARGETS, "conv1"] });
    expect(lora.layers.some((l) => l.path.endsWith("resnets.0.conv1") && l.down.shape.length === 4)).toBe(true);
    // B = 0 gives A no gradient on the first step; move B off zero first.
    td.noGrad(() => lora.layers.forEach((l) => td.tidy(() => l.up.copy_(td.randn(l.up.shape, { generator: new td.Generator(1) }).mul(0.1)))));
    td.tidy(() => {
      lora.apply();
      model.predictSync(input).square().mean().backward();
    });
    for (const l of lora.layers) {
      expect(l.down.grad, l.path).not.toBeNull();
      expect(l.up.grad, l.path).not.toBeNull();
      expect(td.tidy(() => l.up.grad!.abs().sum().item()), l.path).toBeGreaterThan(0);
    }
    // Every other weight is frozen; the adapted ones hold W0 + s·B·A (a graph node, not a leaf that could take a gradient).
    const adapted = new Set(lora.layers.map((l) => `${l.path}.weight`));
    for (const [name, p] of Object.entries(model.unet!.module.namedParameters() as Record<string, td.Tensor>)) {
      if (adapted.has(name)) expect(p.isLeaf, name).toBe(false);
      else expect([p.requiresGrad, p.grad], name).toEqual([false, null]);
      p.dispose();
    }
    for (const l of lora.layers) expect(l.base.grad).toBeNull();
    lora.dispose();
    model.dispose();
  });

  it("fused equals applied within float tolerance; unfuse restores the base bit for bit; scale 0 is the base", () => {
    const model = td.loadModel(tinySd);
    const base = bytes(predict(model));
    const lora = td.LoRA.create(model.unet!.module, { rank: 4, alpha: 8, init: "kaiming", seed: 3 });
    td.noGrad(() => lora.layers.forEach((l, i) => td.tidy(() => l.up.copy_(td.randn(l.up.shape, { generator: new td.Generator(i) }).mul(0.2)))));
    lora.apply();
    const applied = predict(model).toFloat32Array();
    lora.fuse();
    const fused = predict(model).toFloat32Array();
    expect(maxRelativeError(fused, applied)).toBeLessThan(1e-6);
    expect(maxRelativeError(fused, new Float32Array(base.buffer, base.byteOffset, base.length / 4))).toBeGreaterThan(1e-3); // the adapters matter
    lora.unfuse();
    expect(bytes(predict(model))).toEqual(base);
    lora.scale = 0;
    lora.fuse();
    expect(bytes(predict(model))).toEqual(base);
    lora.dispose();
    model.dispose();
  });

  it("a saved file has diffusers' PEFT keys and config, and loads back to the same model", () => {
    const model = td.loadModel(tinySd);
    const lora = td.LoRA.create(model.unet!.module, { rank: 2, alpha: 3 });
    td.noGrad(() => lora.layers.forEach((l, i) => td.tidy(() => l.up.copy_(td.randn(l.up.shape, { generator: new td.Generator(i) }).mul(0.2)))));
    lora.fuse();
    const expected = predict(model).toFloat32Array();
    const file = path.join(tmp, td.LORA_WEIGHTS_FILE);
    lora.save(file);
    const { tensors, metadata } = td.readSafetensors(file);
    const keys = Object.keys(tensors);
    expect(keys).toHaveLength(64);
    expect(keys.every((k) => /^unet\.(down|mid|up)_blocks?\..*\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.lora_[AB]\.weight$/.test(k))).toBe(true);
    expect(keys).toContain("unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_B.weight");
    expect(metadata.format).toBe("pt");
    expect(JSON.parse(metadata.lora_adapter_metadata)).toEqual({ "unet.r": 2, "unet.lora_alpha": 3, "unet.target_modules": ["to_q", "to_k", "to_v", "to_out.0"] });
    Object.values(tensors).forEach((t) => t.dispose());
    lora.dispose();
    model.dispose();

    const fresh = td.loadModel(tinySd);
    const loaded = td.LoRA.load(fresh.unet!.module, file);
    expect([loaded.rank, loaded.alpha, loaded.fused]).toEqual([2, 3, true]);
    expect(maxRelativeError(predict(fresh).toFloat32Array(), expected)).toBeLessThan(1e-6);
    loaded.dispose();
    fresh.dispose();
  });

  it("loads a file written by Python safetensors with PEFT names: PyTorch's merged weights and output", () => {
    const ref = readFixture<{ rank: number; alpha: number; paths: string[]; merged_sums: Record<string, number>; merged: Record<string, EncodedTensor>; sample: EncodedTensor; context: EncodedTensor; timestep: number[]; output: EncodedTensor }>(path.join("lora", "peft_tiny_sd.json"));
    const model = td.loadModel(tinySd);
    const lora = td.LoRA.load(model.unet!.module, path.join(fixtures, "lora", "peft_tiny_sd.safetensors"));
    expect(lora.layers.map((l) => l.path).sort()).toEqual([...ref.paths].sort());
    expect([lora.rank, lora.alpha]).toEqual([ref.rank, ref.alpha]); // α from the header's lora_adapter_metadata
    expect(lora.ignored).toEqual(["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"]);
    const params = model.unet!.module.namedParameters() as Record<string, td.Tensor>;
    for (const [p, sum] of Object.entries(ref.merged_sums)) expect(td.tidy(() => params[`${p}.weight`].double().sum().item()), p).toBeCloseTo(sum, 4);
    for (const [p, merged] of Object.entries(ref.merged)) expect(maxRelativeError(params[`${p}.weight`].toFloat64Array(), merged.values), p).toBeLessThan(1e-6);
    Object.values(params).forEach((t) => t.dispose());
    const out = td.tidy(() => td.noGrad(() => model.predictSync({ sample: fromEncoded(ref.sample), timestep: ref.timestep, encoderHiddenStates: fromEncoded(ref.context) })));
    expect(maxRelativeError(out.toFloat64Array(), ref.output.values)).toBeLessThan(1e-5);
    // Scale and unfuse: switching adapters off gives the base model back.
    lora.unfuse();
    const base = td.loadModel(tinySd);
    expect(bytes(predict(model))).toEqual(bytes(predict(base)));
    lora.dispose();
    model.dispose();
    base.dispose();
  });

  it("reads diffusers' older lora.down/lora.up names and kohya files with per-layer alphas", () => {
    const model = td.loadModel(tinySd);
    const { tensors } = td.readSafetensors(path.join(fixtures, "lora", "peft_tiny_sd.safetensors"));
    const diffusersNames: Record<string, td.Tensor> = {};
    const kohya: Record<string, td.Tensor> = {};
    for (const [k, v] of Object.entries(tensors)) {
      if (!k.startsWith("unet.")) continue;
      diffusersNames[k.replace(".lora_A.", ".lora.down.").replace(".lora_B.", ".lora.up.")] = v;
      const stem = `lora_unet_${k.slice(5).replace(/\.lora_[AB]\.weight$/, "").replace(/\./g, "_")}`;
      kohya[`${stem}.${k.includes("lora_A") ? "lora_down" : "lora_up"}.weight`] = v;
      kohya[`${stem}.alpha`] = td.tensor([4]);
    }
    td.writeSafetensors(path.join(tmp, "diffusers.safetensors"), diffusersNames); // no metadata: α = r
    td.writeSafetensors(path.join(tmp, "kohya.safetensors"), kohya);
    const a = td.LoRA.load(model.unet!.module, path.join(tmp, "diffusers.safetensors"), { fuse: false });
    const b = td.LoRA.load(model.unet!.module, path.join(tmp, "kohya.safetensors"), { fuse: false });
    expect([a.layers.length, a.alpha, b.layers.length, b.alpha]).toEqual([33, 2, 33, 4]);
    expect(b.layers.find((l) => l.path === "down_blocks.0.resnets.0.conv1")?.down.shape).toEqual([2, 8, 3, 3]);
    for (const t of [...Object.values(tensors), ...Object.values(kohya).filter((t) => t.numel === 1)]) t.dispose();
    a.dispose();
    b.dispose();
    model.dispose();
  });

  it("explains files and options it cannot use", () => {
    const model = td.loadModel(tinySd);
    expect(() => td.LoRA.create(model.unet!.module, { targets: ["nope"] })).toThrow('no layer matches targets ["nope"]');
    expect(() => td.LoRA.create(model.unet!.module, { rank: 0 })).toThrow("Expected positive integer for LoRA rank but received 0 of type number");
    const other = path.join(tmp, "other.safetensors");
    td.writeSafetensors(other, { "unet.no_such.layer.lora_A.weight": td.tidy(() => td.zeros([2, 4])), "unet.no_such.layer.lora_B.weight": td.tidy(() => td.zeros([4, 2])) });
    expect(() => td.LoRA.load(model.unet!.module, other)).toThrow('the file adapts "no_such.layer", which this module does not have');
    const wrongRank = path.join(tmp, "wrong.safetensors");
    const q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
    td.writeSafetensors(wrongRank, { [`unet.${q}.lora_A.weight`]: td.tidy(() => td.zeros([2, 8])), [`unet.${q}.lora_B.weight`]: td.tidy(() => td.zeros([8, 3])) });
    expect(() => td.LoRA.load(model.unet!.module, wrongRank)).toThrow(`"${q}" has A [2,8] and B [8,3] but its weight [8,8] needs A [2,8] and B [8,2]`);
    model.dispose();
  });
});

describe("training adapters", () => {
  /** 8 captioned random images in [-1, 1] at tiny-sd's 16×16 RGB. */
  const images = td.keep(td.tidy(() => td.rand([8, 3, 16, 16], { generator: new td.Generator(2) }).mul(2).sub(1)));
  const dataset = td.tensorDataset(images, { captions: Array.from({ length: 8 }, (_, i) => `a photo of thing ${i}`) });
  const base = td.loadModel(tinySd);
  const baseWeights = weightBytes(base.unet!.module);
  const small = { steps: 6, batchSize: 2, lr: 1e-2, checkpointEvery: 2, captionDropout: 0.25, lora: { rank: 2 } };

  it("the Trainer trains only options.parameters and refuses what does not fit", () => {
    const model = td.loadModel(tinySd);
    const lora = td.LoRA.create(model.unet!.module, { rank: 2 });
    const common = { objective: "epsilon" as const, steps: 1, batchSize: 2 };
    expect(() => new td.Trainer(model.unet!.module, dataset, { ...common, parameters: lora.parameters(), trainable: () => true })).toThrow("options.parameters and options.trainable: give one");
    expect(() => new td.Trainer(model.unet!.module, dataset, { ...common, parameters: lora.parameters(), mixedPrecision: "bf16" })).toThrow('mixedPrecision "bf16"');
    const notLeaf = td.tidy(() => td.keep(lora.layers[0].down.mul(2)));
    expect(() => new td.Trainer(model.unet!.module, dataset, { ...common, parameters: { x: notLeaf } })).toThrow("options.parameters must be leaf tensors that require grad");
    notLeaf.dispose();
    expect(() => new td.Trainer(model.unet!.module, dataset, { ...common, loss: 3 as never })).toThrow("Expected function for options.loss");
    lora.dispose();
    model.dispose();
  });

  it("fineTune with lora trains adapters only: base weights stay bit-identical, the file holds the adapters, the model dir has them fused", async () => {
    const model = td.loadModel(tinySd);
    const out = path.join(tmp, "tuned");
    const result = await td.fineTune(model, dataset, { ...small, out });
    expect(result.losses).toHaveLength(6);
    // Checkpoints hold only the adapters.
    const ckpt = td.loadCheckpoint(td.listCheckpoints(path.join(out, "checkpoints")).at(-1)!.file);
    expect(Object.keys(ckpt.model)).toHaveLength(64);
    expect(Object.keys(ckpt.model).every((k) => /\.lora_[AB]\.weight$/.test(k))).toBe(true);
    td.disposeCheckpoint(ckpt);
    // The written U-Net = base weights except the adapted ones; those = W0 + B·A of the written file.
    const written = td.loadModel(out);
    const writtenWeights = weightBytes(written.unet!.module);
    const adapted = Object.keys(writtenWeights).filter((k) => !writtenWeights[k].equals(baseWeights[k]));
    expect(adapted.length).toBeGreaterThan(0);
    expect(adapted.every((k) => /\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(k))).toBe(true);
    // The file on the base model gives the written U-Net bit for bit; unfused, the base bit for bit.
    const fresh = td.loadModel(tinySd);
    const lora = td.LoRA.load(fresh.unet!.module, path.join(out, td.LORA_WEIGHTS_FILE));
    for (const [k, v] of Object.entries(weightBytes(fresh.unet!.module))) expect(v.equals(writtenWeights[k]), k).toBe(true);
    lora.unfuse();
    for (const [k, v] of Object.entries(weightBytes(fresh.unet!.module))) expect(v.equals(baseWeights[k]), k).toBe(true);
    fresh.dispose();
    // The model trained in place ends with the adapters fused: it computes as the written one.
    expect(bytes(predict(written)).equals(bytes(predict(model)))).toBe(true);
    const record = JSON.parse(fs.readFileSync(path.join(out, "training.json"), "utf8"));
    expect(record.lora).toEqual({ rank: 2, alpha: 2, targets: ["to_q", "to_k", "to_v", "to_out.0"], init: "gaussian", file: td.LORA_WEIGHTS_FILE });
    lora.dispose();
    written.dispose();
    model.dispose();
  });

  it("resume after an abort gives the same adapters as an uninterrupted run, and leaks nothing", async () => {
    const whole = td.loadModel(tinySd);
    await td.fineTune(whole, dataset, { ...small, out: path.join(tmp, "whole") });
    whole.dispose();
    const baseline = await settledTensorCount();
    const out = path.join(tmp, "resumed");
    const controller = new AbortController();
    const first = td.loadModel(tinySd);
    const stopped = await td.fineTune(first, dataset, { ...small, out, signal: controller.signal, onStep: ({ step }) => step === 3 && controller.abort() });
    expect([stopped.aborted, stopped.step, stopped.out]).toEqual([true, 3, null]);
    first.dispose();
    expect(await settledTensorCount()).toBe(baseline);
    const second = td.loadModel(tinySd);
    const resumed = await td.fineTune(second, dataset, { ...small, out });
    expect([resumed.resumedFrom, resumed.step]).toEqual([3, 6]);
    second.dispose();
    const a = td.readSafetensors(path.join(tmp, "whole", td.LORA_WEIGHTS_FILE)).tensors;
    const b = td.readSafetensors(path.join(out, td.LORA_WEIGHTS_FILE)).tensors;
    expect(Object.keys(b)).toEqual(Object.keys(a));
    for (const k of Object.keys(a)) expect(bytes(b[k]).equals(bytes(a[k])), k).toBe(true);
    for (const t of [...Object.values(a), ...Object.values(b)]) t.dispose();
    expect(await settledTensorCount()).toBe(baseline);
  });

  it("Imagic stage 2 with lora trains adapters on the copy and writes them", async () => {
    const model = td.loadModel(tinySd);
    const before = weightBytes(model.unet!.module);
    const image = td.tidy(() => td.rand([1, 3, 16, 16], { generator: new td.Generator(4) }));
    const dir = path.join(tmp, "imagic");
    const result = await td.imagic({ model, image, targetPrompt: "a photo of a dress", embeddingSteps: 2, fineTuneSteps: 3, lora: { rank: 2 }, dir });
    expect(weightBytes(model.unet!.module)).toEqual(before); // the model passed in is untouched
    const tuned = weightBytes(result.model.unet.module);
    const changed = Object.keys(tuned).filter((k) => !tuned[k].equals(before[k]));
    expect(changed.length).toBeGreaterThan(0);
    expect(changed.every((k) => /\.to_(q|k|v|out\.0)\.weight$/.test(k))).toBe(true);
    expect(fs.existsSync(path.join(dir, td.LORA_WEIGHTS_FILE))).toBe(true);
    await expect(td.imagic({ model, image, targetPrompt: "x", lora: { rank: 2 }, trainable: () => true })).rejects.toThrow("lora and trainable: give one");
    result.dispose();
    image.dispose();
    model.dispose();
  });
});

describe("training the text encoder (trainTextEncoder)", () => {
  /** 8 captioned random images in [-1, 1] at tiny-sd's 16×16 RGB, each with its own caption. */
  const images = td.keep(td.tidy(() => td.rand([8, 3, 16, 16], { generator: new td.Generator(3) }).mul(2).sub(1)));
  const dataset = td.tensorDataset(images, { captions: Array.from({ length: 8 }, (_, i) => `a photo of thing ${i}`) });
  const small = { steps: 6, batchSize: 2, lr: 1e-2, checkpointEvery: 2, captionDropout: 0.25, trainTextEncoder: true };
  const base = td.loadModel(tinySd);
  const baseText = weightBytes(base.textEncoder!.module);
  const baseUnet = weightBytes(base.unet!.module);
  /** The text encoder's or U-Net's weights of a written model directory. */
  const written = (dir: string, component: "unet" | "text_encoder") => {
    const module = td.load(path.join(dir, component, "model.pt"));
    const out = weightBytes(module);
    module.dispose();
    return out;
  };
  const changed = (a: Record<string, Buffer>, b: Record<string, Buffer>) => Object.keys(a).filter((k) => !a[k].equals(b[k]));

  /** The epsilon-prediction MSE of `model` on all 8 examples under fixed noise and timesteps (Generator 7): the training loss without its randomness. */
  async function fixedLoss(model: td.DiffusionModel): Promise<number> {
    const data = td.fineTuneDataset(model.requireTextToImage("test"), dataset, 0);
    const samples = await Promise.all(Array.from({ length: 8 }, (_, i) => data.get(i)));
    return td.tidyAsync(async () => {
      const x0 = td.stack(samples.map((s) => s.image)); // (8, 4, 8, 8) latents
      const g = new td.Generator(7);
      const noise = td.randn(x0.shape, { generator: g });
      const times = td.sampleTimes("epsilon", 8, { kind: "uniform" }, 1000, g);
      const { noisy, target, modelTimesteps } = td.noisedBatch("epsilon", x0, noise, times, { alphasCumprod: td.alphasCumprodFor({}) });
      const context = await model.encodePrompt(samples.map((s) => s.caption!));
      const pred = td.noGrad(() => model.predictSync({ sample: noisy, timestep: modelTimesteps, encoderHiddenStates: context }));
      samples.forEach((s) => s.image.dispose());
      return td.mseLoss(pred, target).item();
    });
  }

  it("trains every text encoder weight with the U-Net and lowers the loss; checkpoints and the written directory hold both", async () => {
    const model = td.loadModel(tinySd);
    const before = await fixedLoss(model);
    const out = path.join(tmp, "text-encoder");
    const result = await td.fineTune(model, dataset, { ...small, out });
    expect(result.losses).toHaveLength(6);
    // The in-place model learned the data, text encoder included (measured: 1.06 -> 0.77).
    expect(await fixedLoss(model)).toBeLessThan(before * 0.9);
    const text = written(out, "text_encoder");
    expect(changed(text, baseText)).toEqual(Object.keys(baseText)); // every weight moved (token embeddings of the captions' words)
    expect(changed(written(out, "unet"), baseUnet).length).toBeGreaterThan(100);
    for (const [k, v] of Object.entries(weightBytes(model.textEncoder!.module))) expect(v.equals(text[k]), k).toBe(true);
    // The checkpoint: the U-Net's weights under their names, the text encoder's behind "text_encoder.", with AdamW moments for all.
    const ckpt = td.loadCheckpoint(td.listCheckpoints(path.join(out, "checkpoints")).at(-1)!.file);
    const names = Object.keys(ckpt.model);
    expect(names.filter((n) => n.startsWith(td.TEXT_ENCODER_PREFIX)).map((n) => n.slice(td.TEXT_ENCODER_PREFIX.length))).toEqual(Object.keys(baseText));
    expect(names.filter((n) => !n.startsWith(td.TEXT_ENCODER_PREFIX))).toEqual(Object.keys(baseUnet));
    for (const moment of ["exp_avg", "exp_avg_sq"]) expect(ckpt.optimizer.buffers[moment].filter((t) => t !== null), moment).toHaveLength(names.length);
    td.disposeCheckpoint(ckpt);
    // The trained component's metadata no longer points at the source's weight files; the record says what trained.
    expect(JSON.parse(fs.readFileSync(path.join(out, "text_encoder", "torch_diffusion.json"), "utf8")).source_weights).toBeUndefined();
    expect(JSON.parse(fs.readFileSync(path.join(out, "training.json"), "utf8"))).toMatchObject({ trainTextEncoder: true, steps: 6 });
    td.verifyDirectoryChecksums(out);
    model.dispose();
  });

  it("a run with the text encoder and EMA, stopped and resumed, writes the uninterrupted run's networks bit for bit", async () => {
    const options = { ...small, emaDecay: 0.9 };
    const whole = td.loadModel(tinySd);
    await td.fineTune(whole, dataset, { ...options, out: path.join(tmp, "te-whole") });
    whole.dispose();
    const baseline = await settledTensorCount();
    const out = path.join(tmp, "te-resumed");
    const controller = new AbortController();
    const first = td.loadModel(tinySd);
    const stopped = await td.fineTune(first, dataset, { ...options, out, signal: controller.signal, onStep: ({ step }) => step === 3 && controller.abort() });
    expect([stopped.aborted, stopped.step]).toEqual([true, 3]);
    first.dispose();
    expect(await settledTensorCount()).toBe(baseline);
    const second = td.loadModel(tinySd);
    const resumed = await td.fineTune(second, dataset, { ...options, out });
    second.dispose();
    expect([resumed.resumedFrom, resumed.step]).toEqual([3, 6]);
    for (const component of ["unet", "text_encoder"] as const) {
      const a = written(path.join(tmp, "te-whole"), component);
      const b = written(out, component);
      expect(changed(a, b), component).toEqual([]);
    }
    // The EMA covers the text encoder too: the written one lies between the start and the trained weights.
    const trained = td.loadModel(tinySd);
    await td.fineTune(trained, dataset, { ...small, out: path.join(tmp, "te-no-ema") });
    const distance = (w: Record<string, Buffer>) => Math.sqrt(Object.keys(w).reduce((sum, k) => {
      const [x, y] = [new Float32Array(w[k].buffer, w[k].byteOffset, w[k].length / 4), new Float32Array(baseText[k].buffer, baseText[k].byteOffset, baseText[k].length / 4)];
      return sum + x.reduce((s, v, i) => s + (v - y[i]) ** 2, 0);
    }, 0));
    const averaged = distance(written(out, "text_encoder"));
    expect(averaged).toBeGreaterThan(0);
    expect(averaged).toBeLessThan(distance(weightBytes(trained.textEncoder!.module)));
    trained.dispose();
    expect(await settledTensorCount()).toBe(baseline);
  });

  it("with lora: adapters on the text encoder's attention too, in one PEFT file (text_encoder. keys) that loads back bit for bit", async () => {
    const model = td.loadModel(tinySd);
    const out = path.join(tmp, "te-lora");
    await td.fineTune(model, dataset, { ...small, out, lora: { rank: 2, alpha: 4 } });
    const { tensors, metadata } = td.readSafetensors(path.join(out, td.LORA_WEIGHTS_FILE));
    const textKeys = Object.keys(tensors).filter((k) => k.startsWith("text_encoder."));
    // tiny-sd's text encoder: 2 layers × (q, k, v, out) projections × (A, B).
    expect(textKeys).toHaveLength(16);
    expect(textKeys.every((k) => /^text_encoder\.text_model\.encoder\.layers\.\d\.self_attn\.(q|k|v|out)_proj\.lora_[AB]\.weight$/.test(k))).toBe(true);
    expect(Object.keys(tensors).filter((k) => k.startsWith("unet."))).toHaveLength(64);
    expect(JSON.parse(metadata.lora_adapter_metadata)).toEqual({
      "unet.r": 2, "unet.lora_alpha": 4, "unet.target_modules": ["to_q", "to_k", "to_v", "to_out.0"],
      "text_encoder.r": 2, "text_encoder.lora_alpha": 4, "text_encoder.target_modules": ["q_proj", "k_proj", "v_proj", "out_proj"],
    });
    Object.values(tensors).forEach((t) => t.dispose());
    // Checkpoints hold the adapters only, the text encoder's behind "text_encoder.".
    const ckpt = td.loadCheckpoint(td.listCheckpoints(path.join(out, "checkpoints")).at(-1)!.file);
    expect(Object.keys(ckpt.model).filter((k) => k.startsWith("text_encoder.")).map((k) => `${k.replace(/\.lora_[AB]\.weight$/, "")}`).length).toBe(16);
    expect(Object.keys(ckpt.model).every((k) => /\.lora_[AB]\.weight$/.test(k))).toBe(true);
    td.disposeCheckpoint(ckpt);
    // Only the adapted projections of the written text encoder changed; the file on the base model gives it bit for bit.
    const text = written(out, "text_encoder");
    const adapted = changed(text, baseText);
    expect(adapted.length).toBe(8);
    expect(adapted.every((k) => /\.self_attn\.(q|k|v|out)_proj\.weight$/.test(k))).toBe(true);
    const fresh = td.loadModel(tinySd);
    const unetLoRA = td.LoRA.load(fresh.unet!.module, path.join(out, td.LORA_WEIGHTS_FILE));
    const textLoRA = td.LoRA.load(fresh.textEncoder!.module, path.join(out, td.LORA_WEIGHTS_FILE), { component: "text_encoder" });
    expect([textLoRA.rank, textLoRA.alpha, textLoRA.layers.length]).toEqual([2, 4, 8]);
    expect(textLoRA.ignored.every((k) => k.startsWith("unet."))).toBe(true);
    expect(unetLoRA.ignored.every((k) => k.startsWith("text_encoder."))).toBe(true);
    expect(changed(weightBytes(fresh.textEncoder!.module), text)).toEqual([]);
    expect(changed(weightBytes(fresh.unet!.module), written(out, "unet"))).toEqual([]);
    textLoRA.unfuse();
    expect(changed(weightBytes(fresh.textEncoder!.module), baseText)).toEqual([]);
    expect(JSON.parse(fs.readFileSync(path.join(out, "training.json"), "utf8")).lora).toMatchObject({ rank: 2, alpha: 4, textEncoderTargets: ["q_proj", "k_proj", "v_proj", "out_proj"] });
    for (const l of [unetLoRA, textLoRA]) l.dispose();
    fresh.dispose();
    model.dispose();
  });

  it("refuses what does not fit with errors that name it", async () => {
    const model = td.loadModel(tinySd);
    await expect(td.fineTune(model, dataset, { ...small, out: path.join(tmp, "never"), trainTextEncoder: "yes" as never })).rejects.toThrow('Expected boolean for fineTune options.trainTextEncoder but received "yes" of type string');
    const unetOnly = path.join(tmp, "unet-only.safetensors");
    const lora = td.LoRA.create(model.unet!.module, { rank: 2 });
    lora.save(unetOnly);
    lora.unfuse();
    lora.dispose();
    expect(() => td.LoRA.load(model.textEncoder!.module, unetOnly, { component: "text_encoder" })).toThrow(/no text encoder LoRA weights in the file \(keys look like: unet\./);
    expect(() => td.LoRA.load(model.textEncoder!.module, unetOnly, { component: "vae" as never })).toThrow('Expected "unet" or "text_encoder" for LoRA.load component but received "vae" of type string');
    // A run started without the text encoder does not resume with it.
    const out = path.join(tmp, "switched");
    const controller = new AbortController();
    await td.fineTune(model, dataset, { ...small, trainTextEncoder: false, lora: { rank: 2 }, out, signal: controller.signal, onStep: () => controller.abort() });
    model.dispose();
    const again = td.loadModel(tinySd);
    await expect(td.fineTune(again, dataset, { ...small, lora: { rank: 2 }, out })).rejects.toThrow("its parameters differ from the trainable ones");
    again.dispose();
  });
});
