#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for torch-diffusion: system packages, then npm ci
# (whose install step builds the native addon against the system libtorch).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libtorch-dev libgloo-dev python3-torch python3-numpy dataset-fashion-mnist cmake g++ make)
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
