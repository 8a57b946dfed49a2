#!/usr/bin/env python3
"""Rebuild a runner MLP from its weights file alone, with numpy (or PyTorch).

A train stage's `ema.safetensors` / `weights.safetensors` carries everything the
network needs: the tensors (`layers.<i>.weight` [out, in], `layers.<i>.bias`, and for
Fourier features `embedding.frequencies`) and, in the header's metadata under
`runner.model`, the stage's model.json (architecture, process, objective, data
dimension). The network is

    h = [x, embedding(t)];  h = silu(W_i h + b_i) for every layer but the last

with embedding(t) = [sin(a), cos(a)], a = 1000 t w_k, w_k = 10000^(-k/half) for
`sinusoidal`, and a = 2 pi t w_k for `fourier`. Its output is the noise prediction
(objective `eps`) or the score (objective `dsm`) at time t in [0, 1].

    python3 scripts/load_mlp.py results/<pipeline>/stages/ddpm/ema.safetensors
    python3 scripts/load_mlp.py WEIGHTS --check points.json   # compare with runner
    python3 scripts/load_mlp.py WEIGHTS --torch               # the same as a torch.nn.Module

`--check` reads {"x": [[...]], "t": [...], "expected": [[...]]} and exits 1 when the
rebuilt network's output differs from `expected` by more than 1e-4 (relative to the
output's scale: float32 summation order differs between runner's kernels and numpy).
"""

import argparse
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64}


def read_safetensors(path):
    """(tensors by name, metadata) of a safetensors file, with numpy only."""
    with open(path, "rb") as f:
        data = f.read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    metadata = header.pop("__metadata__", {})
    body = data[8 + size :]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"])
    return tensors, metadata


def embedding(t, config, tensors):
    t = np.asarray(t, dtype=np.float64)[:, None]
    if config.get("embedding", "sinusoidal") == "fourier":
        w = tensors["embedding.frequencies"].astype(np.float64)[None, :]
        args = 2.0 * np.pi * t * w
    else:
        half = config["embedding_dim"] // 2
        k = np.arange(half, dtype=np.float64)
        w = np.exp(-np.log(10000.0) * k / max(half, 1))[None, :]
        args = 1000.0 * t * w
    return np.concatenate([np.sin(args), np.cos(args)], axis=1)


def forward(x, t, config, tensors):
    """The MLP's output at rows `x` and times `t`, in float64."""
    h = np.concatenate([np.asarray(x, dtype=np.float64), embedding(t, config, tensors)], axis=1)
    layers = sum(1 for name in tensors if name.endswith(".weight"))
    for i in range(layers):
        w = tensors[f"layers.{i}.weight"].astype(np.float64)
        b = tensors[f"layers.{i}.bias"].astype(np.float64)
        h = h @ w.T + b
        if i < layers - 1:
            h = h / (1.0 + np.exp(-h))  # SiLU
    return h


def torch_module(config, tensors):
    """The same network as a torch.nn.Module with the weights loaded."""
    import torch

    class Mlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            n = sum(1 for name in tensors if name.endswith(".weight"))
            self.layers = torch.nn.ModuleList(
                torch.nn.Linear(tensors[f"layers.{i}.weight"].shape[1], tensors[f"layers.{i}.weight"].shape[0])
                for i in range(n)
            )
            if "embedding.frequencies" in tensors:
                self.register_buffer("frequencies", torch.tensor(tensors["embedding.frequencies"]))

        def forward(self, x, t):
            if config.get("embedding", "sinusoidal") == "fourier":
                args = 2 * torch.pi * t[:, None] * self.frequencies[None, :]
            else:
                half = config["embedding_dim"] // 2
                k = torch.arange(half, dtype=x.dtype)
                args = 1000 * t[:, None] * torch.exp(-torch.log(torch.tensor(10000.0)) * k / max(half, 1))[None, :]
            h = torch.cat([x, torch.sin(args), torch.cos(args)], dim=1)
            for i, layer in enumerate(self.layers):
                h = layer(h)
                if i < len(self.layers) - 1:
                    h = torch.nn.functional.silu(h)
            return h

    module = Mlp()
    state = {name: torch.tensor(array.copy()) for name, array in tensors.items() if name.startswith("layers.")}
    module.load_state_dict(state, strict=False)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights")
    parser.add_argument("--check", help="JSON with x, t and runner's expected output")
    parser.add_argument("--torch", action="store_true", help="also run it as a PyTorch module")
    args = parser.parse_args()

    tensors, metadata = read_safetensors(args.weights)
    model = json.loads(metadata["runner.model"])
    config = model["model"]
    if config.get("arch") != "mlp":
        sys.exit(f"{args.weights} holds a `{config.get('arch')}`; this script rebuilds MLPs")
    dim = model["dim"]
    print(f"mlp: hidden {config['hidden']}, {config.get('embedding', 'sinusoidal')} embedding of size "
          f"{config['embedding_dim']}, data dimension {dim}, objective {model['objective']}")

    if args.check:
        with open(args.check) as f:
            points = json.load(f)
        x, t = np.array(points["x"]), np.array(points["t"])
        expected = np.array(points["expected"])
    else:
        x = np.random.default_rng(0).normal(size=(4, dim))
        t = np.linspace(0.1, 0.9, 4)
        expected = None
    out = forward(x, t, config, tensors)
    if args.torch:
        import torch

        with torch.no_grad():
            via_torch = torch_module(config, tensors)(torch.tensor(x, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
        print(f"PyTorch agrees with numpy within {np.abs(via_torch.numpy() - out).max():.2e}")
    if expected is None:
        print(out)
        return
    scale = max(1.0, float(np.abs(expected).max()))
    err = float(np.abs(out - expected).max()) / scale
    print(f"largest difference from runner's output: {err:.2e} (relative to {scale:.3g})")
    sys.exit(0 if err <= 1e-4 else 1)


if __name__ == "__main__":
    main()
