#!/usr/bin/env bash
# A CUDA 13.0 toolchain for building the `cuda` feature on a machine with no GPU and no CUDA
# packages (docs/GPU.md): the NVIDIA wheels from the Python package index in .venv-cuda, and a
# link folder with unversioned links to their libraries and a stub libcuda.so.1 (the driver,
# present only on a GPU machine; the real one is loaded there at run time).
# Prints ROOT= and LINKDIR= for bench/gpu-pack.sh.
#
#   eval "$(bench/cuda-toolchain.sh)" && MODEL=<all-MiniLM-L6-v2> bench/gpu-pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-cuda}
if [ ! -x "$VENV/bin/nvcc" ] && [ ! -d "$VENV/lib/python3.11/site-packages/nvidia/cu13" ]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
      "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cublas==13.0.*" \
      "nvidia-curand==10.4.0.*" "nvidia-cuda-nvrtc==13.0.*" >&2
fi
SITE=$(echo "$PWD/$VENV"/lib/python3*/site-packages/nvidia)
ROOT=$SITE/cu13
LINKDIR=$PWD/$VENV/link
mkdir -p "$LINKDIR"
for lib in cudart cublas cublasLt curand nvrtc; do
  f=$(find "$SITE" -name "lib$lib.so.*" | sort | head -1)
  [ -n "$f" ] || { echo "lib$lib not found under $SITE" >&2; exit 1; }
  ln -sf "$f" "$LINKDIR/lib$lib.so"
done
# The stub driver: every cu* function that cudarc's driver bindings declare, doing nothing.
CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)
grep -o 'fn cu[A-Za-z0-9_]*' "$CUDARC/src/driver/sys/mod.rs" | sort -u |
  awk '{ print "int " $2 "(void) { return 0; }" }' > "$LINKDIR/stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINKDIR/libcuda.so" "$LINKDIR/stub.c"
echo "ROOT=$ROOT"
echo "LINKDIR=$LINKDIR"
