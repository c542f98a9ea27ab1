// The README's library example, from CommonJS.
const td = require("torch-diffusion");

async function main() {
  const g = new td.Generator(42);
  const x = td.randn([1, 4, 8, 8], { generator: g });
  const y = td.tidy(() => x.mul(0.18215).clamp(-1, 1));
  const z = td.op("aten::hardtanh", x, -1, 1);
  const model = td.loadModel("builtin"); // the package's built-in model, from any project
  const pipe = new td.Text2ImagePipeline(model);
  const { images } = await pipe.generate({ prompt: "a photo of a sneaker", guidanceScale: 2, numInferenceSteps: 2, generator: g });
  await td.writeImage(td.imageGrid(images), "cjs.png");
  const result = { shape: y.shape, max: Math.max(...z.toFloat32Array()), images: images.shape, builtin: td.builtinModelPath(), defaults: model.defaults };
  for (const t of [x, y, z, images]) t.dispose();
  console.log(JSON.stringify(result));
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
