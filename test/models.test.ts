import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import * as td from "../lib";
import type { Tensor } from "../lib";
import {
  AutoencoderKL,
  CLIPTextModel,
  CLIPTextModelWithProjection,
  DiTTransformer2DModel,
  latentDistribution,
  loadComponent,
  loadModel,
  UNet2DConditionModel,
  type AnyModelComponent,
} from "../lib/models";
import { PNDMScheduler } from "../lib/schedulers";
import { fixtures, maxRelativeError, withBatchPieces } from "./helpers";

const modelsDir = path.join(fixtures, "models");
const tinySd = path.join(modelsDir, "tiny-sd");

interface RefTensor {
  name: string;
  dtype?: "float32" | "int64";
  shape?: number[];
  data?: number[];
  none?: boolean;
}
interface RefCase {
  name: string;
  method: "forward" | "encode" | "decode";
  inputs: RefTensor[];
  outputs: RefTensor[];
}
interface Reference {
  name: string;
  class: string;
  atol: number;
  cases: RefCase[];
}

const referenceFixtures = fs
  .readdirSync(modelsDir)
  .filter((name) => fs.existsSync(path.join(modelsDir, name, "reference.json")))
  .sort();

function readReference(name: string): Reference {
  return JSON.parse(fs.readFileSync(path.join(modelsDir, name, "reference.json"), "utf8")) as Reference;
}

function toTensor(ref: RefTensor): Tensor | null {
  if (ref.none) return null;
  if (ref.dtype === "int64") return td.tensor(BigInt64Array.from(ref.data!, BigInt), ref.shape);
  return td.tensor(Float32Array.from(ref.data!), ref.shape);
}

/** The same input as plain JS numbers where the wrappers accept them (0-d / 1-d / 2-d int64). */
function toPlain(ref: RefTensor): Tensor | number | number[] | number[][] | null {
  if (ref.none || ref.dtype !== "int64") return toTensor(ref);
  const shape = ref.shape!;
  if (shape.length === 0) return ref.data![0];
  if (shape.length === 1) return ref.data!;
  if (shape.length === 2) return Array.from({ length: shape[0] }, (_, i) => ref.data!.slice(i * shape[1], (i + 1) * shape[1]));
  return toTensor(ref);
}

type Inputs = Record<string, ReturnType<typeof toPlain>>;
type Outputs = Record<string, Tensor>;

/** Runs one reference case through the typed wrapper, by argument name; outputs by the reference's names. */
async function runCase(component: AnyModelComponent, method: string, x: Inputs, sync: boolean): Promise<Outputs> {
  const T = (v: unknown) => v as Tensor;
  if (component instanceof UNet2DConditionModel) {
    const args = { sample: T(x.sample), timestep: x.timestep as number | Tensor, encoderHiddenStates: T(x.encoder_hidden_states), textEmbeds: T(x.text_embeds), timeIds: T(x.time_ids) };
    return { sample: sync ? component.forwardSync(args) : await component.forward(args) };
  }
  if (component instanceof DiTTransformer2DModel) {
    const args = { hiddenStates: T(x.hidden_states), timestep: x.timestep as number | number[] | Tensor, classLabels: x.class_labels as number | number[] | Tensor };
    return { sample: sync ? component.forwardSync(args) : await component.forward(args) };
  }
  if (component instanceof AutoencoderKL) {
    if (method === "encode") {
      const dist = sync ? component.encodeSync(T(x.x)) : await component.encode(T(x.x));
      const [mean, logvar] = dist.moments.chunk(2, 1);
      expect(maxRelativeError(dist.mean.toFloat64Array(), mean.toFloat64Array())).toBe(0);
      expect(maxRelativeError(dist.logvar.toFloat64Array(), logvar.clamp(-30, 20).toFloat64Array())).toBe(0);
      const moments = dist.moments.clone();
      dist.dispose();
      return { moments };
    }
    if (method === "decode") return { sample: sync ? component.decodeSync(T(x.z)) : await component.decode(T(x.z)) };
    return { sample: sync ? component.forwardSync(T(x.x)) : await component.forward(T(x.x)) };
  }
  const args = { inputIds: x.input_ids as number[][] | Tensor, attentionMask: x.attention_mask as number[][] | Tensor | null };
  const out = sync ? component.forwardSync(args) : await component.forward(args);
  const named: Outputs = { last_hidden_state: out.lastHiddenState, pooled_output: out.pooledOutput, penultimate_hidden_state: out.penultimateHiddenState };
  if (out.textEmbeds) named.text_embeds = out.textEmbeds;
  return named;
}

