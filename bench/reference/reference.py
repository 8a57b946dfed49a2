"""PyTorch versions of the cases in benches/train.rs: the same networks (runner's MLP
and DDPM-style U-Net, layer for layer), the same shapes, f32, AdamW, and the same
ancestral sampling loop. Prints one line per case; --json FILE writes the figures
for bench/compare.py.

    python bench/reference/reference.py [--quick] [--device cpu|cuda] [--json FILE] [--only PREFIX]
"""

import argparse
import json
import math
import time

import torch
from torch import nn
import torch.nn.functional as F


def sinusoidal(cond, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=cond.device) / max(half, 1))
    args = cond[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class Mlp(nn.Module):
    """runner's MLP: [x, sinusoidal(1000 t)] -> hidden layers with SiLU -> dim."""

    def __init__(self, hidden, dim=2, embedding_dim=32):
        super().__init__()
        self.embedding_dim = embedding_dim
        widths = [dim + embedding_dim] + list(hidden) + [dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, x, t):
        h = torch.cat([x, sinusoidal(1000.0 * t, self.embedding_dim)], dim=-1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i + 1 < len(self.layers):
                h = F.silu(h)
        return h


class ResBlock(nn.Module):
    def __init__(self, cin, cout, tdim, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class Attention(nn.Module):
    def __init__(self, ch, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)
        out = v @ weights.transpose(1, 2)
        return x + self.proj(out.reshape(b, c, h, w))


class UNet(nn.Module):
    """runner's U-Net (src/nn/models/unet.rs), built in the same order."""

    def __init__(self, channels=32, channel_mult=(1, 2, 2), res_blocks=2, attention=(7,), groups=8, image=(1, 28, 28)):
        super().__init__()
        ch, tdim = channels, 4 * channels
        self.channels, self.image = ch, image
        self.time = nn.Sequential(nn.Linear(ch, tdim), nn.SiLU(), nn.Linear(tdim, tdim), nn.SiLU())
        self.conv_in = nn.Conv2d(image[0], ch, 3, padding=1)
        self.down, kinds, skips, cur, res = nn.ModuleList(), [], [ch], ch, image[1]
        for level, mult in enumerate(channel_mult):
            for _ in range(res_blocks):
                self.down.append(ResBlock(cur, ch * mult, tdim, groups)); kinds.append("res")
                cur = ch * mult
                if res in attention:
                    self.down.append(Attention(cur, groups)); kinds.append("attn")
                skips.append(cur)
            if level + 1 < len(channel_mult):
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1)); kinds.append("down")
                skips.append(cur)
                res //= 2
        self.down_kinds = kinds
        self.middle = nn.ModuleList([ResBlock(cur, cur, tdim, groups), Attention(cur, groups), ResBlock(cur, cur, tdim, groups)])
        self.up, kinds = nn.ModuleList(), []
        for level in reversed(range(len(channel_mult))):
            mult = channel_mult[level]
            for _ in range(res_blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), ch * mult, tdim, groups)); kinds.append("res")
                cur = ch * mult
                if res in attention:
                    self.up.append(Attention(cur, groups)); kinds.append("attn")
            if level > 0:
                self.up.append(nn.Conv2d(cur, cur, 3, padding=1)); kinds.append("up")
                res *= 2
        self.up_kinds = kinds
        self.norm_out = nn.GroupNorm(groups, ch * channel_mult[0], eps=1e-6)
        self.conv_out = nn.Conv2d(ch * channel_mult[0], image[0], 3, padding=1)

    def forward(self, x, t):
        b = x.shape[0]
        x = x.reshape(b, *self.image)
        temb = self.time(sinusoidal(1000.0 * t, self.channels))
        h = self.conv_in(x)
        skips = [h]
        for kind, layer in zip(self.down_kinds, self.down):
            if kind == "res":
                h = layer(h, temb)
            elif kind == "attn":
                skips.pop()
                h = layer(h)
            else:
                h = layer(h)
            skips.append(h)
        h = self.middle[2](self.middle[1](self.middle[0](h, temb)), temb)
        for kind, layer in zip(self.up_kinds, self.up):
            if kind == "res":
                h = layer(torch.cat([h, skips.pop()], dim=1), temb)
            elif kind == "attn":
                h = layer(h)
            else:
                h = layer(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h))).reshape(b, -1)


