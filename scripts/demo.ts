/**
 * The README's main job until the built-in trained model ships: load a model directory
 * (default: the tiny Stable-Diffusion-shaped fixture, random weights), run text-to-image
 * with classifier-free guidance and DDIM, and write a PNG.
 *   npx tsx scripts/demo.ts [--model DIR] [--prompt TEXT] [--steps N] [--seed S] [--out FILE]
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../lib";

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: "string", default: path.join(__dirname, "..", "test", "fixtures", "models", "tiny-sd") },
      prompt: { type: "string", default: "a photo of a sneaker" },
      steps: { type: "string", default: "20" },
      seed: { type: "string", default: "0" },
      size: { type: "string", default: "32" },
      out: { type: "string", default: "demo.png" },
    },
  });
  const started = Date.now();
  const pipe = td.Text2ImagePipeline.fromPretrained(values.model!);
  const scheduler = td.schedulerFromConfig({ ...pipe.components.scheduler.config, _class_name: "DDIMScheduler" });
  const steps = Number(values.steps);
  const baseline = td.memory().numTensors;
  const { images } = await td.noGradAsync(() =>
    pipe.generate({
      prompt: values.prompt!,
      guidanceScale: 7.5,
      numInferenceSteps: steps,
      height: Number(values.size),
      width: Number(values.size),
      scheduler,
      generator: new td.Generator(Number(values.seed)),
      onProgress: ({ step, total }) => process.stdout.write(`\rstep ${step}/${total}`),
    }),
  );
  process.stdout.write("\n");
  await td.writeImage(images.index(0), values.out!);
  const leaked = td.memory().numTensors - baseline - 1;
  images.dispose();
  console.log(`wrote ${values.out} (${images.isDisposed ? "" : ""}${Number(values.size)}×${Number(values.size)}) from "${values.prompt}" in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(`libtorch ${td.buildInfo.torchVersion} (${td.buildInfo.cuda ? "CUDA" : "CPU"} build), tensors left after the call: ${leaked}`);
}

main().catch((error) => {
  console.error(`demo: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