function expectMatches(got: Outputs, ref: RefCase, tolerance: number): void {
  expect(Object.keys(got).sort()).toEqual(ref.outputs.map((o) => o.name).sort());
  for (const o of ref.outputs) {
    expect(got[o.name].shape, `${ref.name}/${o.name} shape`).toEqual(o.shape);
    expect(maxRelativeError(got[o.name].toFloat64Array(), o.data!), `${ref.name}/${o.name}`).toBeLessThanOrEqual(tolerance);
  }
}

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "td-models-"));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let copies = 0;
/** A fresh copy of tiny-sd to break. */
function copyTinySd(): string {
  const dir = path.join(tmpRoot, `tiny-sd-${copies++}`);
  fs.cpSync(tinySd, dir, { recursive: true });
  return dir;
}
function editJson(file: string, edit: (obj: Record<string, unknown>) => void): void {
  const obj = JSON.parse(fs.readFileSync(file, "utf8"));
  edit(obj);
  fs.writeFileSync(file, JSON.stringify(obj));
}

describe("typed model wrappers match PyTorch on every fixture", () => {
  it.each(referenceFixtures)("%s", async (name) => {
    const ref = readReference(name);
    const before = td.memory().numTensors;
    await td.tidyAsync(async () => {
      const component = loadComponent(path.join(modelsDir, name));
      expect(component.className).toBe(ref.class);
      expect(component.dtype).toBe("float32");
      expect(component.device).toBe("cpu");
      for (const c of ref.cases) {
        const tensors: Inputs = Object.fromEntries(c.inputs.map((i) => [i.name, toTensor(i)]));
        const plain: Inputs = Object.fromEntries(c.inputs.map((i) => [i.name, toPlain(i)]));
        // async with tensors, sync with plain numbers where the wrappers accept them
        expectMatches(await runCase(component, c.method, tensors, false), c, ref.atol);
        expectMatches(await runCase(component, c.method, plain, true), c, ref.atol);
        // and, without gradients, with the batch split in two pieces run at once (setBatchParallelism)
        expectMatches(await td.noGradAsync(() => withBatchPieces(2, 2, () => runCase(component, c.method, tensors, false))), c, ref.atol);
      }
      component.dispose();
    });
    expect(td.memory().numTensors).toBe(before);
  });

  it("casts inputs to the component's dtype (float64 UNet) and leaks nothing", async () => {
    const ref = readReference("tiny-unet");
    const before = td.memory().numTensors;
    await td.tidyAsync(async () => {
      const unet = loadComponent(path.join(modelsDir, "tiny-unet"), { dtype: "float64" }) as UNet2DConditionModel;
      expect(unet.dtype).toBe("float64");
      const c = ref.cases[0];
      const x = Object.fromEntries(c.inputs.map((i) => [i.name, toTensor(i)]));
      const out = await unet.forward({ sample: x.sample!, timestep: 500, encoderHiddenStates: x.encoder_hidden_states! });
      expect(out.dtype).toBe("float64");
      expectMatches({ sample: out }, c, 1e-5);
      unet.dispose();
    });
    expect(td.memory().numTensors).toBe(before);
  });
});

