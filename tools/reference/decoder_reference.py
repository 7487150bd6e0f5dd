#!/usr/bin/env python3
"""Independent float64 PyTorch reference of the whole MoE++ decoder (SPEC section 1).

LLaMA-style decoder (RMSNorm, RoPE with the HF rotate_half convention, causal grouped-query
attention, no biases) whose MLPs are MoE++ layers (SPEC section 2, the math of
moe_reference.py, imported from there) or dense SwiGLU MLPs, per `moe_expert_interval`.
The gating residual z_prev runs from one MoE layer to the next, through dense layers
unchanged. The loss is the `moepp grad` loss of SPEC section 4:

    loss = mean_{t<T-1} -log softmax(logits_t)[ids_{t+1}] + beta * mean_{MoE layers} L_b

Writes tests/fixtures/decoder_<case>.safetensors: every parameter under its Hugging Face
name (SPEC 3.1), `ids` (I64), `logits`, `loss`, `lm_loss`, `balance_loss` (the mean of
L_b over MoE layers, before beta) and `grad.<name>` for every parameter; the model's
config.json as a JSON string in __metadata__["config"], plus "seed" and "generator".

Regenerate (deterministic):
    /usr/bin/python3 tools/reference/decoder_reference.py --out tests/fixtures
Self-check (gradcheck on small variants, a naive per-token re-implementation, and the
vanilla case against a hand-written Mixtral block):
    /usr/bin/python3 tools/reference/decoder_reference.py --selftest
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference as mr  # noqa: E402
from safetensors_io import load_file, save_file  # noqa: E402
from decoder_naive import naive_forward  # noqa: E402

DT = torch.float64
TIE_GAP = 1e-3       # minimum gap between adjacent sorted values of s among the first k+1
MAX_BYTES = 300 * 1024

# Initialisation (standard deviations of N(0, std^2); norms are 1 + 0.1 N(0, 1)).
INIT = dict(embed=0.5, attention=0.3, norm_noise=0.1, router=0.5, router2=0.25,
            gate_map=0.3, ffn_up="1/sqrt(D)", ffn_down="1/sqrt(I)", constant=1.0,
            constant_wg=0.2, lm_head=0.5)


# ----------------------------------------------------------------------------- configs

def hf_config(vocab=48, D=16, I=12, layers=2, heads=4, kv_heads=2, interval=1,
              mixtral=False, two_layer=False, logits_norm=True, norm_std=1.0,
              no_mul_topk=True, tied=False, N=4, C=2, P=1, Z=1, k=2, beta=0.05, tau=0.75,
              max_pos=64):
    """A Hugging Face style config.json (SPEC 3.2) with the moepp block."""
    return {
        "model_type": "MoE++",
        "vocab_size": vocab,
        "hidden_size": D,
        "intermediate_size": I,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": max_pos,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
        "num_experts": [N + C + P + Z],
        "moe_expert_interval": interval,
        "moe_use_mixtral_gating": mixtral,
        "moe_2layer_gate": two_layer,
        "moe_use_logits_norm": logits_norm,
        "moe_gate_norm_std": norm_std,
        "moe_feature_no_mul_topk": no_mul_topk,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "moepp": {
            "num_constant_experts": C,
            "num_copy_experts": P,
            "num_zero_experts": Z,
            "top_k": k,
            "gating_residual": True,
            "gate_weights": "mixtral" if mixtral else "official",
            "balance_coef": beta,
            "balance_tau": tau,
        },
    }


# (name, config, T). Sizes shared: vocab 48, hidden 16, intermediate 12, heads 4/2, T 10.
CASES = [
    ("released", hf_config(layers=2, interval=1, mixtral=False, two_layer=False,
                           logits_norm=True, norm_std=1.0, no_mul_topk=True, tied=False), 10),
    ("interval2", hf_config(layers=4, interval=2, mixtral=False, two_layer=True,
                            logits_norm=False, no_mul_topk=False, tied=True), 10),
    # moe_feature_no_mul_topk false on purpose: mixtral gating must still not scale inputs.
    ("mixtral_vanilla", hf_config(layers=2, interval=1, mixtral=True, two_layer=False,
                                  logits_norm=False, no_mul_topk=False, tied=False,
                                  C=0, P=0, Z=0), 10),
]

# Smaller variants for torch.autograd.gradcheck.
GRADCHECK_CASES = [
    ("small_interval2", hf_config(vocab=12, D=8, I=4, layers=4, heads=2, kv_heads=1,
                                  interval=2, two_layer=True, logits_norm=True,
                                  no_mul_topk=False, tied=True, N=3), 6),
    ("small_released", hf_config(vocab=12, D=8, I=4, layers=2, heads=2, kv_heads=1,
                                 interval=1, logits_norm=True, no_mul_topk=True,
                                 tied=False, N=3), 6),
    ("small_mixtral", hf_config(vocab=12, D=8, I=4, layers=3, heads=4, kv_heads=2,
                                interval=1, mixtral=True, logits_norm=False, no_mul_topk=False,
                                tied=False, N=3, C=1, P=1, Z=1), 6),
]


def n_ffn(hf):
    m = hf["moepp"]
    return hf["num_experts"][0] - (m["num_constant_experts"] + m["num_copy_experts"]
                                   + m["num_zero_experts"])


def is_moe_layer(hf, l):
    iv = hf["moe_expert_interval"]
    return iv == 1 or (l + 1) % iv == 0


def layer_cfg(hf, T):
    """The HF config mapped onto moe_reference.py's layer configuration."""
    m = hf["moepp"]
    mixtral = hf["moe_use_mixtral_gating"]
    assert (m["gate_weights"] == "mixtral") == mixtral
    cfg = dict(T=T, D=hf["hidden_size"], I=hf["intermediate_size"], N=n_ffn(hf),
               C=m["num_constant_experts"], P=m["num_copy_experts"], Z=m["num_zero_experts"],
               k=m["top_k"], beta=m["balance_coef"], tau=m["balance_tau"],
               norm_std=hf["moe_gate_norm_std"], gate_weights=m["gate_weights"],
               two_layer_router=int(hf["moe_2layer_gate"]),
               logits_norm=int(hf["moe_use_logits_norm"]),
               scale_inputs=int(not hf["moe_feature_no_mul_topk"] and not mixtral))
    cfg["E"] = cfg["N"] + cfg["C"] + cfg["P"] + cfg["Z"]
    return cfg


