#!/usr/bin/env python3
"""Compares two training runs (run folders): their loss curves in metrics.jsonl step by step
(loss, lm_loss, balance_loss, grad_norm, and the final val_loss) and every tensor of their
model.safetensors and optimizer moments, in double:
  - each curve value: |a - b| <= TOL * max(|a|, |b|);
  - the model's weights as a whole: ||a - b|| <= TOL * ||a|| (L2 over every parameter), and
    likewise each optimizer moment file;
  - each tensor on its own: ||a - b|| <= TENSOR_TOL * ||a||.
The per-tensor bound is looser because float sums taken in another order (another thread
count, or ranks) move the router and constant-expert mixers, whose gradients are sums of
cancelling terms, by ~1.5e-5 of their norm in 20 steps: the same one-process run at 1 and 2
threads differs by that much (docs/distributed.md).

    compare_runs.py REFERENCE OTHER [--tol 1e-5] [--tensor-tol 1e-4] [--steps N]

Exit 0 when they agree, 1 with every disagreement listed. Reads safetensors with numpy only.
"""
import argparse
import json
import struct
import sys

import numpy as np


def curve(run):
    steps, final = {}, None
    with open(f"{run}/metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                steps[rec["step"]] = rec
            elif "val_loss" in rec:
                final = rec
    return steps, final


def tensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{path}: {name} is {info['dtype']}"
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).astype(np.float64)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("other")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--tensor-tol", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=0, help="the number of steps both curves must have (0: any)")
    a = ap.parse_args()
    bad = []
    s1, f1 = curve(a.ref)
    s2, f2 = curve(a.other)
    if sorted(s1) != sorted(s2) or (a.steps and len(s1) != a.steps):
        bad.append(f"steps differ: {sorted(s1)} against {sorted(s2)}")
    worst = 0.0
    for step in sorted(set(s1) & set(s2)):
        for key in ("loss", "lm_loss", "balance_loss", "grad_norm"):
            x, y = s1[step][key], s2[step][key]
            rel = abs(x - y) / max(abs(x), abs(y), 1e-30)
            worst = max(worst, rel)
            if rel > a.tol:
                bad.append(f"step {step} {key}: {x!r} against {y!r} (relative {rel:.2e})")
    if (f1 is None) != (f2 is None):
        bad.append("only one run has a final validation")
    elif f1 is not None:
        rel = abs(f1["val_loss"] - f2["val_loss"]) / abs(f1["val_loss"])
        if rel > a.tol or f1["val_tokens"] != f2["val_tokens"]:
            bad.append(f"val_loss {f1['val_loss']!r} over {f1['val_tokens']} tokens against "
                       f"{f2['val_loss']!r} over {f2['val_tokens']} (relative {rel:.2e})")
    wworst = eworst = 0.0
    for name in ("model.safetensors", "optimizer.m.safetensors", "optimizer.v.safetensors"):
        t1, t2 = tensors(f"{a.ref}/{name}"), tensors(f"{a.other}/{name}")
        if sorted(t1) != sorted(t2):
            bad.append(f"{name}: the tensor names differ")
            continue
        diff_sq = norm_sq = 0.0
        for key in t1:
            x, y = t1[key], t2[key]
            norm = np.linalg.norm(x)
            rel = float(np.linalg.norm(x - y) / norm) if norm > 0 else float(np.linalg.norm(y))
            diff_sq += float(np.sum((x - y) ** 2))
            norm_sq += float(np.sum(x ** 2))
            wworst = max(wworst, rel)
            if rel > a.tensor_tol:
                bad.append(f"{name} {key}: ||a - b|| / ||a|| = {rel:.2e}")
        whole = (diff_sq / norm_sq) ** 0.5 if norm_sq > 0 else diff_sq ** 0.5
        eworst = max(eworst, whole)
        if whole > a.tol:
            bad.append(f"{name}: ||a - b|| / ||a|| over all its tensors = {whole:.2e}")
    print(f"compare_runs: {len(s1)} steps; worst relative difference: curves {worst:.2e}, whole files "
          f"{eworst:.2e} (tolerance {a.tol:g}), single tensors {wworst:.2e} (tolerance {a.tensor_tol:g})")
    for b in bad:
        print("  " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