describe("CLIP extras", () => {
  it("hiddenStates and finalLayerNorm give clip-skip states consistent with forward", async () => {
    const before = td.memory().numTensors;
    await td.tidyAsync(async () => {
      const clip = loadComponent(path.join(modelsDir, "tiny-clip-text")) as CLIPTextModel;
      const inputIds = [[0, 5, 17, 999, 999]];
      const out = clip.forwardSync({ inputIds });
      const states = await clip.hiddenStates({ inputIds });
      expect(states.length).toBe(clip.config.num_hidden_layers + 1);
      expect(maxRelativeError(states.at(-2)!.toFloat64Array(), out.penultimateHiddenState.toFloat64Array())).toBe(0);
      const normed = clip.finalLayerNormSync(clip.hiddenStatesSync({ inputIds }).at(-1)!);
      expect(maxRelativeError(normed.toFloat64Array(), out.lastHiddenState.toFloat64Array())).toBeLessThanOrEqual(1e-6);
      expect((await clip.finalLayerNorm(states.at(-1)!)).shape).toEqual([1, 5, 16]);
      clip.dispose();
    });
    expect(td.memory().numTensors).toBe(before);
  });
});

describe("LatentDistribution", () => {
  it("clamps logvar, and samples mean + std * randn(generator) like diffusers", () => {
    const before = td.memory().numTensors;
    td.tidy(() => {
      const moments = td.tensor([[[[1]], [[-2]], [[50]], [[-0.5]]]]); // (1, 4, 1, 1): mean [1, -2], logvar [50, -0.5]
      const dist = latentDistribution(moments);
      expect(dist.mean.toArray()).toEqual([[[[1]], [[-2]]]]);
      expect(dist.logvar.toArray()).toEqual([[[[20]], [[-0.5]]]]);
      expect(Array.from(dist.std.toFloat32Array())).toEqual(Array.from(td.tensor([10, -0.25]).exp().toFloat32Array()));
      const z = dist.sample(new td.Generator(7));
      const noise = td.randn([1, 2, 1, 1], { generator: new td.Generator(7) });
      expect(Array.from(z.toFloat32Array())).toEqual(Array.from(dist.mean.add(dist.std.mul(noise)).toFloat32Array()));
      expect(dist.mode().toArray()).toEqual(dist.mean.toArray());
    });
    expect(td.memory().numTensors).toBe(before);
  });
});

