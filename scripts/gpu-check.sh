#!/usr/bin/env bash
# The CUDA checks, in one go, on a GPU machine that has a CUDA PyTorch (its libtorch is the
# one we build against), nvcc and cmake, but maybe no Node and no network:
#   1. the kernels as a Python extension with their CUDA parts; the kernel tests, CPU and CUDA;
#   2. the addon against that libtorch (CUDA on); vitest on the CUDA and model tests;
#   3. scripts/bench/attention_cuda.py (fused vs SDPA vs math vs naive);
#   4. the whole vitest suite against this libtorch, as far as the time allows.
# Node and node_modules may come packed: .gpu/node.xz (a static node binary, xz) and
# .gpu/nm.tar.xz (node_modules and dist/, without typescript and sharp's binaries: sharp is
# replaced by a stub there, so image files cannot be read or written in this check). To pack
# them on a development machine (the 64 MiB a device call carries leaves no room for sharp):
#   mkdir -p .gpu && xz -9 -c "$(command -v node)" > .gpu/node.xz && npm run build:ts
#   tar -cf - --exclude=node_modules/typescript --exclude=node_modules/@img node_modules dist | xz > .gpu/nm.tar.xz
# Logs go to $OUT (default /tmp/gpu-check). Env: CUDAARCHS (default 90), BUDGET_S (default 480),
# BENCH=0 skips the SDPA probe and the benchmark, FULL_SUITE=0 the whole-suite run, VITEST_FILES
# replaces the focused test files.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
BUDGET_S="${BUDGET_S:-480}"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }
log() { echo "[$(elapsed)s] $*" | tee -a "$OUT/gpu-check.log"; }

log "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1); $(nproc) cores"
log "python3: $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -1)"

if ! command -v node >/dev/null && [ -f .gpu/node.xz ]; then
  mkdir -p /tmp/nodebin && xz -dc .gpu/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node
  export PATH="/tmp/nodebin:$PATH"
fi
if [ ! -d node_modules ] && [ -f .gpu/nm.tar.xz ]; then
  tar -xJf .gpu/nm.tar.xz
  if [ ! -d node_modules/@img/sharp-linux-x64 ]; then
    rm -rf node_modules/sharp && mkdir -p node_modules/sharp
    echo '{"name":"sharp","version":"0.0.0-stub","main":"index.js"}' > node_modules/sharp/package.json
    echo 'module.exports = () => { throw new Error("sharp is a stub in scripts/gpu-check.sh"); };' > node_modules/sharp/index.js
  fi
fi
log "node $(node -v 2>&1)"

# 2 (background). The addon, CUDA on; CUDAARCHS is cmake's default for CMAKE_CUDA_ARCHITECTURES.
export CUDAARCHS="${CUDAARCHS:-90}"
( timeout $(( BUDGET_S / 2 )) node scripts/build-native.js --build-dir /tmp/tdbuild > "$OUT/build.log" 2>&1; echo "exit $?" >> "$OUT/build.log" ) &
BUILD_PID=$!

# 1. Kernels for Python, CUDA parts included; then the kernel tests (CPU ones too: this torch is 2.x).
if WITH_CUDA=1 CUDA_ARCHS="$CUDAARCHS" JOBS=4 timeout 240 bash scripts/build_kernels_for_python.sh > "$OUT/py-tests.log" 2>&1; then
  log "kernels for python built"
  # One process per module, so a crash in one does not hide the others; faulthandler names the line.
  for module in test_attention_cuda test_attention_kernel test_attention_control; do
    (cd scripts/tests && TORCH_DIFFUSION_KERNELS_LIB="$ROOT/build/kernels-python/libtorch_diffusion_kernels.so" timeout 150 \
      python3 -X faulthandler -m unittest "$module" -v) >> "$OUT/py-tests.log" 2>&1
    log "python $module: exit $? ($(grep -E '^(OK|FAILED)' "$OUT/py-tests.log" | tail -1))"
  done
else
  log "kernels for python: build failed (py-tests.log)"
fi

wait "$BUILD_PID"
log "addon build: $(tail -1 "$OUT/build.log")"
if [ ! -f /tmp/tdbuild/Release/torch_diffusion.node ] && [ -f /tmp/tdbuild/build.ninja ]; then
  # List every compile error, not only the first file's.
  timeout 120 cmake --build /tmp/tdbuild --parallel "$(nproc)" -- -k 0 > "$OUT/build-keep-going.log" 2>&1
  log "addon build, keep going: exit $? ($(grep -c 'error:' "$OUT/build-keep-going.log") errors)"
fi
ADDON=/tmp/tdbuild/Release/torch_diffusion.node

if [ "${BENCH:-1}" = 1 ]; then
# Which of torch's own SDPA backends mishandle a float16 view that starts 2 bytes into its storage.
timeout 60 python3 - >> "$OUT/gpu-check.log" 2>&1 <<'PY'
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
x = torch.randn(1, 2, 90, 41, device="cuda", dtype=torch.half)[..., 1:]
ref = torch.softmax(x.double() @ x.double().transpose(-1, -2) / 40 ** 0.5, -1) @ x.double()
for backend in [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH, SDPBackend.CUDNN_ATTENTION]:
    try:
        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(x, x, x)
        print(f"torch SDPA {backend.name} on a misaligned view: max error {(out.double() - ref).abs().max().item():.3g}; contiguous copy: "
              f"{(F.scaled_dot_product_attention(x.contiguous(), x.contiguous(), x.contiguous()).double() - ref).abs().max().item():.3g}")
    except RuntimeError as error:
        print(f"torch SDPA {backend.name}: {str(error).splitlines()[0][:120]}")
PY

# 3. Benchmark (after the build, so compiles do not share the CPU with kernel launches).
if [ -f build/kernels-python/libtorch_diffusion_kernels.so ]; then
  TORCH_DIFFUSION_KERNELS_LIB="$ROOT/build/kernels-python/libtorch_diffusion_kernels.so" timeout 150 \
    python3 scripts/bench/attention_cuda.py --json "$OUT/attention-cuda.json" > "$OUT/attention-cuda.log" 2>&1
  log "attention bench: exit $?"
fi
fi

if [ -f "$ADDON" ]; then
  export TORCH_DIFFUSION_NATIVE="$ADDON"
  timeout "$(( $(left) > 200 ? 200 : $(left) ))" node node_modules/vitest/vitest.mjs run ${VITEST_FILES:-test/cuda.test.ts test/build.test.ts test/models.test.ts test/attention.test.ts} \
    > "$OUT/vitest-cuda.log" 2>&1
  log "vitest cuda/build/models/attention: exit $? ($(grep -E 'Tests +[0-9]' "$OUT/vitest-cuda.log" | tail -1))"
  # 4. Everything else, as far as the budget goes (the suite expects Debian's /usr/bin/python3 for some fixtures).
  if [ "${FULL_SUITE:-1}" = 1 ] && [ "$(left)" -gt 60 ]; then
    timeout "$(( $(left) - 15 ))" node node_modules/vitest/vitest.mjs run --reporter=dot > "$OUT/vitest-all.log" 2>&1
    log "vitest all: exit $? ($(grep -E 'Tests +[0-9]' "$OUT/vitest-all.log" | tail -1))"
  fi
fi
log "done"
