#!/usr/bin/env python3
"""Does a per-block minimum ("mins", llama.cpp's Q4_1 layout) measure better than moepp's
symmetric q4 (Q4_0's rule: scale d = -peak/8, codes in [-8, 7])? Quantizes the same weights
both ways, blocks of 32, and prints the relative RMS error of each against its bits per
weight, with f32 and with f16 block constants. Weights: Gaussian, and Student-t with 5
degrees of freedom (heavier tails, as trained LLM matrices have), 2^20 of each.

Usage: /usr/bin/python3 tools/bench/q4_mins.py [--seed 1]   (numpy only; a few seconds)
"""
import argparse

import numpy as np

BLOCK = 32


def symmetric(w, const_dtype):
    b = w.reshape(-1, BLOCK)
    peak = b[np.arange(len(b)), np.abs(b).argmax(axis=1)]
    d = (peak / -8.0).astype(const_dtype).astype(np.float64)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.rint(b * inv[:, None]), -8, 7)
    bits = 4 + 8 * np.dtype(const_dtype).itemsize / BLOCK
    return (q * d[:, None]).reshape(w.shape), bits


def with_mins(w, const_dtype):
    b = w.reshape(-1, BLOCK)
    lo, hi = b.min(axis=1), b.max(axis=1)
    d = ((hi - lo) / 15.0).astype(const_dtype).astype(np.float64)
    m = lo.astype(const_dtype).astype(np.float64)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.rint((b - m[:, None]) * inv[:, None]), 0, 15)
    bits = 4 + 2 * 8 * np.dtype(const_dtype).itemsize / BLOCK
    return (q * d[:, None] + m[:, None]).reshape(w.shape), bits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    weights = {"gaussian": rng.standard_normal(1 << 20), "student-t 5": rng.standard_t(5, 1 << 20)}
    print(f"{'weights':<12} {'format':<24} {'bits/weight':>11} {'relative RMS error':>19}")
    for name, w in weights.items():
        for label, fn, dt in [("symmetric, f32 scale", symmetric, np.float32),
                              ("symmetric, f16 scale", symmetric, np.float16),
                              ("mins, f32 scale + min", with_mins, np.float32),
                              ("mins, f16 scale + min", with_mins, np.float16)]:
            deq, bits = fn(w, dt)
            err = np.sqrt(np.mean((deq - w) ** 2) / np.mean(w ** 2))
            print(f"{name:<12} {label:<24} {bits:>11.2f} {err:>19.4f}")


if __name__ == "__main__":
    main()
