/**
 * Packs the package as npm would publish it and sets up an empty consumer project that depends
 * on the tarball, installable offline. Used by test/package.test.ts (with the built addon as a
 * prebuilt binary) and test/consumer/source-install.ts (without one: a source build).
 *
 * Packing: a checkout's own `npm pack` ships no addon (`build/` is not in package.json's
 * `files`; binaries ship under `prebuilds/`), so this stages exactly the files npm would pack
 * (its own `npm pack --dry-run` list, without dist/ and prebuilds/) in a temporary folder, compiles `lib/` into its `dist/`, optionally files the already built
 * build/Release/torch_diffusion.node as the prebuilt binary for this machine's libtorch (named
 * by scripts/prebuilt.js, as `npm run build:prebuilt` would) and packs that. The checkout is
 * left untouched.
 *
 * Installing offline: the consumer gets a package-lock.json pinning the tarball plus the
 * checkout lock's entries for the package's dependencies, so `npm ci --offline` takes their
 * tarballs from the npm cache `npm ci` of the checkout filled. (A plain
 * `npm install --offline ./x.tgz` needs the registry's metadata documents, which `npm ci`
 * caches in a form `npm install` does not accept.)
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

export const root = path.resolve(__dirname, "..", "..");
export const builtAddon = path.join(root, "build", "Release", "torch_diffusion.node");
export const tscPath = path.join(root, "node_modules", "typescript", "bin", "tsc");

interface LockEntry {
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  [key: string]: unknown;
}

/** The checkout lock's entries for the closure of `deps`, at the same (hoisted) places. */
function lockEntriesFor(deps: Record<string, string>): Record<string, LockEntry> {
  const lock = JSON.parse(fs.readFileSync(path.join(root, "package-lock.json"), "utf8")) as { packages: Record<string, LockEntry> };
  const out: Record<string, LockEntry> = {};
  const visit = (from: string, name: string) => {
    for (let dir = from; ; dir = dir.includes("/node_modules/") ? dir.slice(0, dir.lastIndexOf("/node_modules/")) : "") {
      const key = `${dir ? `${dir}/` : ""}node_modules/${name}`;
      const found = lock.packages[key] as (LockEntry & { dev?: boolean; devOptional?: boolean; peer?: boolean }) | undefined;
      if (found) {
        if (out[key]) return;
        const { dev: _dev, devOptional: _devOptional, peer: _peer, ...entry } = found;
        out[key] = entry;
        for (const dep of Object.keys({ ...entry.dependencies, ...entry.optionalDependencies })) visit(key, dep);
        return;
      }
      if (!dir) throw new Error(`package-lock.json has no entry for ${name} (needed by ${from || "the package"})`);
    }
  };
  for (const name of Object.keys(deps)) visit("", name);
  return out;
}

/**
 * The files `npm pack` takes from the checkout, as npm itself reads package.json's `files`
 * (globs and all) and the ignore rules.
 */
export function packedFiles(): string[] {
  const listed = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: root, encoding: "utf8" });
  if (listed.status !== 0) throw new Error(`npm pack --dry-run failed: ${listed.stderr.trim().split("\n").slice(-3).join(" ")}`);
  const [{ files }] = JSON.parse(listed.stdout) as { files: { path: string }[] }[];
  return files.map((f) => f.path);
}

/**
 * Stages and packs the package into `work`; with `prebuilt`, the built addon goes in as the
 * prebuilt binary named `prebuilt` (scripts/prebuilt.js's prebuiltName). Returns the tarball path.
 */
export function packPackage(work: string, prebuilt: string | null): string {
  const stage = path.join(work, "stage");
  fs.mkdirSync(stage, { recursive: true });
  for (const file of packedFiles()) {
    if (file.startsWith("dist/") || file.startsWith("prebuilds/")) continue; // built fresh below
    fs.mkdirSync(path.dirname(path.join(stage, file)), { recursive: true });
    fs.copyFileSync(path.join(root, file), path.join(stage, file));
  }
  execFileSync(process.execPath, [tscPath, "-p", path.join(root, "tsconfig.json"), "--outDir", path.join(stage, "dist")], { cwd: root, stdio: "pipe" });
  if (prebuilt) {
    const file = path.join(stage, "prebuilds", `${process.platform}-${process.arch}`, prebuilt);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.copyFileSync(builtAddon, file);
  }
  const packed = spawnSync("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], { cwd: stage, encoding: "utf8" });
  if (packed.status !== 0) throw new Error(`npm pack failed: ${packed.stderr.trim().split("\n").slice(-3).join(" ")}`);
  const [{ filename }] = JSON.parse(packed.stdout) as { filename: string }[];
  return path.join(work, filename);
}

/** An empty project at `dir` (a copy of test/consumer) depending on `tarball`, with a lock pinned to it. */
export function makeConsumer(dir: string, tarball: string): void {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
  const tooling = new Set(["pack.ts", "source-install.ts"]);
  fs.cpSync(path.join(root, "test", "consumer"), dir, { recursive: true, filter: (file) => !tooling.has(path.basename(file)) });
  const filename = path.basename(tarball);
  fs.copyFileSync(tarball, path.join(dir, filename));
  const spec = `file:${filename}`;
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "td-consumer", version: "1.0.0", private: true, dependencies: { [pkg.name]: spec } }, null, 2));
  const integrity = `sha512-${createHash("sha512").update(fs.readFileSync(tarball)).digest("base64")}`;
  const { name, version, license, engines, os, cpu, bin, dependencies } = pkg;
  const lock = {
    name: "td-consumer",
    version: "1.0.0",
    lockfileVersion: 3,
    requires: true,
    packages: {
      "": { name: "td-consumer", version: "1.0.0", dependencies: { [name]: spec } },
      [`node_modules/${name}`]: { version, resolved: spec, integrity, hasInstallScript: true, license, dependencies, bin, engines, os, cpu },
      ...lockEntriesFor(dependencies),
    },
  };
  fs.writeFileSync(path.join(dir, "package-lock.json"), JSON.stringify(lock, null, 2));
}

/** A folder holding links to `tools` only (by default node, npm, npx, sh: no cc, c++, cmake, make or python3). */
export function binWith(dir: string, tools = ["node", "npm", "npx", "sh"]): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const tool of tools) {
    const found = tool === "node" ? process.execPath : execFileSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).trim();
    fs.symlinkSync(found, path.join(dir, tool));
  }
  return dir;
}

/** Bytes under `dir` (files as stored, links not followed). */
export function diskUsage(dir: string): number {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += fs.statSync(path.join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name)).size;
  }
  return total;
}
