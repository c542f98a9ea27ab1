#!/usr/bin/env node
// `npm run build:prebuilt`: builds the addon in its own folder (build/prebuilt, never the
// development tree in build/), strips it and files it under prebuilds/ tagged with what it
// depends on (scripts/prebuilt.js), e.g.
//   prebuilds/linux-x64/torch_diffusion.napi.glibc.torch1.13.so1.13.cxx11.cpu.node
// The tag comes from the libtorch built against and is checked against the binary itself: the
// libtorch soname it NEEDs and whether its symbols use the C++11 ABI.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { spawnSync } = require("node:child_process");
const { findLibtorch, readElfDynamic, usesCxx11Abi } = require("./find-libtorch");
const { prebuiltDir, prebuiltName, variantOf } = require("./prebuilt");

const root = path.resolve(__dirname, "..");

function main() {
  const torch = findLibtorch();
  const buildDir = path.join(root, "build", "prebuilt");
  const status = spawnSync(process.execPath, [path.join(__dirname, "build-native.js"), "--build-dir", buildDir], { cwd: root, stdio: "inherit" }).status;
  if (status !== 0) return status ?? 1;

  const built = path.join(buildDir, "Release", "torch_diffusion.node");
  const dir = prebuiltDir(root);
  const target = path.join(dir, prebuiltName(torch));
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(built, target);
  const strip = spawnSync("strip", ["--strip-unneeded", target], { stdio: "inherit" });
  if (strip.error) console.warn(`torch-diffusion: not stripped (${strip.error.message})`);

  const wanted = variantOf(torch);
  const elf = readElfDynamic(target);
  const problems = [];
  if (!elf || !elf.needed.includes(wanted.soname)) problems.push(`it NEEDs ${elf ? elf.needed.filter((n) => n.startsWith("libtorch")).join(", ") : "(unreadable)"}, not ${wanted.soname}`);
  if (usesCxx11Abi(target) !== (wanted.abi === "cxx11")) problems.push(`its symbols do not use the ${wanted.abi} ABI`);
  if (problems.length > 0) {
    fs.rmSync(target, { force: true });
    console.error(`torch-diffusion: the built binary does not match its tag ${path.basename(target)}: ${problems.join("; ")}`);
    return 1;
  }
  console.log(`torch-diffusion: prebuilt ${path.relative(root, target)} (libtorch ${torch.version}, ${torch.source})`);
  return 0;
}

process.exitCode = main();
