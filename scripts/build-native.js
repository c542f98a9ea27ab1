#!/usr/bin/env node
// Builds the addon from source: CMake (CMakeLists.txt, the build of record) against the
// libtorch find-libtorch.js picks, with the Node-API headers of the node-api-headers and
// node-addon-api packages. No cmake-js and nothing downloaded: cmake, a C++ compiler and
// libtorch come from the system, and a missing one is named with how to get it.
//
//   node scripts/build-native.js [--build-dir DIR] [--copy-to DIR]
//
// Where it builds: DIR; else, in a development checkout (a .git, not inside node_modules),
// build/ (kept for incremental builds); else (an installed package) a temporary folder that is
// deleted afterwards, so node_modules keeps only build/Release/torch_diffusion.node (~1 MB, not
// the ~400 MB CMake tree). The addon always ends up in <build>/Release/torch_diffusion.node and,
// from a temporary folder, in build/Release/; `--copy-to` copies it there too (binding.gyp).
"use strict";
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { spawnSync } = require("node:child_process");
const { findLibtorch, HOW_TO_GET_ONE } = require("./find-libtorch");
const { describeVariant, howToGetVariant, listPrebuilt, prebuiltDir, variantOf } = require("./prebuilt");

const root = path.resolve(__dirname, "..");
const ADDON = "torch_diffusion.node";

