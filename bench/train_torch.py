#!/usr/bin/env python3
"""PyTorch eager peer for bench/train_bench: the same decoder (SPEC 1) with MoE++ layers
(SPEC 2, the released router settings: linear router, logit norm, official gates, no input
scaling) written the usual reference way (a per-expert loop with index_select/index_add_),
trained with AdamW on random tokens. Prints one JSON object:
{"moepp": {"tokens_per_s": ...}, "vanilla": {...}, "torch_version": ..., "threads": ...}.
Debian's python3-torch (/usr/bin/python3); never needed to build or test moepp."""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {  # hidden, intermediate, layers, heads, kv_heads, ffn experts
    "tiny": (32, 48, 2, 4, 2, 4),
    "small": (256, 512, 4, 8, 4, 8),
    "paper-0.6b": (768, 2048, 12, 12, 12, 8),
}


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin


class Attention(nn.Module):
    def __init__(self, d, heads, kv):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv, d // heads
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, kv * self.hd, bias=False)
        self.v = nn.Linear(d, kv * self.hd, bias=False)
        self.o = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin):
        B, S, D = x.shape
        q = self.q(x).view(B, S, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(B, S, self.kv, self.hd).transpose(1, 2)
        v = self.v(x).view(B, S, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, 1)
        v = v.repeat_interleave(rep, 1)
        # torch 1.13 (Debian 12) has no scaled_dot_product_attention: the explicit form.
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        mask = torch.ones(S, S, dtype=torch.bool).triu(1)
        y = F.softmax(att.masked_fill(mask, float("-inf")), -1) @ v
        return self.o(y.transpose(1, 2).reshape(B, S, D))


class MoEPP(nn.Module):
    def __init__(self, d, inter, n_ffn, n_const, n_copy, n_zero, k=2, tau=0.75):
        super().__init__()
        self.N, self.C, self.P, self.Z, self.k, self.tau = n_ffn, n_const, n_copy, n_zero, k, tau
        self.E = n_ffn + n_const + n_copy + n_zero
        self.wg = nn.Linear(d, self.E, bias=False)
        self.gate_map = nn.Linear(self.E, self.E, bias=False)
        self.up = nn.ModuleList(nn.Linear(d, 2 * inter, bias=False) for _ in range(n_ffn))
        self.down = nn.ModuleList(nn.Linear(inter, d, bias=False) for _ in range(n_ffn))
        self.const = nn.ParameterList(nn.Parameter(torch.randn(d) * 0.02) for _ in range(n_const))
        self.const_wg = nn.ModuleList(nn.Linear(d, 2, bias=False) for _ in range(n_const))
        self.inter = inter

    def forward(self, x, z_prev):
        T, D = x.shape
        z = self.wg(x)
        if z_prev is not None:
            z = z + self.gate_map(z_prev)
        s = z / z.std(-1, keepdim=True)
        p = F.softmax(s, -1)
        g, idx = torch.topk(p, self.k, -1)
        g = torch.where(idx >= self.N + self.C + self.P, torch.zeros_like(g), g)
        g = g / g.sum(-1, keepdim=True).clamp_min(1e-20)
        y = torch.zeros_like(x)
        for e in range(self.E - self.Z):
            tok, slot = torch.where(idx == e)
            if tok.numel() == 0:
                continue
            xe = x.index_select(0, tok)
            if e < self.N:
                u = self.up[e](xe)
                out = self.down[e](F.silu(u[:, :self.inter]) * u[:, self.inter:])
            elif e < self.N + self.C:
                c = e - self.N
                a = F.softmax(self.const_wg[c](xe), -1)
                out = a[:, :1] * xe + a[:, 1:] * self.const[c]
            else:
                out = xe
            y.index_add_(0, tok, (out * g[tok, slot].unsqueeze(-1)).to(y.dtype))  # autocast: bf16 products
        f = torch.zeros(self.E).index_add_(0, idx.flatten(), torch.ones(idx.numel())) / T
        eta = torch.ones(self.E)
        eta[self.N:] = self.tau
        lb = (eta * f.detach() * p.mean(0)).sum()
        return y, z, lb


class Model(nn.Module):
    def __init__(self, vocab, preset, vanilla):
        super().__init__()
        d, inter, layers, heads, kv, n_ffn = PRESETS[preset]
        zc = (0, 0, 0) if vanilla else (2, 1, 1)
        self.vanilla = vanilla
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList()
        for _ in range(layers):
            self.layers.append(nn.ModuleDict(dict(n1=RMSNorm(d), attn=Attention(d, heads, kv), n2=RMSNorm(d),
                                                  moe=MoEPP(d, inter, n_ffn, *zc))))
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        hd = d // heads
        inv = 10000.0 ** (-torch.arange(0, hd, 2).float() / hd)
        self.inv = inv

    def forward(self, ids, targets, beta=0.01):
        B, S = ids.shape
        ang = torch.arange(S).float()[:, None] * self.inv[None, :]
        cos, sin = torch.cat((ang.cos(), ang.cos()), -1), torch.cat((ang.sin(), ang.sin()), -1)
        x = self.embed(ids)
        z_prev, lbs = None, []
        for L in self.layers:
            h = x + L["attn"](L["n1"](x), cos, sin)
            y, z, lb = L["moe"](L["n2"](h).reshape(B * S, -1), None if self.vanilla else z_prev)
            z_prev = z
            lbs.append(lb)
            x = h + y.view(B, S, -1)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(B * S, -1), targets.view(-1)) + beta * torch.stack(lbs).mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                    help="bf16: forward under torch.autocast('cpu', bfloat16), f32 master weights and AdamW")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = {"torch_version": torch.__version__, "threads": a.threads, "precision": a.precision}
    for name, vanilla in (("moepp", False), ("vanilla", True)):
        m = Model(a.vocab, a.preset, vanilla)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        times = []
        for step in range(a.steps + 2):
            ids = torch.randint(0, a.vocab, (a.batch, a.seq))
            tg = torch.randint(0, a.vocab, (a.batch, a.seq))
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
                loss = m(ids, tg)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            if step >= 2:
                times.append(time.perf_counter() - t0)
            print(f"torch {name} step {step} {times[-1] if times else 0:.3f}s", file=sys.stderr)
        times.sort()
        out[name] = {"tokens_per_s": a.batch * a.seq / times[len(times) // 2],
                     "params": sum(p.numel() for p in m.parameters())}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
