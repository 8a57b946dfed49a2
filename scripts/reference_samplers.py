#!/usr/bin/env python3
"""Reference numbers for runner's fast samplers, from the implementations people use.

Writes tests/fixtures/reference_samplers.json: a fixed small noise-prediction network
(3 -> 16 tanh -> 2 on (x, t)), fixed starting noise, and for each case the states
after the first two steps and the final samples of:

  * diffusers' DPMSolverMultistepScheduler (DPM-Solver++(2M)) and
    UniPCMultistepScheduler (bh1 and bh2) on DDPM's linear chain (1e-4 .. 0.02,
    T = 1000), 10 steps with `trailing` timesteps ending at sigma_min;
  * k-diffusion's sample_heun (EDM's Algorithm 2, deterministic) on Karras sigmas
    from 80 to 0.002 (rho 7), 10 levels, with the network read as the denoiser of an
    EDM process whose time is log-linear in sigma (runner's `edm` schedule).

tests/reference_samplers.rs runs runner's samplers on the same network and noise and
compares. Not run in CI (it needs torch, diffusers and k-diffusion):

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch diffusers torchsde \
        torchdiffeq scipy pillow && /tmp/ref/bin/pip install --no-deps k-diffusion torchvision
    /tmp/ref/bin/python scripts/reference_samplers.py
"""

import importlib.metadata
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

# k-diffusion's package __init__ pulls in its training code (scikit-image, CLIP, ...):
# load only its sampling module.
spec = importlib.util.find_spec("k_diffusion")
package = types.ModuleType("k_diffusion")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["k_diffusion"] = package
from k_diffusion import sampling  # noqa: E402

torch.set_default_dtype(torch.float32)
T = 1000
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0

rng = np.random.default_rng(2024)
network = {
    "w1": (rng.standard_normal((16, 3)) * 0.8).round(6).tolist(),
    "b1": (rng.standard_normal(16) * 0.3).round(6).tolist(),
    "w2": (rng.standard_normal((2, 16)) * 0.4).round(6).tolist(),
    "b2": (rng.standard_normal(2) * 0.1).round(6).tolist(),
}
start = rng.standard_normal((8, 2)).round(6)
W1, B1 = torch.tensor(network["w1"]), torch.tensor(network["b1"])
W2, B2 = torch.tensor(network["w2"]), torch.tensor(network["b2"])


def eps(x, t):
    """The network: eps(x, t) with t in runner's [0, 1] clock."""
    inp = torch.cat([x, torch.full((x.shape[0], 1), float(t))], dim=1)
    return torch.tanh(inp @ W1.T + B1) @ W2.T + B2


def chain_case(name, scheduler, yaml):
    scheduler.set_timesteps(10)
    x = torch.tensor(start, dtype=torch.float32)
    states = []
    for timestep in scheduler.timesteps:
        # diffusers' timestep k (zero-indexed) is runner's level k + 1 at t = (k + 1) / T.
        out = eps(x, (int(timestep) + 1) / T)
        x = scheduler.step(out, timestep, x).prev_sample
        states.append(x.tolist())
    return {
        "name": name,
        "schedule": "linear",
        "sampler": yaml,
        "timesteps": [int(t) for t in scheduler.timesteps],
        "states": states,
    }


def edm_case():
    rate = math.log(SIGMA_MAX / SIGMA_MIN)

    def denoiser(x, sigma):
        t = math.log(float(sigma) / SIGMA_MIN) / rate
        return x - float(sigma) * eps(x, t)

    sigmas = sampling.get_sigmas_karras(10, SIGMA_MIN, SIGMA_MAX, rho=7.0)
    states = []
    # The state after step k: sample_heun itself on the first k + 1 sigmas (its steps
    # do not depend on how many follow when S_churn = 0).
    for k in range(1, len(sigmas)):
        out = sampling.sample_heun(
            lambda x, sigma, **_: denoiser(x, sigma.reshape(-1)[0]),
            torch.tensor(start, dtype=torch.float32) * sigmas[0],
            sigmas[: k + 1],
            disable=True,
        )
        states.append(out.tolist())
    return {
        "name": "edm_heun",
        "schedule": "edm",
        "sampler": "sampler: edm_heun\nsteps: 10",
        "sigmas": sigmas.tolist(),
        "states": states,
    }


common = dict(
    beta_start=1e-4,
    beta_end=0.02,
    beta_schedule="linear",
    num_train_timesteps=T,
    timestep_spacing="trailing",
    final_sigmas_type="sigma_min",
    lower_order_final=True,
)
cases = [
    chain_case(
        "dpm_solver_pp_2m",
        DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **common),
        "sampler: dpm_solver_pp\nsteps: 10\nspacing: trailing",
    ),
    chain_case(
        "unipc_bh1",
        UniPCMultistepScheduler(solver_order=2, solver_type="bh1", **common),
        "sampler: unipc\nsteps: 10\nspacing: trailing\nvariant: bh1",
    ),
    chain_case(
        "unipc_bh2",
        UniPCMultistepScheduler(solver_order=2, solver_type="bh2", **common),
        "sampler: unipc\nsteps: 10\nspacing: trailing\nvariant: bh2",
    ),
    edm_case(),
]
fixture = {
    "made_by": "scripts/reference_samplers.py",
    "versions": {
        name: importlib.metadata.version(name) for name in ["torch", "diffusers", "k-diffusion"]
    },
    "network": network,
    "start": start.tolist(),
    "cases": cases,
}
out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference_samplers.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(fixture, indent=1) + "\n")
print(f"wrote {out}")
