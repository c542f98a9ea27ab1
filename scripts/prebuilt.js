// The one rule for prebuilt binaries, shared by scripts/prebuild.js (names them),
// scripts/install.js (skips the source build when one matches) and lib/native.ts (loads it).
//
//   prebuilds/<platform>-<arch>/torch_diffusion.napi.<libc>.torch<M.m>.so<soversion>.<abi>.<device>.node
//
// The tag records everything the binary's dynamic linking depends on, so a mismatch is refused
// with one message before dlopen would fail with a linker error (or worse, load and crash):
//   torch<M.m>     the libtorch major.minor (its C++ API and symbols change between minors);
//   so<version>    the soname of the libtorch libraries it links: `so1.13` for Debian's
//                  libtorch.so.1.13, plain `so` for pytorch.org's and pip's libtorch.so;
//   cxx11|precxx11 the C++ ABI (_GLIBCXX_USE_CXX11_ABI 1 or 0: Debian and recent pip wheels
//                  use 1, older pip wheels and pytorch.org's "pre-cxx11" downloads 0);
//   cpu|cuda<N>    CPU-only, or CUDA with the CUDA major (cuda12).
// e.g. torch_diffusion.napi.glibc.torch1.13.so1.13.cxx11.cpu.node (Debian 12's libtorch-dev).
"use strict";
const fs = require("node:fs");
const path = require("node:path");

/**
 * The variant a binary built against (or run with) `torch` needs, from find-libtorch.js's
 * description ({ version, soname, cxx11Abi, cuda, cudaMajor }).
 * @returns {{ libc: string, torch: string, soname: string, abi: string, device: string }}
 */
function variantOf(torch) {
  return {
    libc: libc(),
    torch: String(torch.version).split(".").slice(0, 2).join("."),
    soname: torch.soname || "unknown",
    abi: torch.cxx11Abi === true ? "cxx11" : torch.cxx11Abi === false ? "precxx11" : "unknown",
    device: torch.cuda ? `cuda${torch.cudaMajor || ""}` : "cpu",
  };
}

/** The file-name tag of a variant, e.g. "torch1.13.so1.13.cxx11.cpu". */
function variantTag(variant) {
  const soVersion = (/^libtorch\.so\.?(.*)$/.exec(variant.soname) || [])[1];
  if (soVersion === undefined || variant.abi === "unknown") throw new Error(`cannot tag a binary for ${describeVariant(variant)}`);
  return `torch${variant.torch}.so${soVersion}.${variant.abi}.${variant.device}`;
}

/** The tag of a binary built against `torch` (find-libtorch.js's description). */
function prebuiltTag(torch) {
  return variantTag(variantOf(torch));
}

/** The prebuilt file name for `torch`, e.g. "torch_diffusion.napi.glibc.torch1.13.so1.13.cxx11.cpu.node". */
function prebuiltName(torch) {
  return `torch_diffusion.napi.${libc()}.${prebuiltTag(torch)}.node`;
}

/**
 * The variant a prebuilt file name records, else null.
 * @returns {{ file: string, libc: string, torch: string, soname: string, abi: string, device: string } | null}
 */
function parsePrebuiltName(file) {
  const match = /^torch_diffusion\.napi\.(glibc|musl)\.torch(\d+\.\d+)\.so((?:\d+(?:\.\d+)*)?)\.(cxx11|precxx11)\.(cpu|cuda\d*)\.node$/.exec(file);
  if (!match) return null;
  const [, libcName, torch, soVersion, abi, device] = match;
  return { file, libc: libcName, torch, soname: soVersion ? `libtorch.so.${soVersion}` : "libtorch.so", abi, device };
}

/** A variant in words: "libtorch 1.13 (libtorch.so.1.13, C++11 ABI, CPU, glibc)". */
function describeVariant(v) {
  const abi = { cxx11: "C++11 ABI", precxx11: "pre-C++11 ABI" }[v.abi] || "unknown C++ ABI";
  const device = v.device === "cpu" ? "CPU" : v.device === "cuda" ? "CUDA" : v.device.replace(/^cuda/, "CUDA ");
  return `libtorch ${v.torch} (${v.soname}, ${abi}, ${device}, ${v.libc})`;
}

/** How to get the libtorch a variant runs with, e.g. "sudo apt-get install -y libtorch1.13" for Debian's. */
function howToGetVariant(v) {
  const soVersion = (/^libtorch\.so\.(.+)$/.exec(v.soname) || [])[1];
  if (soVersion) return `Debian/Ubuntu: sudo apt-get install -y libtorch${soVersion}`;
  const wheel = v.device === "cpu" ? "cpu" : `cu${v.device.replace(/^cuda/, "")}x`;
  return `PyTorch ${v.torch} (${wheel}, ${v.abi === "cxx11" ? "cxx11-abi" : "pre-cxx11"}) from pytorch.org, as export LIBTORCH=/path/to/libtorch or the python3 on PATH's torch`;
}

function sameVariant(a, b) {
  return a.libc === b.libc && a.torch === b.torch && a.soname === b.soname && a.abi === b.abi && a.device === b.device;
}

/** The folder of this platform's prebuilt binaries inside the package at `root`. */
function prebuiltDir(root) {
  return path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
}

/** The prebuilt variants in `dir` (none when it does not exist). */
function listPrebuilt(dir) {
  try {
    return fs.readdirSync(dir).map(parsePrebuiltName).filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * The prebuilt variants in `dir`, the variant `torch` needs and the file matching it (null when none does).
 */
function findPrebuilt(dir, torch) {
  const variants = listPrebuilt(dir);
  const wanted = variantOf(torch);
  const match = variants.find((v) => sameVariant(v, wanted)) || null;
  return { variants, wanted, match };
}

let cachedLibc;
/** "glibc" or "musl" (what the running Node was linked against). */
function libc() {
  if (cachedLibc === undefined) {
    let report = null;
    if (process.platform === "linux" && process.report && typeof process.report.getReport === "function") {
      const excludeNetwork = process.report.excludeNetwork;
      process.report.excludeNetwork = true; // as detect-libc does: no slow look-ups of open sockets
      report = process.report.getReport();
      process.report.excludeNetwork = excludeNetwork;
    }
    cachedLibc = !report || report.header.glibcVersionRuntime ? "glibc" : "musl";
  }
  return cachedLibc;
}

module.exports = { variantOf, variantTag, prebuiltTag, prebuiltName, parsePrebuiltName, describeVariant, howToGetVariant, sameVariant, prebuiltDir, listPrebuilt, findPrebuilt, libc };
