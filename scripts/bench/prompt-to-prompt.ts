/**
 * Prompt-to-Prompt on the built-in model: what one pair costs against text-to-image, and the
 * README's example figure. One run prints, for `--steps` DDIM steps at the model's guidance
 * (2, so every U-Net call is a batch of 2), the median over `--repeats` interleaved runs of
 *
 *   text2img, 1 image · text2img, 2 images (one batch) · p2p, 1 pair at τ = 0.8 · p2p, 1 pair at τ = 0
 *
 * and the ratios to text2img's one image. A pair costs two U-Net calls per step (source, then
 * target) against text2img's one; at τ > 0 the first ⌊τ·N⌋ of them go through
 * forward_attention_control (probabilities returned, maps edited in between). Then how much of
 * the source the target keeps: mean |source − target| (pixels in [0, 1]) over the example word
 * swaps plus "a photo of a bag" → "a photo of a sneaker", seeds 0-3, by τ (τ = 0 is an
 * independent draw of the target from the same noise).
 *
 *   npx tsx scripts/bench/prompt-to-prompt.ts [--steps 30] [--repeats 7] [--figure docs/p2p-builtin.png]
 *
 * `--figure` writes a grid of word swaps, a row each (seed 0): the source, the Prompt-to-Prompt
 * target (τ = 0.8) and, for comparison, text2img's image of the target prompt from the same seed.
 */
import * as path from "node:path";
import * as td from "../../lib";
import { median } from "./timing";

const args = process.argv.slice(2);
const arg = (name: string, def?: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const STEPS = Number(arg("--steps", "30"));
const REPEATS = Number(arg("--repeats", "7"));
const FIGURE = arg("--figure");
const EXAMPLES: [string, string][] = [
  ["a photo of a shirt", "a photo of a dress"],
  ["a photo of a sneaker", "a photo of a sandal"],
  ["a photo of a pullover", "a photo of a coat"], // 3 tokens (pul|lo|ver) become 2 (co|at)
];

const TAUS = [0, 0.2, 0.4, 0.6, 0.8, 1];

async function timed(fn: () => Promise<td.Tensor[]>): Promise<number> {
  const started = process.hrtime.bigint();
  const out = await fn();
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  for (const t of out) t.dispose();
  return ms;
}

async function main(): Promise<void> {
  const model = td.loadModel("builtin");
  const text2img = new td.Text2ImagePipeline(model);
  const p2p = new td.PromptToPromptPipeline(model);
  const [source, target] = EXAMPLES[0];
  const cases: [string, () => Promise<td.Tensor[]>][] = [
    ["text2img, 1 image", async () => [(await text2img.generate({ prompt: source, numInferenceSteps: STEPS, generator: new td.Generator(0) })).images]],
    ["text2img, 2 images (one batch)", async () => [(await text2img.generate({ prompt: [source, target], numInferenceSteps: STEPS, generator: new td.Generator(0) })).images]],
    ["p2p, 1 pair, τ = 0.8", async () => Object.values(await p2p.generate({ prompt: source, target, crossReplace: 0.8, numInferenceSteps: STEPS, generator: new td.Generator(0) }))],
    ["p2p, 1 pair, τ = 0", async () => Object.values(await p2p.generate({ prompt: source, target, crossReplace: 0, numInferenceSteps: STEPS, generator: new td.Generator(0) }))],
  ];
  for (const [, run] of cases) await timed(run); // warm-up
  const times = cases.map(() => [] as number[]);
  for (let r = 0; r < REPEATS; r++) for (const [i, [, run]] of cases.entries()) times[i].push(await timed(run));
  const base = median(times[0]);
  console.log(`built-in model, ${STEPS} DDIM steps, guidance ${model.defaults.guidanceScale}, ${td.getNumThreads()} threads, libtorch ${td.buildInfo.torchVersion}; medians of ${REPEATS}`);
  for (const [i, [label]] of cases.entries()) console.log(`${label.padEnd(32)} ${median(times[i]).toFixed(0).padStart(6)} ms   ×${(median(times[i]) / base).toFixed(2)}`);

  const swaps = [...EXAMPLES, ["a photo of a bag", "a photo of a sneaker"]];
  console.log("τ      mean |source − target|");
  for (const tau of TAUS) {
    const distances: number[] = [];
    for (const seed of [0, 1, 2, 3]) {
      const pair = await p2p.generate({ prompt: swaps.map((s) => s[0]), target: swaps.map((s) => s[1]), crossReplace: tau, numInferenceSteps: STEPS, generator: new td.Generator(seed) });
      distances.push(td.tidy(() => pair.source.sub(pair.target).abs().mean().item()));
      pair.source.dispose();
      pair.target.dispose();
    }
    console.log(`${tau.toFixed(1)}    ${(distances.reduce((a, b) => a + b, 0) / distances.length).toFixed(4)}`);
  }

  if (FIGURE) {
    const rows: td.Tensor[] = [];
    for (const [prompt, edited] of EXAMPLES) {
      const pair = await p2p.generate({ prompt, target: edited, crossReplace: 0.8, numInferenceSteps: STEPS, generator: new td.Generator(0) });
      const { images } = await text2img.generate({ prompt: edited, numInferenceSteps: STEPS, generator: new td.Generator(0) });
      rows.push(td.cat([pair.source, pair.target, images], 0));
      for (const t of [pair.source, pair.target, images]) t.dispose();
    }
    const grid = td.tidy(() => td.imageGrid(td.interpolate(td.cat(rows, 0), { scaleFactor: 6, mode: "nearest" }), 3));
    await td.writeImage(grid, FIGURE);
    console.log(`wrote ${path.resolve(FIGURE)}: rows ${EXAMPLES.map(([a, b]) => `"${a}" → "${b}"`).join("; ")}`);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
