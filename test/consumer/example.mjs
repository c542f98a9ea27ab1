// The library from an ES module: the namespace, the default export (module.exports) and named imports.
import * as td from "torch-diffusion";
import tdDefault from "torch-diffusion";
import { randn, tidy, Generator, DDIMScheduler } from "torch-diffusion";

const x = randn([2, 3], { generator: new Generator(0) });
const sum = tidy(() => x.mul(2).add(1).sum());
const scheduler = new DDIMScheduler({ num_train_timesteps: 1000 });
scheduler.setTimesteps(4);
console.log(JSON.stringify({ same: td.randn === tdDefault.randn, sum: sum.toFloat32Array()[0], timesteps: scheduler.timesteps, live: td.memory().numTensors }));
x.dispose();
sum.dispose();
