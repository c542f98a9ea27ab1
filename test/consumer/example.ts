// Type-checked only: the public types from the installed package, and `using`.
import * as td from "torch-diffusion";

export function check(): number[] {
  using t = td.zeros([2]);
  using g = td.randn([2, 2], { generator: new td.Generator(0) });
  const shape: number[] = t.shape;
  const values: Float32Array = g.toFloat32Array();
  const scheduler: td.DDIMScheduler = new td.DDIMScheduler({ num_train_timesteps: 1000 });
  scheduler.setTimesteps(values.length);
  return [...shape, ...scheduler.timesteps];
}

export async function generate(dir: string): Promise<void> {
  const model = td.loadModel(dir);
  using images = (await new td.Text2ImagePipeline(model).generate({ prompt: "a photo of a sneaker", numInferenceSteps: 2 })).images;
  await td.writeImage(td.imageGrid(images), "ts.png");
}

export function builtin(): { dir: string; defaults: td.ModelDefaults } {
  const pipe = td.Text2ImagePipeline.fromPretrained("builtin");
  return { dir: td.builtinModelPath(), defaults: pipe.model.defaults };
}
