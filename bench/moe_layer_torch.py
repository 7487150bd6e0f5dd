#!/usr/bin/env python3
"""PyTorch peer baseline for one MoE / MoE++ layer (f32, CPU).

The usual reference-style layer: linear router with logit normalisation, "official" gating
(top-k of softmax, zero experts' weights set to 0, renormalised), no input scaling, and a
per-expert loop with index_select / index_add_. FFN experts are SwiGLU with a fused
up_proj [2I, D]; constant experts a0*x + a1*v with [a0, a1] = softmax(Wc x); copy experts
x; zero experts are skipped.

For the MoE++ variant a scalar bias b is added to the router logits of every
zero-computation expert (constant, copy, zero) before logit normalisation; for each target
fraction of slots routed to zero-computation experts, b is bisected on the fixed random
input until the measured fraction is within --tol of the target. The variants (vanilla
and each target) are then timed once per round, in rounds that alternate between them,
and the medians reported, so slow drift of a shared machine cancels out of the ratios.

Prints one JSON object on stdout; progress goes to stderr.

    /usr/bin/python3 bench/moe_layer_torch.py                 # full size (~minutes)
    /usr/bin/python3 bench/moe_layer_torch.py --T 256 --repeats 1
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class MoELayer:
    def __init__(self, D, I, N, C, P, Z, k, std, gen):
        self.D, self.I, self.N, self.C, self.P, self.Z, self.k = D, I, N, C, P, Z, k
        self.E = N + C + P + Z

        def rn(*shape):
            return torch.randn(*shape, generator=gen) * std

        self.wg = rn(self.E, D)                       # router
        self.up = [rn(2 * I, D) for _ in range(N)]    # FFN experts
        self.down = [rn(D, I) for _ in range(N)]
        self.cv = [torch.randn(D, generator=gen) * std for _ in range(C)]  # constant v
        self.cw = [rn(2, D) for _ in range(C)]                             # constant Wc
        self.bias = 0.0  # added to the logits of zero-computation experts

    def params(self):
        return [self.wg] + self.up + self.down + self.cv + self.cw

    def requires_grad_(self, flag):
        for p in self.params():
            p.requires_grad_(flag)

    def zero_grad(self):
        for p in self.params():
            p.grad = None

    def route(self, x):
        z = x @ self.wg.t()
        if self.E > self.N and self.bias != 0.0:
            b = torch.zeros(self.E, dtype=z.dtype)
            b[self.N:] = self.bias
            z = z + b
        s = z / z.std(dim=-1, keepdim=True)           # logit norm, norm_std = 1
        p = torch.softmax(s, dim=-1)
        g, idx = torch.topk(p, self.k, dim=-1)
        first_zero = self.N + self.C + self.P
        if self.Z:
            g = g * (idx < first_zero).to(g.dtype)
        tot = g.sum(-1, keepdim=True)
        g = g / torch.where(tot > 0, tot, torch.ones_like(tot))
        return g, idx

    def zc_fraction(self, x):
        with torch.no_grad():
            _, idx = self.route(x)
        return float((idx >= self.N).to(torch.float64).mean())

    def forward(self, x):
        g, idx = self.route(x)
        y = torch.zeros_like(x)
        I = self.I
        for e in range(self.N + self.C + self.P):   # zero experts: skipped
            tok, slot = torch.nonzero(idx == e, as_tuple=True)
            if tok.numel() == 0:
                continue
            xs = x.index_select(0, tok)
            w = g[tok, slot].unsqueeze(1)
            if e < self.N:
                u = xs @ self.up[e].t()
                h = F.silu(u[:, :I]) * u[:, I:]
                out = h @ self.down[e].t()
            elif e < self.N + self.C:
                c = e - self.N
                a = torch.softmax(xs @ self.cw[c].t(), dim=-1)
                out = a[:, 0:1] * xs + a[:, 1:2] * self.cv[c]
            else:
                out = xs
            y.index_add_(0, tok, out * w)
        return y


def bisect_bias(layer, x, target, tol, iters=60):
    lo, hi = -30.0, 30.0
    layer.bias = lo
    f_lo = layer.zc_fraction(x)
    layer.bias = hi
    f_hi = layer.zc_fraction(x)
    if not (f_lo <= target <= f_hi):
        log(f"  target {target} outside reachable [{f_lo:.3f}, {f_hi:.3f}]")
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        layer.bias = mid
        f = layer.zc_fraction(x)
        if abs(f - target) <= tol:
            return mid, f
        if f < target:
            lo = mid
        else:
            hi = mid
    layer.bias = 0.5 * (lo + hi)
    return layer.bias, layer.zc_fraction(x)


def forward_fns(layer, x, dy):
    """One forward (no grad) and one forward+backward of `layer`, as closures."""
    xg = x.detach().clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            layer.forward(x)

    def fwdbwd():
        layer.requires_grad_(True)
        layer.zero_grad()
        xg.grad = None
        y = layer.forward(xg)
        (y * dy).sum().backward()
        layer.requires_grad_(False)

    return fwd, fwdbwd


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=2048, help="tokens")
    ap.add_argument("--D", type=int, default=1536)
    ap.add_argument("--I", type=int, default=4096)
    ap.add_argument("--N", type=int, default=16, help="FFN experts")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target-z", default="0.2,0.5,0.8",
                    help="comma-separated target fractions of slots to zero-computation experts")
    ap.add_argument("--tol", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    targets = [float(v) for v in a.target_z.split(",") if v.strip()]
    gen = torch.Generator().manual_seed(a.seed)
    x = torch.randn(a.T, a.D, generator=gen)
    dy = torch.randn(a.T, a.D, generator=gen)
    runs = []

    log(f"torch {torch.__version__}, threads {torch.get_num_threads()}, T={a.T} D={a.D} "
        f"I={a.I} N={a.N} k={a.k}")

    # The vanilla MoE and its MoE++ twin (C=2, P=1, Z=1), the router bias calibrated per
    # target z; then every variant is timed once per round, rounds alternating between
    # them, so that the drift of a shared machine cancels out of the ratios (medians).
    vanilla = MoELayer(a.D, a.I, a.N, 0, 0, 0, a.k, 0.02, torch.Generator().manual_seed(a.seed + 1))
    moepp = MoELayer(a.D, a.I, a.N, 2, 1, 1, a.k, 0.02, torch.Generator().manual_seed(a.seed + 2))
    variants = [{"variant": "vanilla", "z": 0.0, "layer": vanilla, "bias": None}]
    for tz in targets:
        b, z = bisect_bias(moepp, x, tz, a.tol)
        log(f"moepp target_z {tz}: bias {b:.4f} -> z {z:.4f}")
        variants.append({"variant": "moepp", "target_z": tz, "z": z, "layer": moepp, "bias": b})
    rounds = a.repeats + 2
    log(f"timing {len(variants)} variants in {rounds} alternating rounds")
    times = [{"fwd": [], "fwdbwd": []} for _ in variants]
    for r in range(-1, rounds):  # round -1 warms up
        for v, t in zip(variants, times):
            if v["bias"] is not None:
                v["layer"].bias = v["bias"]
            fwd, fwdbwd = forward_fns(v["layer"], x, dy)
            tf, tfb = timed(fwd), timed(fwdbwd)
            if r >= 0:
                t["fwd"].append(tf)
                t["fwdbwd"].append(tfb)
    for v, t in zip(variants, times):
        tf, tfb = statistics.median(t["fwd"]), statistics.median(t["fwdbwd"])
        run = {k: v[k] for k in ("variant", "target_z", "z", "bias") if k in v and v[k] is not None}
        run.update({"fwd_tokens_per_s": a.T / tf, "fwdbwd_tokens_per_s": a.T / tfb, "fwd_s": tf, "fwdbwd_s": tfb})
        runs.append(run)
        log(f"  {run['variant']} z {run['z']:.3f}: fwd {a.T / tf:.1f} tok/s, fwd+bwd {a.T / tfb:.1f} tok/s")

    print(json.dumps({"threads": torch.get_num_threads(), "torch_version": torch.__version__,
                      "T": a.T, "D": a.D, "I": a.I, "N": a.N, "k": a.k,
                      "repeats": a.repeats, "rounds": rounds, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
