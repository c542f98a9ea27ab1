#!/usr/bin/env node
// Locates libtorch, in the documented order:
//   1. LIBTORCH (a libtorch root) or Torch_DIR (its share/cmake/Torch) from the environment;
//   2. the torch package of the `python3` on PATH (found without importing torch);
//   3. the system (Debian's libtorch-dev / libtorch1.13 and the usual prefixes).
// Two questions, two functions:
//   findLibtorch()         for a source build: needs TorchConfig.cmake (the -dev files);
//   findLibtorchRuntime()  for loading a prebuilt binary: the runtime libraries are enough.
// Both describe what a binary built against it depends on (describeLibDir): the libtorch
// version, the soname its libraries carry (Debian's libtorch.so.1.13, or a plain libtorch.so
// from pytorch.org and pip), the C++ ABI (_GLIBCXX_USE_CXX11_ABI, read from libc10's dynamic
// symbols: `std::__cxx11::` names appear only in new-ABI builds) and CPU vs CUDA (with the
// CUDA major). Prints JSON when run directly (`--runtime` for the runtime lookup).
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

const SYSTEM_CMAKE_DIRS = ["/usr/lib/x86_64-linux-gnu/cmake/Torch", "/usr/lib/aarch64-linux-gnu/cmake/Torch", "/usr/local/lib/cmake/Torch", "/usr/lib/cmake/Torch", "/usr/share/cmake/Torch", "/usr/local/share/cmake/Torch"];
const SYSTEM_LIB_DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib", "/usr/lib64", "/usr/lib"];

// ---- ELF: the dynamic section of a shared library (SONAME, NEEDED, the dynamic string table) ----

/**
 * { soname, needed: string[], dynstr: Buffer } of a 64-bit little-endian ELF shared library,
 * reading only its section headers, .dynamic and .dynstr; null when `file` is not one.
 */
