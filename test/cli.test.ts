import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import * as td from "../lib";
import { runCli, type CliResult as Result } from "./helpers/cli";
import { fixtures } from "./helpers";

const root = path.resolve(__dirname, "..");
const model = path.join(fixtures, "models", "tiny-sd");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-cli-"));
const file = (name: string) => path.join(tmp, name);
const tiny = ["--model", model, "--steps", "2", "--seed", "1", "--scheduler", "ddim"];

/** The real command, end to end: a tsx process (about a second of startup each, so few of them). */
function cli(args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile("npx", ["tsx", "lib/cli.ts", ...args], { cwd: root, env: { ...process.env, FORCE_COLOR: "0" } }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** The command in-process, for the many cheap checks of help and bad input. */
const inProcess = (args: string[]) => runCli(args);

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
async function expectPng(name: string, width: number, height: number): Promise<td.Tensor> {
  const bytes = fs.readFileSync(name);
  expect(Array.from(bytes.subarray(0, 8))).toEqual(PNG_SIGNATURE);
  const image = await td.readImage(bytes);
  expect(image.shape).toEqual([1, 3, height, width]);
  return image;
}

describe("torch-diffusion command, end to end", () => {
  const runs: Record<string, Promise<Result>> = {};
  const input = td.keep(td.rand([1, 3, 16, 16], { generator: new td.Generator(0) }));

  beforeAll(async () => {
    await td.writeImage(input.index(0), file("input.png"));
    const mask = td.cat([td.zeros([1, 16, 8]), td.ones([1, 16, 8])], 2); // repaint the right half
    await td.writeImage(mask, file("mask.png"));
    // The processes run side by side: most of their time is startup.
    Object.assign(runs, {
      generate: cli(["generate", ...tiny, "--prompt", "a sneaker", "--width", "16", "--height", "24", "--batch", "2", "--grid", file("grid.png"), "--out", file("gen.png")]),
      edit: cli(["edit", ...tiny, "--clip-skip", "1", "--prompt", "a bag", "--image", file("input.png"), "--strength", "1", "--out", file("edit.png")]),
      inpaint: cli(["inpaint", ...tiny, "--prompt", "a coat", "--image", file("input.png"), "--mask", file("mask.png"), "--scheduler", "euler-a", "--out", file("out/inpaint.png")]),
      builtin: cli(["generate", "a photo of a sneaker", "--steps", "8", "--guidance", "1.5", "--seed", "0", "--out", file("builtin.png")]),
      info: cli(["info"]),
      infoTiny: cli(["info", "--model", path.join(fixtures, "models", "tiny-sd")]),
      badSteps: cli(["generate", ...tiny, "--prompt", "x", "--steps", "-3"]),
      help: cli(["generate", "--help"]),
    });
  });

  it("generate writes PNGs of the asked size, one per image, and a grid", async () => {
    const { code, stdout, stderr } = await runs.generate;
    expect(stderr).not.toMatch(/\bat /);
    expect(code).toBe(0);
    expect(stdout.trim().split("\n")).toEqual([file("gen-0.png"), file("gen-1.png"), file("grid.png")]);
    await expectPng(file("gen-0.png"), 16, 24);
    await expectPng(file("gen-1.png"), 16, 24);
    await expectPng(file("grid.png"), 32, 24);
    expect(stderr).toMatch(/generate: 2 images 16×24, 2 steps of DDIMScheduler, seed 1/);
  });

  it("generate without --model runs the built-in model: a 32×32 gray PNG", async () => {
    const { code, stdout, stderr } = await runs.builtin;
    expect(stderr).toMatch(/generate: 1 image 32×32, 8 steps of DPMSolverMultistepScheduler, seed 0/);
    expect({ code, stdout }).toEqual({ code: 0, stdout: `${file("builtin.png")}\n` });
    const image = await expectPng(file("builtin.png"), 32, 32);
    expect(image.narrow(1, 0, 1).sub(image.narrow(1, 2, 1)).abs().max().item()).toBe(0); // gray: R = B
    expect(image.std().item()).toBeGreaterThan(0.1); // an object on a background, not a flat image
  });

  it("edit and inpaint write PNGs; inpaint keeps the unmasked half", async () => {
    const edit = await runs.edit;
    expect(edit.code).toBe(0);
    await expectPng(file("edit.png"), 16, 16);
    const inpaint = await runs.inpaint;
    expect(inpaint.code).toBe(0);
    expect(inpaint.stderr).toMatch(/EulerAncestralDiscreteScheduler/);
    const out = await expectPng(file("out/inpaint.png"), 16, 16);
    const original = await td.readImage(file("input.png"));
    expect(Array.from(out.narrow(3, 0, 8).toFloat32Array())).toEqual(Array.from(original.narrow(3, 0, 8).toFloat32Array()));
    expect(out.narrow(3, 8, 8).sub(original.narrow(3, 8, 8)).abs().max().item()).toBeGreaterThan(0);
  });

  it("info prints the components, libtorch and CUDA; without --model it describes the built-in model", async () => {
    const tiny = await runs.infoTiny;
    expect(tiny.code).toBe(0);
    for (const text of ["unet", "UNet2DConditionModel", "vae", "AutoencoderKL", "text_encoder", "tokenizer", "PNDMScheduler", `libtorch: ${td.buildInfo.torchVersion}`, "CUDA:", "threads:"]) {
      expect(tiny.stdout).toContain(text);
    }
    const builtin = await runs.info;
    expect(builtin.code).toBe(0);
    expect(builtin.stdout).toContain(path.join("models", "builtin"));
    for (const text of ["UNet2DConditionModel", "CLIPTextModel", "DDIMScheduler"]) expect(builtin.stdout).toContain(text);
    expect(builtin.stderr).not.toMatch(/not installed yet/);
  });

  it("bad input exits 1 with one line and no stack trace; --help works", async () => {
    const bad = await runs.badSteps;
    expect(bad).toEqual({ code: 1, stdout: "", stderr: 'torch-diffusion: --steps: expected a positive integer but got "-3"\n' });
    const help = await runs.help;
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: torch-diffusion generate \[--prompt\] TEXT/);
  });
});

describe("torch-diffusion command, in-process", () => {
  it("takes the prompt as the one positional argument", async () => {
    const { parseCommand } = await import("../lib/cli/args");
    expect(parseCommand("generate", ["a photo of a sneaker", "--steps", "2"]).prompt).toBe("a photo of a sneaker");
    expect(() => parseCommand("generate", ["a", "b"])).toThrow('generate: unexpected argument "b" (see torch-diffusion generate --help)');
  });

  it("--help for the top level and every command", async () => {
    const top = await inProcess(["--help"]);
    expect(top.code).toBe(0);
    for (const command of ["generate", "edit", "inpaint", "train", "info"]) {
      expect(top.stdout).toContain(`  ${command}`);
      const help = await inProcess([command, "--help"]);
      expect(help).toMatchObject({ code: 0, stderr: "" });
      expect(help.stdout).toMatch(new RegExp(`^Usage: torch-diffusion ${command}`));
      expect(help.stdout).toContain("--help");
    }
    expect((await inProcess(["inpaint", "-h"])).stdout).toContain("--mask FILE");
    expect((await inProcess(["help", "edit"])).stdout).toContain("(default 0.8)");
    expect((await inProcess([])).code).toBe(1);
  });

  it("usage errors and bad values: exit 1 and one line naming the problem", async () => {
    const cases: [string[], string][] = [
      [["frobnicate"], `unknown command "frobnicate" (commands: ${Object.keys((await import("../lib/cli/args")).COMMANDS).join(", ")}; see torch-diffusion --help)`],
      [["generate", "--bogus"], "generate: unknown option --bogus (see torch-diffusion generate --help)"],
      [["generate", "--prompt"], "generate: --prompt needs a value (see torch-diffusion generate --help)"],
      [["generate", "--prompt", "x", "stray"], 'generate: unexpected argument "stray" (see torch-diffusion generate --help)'],
      [["info", "--prompt", "x"], "info: unknown option --prompt (see torch-diffusion info --help)"],
      [["generate", "--model", model], "--prompt is required"],
      [["generate", "--model", model, "--prompt", "x", "--steps", "2.5"], '--steps: expected a positive integer but got "2.5"'],
      [["generate", "--model", model, "--prompt", "x", "--guidance", "lots"], '--guidance: expected a number but got "lots"'],
      [["generate", "--model", model, "--prompt", "x", "--clip-skip", "-1"], '--clip-skip: expected a non-negative integer but got "-1"'],
      [["generate", "--model", model, "--prompt", "x", "--device", "tpu"], '--device: expected cpu, cuda or cuda:N but got "tpu"'],
      [["generate", "--model", path.join(tmp, "nowhere"), "--prompt", "x"], `--model: no such model directory: ${path.join(tmp, "nowhere")}`],
      [["edit", "--model", model, "--prompt", "x", "--image", file("missing.png")], `--image: no such file: ${file("missing.png")}`],
      [["edit", "--model", model, "--prompt", "x", "--image", __filename, "--strength", "1.5"], '--strength: expected a number in [0, 1] but got "1.5"'],
      [["inpaint", "--model", model, "--prompt", "x", "--image", __filename], "--mask is required"],
      [["generate", "--model", model, "--prompt", "x", "--out", file("x.foo")], `--out: ${file("x.foo")}: cannot write images as ".foo"; use one of .png, .jpg, .jpeg, .webp, .tif, .tiff (PNG, JPEG, WebP, TIFF)`],
      [["generate", "--model", model, "--prompt", "x", "--grid", file("grid")], `--grid: ${file("grid")}: cannot write images as "(no extension)"; use one of .png, .jpg, .jpeg, .webp, .tif, .tiff (PNG, JPEG, WebP, TIFF)`],
    ];
    for (const [args, message] of cases) {
      expect(await inProcess(args), args.join(" ")).toEqual({ code: 1, stdout: "", stderr: `torch-diffusion: ${message}\n` });
    }
  });

  it("writes the format the extension names, atomically (no temp files left)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-formats-"));
    const image = td.rand([3, 8, 8], { generator: new td.Generator(0) });
    const magic: Record<string, number[]> = { "a.png": [0x89, 0x50], "a.jpg": [0xff, 0xd8], "a.webp": [0x52, 0x49], "a.tiff": [0x49, 0x49] };
    for (const [name, bytes] of Object.entries(magic)) {
      await td.writeImage(image, path.join(dir, name));
      expect(Array.from(fs.readFileSync(path.join(dir, name)).subarray(0, 2)), name).toEqual(bytes);
    }
    await expect(td.writeImage(image, path.join(dir, "a.bmp"))).rejects.toThrow('cannot write images as ".bmp"');
    expect(fs.readdirSync(dir).sort()).toEqual(Object.keys(magic).sort());
    image.dispose();
  });

  it("reports an unknown scheduler and a library error in one line each", async () => {
    const scheduler = await inProcess(["generate", "--model", model, "--prompt", "x", "--scheduler", "bogus"]);
    expect(scheduler.code).toBe(1);
    expect(scheduler.stderr).toMatch(/^torch-diffusion: --scheduler: expected one of ddim, ddpm, euler, euler-a, dpm\+\+2m, unipc, heun, lms, pndm, lcm or a class name \(.*DDIMScheduler.*\) but got "bogus"\n$/);
    const odd = await inProcess(["generate", "--model", model, "--prompt", "x", "--steps", "1", "--width", "15", "--height", "16"]);
    expect(odd).toEqual({ code: 1, stdout: "", stderr: "torch-diffusion: Expected multiple of 2 for width but received 15 of type number\n" });
    const huge = await inProcess(["generate", "a bag", "--batch", "1000000", "--out", file("huge.png")]);
    expect(huge.code).toBe(1);
    expect(huge.stderr).toMatch(/^torch-diffusion: generate: 2000000 denoiser inputs of 32×32 would need about \d+ GiB, more than the [\d.]+ GiB limit .*: use fewer images or a smaller size\n$/);
  });

  it("cuts TorchScript tracebacks from error lines unless --verbose", async () => {
    const { errorLine } = await import("../lib/cli");
    const error = new Error("Module.forward: expected 4 channels, but got 3 channels instead\nThe following operation failed in the TorchScript interpreter.\nTraceback of TorchScript, serialized code:\n  File \"code.py\", line 59");
    expect(errorLine(error)).toBe("Module.forward: expected 4 channels, but got 3 channels instead (the full error with --verbose)");
    expect(errorLine(error, true)).toBe('Module.forward: expected 4 channels, but got 3 channels instead The following operation failed in the TorchScript interpreter. Traceback of TorchScript, serialized code: File "code.py", line 59');
    expect(errorLine(new Error("plain\nmessage"))).toBe("plain message");
  });
});
