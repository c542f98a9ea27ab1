#!/usr/bin/env node
// `npm run prebuild`: prebuildify (which runs `node-gyp rebuild` -> binding.gyp -> CMake) and
// then tags the binary with the libtorch it needs, e.g.
// prebuilds/linux-x64/torch_diffusion.napi.glibc.torch2.11.cuda.node. lib/native.ts picks the
// variant matching the machine's libtorch and refuses the others with a clear message.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { spawnSync } = require("node:child_process");
const { findLibtorch } = require("./find-libtorch");
const { prebuiltDir, prebuiltTag } = require("./prebuilt");

const root = path.resolve(__dirname, "..");
const torch = findLibtorch();
const tag = prebuiltTag(torch);
const prebuildify = require.resolve("prebuildify/bin.js");
const result = spawnSync(process.execPath, [prebuildify, "--napi", "--strip", "--tag-libc", "--name", "torch_diffusion"], { cwd: root, stdio: "inherit" });
if (result.status !== 0) process.exit(result.status ?? 1);
const dir = prebuiltDir(root);
for (const file of fs.readdirSync(dir)) {
  if (!/^torch_diffusion\.[^.]+\.node$/.test(file) && file !== "torch_diffusion.node") continue;
  const libc = file.split(".").length === 3 ? file.split(".")[1] : "glibc";
  const target = `torch_diffusion.napi.${libc}.${tag}.node`;
  fs.renameSync(path.join(dir, file), path.join(dir, target));
  console.log(`torch-diffusion: prebuilt ${path.join("prebuilds", path.basename(dir), target)} (libtorch ${torch.version}, ${torch.source})`);
}
