#!/usr/bin/env bash
# Builds runner with the `cuda` feature on a machine that has Rust but no CUDA, for a
# GPU machine that has CUDA 13 but no Rust. Usage:
#   scripts/cuda/build.sh KERNELS.tar.gz SYMBOLS.tar.gz
# KERNELS.tar.gz: candle-kernels compiled on the GPU machine by compile-kernels.sh.
# SYMBOLS.tar.gz: one file per CUDA library, named by its soname (libcublas.so.13.txt),
# listing the functions it exports (`nm -D --defined-only`), made there too.
# The binary lands in target/cuda/release/runner ($RUNNER_CUDA_TARGET_DIR/release/runner
# if set) and links the CUDA libraries by soname, so on the GPU machine it uses the
# libraries installed there.
set -euo pipefail
kernels=$(realpath "$1")
symbols=$(realpath "$2")
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$root/target/cuda-toolkit
rm -rf "$work" && mkdir -p "$work/bin" "$work/include" "$work/lib64" "$work/prebuilt" "$work/symbols"
tar -C "$work/prebuilt" -xzf "$kernels"
tar -C "$work/symbols" -xzf "$symbols"
cp "$root/scripts/cuda/nvcc-replay" "$work/bin/nvcc"

# Link-time stand-ins for the CUDA libraries: same sonames, same exported functions.
# A function candle needs that CUDA 13 lacks fails here, at link time.
for list in "$work"/symbols/*.txt; do
  soname=$(basename "$list" .txt)
  base=${soname%%.so*}
  awk '/^[A-Za-z_][A-Za-z0-9_]*$/ { print "void " $1 "(void) {}" }' "$list" > "$work/$base.c"
  gcc -shared -fPIC -w -Wl,-soname,"$soname" -o "$work/lib64/$base.so" "$work/$base.c"
done

export NVCC=$work/bin/nvcc
export RUNNER_CUDA_PREBUILT=$work/prebuilt
export CUDA_COMPUTE_CAP=$(cat "$work/prebuilt/compute-cap.txt")
export CUDARC_CUDA_VERSION=13000
export CUDA_HOME=$work
export LIBRARY_PATH=$work/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}
cd "$root"
target=${RUNNER_CUDA_TARGET_DIR:-target/cuda}
cargo build --release --features cuda --target-dir "$target" --bins --benches
echo "built $target/release/runner (needs CUDA 13 libraries where it runs)"
