/**
 * A from-source install of the packed package, as a user without a matching prebuilt binary
 * gets it: pack with no prebuilds/, `npm ci --offline` into an empty project (the install
 * script builds the addon with the system cmake, compiler and libtorch), then check that
 * node_modules stays small (only build/Release/torch_diffusion.node kept, not the CMake tree)
 * and that the CLI generates an image. A CI step (.ci/run), not part of `npm test`: the build
 * takes minutes. Past `--timeout` seconds (default 300) it stops the install and its build,
 * cleans up and exits 124.
 *
 *   npx tsx test/consumer/source-install.ts [--timeout 300] [--keep]
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { diskUsage, makeConsumer, packPackage } from "./pack";

const LIMIT_MB = 50;

/** Runs `command` in its own process group; past `seconds`, stops the whole group. Resolves to the exit code, or "timeout". */
function runWithin(seconds: number, command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<number | "timeout"> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { ...options, stdio: "inherit", detached: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      process.kill(-child.pid!, "SIGTERM"); // npm, the install script, cmake and the compilers; build-native.js removes its temporary tree
    }, seconds * 1000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve(timedOut ? "timeout" : (code ?? 1));
    });
  });
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const limit = argv.includes("--timeout") ? Number(argv[argv.indexOf("--timeout") + 1]) : 300;
  const keep = argv.includes("--keep");
  const started = Date.now();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "td-source-install-"));
  try {
    const consumer = path.join(work, "consumer");
    makeConsumer(consumer, packPackage(work, null));
    const env: NodeJS.ProcessEnv = { ...process.env, npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false" };
    for (const name of ["LIBTORCH", "Torch_DIR", "TORCH_DIFFUSION_NATIVE"]) delete env[name];
    const left = limit - (Date.now() - started) / 1000;
    const install = await runWithin(left, "npm", ["ci", "--offline", "--foreground-scripts"], { cwd: consumer, env });
    const seconds = ((Date.now() - started) / 1000).toFixed(0);
    if (install === "timeout") {
      console.error(`source-install: stopped after ${seconds} s (--timeout ${limit})`);
      return 124;
    }
    if (install !== 0) {
      console.error(`source-install: npm ci failed (exit ${install}) after ${seconds} s`);
      return 1;
    }
    const installed = path.join(consumer, "node_modules", "torch-diffusion");
    const megabytes = diskUsage(path.join(consumer, "node_modules")) / 1e6;
    const buildFiles = fs.readdirSync(path.join(installed, "build"), { recursive: true }).map(String).sort();
    console.log(`source-install: packed, installed and built in ${seconds} s; node_modules ${megabytes.toFixed(1)} MB; build/ holds ${buildFiles.join(", ")}`);
    const generate = spawnSync("npx", ["torch-diffusion", "generate", "a photo of a sneaker", "--steps", "2", "--out", "x.png"], { cwd: consumer, env, encoding: "utf8" });
    const problems = [
      megabytes < LIMIT_MB ? null : `node_modules is ${megabytes.toFixed(1)} MB, over ${LIMIT_MB} MB`,
      buildFiles.join(",") === ["Release", path.join("Release", "torch_diffusion.node")].join(",") ? null : `build/ keeps more than the addon: ${buildFiles.join(", ")}`,
      generate.status === 0 && fs.existsSync(path.join(consumer, "x.png")) ? null : `generate failed: ${generate.stderr.trim()}`,
    ].filter(Boolean);
    for (const problem of problems) console.error(`source-install: ${problem}`);
    if (problems.length === 0) console.log("source-install: ok");
    return problems.length === 0 ? 0 : 1;
  } finally {
    if (keep) console.log(`source-install: kept ${work}`);
    else fs.rmSync(work, { recursive: true, force: true });
  }
}

main().then((code) => {
  process.exitCode = code;
});