def timed(device, warmup, reps, at_least, fn):
    """Times at least `reps` runs of `fn` after `warmup` untimed ones, and goes on until
    the timed runs add up to `at_least` seconds: the rule of benches/train.rs, so that
    each side's median covers as long a stretch of the machine."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times, total = [], 0.0
    while len(times) < reps or total < at_least * 1e3:
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
        total += times[-1]
    return sorted(times)


def count_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def step_case(name, net, dim, batch, device, reps, image):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
    x = torch.randn(batch, dim, device=device)
    eps = torch.randn(batch, dim, device=device)
    t = torch.rand(batch, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = (net(x, t) - eps).square().mean()
        loss.backward()
        opt.step()

    flops = count_flops(step)
    params = sum(p.numel() for p in net.parameters())
    return dict(case=name, times=timed(device, *reps, step), items=batch, unit="img" if image else "pts", flops=flops, params=params)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json")
    p.add_argument("--only", default="")
    a = p.parse_args()
    device = torch.device(a.device)
    reps = (0, 1, 0.0) if a.quick else (3, 15, 1.0)
    wanted = lambda name: name.startswith(a.only)
    cases = []

    n = 64 if a.quick else (8192 if device.type == "cuda" else 2048)
    if wanted("matmul"):
        m1, m2 = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
        cases.append(dict(case=f"matmul_f32/{n}", times=timed(device, *reps, lambda: m1 @ m2), items=1, unit="matmul", flops=2.0 * n**3, params=0))

    for label, hidden in [("4x64", [64] * 4), ("3x128", [128] * 3)]:
        for batch in [16] if a.quick else [512, 2048]:
            name = f"mlp_step/{label}/b{batch}"
            if wanted(name):
                cases.append(step_case(name, Mlp(hidden).to(device), 2, batch, device, reps, False))

    particles, steps = (100, 10) if a.quick else (10_000, 1000)
    name = f"mlp_sampling/{particles}x{steps}"
    if wanted(name):
        net = Mlp([128] * 3).to(device)
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        levels = [round(1000 - 999 * i / (steps - 1)) for i in range(steps)] if steps > 1 else [1000]

        @torch.no_grad()
        def run():
            x = torch.randn(particles, 2, device=device)
            for k, level in enumerate(levels):
                prev = levels[k + 1] if k + 1 < len(levels) else 0
                a_cur, a_prev = abar[level - 1], (abar[prev - 1] if prev > 0 else torch.tensor(1.0, dtype=torch.float64))
                r = math.sqrt(a_cur / a_prev)
                s_cur = math.sqrt(1 - a_cur)
                q = max((1 - a_cur) - r * r * (1 - a_prev), 0.0)
                t = torch.full((particles,), level / 1000, device=device)
                eps = net(x, t)
                x = (x - (q / s_cur) * eps) / r
                if prev > 0:
                    x = x + math.sqrt(q) * torch.randn_like(x)
            return x

        cases.append(dict(case=name, times=timed(device, 0, 1 if a.quick else 3, reps[2], run), items=particles * steps, unit="particle-steps", flops=None, params=0))

    for batch in [2] if a.quick else [64, 128]:
        name = f"unet_step/b{batch}"
        if wanted(name):
            cases.append(step_case(name, UNet().to(device), 784, batch, device, reps if a.quick else (2, 7, reps[2]), True))
        name = f"unet_sample_step/b{batch}"
        if wanted(name):
            net = UNet().to(device)
            x = torch.randn(batch, 784, device=device)
            t = torch.full((batch,), 0.5, device=device)

            @torch.no_grad()
            def forward():
                net(x, t)

            cases.append(dict(case=name, times=timed(device, *reps, forward), items=batch, unit="img", flops=count_flops(forward), params=0))

    out = []
    for c in cases:
        times = c.pop("times")
        med = times[len(times) // 2]
        row = dict(c, min_ms=times[0], median_ms=med, max_ms=times[-1])
        out.append(row)
        gf = f"   {c['flops'] / (med / 1e3) / 1e9:7.1f} GFLOP/s" if c["flops"] else ""
        print(f"{c['case']:<28} min {times[0]:9.3f} ms   median {med:9.3f} ms   max {times[-1]:9.3f} ms   {c['items'] / (med / 1e3):12.0f} {c['unit']}/s{gf}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
