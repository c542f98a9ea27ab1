#!/usr/bin/env node
// Builds the addon from source with cmake-js against the libtorch find-libtorch.js picks.
// Used by `npm install` (when no matching prebuilt binary exists) and by binding.gyp.
"use strict";
const path = require("node:path");
const { spawnSync } = require("node:child_process");
const { findLibtorch } = require("./find-libtorch");

const root = path.resolve(__dirname, "..");
let torch;
try {
  torch = findLibtorch();
} catch (error) {
  console.error(`torch-diffusion: ${error.message}`);
  process.exit(1);
}
console.log(`torch-diffusion: building against libtorch ${torch.version} (${torch.source}: ${torch.torchDir}), CUDA ${torch.cuda ? "on" : "off"}`);
// `--copy-to DIR` (binding.gyp): build in build/cmake, away from node-gyp's own files, then copy the .node to DIR.
const argv = process.argv.slice(2);
const copyIndex = argv.indexOf("--copy-to");
const copyTo = copyIndex >= 0 ? path.resolve(argv.splice(copyIndex, 2)[1]) : null;
const outDir = path.join(root, "build", copyTo ? "cmake" : "");
const cmakeJs = require.resolve("cmake-js/bin/cmake-js");
const args = [cmakeJs, "compile", "--out", outDir, `--CDTorch_DIR=${torch.torchDir}`, ...argv];
const jobs = process.env.CMAKE_BUILD_PARALLEL_LEVEL || String(require("node:os").availableParallelism?.() || 2);
const result = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit", env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs } });
if (result.status === 0 && copyTo) {
  require("node:fs").mkdirSync(copyTo, { recursive: true });
  require("node:fs").copyFileSync(path.join(outDir, "Release", "torch_diffusion.node"), path.join(copyTo, "torch_diffusion.node"));
}
process.exit(result.status ?? 1);
