// Type-checked only, as an ES module (the "import" condition of the exports map).
import * as td from "torch-diffusion";
import tdDefault, { zeros, type Tensor } from "torch-diffusion";

export function check(): number {
  using t: Tensor = zeros([3]);
  using u = tdDefault.ones([3]);
  return t.add(u).shape[0] + td.memory().numTensors;
}
