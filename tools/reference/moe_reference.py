#!/usr/bin/env python3
"""Independent float64 PyTorch reference of the MoE++ layer (SPEC section 2).

Writes the fixtures tests/fixtures/moe_<case>.safetensors used by the C++ tests:
a 3-layer chain of MoE++ layers (gating residual between layers), its outputs, routing,
balance losses and the autograd gradients of

    loss = sum(dy * x_3) + beta * mean_l(L_b_l)

with respect to the input x, the first layer's z_prev (`z_in`) and every parameter.

Regenerate (deterministic):
    /usr/bin/python3 tools/reference/moe_reference.py --out tests/fixtures
Self-check (autograd gradcheck + a naive per-token re-implementation):
    /usr/bin/python3 tools/reference/moe_reference.py --selftest
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import load_file, save_file  # noqa: E402

DT = torch.float64

# Shared sizes of every fixture.
BASE = dict(T=12, D=8, I=6, N=4, k=2, L=3, beta=0.1, tau=0.75, norm_std=1.0)

CASES = [
    ("official_released", dict(gate_weights="official", two_layer_router=0, logits_norm=1,
                               scale_inputs=0, C=2, P=1, Z=1)),
    ("official_code_default", dict(gate_weights="official", two_layer_router=1, logits_norm=0,
                                   scale_inputs=1, C=2, P=1, Z=1)),
    ("mixtral", dict(gate_weights="mixtral", two_layer_router=0, logits_norm=0,
                     scale_inputs=0, C=2, P=1, Z=1)),
    ("softmax", dict(gate_weights="softmax", two_layer_router=0, logits_norm=1,
                     scale_inputs=1, C=2, P=1, Z=1)),
    ("vanilla", dict(gate_weights="official", two_layer_router=0, logits_norm=0,
                     scale_inputs=1, C=0, P=0, Z=0)),
]

TIE_GAP = 1e-3  # minimum gap between adjacent sorted values among the first k+1 (p and s)


def make_cfg(spec):
    cfg = dict(BASE)
    cfg.update(spec)
    cfg["E"] = cfg["N"] + cfg["C"] + cfg["P"] + cfg["Z"]
    return cfg


def expert_kind(cfg, i):
    N, C, P = cfg["N"], cfg["C"], cfg["P"]
    if i < N:
        return "ffn"
    if i < N + C:
        return "constant"
    if i < N + C + P:
        return "copy"
    return "zero"


# ----------------------------------------------------------------------------- params

def param_shapes(cfg):
    """Ordered list of (name, shape, init std)."""
    T, D, I, N, C, E = cfg["T"], cfg["D"], cfg["I"], cfg["N"], cfg["C"], cfg["E"]
    out = []
    for l in range(cfg["L"]):
        p = f"layers.{l}.gate."
        if cfg["two_layer_router"]:
            out.append((p + "wg.0.weight", (8 * E, D), 0.5))
            # second layer sums 8E tanh features; keep logits O(1)-ish
            out.append((p + "wg.2.weight", (E, 8 * E), 0.5 / 2.0))
        else:
            out.append((p + "wg.weight", (E, D), 0.5))
        out.append((p + "gate_map.weight", (E, E), 0.3))
        for i in range(N):
            q = f"layers.{l}.experts.{i}."
            out.append((q + "up_proj.weight", (2 * I, D), 0.2))
            out.append((q + "down_proj.weight", (D, I), 0.2))
        for i in range(N, N + C):
            q = f"layers.{l}.experts.{i}."
            out.append((q + "constant", (D,), 1.0))
            out.append((q + "wg.weight", (2, D), 0.5))
    return out


def draw(cfg, seed):
    g = torch.Generator().manual_seed(seed)

    def rn(shape, std):
        return (torch.randn(*shape, generator=g, dtype=DT) * std)

    T, D, E = cfg["T"], cfg["D"], cfg["E"]
    inputs = {"x": rn((T, D), 1.0), "z_in": rn((T, E), 1.0), "dy": rn((T, D), 1.0)}
    params = {name: rn(shape, std) for name, shape, std in param_shapes(cfg)}
    return inputs, params


# ----------------------------------------------------------------------------- model

def router_logits(cfg, params, l, x, z_prev):
    p = f"layers.{l}.gate."
    if cfg["two_layer_router"]:
        z = torch.tanh(x @ params[p + "wg.0.weight"].t()) @ params[p + "wg.2.weight"].t()
    else:
        z = x @ params[p + "wg.weight"].t()
    if z_prev is not None:
        z = z + z_prev @ params[p + "gate_map.weight"].t()
    return z


def normalise(cfg, z):
    if cfg["logits_norm"]:
        std = torch.std(z, dim=-1, unbiased=True, keepdim=True)
        return z / (std / cfg["norm_std"])
    return z


def gate(cfg, s):
    """Returns (p = softmax(s), g [T,k], idx [T,k])."""
    k = cfg["k"]
    p = torch.softmax(s, dim=-1)
    mode = cfg["gate_weights"]
    if mode == "official":
        g, idx = torch.topk(p, k, dim=-1)
        first_zero = cfg["N"] + cfg["C"] + cfg["P"]
        keep = (idx < first_zero).to(DT)
        g = g * keep
        tot = g.sum(-1, keepdim=True)
        safe = torch.where(tot > 0, tot, torch.ones_like(tot))
        g = g / safe
    elif mode == "mixtral":
        l, idx = torch.topk(s, k, dim=-1)
        g = torch.softmax(l, dim=-1)
    elif mode == "softmax":
        g, idx = torch.topk(p, k, dim=-1)
    else:
        raise ValueError(mode)
    return p, g, idx


def expert_outputs(cfg, params, l, x_in):
    """Dense evaluation of every expert on every token: [E, T, D]."""
    I = cfg["I"]
    outs = []
    for i in range(cfg["E"]):
        kind = expert_kind(cfg, i)
        q = f"layers.{l}.experts.{i}."
        if kind == "ffn":
            u = x_in @ params[q + "up_proj.weight"].t()
            h = F.silu(u[:, :I]) * u[:, I:]
            outs.append(h @ params[q + "down_proj.weight"].t())
        elif kind == "constant":
            a = torch.softmax(x_in @ params[q + "wg.weight"].t(), dim=-1)
            outs.append(a[:, 0:1] * x_in + a[:, 1:2] * params[q + "constant"][None, :])
        elif kind == "copy":
            outs.append(x_in)
        else:
            outs.append(torch.zeros_like(x_in))
    return torch.stack(outs, 0)


def balance_loss(cfg, p, idx):
    T, E, N = cfg["T"], cfg["E"], cfg["N"]
    f = torch.bincount(idx.reshape(-1), minlength=E).to(DT) / T  # no grad
    P = p.mean(0)
    eta = torch.full((E,), cfg["tau"], dtype=DT)
    eta[:N] = 1.0
    return (eta * f * P).sum()


def moe_layer(cfg, params, l, x, z_prev):
    z = router_logits(cfg, params, l, x, z_prev)
    s = normalise(cfg, z)
    p, g, idx = gate(cfg, s)
    x_in = x * cfg["k"] if cfg["scale_inputs"] else x
    outs = expert_outputs(cfg, params, l, x_in)  # [E,T,D]
    T = x.shape[0]
    rows = torch.arange(T)
    y = torch.zeros_like(x)
    for slot in range(cfg["k"]):
        y = y + g[:, slot:slot + 1] * outs[idx[:, slot], rows]
    lb = balance_loss(cfg, p, idx)
    return dict(y=y, z=z, s=s, p=p, g=g, idx=idx, lb=lb)


def forward(cfg, params, x, z_in, dy):
    h = x
    z_prev = z_in
    layers = []
    for l in range(cfg["L"]):
        r = moe_layer(cfg, params, l, h, z_prev)
        layers.append(r)
        h = h + r["y"]
        z_prev = r["z"]
    lb_mean = sum(r["lb"] for r in layers) / cfg["L"]
    loss = (dy * h).sum() + cfg["beta"] * lb_mean
    return h, loss, layers


# ----------------------------------------------------------------------------- naive check

def naive_forward(cfg, params, x, z_in, dy):
    """Per-token, per-slot loop written without the dense tricks above (no autograd use)."""
    N, C, P, E, k, I = cfg["N"], cfg["C"], cfg["P"], cfg["E"], cfg["k"], cfg["I"]
    T = x.shape[0]
    h = x.clone()
    z_prev = z_in.clone()
    lbs = []
    for l in range(cfg["L"]):
        pre = f"layers.{l}."
        z_all = torch.zeros(T, E, dtype=DT)
        p_all = torch.zeros(T, E, dtype=DT)
        counts = [0] * E
        y = torch.zeros(T, cfg["D"], dtype=DT)
        for t in range(T):
            xt = h[t]
            if cfg["two_layer_router"]:
                w1 = params[pre + "gate.wg.0.weight"]
                w2 = params[pre + "gate.wg.2.weight"]
                zt = torch.mv(w2, torch.tanh(torch.mv(w1, xt)))
            else:
                zt = torch.mv(params[pre + "gate.wg.weight"], xt)
            zt = zt + torch.mv(params[pre + "gate.gate_map.weight"], z_prev[t])
            z_all[t] = zt
            if cfg["logits_norm"]:
                mu = zt.mean()
                sd = (((zt - mu) ** 2).sum() / (E - 1)).sqrt()
                st = zt * cfg["norm_std"] / sd
            else:
                st = zt
            ex = (st - st.max()).exp()
            pt = ex / ex.sum()
            p_all[t] = pt
            order = sorted(range(E), key=lambda i: (-float(pt[i]), i))[:k]
            if cfg["gate_weights"] == "mixtral":
                ls = torch.stack([st[i] for i in order])
                ee = (ls - ls.max()).exp()
                gt = ee / ee.sum()
            else:
                gt = torch.stack([pt[i] for i in order])
                if cfg["gate_weights"] == "official":
                    gt = torch.stack([gt[j] if order[j] < N + C + P else gt[j] * 0
                                      for j in range(k)])
                    tot = gt.sum()
                    gt = gt / tot if tot > 0 else gt * 0
            xin = xt * k if cfg["scale_inputs"] else xt
            for j, i in enumerate(order):
                counts[i] += 1
                q = pre + f"experts.{i}."
                if i < N:
                    u = torch.mv(params[q + "up_proj.weight"], xin)
                    a, b = u[:I], u[I:]
                    hh = a / (1 + (-a).exp()) * b
                    o = torch.mv(params[q + "down_proj.weight"], hh)
                elif i < N + C:
                    w = torch.mv(params[q + "wg.weight"], xin)
                    w = (w - w.max()).exp()
                    w = w / w.sum()
                    o = w[0] * xin + w[1] * params[q + "constant"]
                elif i < N + C + P:
                    o = xin
                else:
                    o = torch.zeros_like(xin)
                y[t] += gt[j] * o
        lb = 0.0
        for i in range(E):
            eta = 1.0 if i < N else cfg["tau"]
            lb += eta * (counts[i] / T) * float(p_all[:, i].mean())
        lbs.append(lb)
        h = h + y
        z_prev = z_all
    loss = float((dy * h).sum()) + cfg["beta"] * sum(lbs) / cfg["L"]
    return h, loss, lbs


# ----------------------------------------------------------------------------- generation

def routing_ok(cfg, layers):
    """Every expert gets >= 1 slot in every layer; no near-ties among the first k+1."""
    k, E = cfg["k"], cfg["E"]
    for r in layers:
        idx = r["idx"]
        counts = torch.bincount(idx.reshape(-1), minlength=E)
        if (counts == 0).any():
            return False, "an expert received no slot"
        for name in ("p", "s"):
            v = r[name].detach()
            srt = torch.sort(v, dim=-1, descending=True).values[:, :k + 1]
            gaps = srt[:, :-1] - srt[:, 1:]
            if (gaps < TIE_GAP).any():
                return False, f"near-tie in {name}"
        if cfg["gate_weights"] == "official":
            # never all selected experts zero (keeps the guard path out of finite differences)
            first_zero = cfg["N"] + cfg["C"] + cfg["P"]
            if (idx >= first_zero).all(-1).any():
                return False, "all-zero selection"
    return True, ""


def build_case(name, spec, max_tries=10000, verbose=True):
    cfg = make_cfg(spec)
    for seed in range(max_tries):
        torch.manual_seed(seed)
        inputs, params = draw(cfg, seed)
        with torch.no_grad():
            _, _, layers = forward(cfg, params, inputs["x"], inputs["z_in"], inputs["dy"])
        ok, why = routing_ok(cfg, layers)
        if ok:
            if verbose:
                print(f"[{name}] seed {seed} accepted", file=sys.stderr)
            return cfg, seed, inputs, params
    raise RuntimeError(f"no acceptable seed for {name} in {max_tries} tries")


def compute(cfg, inputs, params):
    x = inputs["x"].clone().requires_grad_(True)
    z_in = inputs["z_in"].clone().requires_grad_(True)
    dy = inputs["dy"]
    leaves = {n: t.clone().requires_grad_(True) for n, t in params.items()}
    out, loss, layers = forward(cfg, leaves, x, z_in, dy)
    names = ["x", "z_in"] + list(leaves)
    tensors = [x, z_in] + list(leaves.values())
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    gd = {}
    for n, t, gr in zip(names, tensors, grads):
        gd[n] = torch.zeros_like(t) if gr is None else gr
    return out.detach(), loss.detach(), layers, gd


def write_case(name, spec, outdir):
    cfg, seed, inputs, params = build_case(name, spec)
    out, loss, layers, grads = compute(cfg, inputs, params)
    t = {}
    t["x"] = inputs["x"]
    t["z_in"] = inputs["z_in"]
    t["dy"] = inputs["dy"]
    for n, v in params.items():
        t[n] = v
    t["out"] = out
    t["loss"] = loss.reshape(1)
    for l, r in enumerate(layers):
        t[f"balance_loss.{l}"] = r["lb"].detach().reshape(1)
        t[f"z.{l}"] = r["z"].detach()
        t[f"idx.{l}"] = r["idx"].to(torch.int64)
        t[f"g.{l}"] = r["g"].detach()
    for n, g in grads.items():
        t[f"grad.{n}"] = g
    meta = {key: str(cfg[key]) for key in
            ("T", "D", "I", "N", "C", "P", "Z", "k", "L", "gate_weights", "two_layer_router",
             "logits_norm", "norm_std", "scale_inputs", "beta", "tau")}
    meta["E"] = str(cfg["E"])
    meta["seed"] = str(seed)
    meta["generator"] = "tools/reference/moe_reference.py"
    path = os.path.join(outdir, f"moe_{name}.safetensors")
    save_file({k: v.contiguous() for k, v in t.items()}, path, metadata=meta)
    # round-trip check
    back, meta2 = load_file(path)
    assert meta2 == meta
    for k2, v in t.items():
        assert back[k2].dtype == v.dtype and torch.equal(back[k2], v), k2
    size = os.path.getsize(path)
    assert size < 100 * 1024, f"{path} is {size} bytes"
    # independent naive forward must agree
    nout, nloss, nlbs = naive_forward(cfg, params, inputs["x"], inputs["z_in"], inputs["dy"])
    assert torch.allclose(nout, out, rtol=1e-12, atol=1e-12), name
    assert abs(nloss - float(loss)) < 1e-10 * max(1.0, abs(nloss)), name
    for l, r in enumerate(layers):
        assert abs(nlbs[l] - float(r["lb"])) < 1e-12, name
    print(f"wrote {path} ({size} bytes, seed {seed}, loss {float(loss):.6f})", file=sys.stderr)
    return seed


# ----------------------------------------------------------------------------- self test

def selftest():
    for name, spec in CASES:
        cfg, seed, inputs, params = build_case(name, spec, verbose=False)
        pnames = list(params)

        def fn(x, z_in, *ps):
            out, loss, _ = forward(cfg, dict(zip(pnames, ps)), x, z_in, inputs["dy"])
            return loss

        args = [inputs["x"].clone().requires_grad_(True),
                inputs["z_in"].clone().requires_grad_(True)]
        args += [params[n].clone().requires_grad_(True) for n in pnames]
        ok = torch.autograd.gradcheck(fn, tuple(args), eps=1e-6, atol=1e-6, rtol=1e-5)
        print(f"[{name}] seed {seed}: gradcheck {'ok' if ok else 'FAILED'}", file=sys.stderr)
        # naive forward agreement
        with torch.no_grad():
            out, loss, _ = forward(cfg, params, inputs["x"], inputs["z_in"], inputs["dy"])
        nout, nloss, _ = naive_forward(cfg, params, inputs["x"], inputs["z_in"], inputs["dy"])
        print(f"[{name}] naive max|dout| = {float((nout - out).abs().max()):.3e}, "
              f"|dloss| = {abs(nloss - float(loss)):.3e}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures", help="output folder")
    ap.add_argument("--selftest", action="store_true",
                    help="run gradcheck + naive cross-check on every case, write nothing")
    ap.add_argument("--case", action="append", help="only these cases (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.selftest:
        selftest()
        return
    os.makedirs(a.out, exist_ok=True)
    for name, spec in CASES:
        if a.case and name not in a.case:
            continue
        write_case(name, spec, a.out)


if __name__ == "__main__":
    main()
