import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import * as tr from "../lib/training";
import { refs, tempDir } from "./helpers/training";

const values = (t: td.Tensor) => Array.from(t.toFloat32Array());
const hasFashionMnist = fs.existsSync(path.join(tr.FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz"));
if (!hasFashionMnist) console.warn(`SKIPPING Fashion-MNIST tests: ${tr.FASHION_MNIST_DIR} is missing (Debian package dataset-fashion-mnist)`);

describe.skipIf(!hasFashionMnist)("FashionMNIST", () => {
  const r = refs.fashion_mnist;

  it("reads the idx files: shapes, labels and pixels equal what Python reads", () => {
    const ds = new tr.FashionMNIST({ split: "test" });
    expect(ds.length).toBe(r.length);
    const perImage = r.rows * r.cols;
    r.labels.forEach((label, i) => {
      const sample = ds.get(i);
      expect(sample.image.shape).toEqual([1, 28, 28]);
      expect(sample.image.dtype).toBe("float32");
      expect(sample.label).toBe(label);
      expect(values(sample.image)).toEqual(Array.from(Float32Array.from(r.images.values.slice(i * perImage, (i + 1) * perImage))));
    });
  });

  it("pads 28 -> 32 with background", () => {
    const ds = new tr.FashionMNIST({ split: "test", pad32: true });
    const perImage = 32 * 32;
    r.labels.forEach((_, i) => {
      const { image } = ds.get(i);
      expect(image.shape).toEqual([1, 32, 32]);
      expect(values(image)).toEqual(Array.from(Float32Array.from(r.padded.values.slice(i * perImage, (i + 1) * perImage))));
    });
  });

  it("captions each sample from its class name with a seeded template choice", () => {
    const ds = new tr.FashionMNIST({ split: "test" });
    const names = ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];
    const captions = Array.from({ length: 40 }, (_, i) => ds.get(i).caption!);
    captions.forEach((caption, i) => expect(caption).toMatch(new RegExp(`\\b(a|an) ${names[ds.label(i)]}$`)));
    expect(new Set(captions.map((c) => c.replace(/ (a|an) .*$/, ""))).size).toBeGreaterThan(3);
    const again = new tr.FashionMNIST({ split: "test" });
    expect(captions).toEqual(Array.from({ length: 40 }, (_, i) => again.caption(i)));
    const reseeded = new tr.FashionMNIST({ split: "test", seed: 7 });
    expect(captions.some((c, i) => c !== reseeded.caption(i))).toBe(true);
    expect(tr.fashionMnistCaption(9, "{a} {name}")).toBe("an ankle boot");
    expect(tr.fashionMnistCaption(7, "a photo of {a} {name}")).toBe("a photo of a sneaker");
    const custom = new tr.FashionMNIST({ split: "test", templates: ["a picture of {a} {name}"] });
    expect(custom.caption(0)).toBe("a picture of an ankle boot");
  });

  it("validates its options and indices", () => {
    expect(() => new tr.FashionMNIST({ split: "val" as "test" })).toThrow('Expected one of train, test for options.split but received "val" of type string');
    expect(() => new tr.FashionMNIST({ dir: "/nonexistent" })).toThrow('FashionMNIST: no such file "/nonexistent/train-images-idx3-ubyte.gz"');
    const ds = new tr.FashionMNIST({ split: "test" });
    expect(() => ds.get(10000)).toThrow("Expected integer index in [0, 10000) for index but received 10000 of type number");
  });
});

describe("DataLoader", () => {
  const n = refs.randperm.n;
  const dataset = tr.tensorDataset(td.keep(td.arange(0, n, 1, { dtype: "float32" }).reshape([n, 1, 1, 1])), { labels: Array.from({ length: n }, (_, i) => i) });

  it("shuffles each epoch like torch.randperm with a Generator seeded seed + epoch", async () => {
    const loader = new tr.DataLoader(dataset, { batchSize: 5, seed: refs.randperm.seed });
    expect(loader.batchesPerEpoch).toBe(2);
    const seen: number[][] = [];
    for (let i = 0; i < 6; i++) {
      const batch = await loader.next();
      expect(batch.images.shape).toEqual([5, 1, 1, 1]);
      expect(values(batch.images)).toEqual(batch.indices);
      expect(batch.labels).toEqual(batch.indices);
      seen.push(batch.indices);
      batch.images.dispose();
    }
    refs.randperm.epochs.forEach((order, epoch) => {
      expect(seen[2 * epoch]).toEqual(order.slice(0, 5));
      expect(seen[2 * epoch + 1]).toEqual(order.slice(5, 10)); // the last 2 are dropped
    });
    expect(loader.state()).toEqual({ epoch: 2, batch: 2 });
  });

  it("keeps the last partial batch with dropLast false, walks in order without shuffle, and resumes from a state", () => {
    const loader = new tr.DataLoader(dataset, { batchSize: 5, shuffle: false, dropLast: false });
    expect([loader.nextIndices(), loader.nextIndices(), loader.nextIndices()]).toEqual([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]);
    const other = new tr.DataLoader(dataset, { batchSize: 5, shuffle: false, dropLast: false });
    other.setState(loader.state());
    expect(other.nextIndices()).toEqual([0, 1, 2, 3, 4]);
    expect(other.state()).toEqual({ epoch: 1, batch: 1 });
  });

  it("validates", () => {
    expect(() => new tr.DataLoader(dataset, { batchSize: 0 })).toThrow("Expected positive integer for batchSize but received 0 of type number");
    expect(() => new tr.DataLoader({} as tr.Dataset, { batchSize: 1 })).toThrow("Expected Dataset with length and get(i) for dataset but received Object");
    expect(() => tr.collate([{ image: td.zeros([1, 2, 2]) }, { image: td.zeros([1, 3, 3]) }], [4, 5])).toThrow("collate: sample 5 has image shape [1,3,3] but sample 4 has [1,2,2]");
  });
});

describe("ImageFolderDataset", () => {
  function ppm(file: string, width: number, height: number, pixels: number[], gray = false): void {
    const header = Buffer.from(`${gray ? "P5" : "P6"}\n# made by a test\n${width} ${height}\n255\n`);
    fs.writeFileSync(file, Buffer.concat([header, Buffer.from(pixels)]));
  }

  function folder(): string {
    const dir = tempDir();
    ppm(path.join(dir, "a.ppm"), 2, 1, [0, 255, 51, 255, 0, 102]);
    ppm(path.join(dir, "b.pgm"), 2, 2, [0, 85, 170, 255], true);
    ppm(path.join(dir, "c.ppm"), 6, 4, Array.from({ length: 72 }, (_, i) => (i * 3) % 256));
    fs.writeFileSync(path.join(dir, "a.txt"), "a red and green pair\n");
    fs.writeFileSync(path.join(dir, "captions.json"), JSON.stringify({ "b.pgm": "a gray ramp", "a.ppm": "overridden by a.txt" }));
    fs.writeFileSync(path.join(dir, "metadata.jsonl"), `${JSON.stringify({ file_name: "c.ppm", text: "a striped patch" })}\n`);
    fs.writeFileSync(path.join(dir, "notes.md"), "not an image");
    return dir;
  }

  it("reads images in name order with captions from .txt, captions.json and metadata.jsonl", async () => {
    const ds = new tr.ImageFolderDataset(folder(), { decoder: tr.netpbmDecoder });
    expect(ds.files).toEqual(["a.ppm", "b.pgm", "c.ppm"]);
    const a = await ds.get(0);
    expect(a.caption).toBe("a red and green pair");
    expect(a.image.shape).toEqual([3, 1, 2]);
    const unit = (p: number) => Math.fround(Math.fround(p / 127.5) - 1);
    expect(values(a.image)).toEqual([0, 255, 51, 255, 0, 102].map((_, i, px) => unit(px[(i % 2) * 3 + Math.floor(i / 2)])));
    const b = await ds.get(1);
    expect(b.caption).toBe("a gray ramp");
    expect(b.image.shape).toEqual([3, 2, 2]); // gray repeated to RGB
    expect(values(b.image).slice(0, 4)).toEqual(values(b.image).slice(8, 12));
    expect((await ds.get(2)).caption).toBe("a striped patch");
  });

  it("resizes the shorter side and center-crops to a square; 1-channel output", async () => {
    const ds = new tr.ImageFolderDataset(folder(), { decoder: tr.netpbmDecoder, resolution: 2, channels: 1, defaultCaption: "" });
    for (let i = 0; i < ds.length; i++) {
      const { image } = await ds.get(i);
      expect(image.shape).toEqual([1, 2, 2]);
      expect(values(image).every((v) => v >= -1 && v <= 1)).toBe(true);
    }
  });

  it("feeds the trainer", async () => {
    const ds = new tr.ImageFolderDataset(folder(), { decoder: tr.netpbmDecoder, resolution: 8, channels: 1 });
    const model = td.load(path.join(__dirname, "fixtures", "training", "tiny_denoiser.pt"));
    const trainer = new tr.Trainer(model, ds, { objective: "flow_matching", steps: 2, batchSize: 3 });
    const { losses } = await trainer.run();
    expect(losses.every(Number.isFinite)).toBe(true);
    trainer.dispose();
  });

  it("decodes PNG and JPEG with sharp by default (RGBA and gray converted to RGB)", async () => {
    const dir = tempDir();
    const rgba = Buffer.from([255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0, 255, 255, 255, 255]); // 2×2 RGBA
    await sharp(rgba, { raw: { width: 2, height: 2, channels: 4 } }).png().toFile(path.join(dir, "1.png"));
    await sharp(Buffer.from([0, 64, 128, 255]), { raw: { width: 2, height: 2, channels: 1 } }).png().toFile(path.join(dir, "2.png"));
    await sharp({ create: { width: 16, height: 8, channels: 3, background: { r: 200, g: 100, b: 50 } } }).jpeg({ quality: 95 }).toFile(path.join(dir, "3.jpg"));
    fs.writeFileSync(path.join(dir, "3.txt"), "an orange wall");
    const ds = new tr.ImageFolderDataset(dir, { resolution: 2 });
    expect(ds.files).toEqual(["1.png", "2.png", "3.jpg"]);
    const unit = (p: number) => Math.fround(Math.fround(p / 127.5) - 1);
    const first = await ds.get(0);
    expect(first.image.shape).toEqual([3, 2, 2]);
    expect(values(first.image)).toEqual([255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255].map(unit)); // alpha dropped
    expect(values((await ds.get(1)).image)).toEqual([0, 64, 128, 255, 0, 64, 128, 255, 0, 64, 128, 255].map(unit));
    const third = await ds.get(2);
    expect(third.caption).toBe("an orange wall");
    expect(third.image.shape).toEqual([3, 2, 2]);
    const [r, g, b] = [0, 4, 8].map((o) => values(third.image)[o]);
    expect(Math.abs(r - unit(200))).toBeLessThan(0.05);
    expect(Math.abs(g - unit(100))).toBeLessThan(0.05);
    expect(Math.abs(b - unit(50))).toBeLessThan(0.05);
  });

  it("gives clear errors", async () => {
    expect(() => new tr.ImageFolderDataset("/nonexistent", { decoder: tr.netpbmDecoder })).toThrow('Expected existing folder for ImageFolderDataset dir but received "/nonexistent" of type string');
    expect(() => new tr.ImageFolderDataset(tempDir(), { decoder: tr.netpbmDecoder })).toThrow(/ImageFolderDataset: no \.pgm\/\.ppm images in/);
    expect(() => new tr.ImageFolderDataset(folder(), { decoder: {} as tr.ImageDecoder })).toThrow("Expected ImageDecoder (extensions, decode) for options.decoder but received Object");
    const dir = folder();
    fs.writeFileSync(path.join(dir, "a.ppm"), "P6\n4 4\n255\nxx");
    await expect(new tr.ImageFolderDataset(dir, { decoder: tr.netpbmDecoder }).get(0)).rejects.toThrow(/netpbmDecoder: ".*a.ppm" is truncated \(2 of 48 pixel bytes\)/);
    await expect(new tr.ImageFolderDataset(dir, { decoder: { ...tr.sharpDecoder, extensions: [".ppm"] } }).get(0)).rejects.toThrow(/sharpDecoder: cannot decode ".*a.ppm"/);
  });
});

describe("mapDataset and latentDataset", () => {
  const images = td.keep(td.rand([3, 3, 16, 16], { generator: new td.Generator(5) }).mul(2).sub(1)); // (N, C, H, W) in [-1, 1]
  const base = tr.tensorDataset(images, { captions: ["a", "b", "c"] });

  it("mapDataset maps each sample, keeps the rest of it and frees the source image", async () => {
    const before = td.memory().numTensors;
    const flipped = tr.mapDataset(base, (sample, index) => ({ ...sample, image: sample.image.neg(), label: index }));
    const sample = await flipped.get(1);
    expect(flipped.length).toBe(3);
    expect(sample).toMatchObject({ caption: "b", label: 1 });
    expect(td.tidy(() => sample.image.add(images.index(1)).abs().max().item())).toBe(0);
    sample.image.dispose();
    expect(td.memory().numTensors).toBe(before);
    const failing = tr.mapDataset(base, () => { throw new Error("bad sample"); });
    await expect(failing.get(0)).rejects.toThrow("bad sample");
    expect(td.memory().numTensors).toBe(before);
    expect(() => tr.mapDataset(base, 3 as never)).toThrow("mapDataset fn");
  });

  it("latentDataset gives the VAE's scaled posterior draw, the same on every read", async () => {
    const model = td.loadModel(path.join(__dirname, "fixtures", "models", "tiny-sd"));
    const vae = model.vae!;
    const latents = tr.latentDataset(base, model, { seed: 7 });
    const first = await latents.get(2);
    const again = await latents.get(2);
    expect(first.caption).toBe("c");
    expect(first.image.shape).toEqual([4, 8, 8]);
    expect(values(again.image)).toEqual(values(first.image));
    const expected = await td.tidyAsync(async () => {
      const posterior = await vae.encode(images.index(2).unsqueeze(0));
      try {
        return vae.scaleLatents(posterior.sample(new td.Generator(7 + 2))).squeeze(0);
      } finally {
        posterior.dispose();
      }
    });
    expect(first.image.sub(expected).abs().max().item()).toBeLessThan(1e-6);
    model.dispose();
  });
});
