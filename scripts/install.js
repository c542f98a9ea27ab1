#!/usr/bin/env node
// `npm install` hook: use a prebuilt binary when one matches this machine's libtorch
// (scripts/prebuilt.js, the rule lib/native.ts loads by), else build from source with CMake.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { spawnSync } = require("node:child_process");
const { findLibtorch } = require("./find-libtorch");
const { findPrebuilt, prebuiltDir } = require("./prebuilt");

const root = path.resolve(__dirname, "..");

function matchingPrebuilt() {
  const dir = prebuiltDir(root);
  if (!fs.existsSync(dir)) return null;
  let torch;
  try {
    torch = findLibtorch();
  } catch {
    return null;
  }
  const { match } = findPrebuilt(dir, torch);
  return match ? match.file : null;
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