function readElfDynamic(file) {
  let fd;
  try {
    fd = fs.openSync(file, "r");
    const read = (offset, length) => {
      const buffer = Buffer.alloc(length);
      fs.readSync(fd, buffer, 0, length, offset);
      return buffer;
    };
    const header = read(0, 64);
    if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return null; // ELF, 64-bit, LE
    const shoff = Number(header.readBigUInt64LE(0x28));
    const shentsize = header.readUInt16LE(0x3a);
    const shnum = header.readUInt16LE(0x3c);
    if (!shoff || !shnum) return null;
    const sections = read(shoff, shentsize * shnum);
    const section = (i) => ({
      type: sections.readUInt32LE(i * shentsize + 4),
      offset: Number(sections.readBigUInt64LE(i * shentsize + 0x18)),
      size: Number(sections.readBigUInt64LE(i * shentsize + 0x20)),
      link: sections.readUInt32LE(i * shentsize + 0x28),
    });
    for (let i = 0; i < shnum; i++) {
      const dynamic = section(i);
      if (dynamic.type !== 6) continue; // SHT_DYNAMIC
      const strtab = section(dynamic.link);
      const dynstr = read(strtab.offset, strtab.size);
      const name = (offset) => dynstr.toString("latin1", offset, dynstr.indexOf(0, offset));
      const entries = read(dynamic.offset, dynamic.size);
      const result = { soname: null, needed: [], dynstr };
      for (let at = 0; at + 16 <= entries.length; at += 16) {
        const tag = Number(entries.readBigInt64LE(at));
        const value = Number(entries.readBigUInt64LE(at + 8));
        if (tag === 0) break; // DT_NULL
        if (tag === 1) result.needed.push(name(value)); // DT_NEEDED
        if (tag === 14) result.soname = name(value); // DT_SONAME
      }
      return result;
    }
    return null;
  } catch {
    return null;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Whether an ELF file's dynamic symbols use the C++11 ABI (`std::__cxx11::` names); null when unreadable. */
function usesCxx11Abi(file) {
  const elf = readElfDynamic(file);
  return elf ? elf.dynstr.includes("St7__cxx11") : null;
}

// ---- describing a libtorch from its library folder ----

/** The first file in `dir` named `base.so` or `base.so.<version>`, or null. */
function libraryFile(dir, base) {
  let names;
  try {
    names = fs.readdirSync(dir);
  } catch {
    return null;
  }
  const pattern = new RegExp(`^${base.replace(/[.+]/g, "\\$&")}\\.so(\\.\\d+)*$`);
  const found = names.filter((n) => pattern.test(n)).sort((a, b) => a.length - b.length)[0];
  return found ? path.join(dir, found) : null;
}

function readText(file) {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return null;
  }
}

// "2.5.1+cu121" -> "12", "1.13.0" -> null
function cudaMajorFromLocalVersion(version) {
  const match = /\+cu(\d+)(\d)\b/.exec(version || "");
  return match ? match[1] : null;
}

/**
 * What a binary built against the libtorch in `libDir` depends on:
 * { version, soname, cxx11Abi, cuda, cudaMajor }. `soname` is the name the dynamic loader
 * will look for (e.g. "libtorch.so.1.13"); `version` is "major.minor.patch" when the headers,
 * torch/version.py or build-version say so, else "major.minor" from the soname.
 */
function describeLibDir(libDir, hints = {}) {
  const libtorch = libraryFile(libDir, "libtorch");
  if (!libtorch) return null;
  const elf = readElfDynamic(fs.realpathSync(libtorch));
  const soname = (elf && elf.soname) || path.basename(libtorch);
  const prefix = path.dirname(libDir);

  // version.h (libtorch downloads, pip wheels, Debian -dev), torch/version.py (pip, Debian python3-torch), build-version (libtorch downloads)
  const headers = [hints.prefix, prefix].filter(Boolean).map((p) => path.join(p, "include/torch/csrc/api/include/torch/version.h"));
  if (libDir.startsWith("/usr/lib")) headers.push("/usr/include/torch/csrc/api/include/torch/version.h");
  let version = null;
  for (const header of headers) {
    const text = readText(header);
    const part = (name) => text && (new RegExp(`#define TORCH_VERSION_${name}\\s+(\\d+)`).exec(text) || [])[1];
    if (part("MAJOR")) {
      version = `${part("MAJOR")}.${part("MINOR")}.${part("PATCH")}`;
      break;
    }
  }
  const versionPy = readText(path.join(prefix, "version.py"));
  const buildVersion = (readText(path.join(prefix, "build-version")) || "").trim();
  const pyVersion = versionPy && (/__version__\s*=\s*['"]([^'"]+)['"]/.exec(versionPy) || [])[1];
  if (!version) version = (/^\d+\.\d+\.\d+/.exec(pyVersion || buildVersion) || [])[0] || (/\.so\.(\d+\.\d+)/.exec(soname) || [])[1] || "unknown";

  const cudaLib = libraryFile(libDir, "libtorch_cuda");
  const cuda = !!cudaLib;
  let cudaMajor = null;
  if (cuda) {
    const pyCuda = versionPy && (/^cuda\s*(?::[^=]*)?=\s*['"](\d+)\./m.exec(versionPy) || [])[1];
    cudaMajor = pyCuda || cudaMajorFromLocalVersion(pyVersion) || cudaMajorFromLocalVersion(buildVersion);
    for (const lib of [libraryFile(libDir, "libc10_cuda"), cudaLib]) {
      if (cudaMajor || !lib) continue;
      const needed = (readElfDynamic(fs.realpathSync(lib)) || { needed: [] }).needed;
      cudaMajor = needed.map((n) => (/^libcudart[^/]*\.so\.(\d+)/.exec(n) || [])[1]).find(Boolean) || null;
    }
  }

  const c10 = libraryFile(libDir, "libc10");
  let cxx11Abi = c10 ? usesCxx11Abi(fs.realpathSync(c10)) : null;
  if (cxx11Abi === null && hints.torchDir) {
    const flag = /_GLIBCXX_USE_CXX11_ABI=([01])/.exec(readText(path.join(hints.torchDir, "TorchConfig.cmake")) || "");
    if (flag) cxx11Abi = flag[1] === "1";
  }
  return { version, soname, cxx11Abi, cuda, cudaMajor };
}

// ---- where libtorch is ----

function torchDirFromPrefix(prefix) {
  for (const sub of ["share/cmake/Torch", "lib/cmake/Torch", "Torch", "."]) {
    const dir = path.join(prefix, sub);
    if (fs.existsSync(path.join(dir, "TorchConfig.cmake"))) return dir;
  }
  return null;
}

// The library folder next to a CMake config folder: <prefix>/lib for share/cmake/Torch, or the lib dir holding cmake/Torch.
function libDirFromTorchDir(torchDir) {
  const prefix = path.resolve(torchDir, "../../..");
  return [path.join(prefix, "lib"), path.resolve(torchDir, "../..")].find((dir) => libraryFile(dir, "libtorch")) || null;
}

function fromEnvironment() {
  if (process.env.Torch_DIR) {
    if (!fs.existsSync(path.join(process.env.Torch_DIR, "TorchConfig.cmake"))) {
      throw new Error(`Torch_DIR=${process.env.Torch_DIR} has no TorchConfig.cmake.\n${HOW_TO_GET_ONE}`);
    }
    return { torchDir: process.env.Torch_DIR, libDir: libDirFromTorchDir(process.env.Torch_DIR), source: "Torch_DIR" };
  }
  if (process.env.LIBTORCH) {
    const root = process.env.LIBTORCH;
    return { torchDir: torchDirFromPrefix(root), libDir: libraryFile(path.join(root, "lib"), "libtorch") ? path.join(root, "lib") : null, prefix: root, source: "LIBTORCH" };
  }
  return null;
}

// The torch package folder of the python3 on PATH, without importing torch (which takes seconds).
function fromPython() {
  try {
    const script = "import importlib.util as u; s = u.find_spec('torch'); print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    const pkg = execFileSync("python3", ["-c", script], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 30_000 }).trim();
    if (!pkg) return null;
    const libDir = path.join(pkg, "lib");
    return { torchDir: torchDirFromPrefix(path.join(pkg, "share", "cmake")), libDir: libraryFile(libDir, "libtorch") ? libDir : null, prefix: pkg, source: "python3 torch" };
  } catch {
    return null;
  }
}

function fromSystem() {
  const torchDir = SYSTEM_CMAKE_DIRS.find((dir) => fs.existsSync(path.join(dir, "TorchConfig.cmake"))) || null;
  const libDir = (torchDir && libDirFromTorchDir(torchDir)) || SYSTEM_LIB_DIRS.find((dir) => libraryFile(dir, "libtorch")) || null;
  return torchDir || libDir ? { torchDir, libDir, source: "system" } : null;
}

function describe(found) {
  const described = found.libDir ? describeLibDir(found.libDir, found) : null;
  const { prefix, ...rest } = found;
  return { ...rest, version: "unknown", soname: null, cxx11Abi: null, cuda: false, cudaMajor: null, ...described };
}

/**
 * The libtorch to build against: one with its CMake files (TorchConfig.cmake), described.
 * @returns {{ torchDir: string, libDir: string | null, source: string, version: string, soname: string | null, cxx11Abi: boolean | null, cuda: boolean, cudaMajor: string | null }}
 */
function findLibtorch() {
  const env = fromEnvironment();
  if (env && !env.torchDir) throw new Error(`LIBTORCH=${process.env.LIBTORCH} holds no share/cmake/Torch/TorchConfig.cmake.\n${HOW_TO_GET_ONE}`);
  const python = env ? null : fromPython();
  const found = env || (python && python.torchDir ? python : null) || fromSystem();
  if (!found || !found.torchDir) throw new Error(`No libtorch with its CMake files (TorchConfig.cmake) found.\n${HOW_TO_GET_ONE}`);
  return describe(found);
}

/**
 * The libtorch a prebuilt binary will run against: its runtime libraries are enough.
 * @returns {{ torchDir: string | null, libDir: string, source: string, version: string, soname: string, cxx11Abi: boolean | null, cuda: boolean, cudaMajor: string | null }}
 */
function findLibtorchRuntime() {
  const env = fromEnvironment();
  if (env && !env.libDir) {
    const where = env.source === "LIBTORCH" ? `LIBTORCH=${process.env.LIBTORCH} holds no lib/libtorch.so` : `Torch_DIR=${process.env.Torch_DIR} has no libtorch.so beside it`;
    throw new Error(`${where}.\n${HOW_TO_GET_ONE}`);
  }
  const python = env ? null : fromPython();
  const found = env || (python && python.libDir ? python : null) || fromSystem();
  if (!found || !found.libDir) throw new Error(`No libtorch found.\n${HOW_TO_GET_ONE}`);
  return describe(found);
}

module.exports = { findLibtorch, findLibtorchRuntime, describeLibDir, readElfDynamic, usesCxx11Abi, HOW_TO_GET_ONE };

if (require.main === module) {
  try {
    const found = process.argv.includes("--runtime") ? findLibtorchRuntime() : findLibtorch();
    process.stdout.write(JSON.stringify(found, null, 2) + "\n");
  } catch (error) {
    process.stderr.write(error.message + "\n");
    process.exit(1);
  }
}
