# Every recipe is a plain cargo command underneath; `just --list` shows them.

pipeline := "pipelines/smld_vs_ddpm.yaml"

# Run a pipeline (default: the SMLD vs DDPM comparison) and write its report.
run file=pipeline *args="":
    cargo run --release -- run {{file}} {{args}}

# Show each stage's key and whether it is cached or why it must run.
plan file=pipeline *args="":
    cargo run --release -- plan {{file}} {{args}}

# Print the stage graph as Graphviz DOT.
graph file=pipeline:
    cargo run --release -- graph {{file}}

# Run every sweep pipeline in pipelines/ and print where the reports are.
sweep:
    for f in pipelines/*.yaml; do cargo run --release -- run "$f" || exit 1; done
    @echo "reports:"; ls results/*/report.html

# Run the test suite (the same command CI runs).
test:
    cargo test --release

# List stage kinds, datasets, schedules, samplers and metrics with their defaults.
list:
    cargo run --release -- list
