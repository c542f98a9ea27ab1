#!/usr/bin/env node
// Locates libtorch for the build and the loader, in the documented order:
//   1. LIBTORCH (a libtorch root) or Torch_DIR (its share/cmake/Torch) from the environment;
//   2. the torch of the `python3` on PATH (torch.utils.cmake_prefix_path);
//   3. the system (Debian's libtorch-dev and the usual prefixes).
// Prints JSON when run directly; `require()` gives findLibtorch().
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { execFileSync } = require("node:child_process");

const HOW_TO_GET_ONE = [
  "torch-diffusion needs libtorch (1.13 or 2.x). Any one of these works:",
  "  - Debian/Ubuntu: sudo apt-get install -y libtorch-dev",
  "  - a libtorch download or build: export LIBTORCH=/path/to/libtorch (the folder holding include/ and lib/)",
  "  - a Python PyTorch: make `python3 -c 'import torch'` work for the python3 on PATH",
].join("\n");

function torchDirFromPrefix(prefix) {
  for (const sub of ["share/cmake/Torch", "lib/cmake/Torch", "Torch", "."]) {
    const dir = path.join(prefix, sub);
    if (fs.existsSync(path.join(dir, "TorchConfig.cmake"))) return dir;
  }
  return null;
}

function fromEnvironment() {
  if (process.env.Torch_DIR) {
    if (!fs.existsSync(path.join(process.env.Torch_DIR, "TorchConfig.cmake"))) {
      throw new Error(`Torch_DIR=${process.env.Torch_DIR} has no TorchConfig.cmake.\n${HOW_TO_GET_ONE}`);
    }
    return { torchDir: process.env.Torch_DIR, source: "Torch_DIR" };
  }
  if (process.env.LIBTORCH) {
    const torchDir = torchDirFromPrefix(process.env.LIBTORCH);
    if (!torchDir) throw new Error(`LIBTORCH=${process.env.LIBTORCH} holds no share/cmake/Torch/TorchConfig.cmake.\n${HOW_TO_GET_ONE}`);
    return { torchDir, source: "LIBTORCH" };
  }
  return null;
}

function fromPython() {
  try {
    const prefix = execFileSync("python3", ["-c", "import torch.utils; print(torch.utils.cmake_prefix_path)"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      timeout: 60_000,
    }).trim();
    const torchDir = prefix && torchDirFromPrefix(prefix);
    return torchDir ? { torchDir, source: "python3 torch" } : null;
  } catch {
    return null;
  }
}

function fromSystem() {
  const candidates = ["/usr/lib/x86_64-linux-gnu/cmake/Torch", "/usr/lib/aarch64-linux-gnu/cmake/Torch", "/usr/local/lib/cmake/Torch", "/usr/lib/cmake/Torch", "/usr/share/cmake/Torch", "/usr/local/share/cmake/Torch"];
  const torchDir = candidates.find((dir) => fs.existsSync(path.join(dir, "TorchConfig.cmake")));
  return torchDir ? { torchDir, source: "system" } : null;
}

// Reads TORCH_VERSION from the installed headers and whether a CUDA library sits beside libtorch.
function describe(found) {
  const prefix = path.resolve(found.torchDir, "../../..");
  const headerCandidates = [path.join(prefix, "include/torch/csrc/api/include/torch/version.h"), "/usr/include/torch/csrc/api/include/torch/version.h"];
  const header = headerCandidates.find((file) => fs.existsSync(file));
  let version = "unknown";
  if (header) {
    const text = fs.readFileSync(header, "utf8");
    const part = (name) => (new RegExp(`#define TORCH_VERSION_${name}\\s+(\\d+)`).exec(text) || [])[1];
    if (part("MAJOR")) version = `${part("MAJOR")}.${part("MINOR")}.${part("PATCH")}`;
  }
  const libDirs = [path.join(prefix, "lib"), path.resolve(found.torchDir, "../..")];
  const libDir = libDirs.find((dir) => fs.existsSync(path.join(dir, "libtorch.so")) || fs.existsSync(path.join(dir, "libtorch.dylib"))) || null;
  const cuda = !!libDir && fs.existsSync(path.join(libDir, "libtorch_cuda.so"));
  return { ...found, version, libDir, cuda };
}

function findLibtorch() {
  const found = fromEnvironment() || fromPython() || fromSystem();
  if (!found) throw new Error(`No libtorch found.\n${HOW_TO_GET_ONE}`);
  return describe(found);
}

module.exports = { findLibtorch, HOW_TO_GET_ONE };

if (require.main === module) {
  try {
    process.stdout.write(JSON.stringify(findLibtorch(), null, 2) + "\n");
  } catch (error) {
    process.stderr.write(error.message + "\n");
    process.exit(1);
  }
}
