#!/usr/bin/env bash
# `just sweep`: runs every pipeline in pipelines/ that has a `sweep:` section, passing
# the arguments to each run (e.g. `--profile quick`). A pipeline that cannot be planned
# here with those arguments (its data is not installed, it has no such profile) is
# skipped with the reason; one that fails while running does not stop the others.
# Exits 1 if a run failed, 0 otherwise (skipped pipelines are not failures).
# RUNNER (default: `cargo run --release --quiet --`) and SWEEP_PIPELINES (default:
# pipelines) let tests point it at a built binary and their own pipelines.
set -uo pipefail
cd "$(dirname "$0")/.."
read -r -a runner <<< "${RUNNER:-cargo run --release --quiet --}"
dir="${SWEEP_PIPELINES:-pipelines}"

results="results"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --results) results="${args[i + 1]:-results}" ;;
        --results=*) results="${args[i]#--results=}" ;;
    esac
done

ran=(); skipped=(); failed=()
for f in "$dir"/*.yaml; do
    grep -q '^sweep:' "$f" || continue
    if ! reason=$("${runner[@]}" plan "$f" "$@" 2>&1 >/dev/null); then
        skipped+=("$f: $(printf '%s' "${reason#error: }" | head -n 1)")
        continue
    fi
    if "${runner[@]}" run "$f" "$@"; then
        ran+=("$results/$(sed -n 's/^name: *//p' "$f")/report.html")
    else
        failed+=("$f")
    fi
done
echo "reports:"
for r in "${ran[@]}"; do echo "  $r"; done
if [ ${#skipped[@]} -gt 0 ]; then
    echo "skipped (cannot be planned here; the reason says what to install or change):"
    for s in "${skipped[@]}"; do echo "  $s"; done
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed:"
    for s in "${failed[@]}"; do echo "  $s"; done
    exit 1
fi
