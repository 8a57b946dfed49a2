"""Runs runner's benchmark (benches/train.rs) and the PyTorch reference alternately,
several times, on the same machine and device, and prints per case the median time of
each and the speed-up of runner over PyTorch (min / median / max over the rounds).
Each round alternates per group of cases (the MLP steps of one size, the sampling loop,
...), and which side goes first alternates between rounds, so that the two timings a
speed-up divides were taken within seconds of each other: on a shared machine whose
speed drifts over minutes, a round of every runner case followed by every PyTorch case
compared different moments more than different programs.

    python bench/compare.py [--device cpu|cuda] [--rounds 5] [--quick] [--only PREFIX]
                            [--runner-bench CMD] [--markdown]

--runner-bench is the command that runs runner's benchmark binary (default: `cargo
bench --bench train --`); on a machine without cargo, pass the built binary.
GFLOP/s of the steps use the FLOPs PyTorch's FlopCounterMode counts for the same
network (runner counts the MLP's itself). Each side times a case at least 15 times and
until its runs add up to a second, so that a round's median is not one burst of the host.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# Prefixes of the case names both sides print, timed back to back within a round.
GROUPS = ["matmul", "mlp_step/4x64", "mlp_step/3x128", "mlp_sampling", "unet_step", "unet_sample_step"]


def run(cmd, json_path):
    subprocess.run(cmd + ["--json", json_path], check=True, stdout=sys.stderr)
    with open(json_path) as f:
        return {c["case"]: c for c in json.load(f)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="")
    p.add_argument("--runner-bench", default="cargo bench --bench train --")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    common = ["--device", a.device] + (["--quick"] if a.quick else [])
    runner_cmd = shlex.split(a.runner_bench) + common
    torch_cmd = [sys.executable, os.path.join(HERE, "reference", "reference.py")] + common
    # The groups --only selects: those inside it, or the one it narrows.
    groups = [a.only if a.only.startswith(g) else g for g in GROUPS if g.startswith(a.only) or a.only.startswith(g)]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            ours, theirs = {}, {}
            for g, group in enumerate(groups):
                sides = [(runner_cmd, ours, "runner"), (torch_cmd, theirs, "torch")]
                for cmd, into, label in sides if r % 2 == 0 else sides[::-1]:
                    into.update(run(cmd + ["--only", group], os.path.join(tmp, f"{label}{r}-{g}.json")))
            rounds.append((ours, theirs))
    import torch

    name = torch.cuda.get_device_name(0) if a.device == "cuda" else (platform.processor() or platform.machine())
    print(f"\n{a.rounds} alternating rounds on {name} ({os.cpu_count()} CPUs), torch {torch.__version__}, threads {torch.get_num_threads()}")
    header = "| case | runner median | PyTorch median | speed-up min / median / max | runner GFLOP/s | PyTorch GFLOP/s |"
    print(header if a.markdown else header.replace("|", " "))
    if a.markdown:
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for case in rounds[0][0]:
        if not all(case in o and case in t for o, t in rounds):
            continue
        ours = [o[case]["median_ms"] for o, _ in rounds]
        theirs = [t[case]["median_ms"] for _, t in rounds]
        speedups = sorted(t / o for o, t in zip(ours, theirs))
        flops = rounds[0][1][case].get("flops") or rounds[0][0][case].get("flops")
        po, pt = rounds[0][0][case].get("params", 0), rounds[0][1][case].get("params", 0)
        mismatch = f" (parameters differ: {po} vs {pt})" if po != pt else ""
        gf = lambda ms: f"{flops / (ms / 1e3) / 1e9:.1f}" if flops else "-"
        om, tm = statistics.median(ours), statistics.median(theirs)
        cells = [case + mismatch, f"{om:.3f} ms", f"{tm:.3f} ms",
                 f"{speedups[0]:.2f} / {statistics.median(speedups):.2f} / {speedups[-1]:.2f}x", gf(om), gf(tm)]
        print(("| " + " | ".join(cells) + " |") if a.markdown else "  ".join(cells))


if __name__ == "__main__":
    main()