def expert_kinds(cfg):
    return sorted({mr.expert_kind(cfg, i) for i in range(cfg["E"])})


# ----------------------------------------------------------------------------- params

def param_specs(hf):
    """Ordered list of (name, shape, init) with init a std or ("norm",)."""
    V, D, I = hf["vocab_size"], hf["hidden_size"], hf["intermediate_size"]
    H, KV = hf["num_attention_heads"], hf["num_key_value_heads"]
    hd = D // H
    E = hf["num_experts"][0]
    N, C = n_ffn(hf), hf["moepp"]["num_constant_experts"]
    out = [("model.embed_tokens.weight", (V, D), INIT["embed"])]
    for l in range(hf["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out.append((p + "input_layernorm.weight", (D,), "norm"))
        out.append((p + "self_attn.q_proj.weight", (H * hd, D), INIT["attention"]))
        out.append((p + "self_attn.k_proj.weight", (KV * hd, D), INIT["attention"]))
        out.append((p + "self_attn.v_proj.weight", (KV * hd, D), INIT["attention"]))
        out.append((p + "self_attn.o_proj.weight", (D, H * hd), INIT["attention"]))
        out.append((p + "post_attention_layernorm.weight", (D,), "norm"))
        if is_moe_layer(hf, l):
            g = p + "mlp.moe.gate."
            if hf["moe_2layer_gate"]:
                out.append((g + "wg.0.weight", (8 * E, D), INIT["router"]))
                out.append((g + "wg.2.weight", (E, 8 * E), INIT["router2"]))
            else:
                out.append((g + "wg.weight", (E, D), INIT["router"]))
            out.append((g + "gate_map.weight", (E, E), INIT["gate_map"]))
            for i in range(N):
                q = p + f"mlp.moe.experts.experts.{i}."
                out.append((q + "up_proj.weight", (2 * I, D), 1.0 / math.sqrt(D)))
                out.append((q + "down_proj.weight", (D, I), 1.0 / math.sqrt(I)))
            for i in range(N, N + C):
                q = p + f"mlp.moe.experts.experts.{i}."
                out.append((q + "constant", (D,), INIT["constant"]))
                out.append((q + "wg.weight", (2, D), INIT["constant_wg"]))
        else:
            out.append((p + "mlp.gate_proj.weight", (I, D), 1.0 / math.sqrt(D)))
            out.append((p + "mlp.up_proj.weight", (I, D), 1.0 / math.sqrt(D)))
            out.append((p + "mlp.down_proj.weight", (D, I), 1.0 / math.sqrt(I)))
    out.append(("model.norm.weight", (D,), "norm"))
    if not hf["tie_word_embeddings"]:
        out.append(("lm_head.weight", (V, D), INIT["lm_head"]))
    return out


def draw(hf, T, seed):
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape, init in param_specs(hf):
        r = torch.randn(*shape, generator=g, dtype=DT)
        params[name] = 1.0 + INIT["norm_noise"] * r if init == "norm" else r * init
    ids = torch.randint(0, hf["vocab_size"], (T,), generator=g, dtype=torch.int64)
    ids[0] = hf["bos_token_id"]
    return params, ids


def lm_head_weight(hf, params):
    return params["model.embed_tokens.weight"] if hf["tie_word_embeddings"] \
        else params["lm_head.weight"]


# ----------------------------------------------------------------------------- model

def rms_norm(x, w, eps):
    return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def rope_cos_sin(T, hd, theta):
    inv_freq = theta ** (-(torch.arange(0, hd, 2, dtype=DT) / hd))   # j = 0 .. hd/2-1
    ang = torch.arange(T, dtype=DT)[:, None] * inv_freq[None, :]      # [T, hd/2]
    emb = torch.cat([ang, ang], dim=-1)                               # [T, hd]
    return emb.cos(), emb.sin()


def attention(hf, params, l, a):
    T, D = a.shape
    H, KV = hf["num_attention_heads"], hf["num_key_value_heads"]
    hd = D // H
    p = f"model.layers.{l}.self_attn."
    q = (a @ params[p + "q_proj.weight"].t()).view(T, H, hd)
    k = (a @ params[p + "k_proj.weight"].t()).view(T, KV, hd)
    v = (a @ params[p + "v_proj.weight"].t()).view(T, KV, hd)
    cos, sin = rope_cos_sin(T, hd, hf["rope_theta"])
    cos, sin = cos[:, None, :], sin[:, None, :]
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    rep = H // KV
    k = k.repeat_interleave(rep, dim=1)   # q head h uses kv head h // rep
    v = v.repeat_interleave(rep, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(mask[None], float("-inf"))
    w = torch.softmax(scores, dim=-1)
    o = torch.einsum("hts,shd->thd", w, v).reshape(T, H * hd)
    return o @ params[p + "o_proj.weight"].t()


def moe_view(params, l):
    """Layer-l MoE parameters under moe_reference.py's names (layers.l.gate.*, ...)."""
    src = f"model.layers.{l}.mlp.moe."
    view = {}
    for n, t in params.items():
        if n.startswith(src):
            rest = n[len(src):]
            if rest.startswith("experts.experts."):
                rest = "experts." + rest[len("experts.experts."):]
            view[f"layers.{l}." + rest] = t
    return view


def moepp_layer(cfg, params, l, b, z_prev):
    return mr.moe_layer(cfg, moe_view(params, l), l, b, z_prev)


def dense_mlp(params, l, b):
    p = f"model.layers.{l}.mlp."
    g = b @ params[p + "gate_proj.weight"].t()
    u = b @ params[p + "up_proj.weight"].t()
    return (F.silu(g) * u) @ params[p + "down_proj.weight"].t()


def lm_loss_of(logits, ids):
    lp = torch.log_softmax(logits[:-1], dim=-1)
    return -lp.gather(1, ids[1:, None]).mean()


def forward(hf, params, ids, moe_fn=moepp_layer):
    """Returns dict(logits, loss, lm_loss, balance_loss, layers=[routing per MoE layer])."""
    T = ids.shape[0]
    cfg = layer_cfg(hf, T)
    eps = hf["rms_norm_eps"]
    x = params["model.embed_tokens.weight"][ids]
    z_prev = None
    moe_layers = []
    for l in range(hf["num_hidden_layers"]):
        p = f"model.layers.{l}."
        a = rms_norm(x, params[p + "input_layernorm.weight"], eps)
        h = x + attention(hf, params, l, a)
        b = rms_norm(h, params[p + "post_attention_layernorm.weight"], eps)
        if is_moe_layer(hf, l):
            r = moe_fn(cfg, params, l, b, z_prev)
            r["layer"] = l
            moe_layers.append(r)
            x = h + r["y"]
            z_prev = r["z"]
        else:
            x = h + dense_mlp(params, l, b)
    xf = rms_norm(x, params["model.norm.weight"], eps)
    logits = xf @ lm_head_weight(hf, params).t()
    lm = lm_loss_of(logits, ids)
    lb = sum(r["lb"] for r in moe_layers) / len(moe_layers)
    loss = lm + hf["moepp"]["balance_coef"] * lb
    return dict(logits=logits, loss=loss, lm_loss=lm, balance_loss=lb, layers=moe_layers)


# ----------------------------------------------------------------------------- Mixtral check

def mixtral_block(cfg, params, l, b, z_prev):
    """A plain Hugging Face Mixtral sparse-MoE block (softmax over all router logits, top-2,
    renormalise; w1/w3 = halves of up_proj, w2 = down_proj), no input scaling; plus the
    gating residual z_prev Gm^T on the router logits, which the vanilla MoE++ case keeps. Balance loss Eq. 7 with eta = 1: sum_i f_i * mean_t softmax(z)_i."""
    assert cfg["C"] == cfg["P"] == cfg["Z"] == 0 and not cfg["two_layer_router"]
    pre = f"model.layers.{l}.mlp.moe."
    I, E, k = cfg["I"], cfg["E"], cfg["k"]
    router_logits = b @ params[pre + "gate.wg.weight"].t()
    if z_prev is not None:  # MoE++'s gating residual (the fixture keeps it on)
        router_logits = router_logits + z_prev @ params[pre + "gate.gate_map.weight"].t()
    routing = torch.softmax(router_logits, dim=-1)
    w, sel = torch.topk(routing, k, dim=-1)
    w = w / w.sum(-1, keepdim=True)
    y = torch.zeros_like(b)
    for e in range(E):
        up = params[pre + f"experts.experts.{e}.up_proj.weight"]
        w1, w3 = up[:I], up[I:]
        w2 = params[pre + f"experts.experts.{e}.down_proj.weight"]
        hit = (sel == e)
        tok = hit.any(-1).nonzero().flatten()
        if tok.numel() == 0:
            continue
        coef = (w * hit.to(DT)).sum(-1)[tok, None]
        xe = b[tok]
        y = y.index_add(0, tok, coef * ((F.silu(xe @ w1.t()) * (xe @ w3.t())) @ w2.t()))
    f = torch.bincount(sel.reshape(-1), minlength=E).to(DT) / b.shape[0]
    lb = (f * routing.mean(0)).sum()
    return dict(y=y, z=router_logits, lb=lb, idx=sel, s=router_logits, p=routing, g=w)


# ----------------------------------------------------------------------------- generation

def routing_ok(hf, cfg, res):
    k = cfg["k"]
    kinds = expert_kinds(cfg)
    first_zero = cfg["N"] + cfg["C"] + cfg["P"]
    for r in res["layers"]:
        got = {mr.expert_kind(cfg, int(i)) for i in r["idx"].reshape(-1)}
        if set(kinds) - got:
            return False, f"layer {r['layer']}: kind(s) {sorted(set(kinds) - got)} got no slot"
        srt = torch.sort(r["s"].detach(), dim=-1, descending=True).values[:, :k + 1]
        if ((srt[:, :-1] - srt[:, 1:]) < TIE_GAP).any():
            return False, f"layer {r['layer']}: near-tie in s"
        if cfg["gate_weights"] == "official" and (r["idx"] >= first_zero).all(-1).any():
            return False, f"layer {r['layer']}: all-zero selection"
    return True, ""


def build_case(name, hf, T, max_tries=10000, verbose=True):
    cfg = layer_cfg(hf, T)
    for seed in range(max_tries):
        params, ids = draw(hf, T, seed)
        with torch.no_grad():
            res = forward(hf, params, ids)
        ok, why = routing_ok(hf, cfg, res)
        if ok:
            if verbose:
                print(f"[{name}] seed {seed} accepted", file=sys.stderr)
            return seed, params, ids
        if verbose:
            print(f"[{name}] seed {seed} rejected: {why}", file=sys.stderr)
    raise RuntimeError(f"no acceptable seed for {name} in {max_tries} tries")


def compute(hf, params, ids):
    leaves = {n: t.clone().requires_grad_(True) for n, t in params.items()}
    res = forward(hf, leaves, ids)
    grads = torch.autograd.grad(res["loss"], list(leaves.values()), allow_unused=True)
    gd = {n: (torch.zeros_like(t) if g is None else g)
          for (n, t), g in zip(leaves.items(), grads)}
    return res, gd


def check_naive(name, hf, params, ids, res):
    nv = naive_forward(hf, params, ids)
    dl = float((nv["logits"] - res["logits"].detach()).abs().max())
    assert dl < 1e-11, f"{name}: naive logits differ by {dl}"
    for key in ("loss", "lm_loss", "balance_loss"):
        d = abs(nv[key] - float(res[key]))
        assert d < 1e-11, f"{name}: naive {key} differs by {d}"
    return dl


def check_mixtral(name, hf, params, ids, res):
    with torch.no_grad():
        mx = forward(hf, params, ids, moe_fn=mixtral_block)
    dl = float((mx["logits"] - res["logits"].detach()).abs().max())
    assert dl < 1e-12, f"{name}: Mixtral block logits differ by {dl}"
    for key in ("loss", "lm_loss", "balance_loss"):
        d = abs(float(mx[key]) - float(res[key]))
        assert d < 1e-12, f"{name}: Mixtral block {key} differs by {d}"
    return dl


def write_case(name, hf, T, outdir):
    seed, params, ids = build_case(name, hf, T)
    res, grads = compute(hf, params, ids)
    t = dict(params)
    t["ids"] = ids
    t["logits"] = res["logits"].detach()
    t["loss"] = res["loss"].detach().reshape(1)
    t["lm_loss"] = res["lm_loss"].detach().reshape(1)
    t["balance_loss"] = res["balance_loss"].detach().reshape(1)
    for n, g in grads.items():
        t["grad." + n] = g
    meta = {"config": json.dumps(hf), "seed": str(seed),
            "generator": "tools/reference/decoder_reference.py", "T": str(T),
            "init": json.dumps(INIT)}
    path = os.path.join(outdir, f"decoder_{name}.safetensors")
    save_file({k: v.contiguous() for k, v in t.items()}, path, metadata=meta)
    back, meta2 = load_file(path)
    assert meta2 == meta
    for k2, v in t.items():
        assert back[k2].dtype == v.dtype and torch.equal(back[k2], v), k2
    size = os.path.getsize(path)
    assert size < MAX_BYTES, f"{path} is {size} bytes"
    check_naive(name, hf, params, ids, res)
    if hf["moe_use_mixtral_gating"] and hf["num_experts"][0] == n_ffn(hf):
        check_mixtral(name, hf, params, ids, res)
    print(f"wrote {path} ({size} bytes, seed {seed}, loss {float(res['loss']):.12f}, "
          f"lm_loss {float(res['lm_loss']):.12f}, balance_loss "
          f"{float(res['balance_loss']):.12f})", file=sys.stderr)
    return seed, res


# ----------------------------------------------------------------------------- self test

def selftest():
    for name, hf, T in GRADCHECK_CASES:
        seed, params, ids = build_case(name, hf, T, verbose=False)
        names = list(params)

        def fn(*ps):
            return forward(hf, dict(zip(names, ps)), ids)["loss"]

        args = tuple(params[n].clone().requires_grad_(True) for n in names)
        ok = torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)
        nparam = sum(p.numel() for p in args)
        with torch.no_grad():
            res = forward(hf, params, ids)
        dl = check_naive(name, hf, params, ids, res)
        print(f"[{name}] seed {seed}, {nparam} parameters: gradcheck "
              f"{'ok' if ok else 'FAILED'}; naive max|dlogits| {dl:.2e}", file=sys.stderr)
    for name, hf, T in CASES:
        seed, params, ids = build_case(name, hf, T, verbose=False)
        with torch.no_grad():
            res = forward(hf, params, ids)
        dl = check_naive(name, hf, params, ids, res)
        msg = f"[{name}] seed {seed}: naive max|dlogits| {dl:.2e}"
        if hf["moe_use_mixtral_gating"] and hf["num_experts"][0] == n_ffn(hf):
            msg += f"; Mixtral block max|dlogits| {check_mixtral(name, hf, params, ids, res):.2e}"
        print(msg, file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures", help="output folder")
    ap.add_argument("--selftest", action="store_true",
                    help="gradcheck on small variants + naive and Mixtral cross-checks; "
                         "writes nothing")
    ap.add_argument("--case", action="append", help="only these cases (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.selftest:
        selftest()
        return
    os.makedirs(a.out, exist_ok=True)
    for name, hf, T in CASES:
        if a.case and name not in a.case:
            continue
        write_case(name, hf, T, a.out)


if __name__ == "__main__":
    main()