describe("batch parallelism (setBatchParallelism)", () => {
  const shapesOf = (lists: unknown[][]) => lists.map((args) => args.map((a) => (td.isTensor(a) ? a.shape : a)));

  it("splits no-grad CPU calls into pieces run at once, matching the whole call", async () => {
    const before = td.memory().numTensors;
    const model = loadModel(tinySd);
    const unet = model.unet!;
    const module = unet.module;
    const original = module.callMethodConcurrently.bind(module);
    const seen: ReturnType<typeof shapesOf>[] = []; // the pieces' shapes (they are freed after the call)
    const spy = vi.spyOn(module, "callMethodConcurrently").mockImplementation((method, lists) => {
      seen.push(shapesOf(lists));
      return original(method, lists);
    });
    await td.tidyAsync(async () => {
      const g = new td.Generator(3);
      const sample = td.randn([5, 4, 8, 8], { generator: g });
      const encoderHiddenStates = td.randn([5, 6, 16], { generator: g });
      const timestep = td.tensor(BigInt64Array.from([1, 200, 400, 600, 999], BigInt), [5]);
      const args = { sample, timestep, encoderHiddenStates };
      const whole = await td.noGradAsync(() => withBatchPieces(2, 1, () => model.predict(args)));
      expect(spy).not.toHaveBeenCalled();
      for (const pieces of [2, 3, 5]) {
        const split = await td.noGradAsync(() => withBatchPieces(2, pieces, () => model.predict(args)));
        expect(split.shape).toEqual([5, 4, 8, 8]);
        expect(maxRelativeError(split.toFloat64Array(), whole.toFloat64Array()), `${pieces} pieces`).toBeLessThan(1e-5);
      }
      // slices of ceil(5 / 2) items; the per-item timesteps are sliced with the batch
      expect(seen[0]).toEqual([
        [[3, 4, 8, 8], [3], [3, 6, 16], null, null],
        [[2, 4, 8, 8], [2], [2, 6, 16], null, null],
      ]);
      expect(spy.mock.calls.map((call) => call[1].length)).toEqual([2, 3, 5]);
      // the VAE's encode and decode split too; a shared 0-d timestep stays whole
      const images = td.rand([3, 3, 16, 16], { generator: g });
      const encoded = await td.noGradAsync(() => withBatchPieces(2, 1, () => model.vae!.encode(images)));
      const encodedSplit = await td.noGradAsync(() => withBatchPieces(2, 2, () => model.vae!.encode(images)));
      expect(maxRelativeError(encodedSplit.moments.toFloat64Array(), encoded.moments.toFloat64Array())).toBeLessThan(1e-5);
      const decoded = await td.noGradAsync(() => withBatchPieces(2, 1, () => model.vae!.decode(encoded.mean)));
      const decodedSplit = await td.noGradAsync(() => withBatchPieces(2, 2, () => model.vae!.decode(encoded.mean)));
      expect(maxRelativeError(decodedSplit.toFloat64Array(), decoded.toFloat64Array())).toBeLessThan(1e-5);
      await td.noGradAsync(() => withBatchPieces(2, 2, () => model.predict({ sample: sample.narrow(0, 0, 2), timestep: 500, encoderHiddenStates: encoderHiddenStates.narrow(0, 0, 2) })));
      expect(seen[3].map((args) => args[1])).toEqual([[], []]);
      encoded.dispose();
    });
    model.dispose();
    expect(td.memory().numTensors).toBe(before);
  });

  it("leaves whole the calls that record gradients, run sync, have one item, or have one thread under \"auto\"", async () => {
    const model = loadModel(tinySd);
    const spy = vi.spyOn(model.unet!.module, "callMethodConcurrently");
    await td.tidyAsync(async () => {
      const args = { sample: td.randn([2, 4, 8, 8]), timestep: 500, encoderHiddenStates: td.randn([2, 6, 16]) };
      await withBatchPieces(2, 2, () => model.predict(args)); // grad mode on
      td.noGrad(() => withBatchPieces(2, 2, () => model.predictSync(args)));
      await td.noGradAsync(() => withBatchPieces(2, 2, () => model.predict({ ...args, sample: args.sample.narrow(0, 0, 1), encoderHiddenStates: args.encoderHiddenStates.narrow(0, 0, 1) })));
      await td.noGradAsync(() => withBatchPieces(1, "auto", () => model.predict(args)));
      expect(spy).not.toHaveBeenCalled();
      await td.noGradAsync(() => withBatchPieces(2, "auto", () => model.predict(args)));
      expect(spy).toHaveBeenCalledTimes(1);
    });
    model.dispose();
  });

  it("concurrent split calls equal sequential ones", async () => {
    const model = loadModel(tinySd);
    await td.tidyAsync(async () => {
      const g = new td.Generator(5);
      const calls = [0, 1, 2, 3].map((i) => ({ sample: td.randn([4, 4, 8, 8], { generator: g }), timestep: 100 + 250 * i, encoderHiddenStates: td.randn([4, 6, 16], { generator: g }) }));
      await withBatchPieces(2, 2, async () => {
        const sequential: Tensor[] = [];
        for (const args of calls) sequential.push(await td.noGradAsync(() => model.predict(args)));
        const concurrent = await td.noGradAsync(() => Promise.all(calls.map((args) => model.predict(args))));
        concurrent.forEach((out, i) => expect(out.toFloat64Array()).toEqual(sequential[i].toFloat64Array()));
      });
    });
    model.dispose();
  });

  it("validates the setting", () => {
    expect(td.getBatchParallelism()).toBe("auto");
    expect(() => td.setBatchParallelism(0)).toThrow("setBatchParallelism(pieces)");
    expect(() => td.setBatchParallelism(1.5)).toThrow("setBatchParallelism(pieces)");
    expect(() => td.setBatchParallelism("two" as never)).toThrow("setBatchParallelism(pieces)");
    expect(() => td.setBatchParallelism(65)).toThrow("setBatchParallelism(pieces): at most 64 pieces (each runs on a thread of its own) but received 65");
    expect(td.getBatchParallelism()).toBe("auto");
  });
});

