#!/usr/bin/env node
// `npm install` hook: use a prebuilt binary when one matches this machine's libtorch
// (same rule as lib/native.ts), else build from source with CMake.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { spawnSync } = require("node:child_process");
const { findLibtorch } = require("./find-libtorch");

const root = path.resolve(__dirname, "..");
const prebuilds = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);

function matchingPrebuilt() {
  if (!fs.existsSync(prebuilds)) return null;
  let torch;
  try {
    torch = findLibtorch();
  } catch {
    return null;
  }
  const tag = `.torch${torch.version.split(".").slice(0, 2).join(".")}.${torch.cuda ? "cuda" : "cpu"}.node`;
  return fs.readdirSync(prebuilds).find((file) => file.endsWith(tag)) || null;
}

if (process.env.TORCH_DIFFUSION_BUILD_FROM_SOURCE !== "1") {
  const prebuilt = matchingPrebuilt();
  if (prebuilt) {
    console.log(`torch-diffusion: using prebuilt ${prebuilt}`);
    process.exit(0);
  }
}
const result = spawnSync(process.execPath, [path.join(__dirname, "build-native.js")], { cwd: root, stdio: "inherit" });
process.exit(result.status ?? 1);
