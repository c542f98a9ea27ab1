import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { parsePrebuiltName } from "../lib/native";

const root = path.resolve(__dirname, "..");
const findLibtorch = (env: Record<string, string>) =>
  execFileSync(process.execPath, [path.join(root, "scripts", "find-libtorch.js")], { env: { ...process.env, ...env }, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

describe("build and loading", () => {
  it("finds the libtorch this addon was built against and reports it", () => {
    const found = JSON.parse(findLibtorch({})) as { version: string; cuda: boolean; torchDir: string };
    expect(td.buildInfo.torchVersion.startsWith(found.version.split(".").slice(0, 2).join("."))).toBe(true);
    expect(td.buildInfo.cuda).toBe(found.cuda);
    expect(td.buildInfo.libtorchDir).toBe(found.torchDir);
  });

  it("honours LIBTORCH / Torch_DIR first and says how to get libtorch when they are wrong", () => {
    expect(() => findLibtorch({ LIBTORCH: "/nonexistent/libtorch" })).toThrow(/LIBTORCH=\/nonexistent\/libtorch holds no share\/cmake\/Torch\/TorchConfig.cmake[\s\S]*apt-get install -y libtorch-dev/);
    expect(() => findLibtorch({ Torch_DIR: "/nonexistent" })).toThrow(/Torch_DIR=\/nonexistent has no TorchConfig.cmake/);
  });

  it("tells prebuilt variants apart by libtorch version, soname, C++ ABI and CPU/CUDA major", () => {
    expect(parsePrebuiltName("torch_diffusion.napi.glibc.torch2.11.so.cxx11.cuda12.node")).toEqual({
      file: "torch_diffusion.napi.glibc.torch2.11.so.cxx11.cuda12.node", libc: "glibc", torch: "2.11", soname: "libtorch.so", abi: "cxx11", device: "cuda12",
    });
    expect(parsePrebuiltName("torch_diffusion.napi.glibc.torch1.13.so1.13.cxx11.cpu.node")).toMatchObject({ torch: "1.13", soname: "libtorch.so.1.13", device: "cpu" });
    expect(parsePrebuiltName("torch_diffusion.napi.glibc.torch2.5.so.precxx11.cpu.node")?.abi).toBe("precxx11");
    expect(parsePrebuiltName("torch_diffusion.napi.glibc.torch1.13.cpu.node")).toBeNull(); // the old tag: no soname, no ABI
    expect(parsePrebuiltName("torch_diffusion.napi.glibc.node")).toBeNull();
  });

  it("sets and reads the intra-op thread count", () => {
    const before = td.getNumThreads();
    td.setNumThreads(2);
    expect(td.getNumThreads()).toBe(2);
    td.setNumThreads(before);
    expect(td.getNumThreads()).toBe(before);
  });

  it("reports CUDA availability (false on this CPU build)", () => {
    expect(td.cuda.isAvailable()).toBe(td.buildInfo.cuda && td.cuda.deviceCount() > 0);
    if (!td.cuda.isAvailable()) console.warn("CUDA not available: CUDA paths are not exercised in this run");
  });
});