describe("loadModel", () => {
  it("loads tiny-sd with typed components and runs the UNet", async () => {
    const before = td.memory().numTensors;
    const model = loadModel(tinySd);
    expect(model.dir).toBe(tinySd);
    expect(model.modelIndex._class_name).toBe("StableDiffusionPipeline");
    expect(model.unet).toBeInstanceOf(UNet2DConditionModel);
    expect(model.vae).toBeInstanceOf(AutoencoderKL);
    expect(model.textEncoder).toBeInstanceOf(CLIPTextModel);
    expect(model.scheduler).toBeInstanceOf(PNDMScheduler);
    expect(model.schedulerConfig?._class_name).toBe("PNDMScheduler");
    expect(model.transformer).toBeUndefined();
    expect(model.textEncoder2).toBeUndefined();
    expect(model.tokenizer).toBeInstanceOf(td.CLIPTokenizer); // cut to the tiny text encoder's 1000 ids
    expect(model.tokenizer!.vocabSize).toBe(1000);
    expect(model.tokenizer!.modelMaxLength).toBe(16);
    expect(model.vae!.scalingFactor).toBe(0.18215);
    expect(model.vae!.shiftFactor).toBe(0);
    expect(model.vae!.downsampleFactor).toBe(2);
    expect(model.unet!.config.cross_attention_dim).toBe(16);
    const c = readReference("tiny-unet").cases[0]; // tiny-sd's UNet has tiny-unet's weights
    await td.tidyAsync(async () => {
      const x = Object.fromEntries(c.inputs.map((i) => [i.name, toTensor(i)]));
      const eps = await model.unet!.forward({ sample: x.sample!, timestep: 500, encoderHiddenStates: x.encoder_hidden_states! });
      expectMatches({ sample: eps }, c, 1e-5);
      const latents = model.vae!.scaleLatents(eps);
      expect(maxRelativeError(model.vae!.unscaleLatents(latents).toFloat64Array(), eps.toFloat64Array())).toBeLessThan(1e-6);
    });
    model.dispose();
    expect(() => model.unet!.forwardSync({} as never)).toThrow("UNet2DConditionModel: used after dispose()");
    expect(td.memory().numTensors).toBe(before);
  });

  it("loads tokenizers, keeps a force_upcast VAE in float32 and honours components", () => {
    const dir = copyTinySd();
    const tokenizerDir = path.join(dir, "tokenizer");
    fs.rmSync(tokenizerDir, { recursive: true, force: true });
    fs.mkdirSync(tokenizerDir);
    const vocab = { "<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, c: 3, "at</w>": 4, "cat</w>": 5 };
    fs.writeFileSync(path.join(tokenizerDir, "vocab.json"), JSON.stringify(vocab));
    fs.writeFileSync(path.join(tokenizerDir, "merges.txt"), "#version: 0.2\na t</w>\nc at</w>\n");
    fs.writeFileSync(path.join(tokenizerDir, "tokenizer_config.json"), JSON.stringify({ model_max_length: 6 }));
    editJson(path.join(dir, "model_index.json"), (index) => (index.tokenizer = ["transformers", "CLIPTokenizer"]));
    const model = loadModel(dir, { dtype: "float16" });
    expect(model.tokenizer).toBeInstanceOf(td.CLIPTokenizer);
    expect(model.tokenizer!.encode("a cat").inputIds).toEqual([[0, 2, 5, 1, 1, 1]]);
    expect(model.unet!.dtype).toBe("float16");
    expect(model.textEncoder!.dtype).toBe("float16");
    expect(model.vae!.dtype).toBe("float32");
    model.dispose();
    const only = loadModel(dir, { components: ["unet"] });
    expect(only.unet).toBeInstanceOf(UNet2DConditionModel);
    expect([only.vae, only.textEncoder, only.scheduler, only.tokenizer]).toEqual([undefined, undefined, undefined, undefined]);
  });

  it("names the file at fault", () => {
    expect(() => loadModel("/nonexistent/model")).toThrow("loadModel: /nonexistent/model is missing or not a directory");
    expect(() => loadModel(path.join(modelsDir, "tiny-unet"))).toThrow(
      `loadModel: ${path.join(modelsDir, "tiny-unet", "model_index.json")} is missing (${path.join(modelsDir, "tiny-unet")} looks like a single component: use loadComponent)`,
    );

    let dir = copyTinySd();
    fs.rmSync(path.join(dir, "unet", "model.pt"));
    expect(() => loadModel(dir)).toThrow(`loadModel: ${dir}/unet/model.pt is missing (model_index.json lists unet)`);

    dir = copyTinySd();
    fs.rmSync(path.join(dir, "vae"), { recursive: true });
    expect(() => loadModel(dir)).toThrow(`loadModel: ${dir}/vae is missing or not a directory (model_index.json lists vae)`);

    dir = copyTinySd();
    fs.writeFileSync(path.join(dir, "model_index.json"), '{"unet": ["diffusers", ');
    expect(() => loadModel(dir)).toThrow(`loadModel: ${dir}/model_index.json is not valid JSON (`);
    fs.writeFileSync(path.join(dir, "model_index.json"), "[1, 2]");
    expect(() => loadModel(dir)).toThrow(`loadModel: ${dir}/model_index.json must hold a JSON object but holds array of length 2`);

    dir = copyTinySd();
    editJson(path.join(dir, "unet", "config.json"), (config) => (config._class_name = "AutoencoderKL"));
    expect(() => loadModel(dir)).toThrow(
      `loadModel: ${dir}/unet/config.json names class AutoencoderKL but ${dir}/unet/torch_diffusion.json names UNet2DConditionModel (model_index.json lists unet)`,
    );

    dir = copyTinySd();
    editJson(path.join(dir, "model_index.json"), (index) => (index.unet = ["diffusers", "AutoencoderKL"]));
    expect(() => loadModel(dir)).toThrow(
      `loadModel: model_index.json lists unet as AutoencoderKL but ${dir}/unet/torch_diffusion.json names UNet2DConditionModel (model_index.json lists unet)`,
    );

    dir = copyTinySd();
    fs.rmSync(path.join(dir, "scheduler", "scheduler_config.json"));
    expect(() => loadModel(dir)).toThrow(`loadModel: ${dir}/scheduler/scheduler_config.json is missing (model_index.json lists scheduler)`);
  });

  it("loadComponent checks its folder too", () => {
    const dir = path.join(copyTinySd(), "unet");
    fs.rmSync(path.join(dir, "torch_diffusion.json"));
    expect(() => loadComponent(dir)).toThrow(`loadComponent: ${dir}/torch_diffusion.json is missing`);
    fs.writeFileSync(path.join(dir, "torch_diffusion.json"), JSON.stringify({ format_version: 1, class: "UNet2DModel" }));
    expect(() => loadComponent(dir)).toThrow(`loadComponent: ${dir}/torch_diffusion.json: class "UNet2DModel" is not supported (supported: UNet2DConditionModel, `);
    expect(() => loadComponent(42 as unknown as string)).toThrow("Expected directory path for loadComponent dir but received 42 of type number");
    expect(() => loadComponent(dir, { dtype: "int64" })).toThrow('Expected float32, float16, bfloat16 or float64 for loadComponent options.dtype but received "int64" of type string');
  });
});

describe.skipIf(!td.cuda.isAvailable())("on CUDA (skipped: no CUDA device)", () => {
  it("moves and casts inputs for a float16 UNet; a force_upcast VAE stays float32", async () => {
    const model = loadModel(tinySd, { device: "cuda", dtype: "float16" });
    expect([model.unet!.device, model.unet!.dtype, model.vae!.dtype]).toEqual(["cuda:0", "float16", "float32"]);
    const c = readReference("tiny-unet").cases[0];
    await td.tidyAsync(async () => {
      const x = Object.fromEntries(c.inputs.map((i) => [i.name, toTensor(i)]));
      const eps = await model.unet!.forward({ sample: x.sample!, timestep: 500, encoderHiddenStates: x.encoder_hidden_states! });
      expect([eps.device, eps.dtype]).toEqual(["cuda:0", "float16"]);
      expectMatches({ sample: eps.float() }, c, 2e-2);
      const dist = await model.vae!.encode(td.randn([1, 3, 16, 16], { generator: new td.Generator(0) }));
      expect(dist.sample(new td.Generator(0)).device).toBe("cuda:0");
    });
    model.dispose();
  });
});

describe("wrapper arguments", () => {
  it("rejects bad calls with clear messages", async () => {
    const before = td.memory().numTensors;
    const unet = loadComponent(path.join(modelsDir, "tiny-unet")) as UNet2DConditionModel;
    const sdxl = loadComponent(path.join(modelsDir, "tiny-unet-sdxl")) as UNet2DConditionModel;
    const clip = loadComponent(path.join(modelsDir, "tiny-clip-text-proj")) as CLIPTextModelWithProjection;
    const sample = td.zeros([1, 4, 8, 8]);
    const context = td.zeros([1, 6, 16]);
    expect(() => unet.forwardSync(sample as never)).toThrow(
      "Expected an object {sample, timestep, encoderHiddenStates, textEmbeds?, timeIds?} for the arguments of UNet2DConditionModel.forwardSync but received Tensor",
    );
    expect(() => unet.forwardSync({ timestep: 1, encoderHiddenStates: context } as never)).toThrow(
      "Expected Tensor for sample of UNet2DConditionModel.forwardSync but received undefined of type undefined",
    );
    expect(() => unet.forwardSync({ sample, timestep: NaN, encoderHiddenStates: context })).toThrow(
      "Expected finite number, number[] or Tensor for timestep of UNet2DConditionModel.forwardSync but received NaN of type number",
    );
    await expect(sdxl.forward({ sample, timestep: 1, encoderHiddenStates: context })).rejects.toThrow(
      'UNet2DConditionModel.forward: this UNet (addition_embed_type "text_time", SDXL) needs textEmbeds and timeIds',
    );
    expect(() => clip.forwardSync({ inputIds: [[1, 2], [3]] })).toThrow(
      "Expected rectangular number[][] for inputIds of CLIPTextModelWithProjection.forwardSync but received array of length 2",
    );
    expect(() => clip.forwardSync({ inputIds: [[1, 2.5]] })).toThrow(
      "Expected integer for inputIds[0][1] of CLIPTextModelWithProjection.forwardSync but received 2.5 of type number",
    );
    expect(() => new AutoencoderKL(unet.module, {})).toThrow('AutoencoderKL: the module has no method "encode", "decode" (methods: ');
    sample.dispose();
    context.dispose();
    for (const m of [unet, sdxl, clip]) m.dispose();
    expect(td.memory().numTensors).toBe(before);
  });
});
