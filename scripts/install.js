#!/usr/bin/env node
// `npm install` hook. With a prebuilt binary matching this machine's libtorch (the rule is
// scripts/prebuilt.js, the same lib/native.ts loads by) there is nothing to do — and nothing
// here is needed: the loader finds the binary itself, so installs that skip dependencies'
// scripts (pnpm 10, npm --ignore-scripts) work too. Otherwise it builds from source
// (scripts/build-native.js: system cmake, a C++ compiler and libtorch; nothing is downloaded).
// TORCH_DIFFUSION_BUILD_FROM_SOURCE=1 builds even when a prebuilt binary matches.
"use strict";
const path = require("node:path");
const { spawnSync } = require("node:child_process");
const { findLibtorchRuntime } = require("./find-libtorch");
const { describeVariant, findPrebuilt, prebuiltDir } = require("./prebuilt");

const root = path.resolve(__dirname, "..");

/** The matching prebuilt file name, or null with the reason printed when there are prebuilt binaries but none fits. */
function matchingPrebuilt() {
  const dir = prebuiltDir(root);
  let torch;
  try {
    torch = findLibtorchRuntime();
  } catch (error) {
    return { file: null, why: error.message.split("\n")[0] };
  }
  const { variants, wanted, match } = findPrebuilt(dir, torch);
  if (match) return { file: match.file, why: `for ${describeVariant(wanted)} (${torch.source}: ${torch.libDir})` };
  if (variants.length === 0) return { file: null, why: null };
  return { file: null, why: `the libtorch found (${torch.source}: ${torch.libDir}) is ${describeVariant(wanted)}; the prebuilt binaries are for ${variants.map(describeVariant).join("; ")}` };
}

function main() {
  if (process.env.TORCH_DIFFUSION_BUILD_FROM_SOURCE !== "1") {
    const { file, why } = matchingPrebuilt();
    if (file) {
      console.log(`torch-diffusion: using the prebuilt ${file} ${why}`);
      return 0;
    }
    if (why) console.log(`torch-diffusion: no prebuilt binary fits (${why}); building from source.`);
  }
  const result = spawnSync(process.execPath, [path.join(__dirname, "build-native.js")], { cwd: root, stdio: "inherit" });
  return result.status ?? 1;
}

process.exitCode = main();
