#!/usr/bin/env bash
# Compiles candle-kernels' CUDA sources the way its build script does, on a machine
# that has nvcc (the GPU machine), into a tarball that `build.sh` replays where the
# Rust toolchain is. Usage: compile-kernels.sh CANDLE_KERNELS_DIR OUT.tar.gz [CAP]
# CANDLE_KERNELS_DIR is the crate's source (e.g. ~/.cargo/registry/src/*/candle-kernels-0.11.1);
# CAP is the compute capability (90 for H100/H200).
set -euo pipefail
src=$(cd "$1/src" && pwd)
out=$(realpath -m "$2")
cap=${3:-90}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gencode="-gencode=arch=compute_${cap},code=sm_${cap}"
common=(--default-stream per-thread --expt-relaxed-constexpr -std=c++17 -O3)
jobs=$(nproc)

# PTX, loaded by candle at run time: every top-level kernel but the GGUF ones.
for cu in "$src"/*.cu; do
  case $(basename "$cu") in mmvq_gguf.cu) continue ;; esac
  echo "nvcc $gencode --ptx ${common[*]} $cu"
done | xargs -P "$jobs" -I{} sh -c "{} --output-directory $work" 

# Objects of the statically linked MoE/GGUF kernels (libmoe.a).
objects=(moe/moe_gguf.cu moe/moe_wmma.cu moe/moe_wmma_gguf.cu mmvq_gguf.cu
  mmq_gguf/mmq_quantize.cu mmq_gguf/mmq_instance_q4_0.cu mmq_gguf/mmq_instance_q4_1.cu
  mmq_gguf/mmq_instance_q5_0.cu mmq_gguf/mmq_instance_q5_1.cu mmq_gguf/mmq_instance_q8_0.cu
  mmq_gguf/mmq_instance_q2_k.cu mmq_gguf/mmq_instance_q3_k.cu mmq_gguf/mmq_instance_q4_k.cu
  mmq_gguf/mmq_instance_q5_k.cu mmq_gguf/mmq_instance_q6_k.cu)
for cu in "${objects[@]}"; do
  name=$(basename "$cu" .cu)
  echo "nvcc $gencode -c -o $work/$name.o ${common[*]} -Xcompiler -fPIC $src/$cu"
done | xargs -P "$jobs" -I{} sh -c "{}"

nvcc --version | tail -2 > "$work/nvcc-version.txt"
echo "$cap" > "$work/compute-cap.txt"
tar -C "$work" -czf "$out" .
echo "wrote $out: $(ls "$work" | wc -l) files"