/** The first executable named `name` on PATH, else null. */
function which(name) {
  if (name.includes("/")) return isExecutable(name) ? name : null;
  for (const dir of (process.env.PATH || "").split(path.delimiter)) {
    const file = path.join(dir || ".", name);
    if (isExecutable(file)) return file;
  }
  return null;
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function cmakeVersion(cmake) {
  const result = spawnSync(cmake, ["--version"], { encoding: "utf8" });
  return (/cmake version (\d+)\.(\d+)/.exec(result.stdout || "") || []).slice(1).map(Number);
}

/** Whether the package sits in a development checkout, where the build tree is worth keeping. */
function isCheckout() {
  return fs.existsSync(path.join(root, ".git")) && !root.split(path.sep).includes("node_modules");
}

/** The prebuilt alternative, in words, for the failure message. */
function prebuiltHint() {
  const variants = listPrebuilt(prebuiltDir(root));
  if (variants.length === 0) return `  This package ships no prebuilt binary for ${process.platform}-${process.arch}; a source build is the way.`;
  return [
    "  Or skip the build: this package ships prebuilt binaries, used without any compiler when their libtorch is installed:",
    ...variants.map((v) => `    ${describeVariant(v)} — ${howToGetVariant(v)}`),
  ].join("\n");
}

/**
 * Everything a source build needs, checked up front: { torch, cmake, generator, missing[] }.
 */
function preflight() {
  const missing = []; // { what, how, apt }
  const cmake = which(process.env.CMAKE || "cmake");
  const [major, minor] = cmake ? cmakeVersion(cmake) : [];
  if (!cmake) missing.push({ what: "cmake", how: "cmake 3.18 or newer: sudo apt-get install -y cmake (or https://cmake.org/download)", apt: "cmake" });
  else if (!(major > 3 || (major === 3 && minor >= 18))) missing.push({ what: "a newer cmake", how: `cmake 3.18 or newer (${cmake} is ${major}.${minor}): https://cmake.org/download or pip install cmake` });
  const compiler = process.env.CXX ? which(process.env.CXX.split(" ")[0]) : which("c++") || which("g++") || which("clang++");
  if (!compiler) missing.push({ what: "a C++ compiler", how: `a C++17 compiler${process.env.CXX ? ` (CXX=${process.env.CXX} is not on PATH)` : ""}: sudo apt-get install -y g++`, apt: "g++" });
  const ninja = which("ninja");
  if (!ninja && !which("make")) missing.push({ what: "make", how: "make (or ninja): sudo apt-get install -y make", apt: "make" });
  let torch = null;
  try {
    torch = findLibtorch();
  } catch (error) {
    const [first, , ...ways] = error.message.split("\n");
    missing.push({ what: "libtorch", how: `libtorch with its CMake files: ${first}\n${ways.map((l) => `  ${l}`).join("\n")}`, apt: "libtorch-dev" });
  }
  let headers = null;
  try {
    headers = [require("node-api-headers").include_dir, path.dirname(require.resolve("node-addon-api/package.json"))];
  } catch {
    missing.push({ what: "the Node-API headers", how: "the Node-API headers: npm install node-api-headers node-addon-api" });
  }
  return { torch, cmake, ninja, headers, missing };
}

/** One message naming everything missing, how to get each, and the prebuilt alternative. */
function missingMessage(missing) {
  const apt = missing.map((m) => m.apt).filter(Boolean);
  return [
    `torch-diffusion: cannot build the native addon from source; missing: ${missing.map((m) => m.what).join(", ")}.`,
    ...missing.map((m) => `  - ${m.how}`),
    ...(apt.length > 1 ? [`  Debian/Ubuntu, all at once: sudo apt-get install -y ${apt.join(" ")}`] : []),
    "  Then: npm rebuild torch-diffusion",
    prebuiltHint(),
  ].join("\n");
}

/** Runs a build step; its exit status, or the signal that stopped it. */
function run(command, args, env) {
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit", env: { ...process.env, ...env } });
  if (result.error) throw result.error;
  return result.signal || result.status;
}

function main(argv) {
  // Ctrl-C or a timeout stops cmake too; stay alive long enough to remove a temporary build tree.
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => {});

  const option = (name) => {
    const i = argv.indexOf(name);
    return i >= 0 && argv[i + 1] ? path.resolve(argv[i + 1]) : null;
  };
  const copyTo = option("--copy-to");
  const { torch, cmake, ninja, headers, missing } = preflight();
  if (missing.length > 0) {
    console.error(missingMessage(missing));
    return 1;
  }

  const temporary = !option("--build-dir") && !isCheckout();
  const buildDir = option("--build-dir") || (temporary ? fs.mkdtempSync(path.join(os.tmpdir(), "torch-diffusion-build-")) : path.join(root, "build", copyTo ? "cmake" : ""));
  const built = path.join(buildDir, "Release", ADDON);
  console.log(`torch-diffusion: building against ${describeVariant(variantOf(torch))} from ${torch.source} (${torch.torchDir}) in ${buildDir}${temporary ? ", removed afterwards" : ""}`);
  try {
    const fresh = !fs.existsSync(path.join(buildDir, "CMakeCache.txt"));
    const configure = [
      "-S", root, "-B", buildDir, "--no-warn-unused-cli",
      ...(fresh && ninja ? ["-G", "Ninja"] : []), // an existing tree keeps the generator it was made with
      "-DCMAKE_BUILD_TYPE=Release",
      `-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=${path.join(buildDir, "Release")}`,
      `-DTorch_DIR=${torch.torchDir}`,
      // The variables cmake-js used to set, which CMakeLists.txt reads (same values: an existing tree does not rebuild).
      `-DCMAKE_JS_INC=${headers.join(";")}`,
      "-DCMAKE_JS_SRC=",
      "-DCMAKE_JS_LIB=",
      "-DCMAKE_CXX_FLAGS=-DBUILDING_NODE_EXTENSION",
    ];
    const jobs = process.env.CMAKE_BUILD_PARALLEL_LEVEL || String(os.availableParallelism?.() || os.cpus().length || 2);
    const status = run(cmake, configure) || run(cmake, ["--build", buildDir, "--config", "Release", "--parallel", jobs]);
    if (typeof status === "string") {
      console.error(`torch-diffusion: the source build was stopped (${status}).`);
      return 130;
    }
    if (status !== 0 || !fs.existsSync(built)) {
      console.error(`torch-diffusion: the source build failed (the CMake output above says why).\n${prebuiltHint()}`);
      return status || 1;
    }
    const targets = [temporary ? path.join(root, "build", "Release") : null, copyTo].filter((dir) => dir && path.resolve(dir) !== path.dirname(built));
    for (const dir of targets) {
      fs.mkdirSync(dir, { recursive: true });
      fs.copyFileSync(built, path.join(dir, ADDON));
    }
    console.log(`torch-diffusion: built ${targets.length > 0 ? targets.map((dir) => path.join(dir, ADDON)).join(", ") : built}`);
    return 0;
  } finally {
    if (temporary) fs.rmSync(buildDir, { recursive: true, force: true });
  }
}

module.exports = { preflight, isCheckout };

if (require.main === module) process.exitCode = main(process.argv.slice(2));
