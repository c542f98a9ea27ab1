/**
 * Run as `node --import tsx test/helpers/worker-terminate.ts`: worker threads queue async U-Net
 * calls and are terminated with those calls in flight on the executor thread; then this thread
 * still runs one. Prints one line per step; a crash shows as a non-zero exit.
 */
import * as path from "node:path";
import { isMainThread, parentPort, Worker } from "node:worker_threads";
import * as td from "../../lib";

const unetPath = path.join(__dirname, "..", "..", "models", "builtin", "unet", "model.pt");
const args = () => [td.randn([4, 1, 32, 32]), td.tensor([10], undefined, { dtype: "int64" }), td.randn([4, 8, 64])];

async function worker(): Promise<void> {
  const unet = td.load(unetPath);
  const a = args();
  const out = (await td.noGradAsync(() => unet.forward(...a))) as td.Tensor;
  parentPort!.postMessage(`worker result ${out.shape.join("x")}`);
  for (let i = 0; i < 10; i++) void unet.forward(...a); // left in flight
  parentPort!.postMessage("queued");
}

async function main(): Promise<void> {
  for (let round = 0; round < 2; round++) {
    // Workers do not inherit tsx's loader: register its require hook first.
    const w = new Worker(`require("tsx/cjs"); require(${JSON.stringify(__filename)});`, { eval: true });
    await new Promise<void>((resolve, reject) => {
      w.on("error", reject);
      w.on("message", (m: string) => (m === "queued" ? resolve() : console.log(m)));
    });
    await w.terminate();
    console.log(`round ${round}: terminated with calls in flight`);
  }
  const unet = td.load(unetPath);
  const out = (await td.noGradAsync(() => unet.forward(...args()))) as td.Tensor;
  console.log(`main result ${out.shape.join("x")}`);
}

void (isMainThread ? main() : worker());
