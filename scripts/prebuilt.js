// The one rule for prebuilt binaries, shared by scripts/prebuild.js (names them),
// scripts/install.js (skips the source build when one matches) and lib/native.ts (loads it):
// prebuilds/<platform>-<arch>/torch_diffusion.napi.<libc>.torch<major.minor>.<cpu|cuda>.node
"use strict";
const fs = require("node:fs");
const path = require("node:path");

/** The tag of a binary built against `torch` ({ version, cuda }), e.g. "torch1.13.cpu". */
function prebuiltTag(torch) {
  return `torch${torch.version.split(".").slice(0, 2).join(".")}.${torch.cuda ? "cuda" : "cpu"}`;
}

/** { file, torch: "1.13", flavor: "cpu" | "cuda" } for a prebuilt file name, else null. */
function parsePrebuiltName(file) {
  const match = /\.torch(\d+\.\d+)\.(cpu|cuda)\.node$/.exec(file);
  return match ? { file, torch: match[1], flavor: match[2] } : null;
}

/** The folder of this platform's prebuilt binaries inside the package at `root`. */
function prebuiltDir(root) {
  return path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
}

/**
 * The prebuilt variants in `dir` and the one matching `torch` (null when none does).
 * @returns {{ variants: {file: string, torch: string, flavor: string}[], match: {file: string, torch: string, flavor: string} | null }}
 */
function findPrebuilt(dir, torch) {
  const variants = fs.existsSync(dir) ? fs.readdirSync(dir).map(parsePrebuiltName).filter(Boolean) : [];
  const wanted = parsePrebuiltName(`x.${prebuiltTag(torch)}.node`);
  const match = variants.find((v) => v.torch === wanted.torch && v.flavor === wanted.flavor) || null;
  return { variants, match };
}

module.exports = { prebuiltTag, parsePrebuiltName, prebuiltDir, findPrebuilt };
