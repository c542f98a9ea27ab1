#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for torch-diffusion: system packages, then npm ci
# (whose install step builds the native addon against the system libtorch).
set -euo pipefail
cd "$(dirname "$0")/.."

# libopenblas0-openmp: Debian's libtorch calls whatever libblas.so.3 the alternatives system points
# at, by default the reference BLAS (about 3 GMAC/s for linear layers on one core); OpenBLAS, on the
# same OpenMP runtime as libtorch, does about 45 (scripts/bench/blas.ts) and takes over on install.
packages=(libtorch-dev libgloo-dev libopenblas0-openmp python3-torch python3-numpy dataset-fashion-mnist cmake g++ make)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
npm ci
