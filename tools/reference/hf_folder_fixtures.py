#!/usr/bin/env python3
"""Small Hugging Face model folders built from the decoder fixtures (SPEC 3.1-3.3).

Reads tests/fixtures/decoder_{released,interval2,mixtral_vanilla}.safetensors and writes,
under --out (default tests/fixtures/hf):

  released_bin_f32/       config.json + pytorch_model.bin (torch.save of an OrderedDict, F32)
  released_bin_bf16/      the same with BF16 parameters (config torch_dtype "bfloat16")
  interval2_bin_sharded/  pytorch_model-0000{1,2}-of-00002.bin + pytorch_model.bin.index.json
  interval2_st_sharded/   model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json
  interval2_bin_bf16/     the code-default router case as one BF16 pytorch_model.bin
  mixtral/                a Mixtral folder (model_type "mixtral", model.safetensors, F32)

Each folder also holds expected.safetensors: `ids` (I64) and `logits` (F64), the float64
decoder reference (decoder_reference.py) evaluated on the parameters as stored (rounded to
f32 / bf16). For mixtral/ the logits are those of a plain Mixtral forward: the fixture's
gate_map is zeroed (no gating residual), softmax over the top-2 router logits, no input
scaling.

    /usr/bin/python3 tools/reference/hf_folder_fixtures.py --out tests/fixtures/hf
"""
import argparse
import json
import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import decoder_reference as dr  # noqa: E402
from safetensors_io import load_file, save_file  # noqa: E402

DT = torch.float64
MAX_FOLDER_BYTES = 300 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "tests", "fixtures")


def load_case(name):
    t, meta = load_file(os.path.join(FIXTURES, f"decoder_{name}.safetensors"))
    hf = json.loads(meta["config"])
    names = [n for n, _, _ in dr.param_specs(hf)]
    params = OrderedDict((n, t[n]) for n in names)
    return hf, params, t["ids"], t["logits"]


def rounded(params, dtype):
    """(params stored as dtype, the same values back in float64)."""
    stored = OrderedDict((n, p.to(dtype).contiguous()) for n, p in params.items())
    back = OrderedDict((n, p.to(DT)) for n, p in stored.items())
    return stored, back


def logits_of(hf, params, ids, moe_fn=dr.moepp_layer):
    with torch.no_grad():
        return dr.forward(hf, params, ids, moe_fn=moe_fn)["logits"]


def write_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_expected(folder, ids, logits):
    save_file(OrderedDict(ids=ids.contiguous(), logits=logits.contiguous().to(DT)),
              os.path.join(folder, "expected.safetensors"),
              metadata={"generator": "tools/reference/hf_folder_fixtures.py"})


def folder_size(folder):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def split_two(names):
    """First shard: the first half of the parameters (in SPEC order); second: the rest."""
    names = list(names)
    cut = len(names) // 2
    return names[:cut], names[cut:]


def nbytes(t):
    return t.numel() * t.element_size()


def check_bin(path, expect):
    back = torch.load(path, map_location="cpu")
    assert list(back) == list(expect), path
    for n, t in expect.items():
        assert back[n].dtype == t.dtype and torch.equal(back[n], t), (path, n)


def check_st(path, expect):
    back, _ = load_file(path)
    assert list(back) == list(expect), path
    for n, t in expect.items():
        assert back[n].dtype == t.dtype and torch.equal(back[n], t), (path, n)


def make_single_bin(out, sub, hf, params, ids, dtype, dtype_name):
    folder = os.path.join(out, sub)
    os.makedirs(folder, exist_ok=True)
    stored, back = rounded(params, dtype)
    cfg = dict(hf)
    cfg["torch_dtype"] = dtype_name
    write_json(cfg, os.path.join(folder, "config.json"))
    path = os.path.join(folder, "pytorch_model.bin")
    torch.save(stored, path)
    check_bin(path, stored)
    logits = logits_of(hf, back, ids)
    write_expected(folder, ids, logits)
    return folder, logits


def make_sharded(out, sub, hf, params, ids, kind):
    folder = os.path.join(out, sub)
    os.makedirs(folder, exist_ok=True)
    stored, back = rounded(params, torch.float32)
    cfg = dict(hf)
    cfg["torch_dtype"] = "float32"
    write_json(cfg, os.path.join(folder, "config.json"))
    parts = split_two(stored)
    weight_map = OrderedDict()
    for i, names in enumerate(parts, 1):
        shard = OrderedDict((n, stored[n]) for n in names)
        if kind == "bin":
            fname = f"pytorch_model-{i:05d}-of-00002.bin"
            torch.save(shard, os.path.join(folder, fname))
            check_bin(os.path.join(folder, fname), shard)
        else:
            fname = f"model-{i:05d}-of-00002.safetensors"
            save_file(shard, os.path.join(folder, fname), metadata={"format": "pt"})
            check_st(os.path.join(folder, fname), shard)
        for n in names:
            weight_map[n] = fname
    index = {"metadata": {"total_size": sum(nbytes(t) for t in stored.values())},
             "weight_map": weight_map}
    iname = "pytorch_model.bin.index.json" if kind == "bin" else "model.safetensors.index.json"
    write_json(index, os.path.join(folder, iname))
    logits = logits_of(hf, back, ids)
    write_expected(folder, ids, logits)
    return folder, logits


def mixtral_config(hf):
    return OrderedDict([
        ("architectures", ["MixtralForCausalLM"]),
        ("model_type", "mixtral"),
        ("vocab_size", hf["vocab_size"]),
        ("hidden_size", hf["hidden_size"]),
        ("intermediate_size", hf["intermediate_size"]),
        ("num_hidden_layers", hf["num_hidden_layers"]),
        ("num_attention_heads", hf["num_attention_heads"]),
        ("num_key_value_heads", hf["num_key_value_heads"]),
        ("max_position_embeddings", hf["max_position_embeddings"]),
        ("rms_norm_eps", hf["rms_norm_eps"]),
        ("rope_theta", hf["rope_theta"]),
        ("tie_word_embeddings", False),
        ("num_local_experts", hf["num_experts"][0]),
        ("num_experts_per_tok", hf["moepp"]["top_k"]),
        ("hidden_act", "silu"),
        ("bos_token_id", hf["bos_token_id"]),
        ("eos_token_id", hf["eos_token_id"]),
        ("torch_dtype", "float32"),
    ])


def mixtral_forward(hf, params, ids):
    """Plain Mixtral forward written directly on the Mixtral-named weights (float64)."""
    import math
    import torch.nn.functional as F
    T = ids.shape[0]
    D, I = hf["hidden_size"], hf["intermediate_size"]
    H, KV = hf["num_attention_heads"], hf["num_key_value_heads"]
    hd = D // H
    E, k, eps = hf["num_local_experts"], hf["num_experts_per_tok"], hf["rms_norm_eps"]
    x = params["model.embed_tokens.weight"][ids]
    cos, sin = dr.rope_cos_sin(T, hd, hf["rope_theta"])
    cos, sin = cos[:, None, :], sin[:, None, :]
    min_gap = float("inf")
    for l in range(hf["num_hidden_layers"]):
        p = f"model.layers.{l}."
        a = dr.rms_norm(x, params[p + "input_layernorm.weight"], eps)
        q = (a @ params[p + "self_attn.q_proj.weight"].t()).view(T, H, hd)
        kk = (a @ params[p + "self_attn.k_proj.weight"].t()).view(T, KV, hd)
        v = (a @ params[p + "self_attn.v_proj.weight"].t()).view(T, KV, hd)
        q = q * cos + dr.rotate_half(q) * sin
        kk = kk * cos + dr.rotate_half(kk) * sin
        kk = kk.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        sc = torch.einsum("thd,shd->hts", q, kk) / math.sqrt(hd)
        sc = sc.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1)[None], float("-inf"))
        o = torch.einsum("hts,shd->thd", torch.softmax(sc, -1), v).reshape(T, D)
        h = x + o @ params[p + "self_attn.o_proj.weight"].t()
        b = dr.rms_norm(h, params[p + "post_attention_layernorm.weight"], eps)
        m = p + "block_sparse_moe."
        rl = b @ params[m + "gate.weight"].t()
        srt = torch.sort(rl, -1, descending=True).values
        min_gap = min(min_gap, float((srt[:, k - 1] - srt[:, k]).min()))
        w, sel = torch.topk(torch.softmax(rl, -1), k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        y = torch.zeros_like(b)
        for t in range(T):
            for j in range(k):
                e = m + f"experts.{int(sel[t, j])}."
                u = F.silu(params[e + "w1.weight"] @ b[t]) * (params[e + "w3.weight"] @ b[t])
                y[t] += w[t, j] * (params[e + "w2.weight"] @ u)
        x = h + y
    xf = dr.rms_norm(x, params["model.norm.weight"], eps)
    return xf @ params["lm_head.weight"].t(), min_gap


def make_mixtral(out, hf, params, ids):
    folder = os.path.join(out, "mixtral")
    os.makedirs(folder, exist_ok=True)
    assert hf["moe_use_mixtral_gating"] and dr.n_ffn(hf) == hf["num_experts"][0]
    assert not hf["moe_2layer_gate"] and not hf["tie_word_embeddings"]
    I = hf["intermediate_size"]
    mcfg = mixtral_config(hf)
    write_json(mcfg, os.path.join(folder, "config.json"))
    stored, back = rounded(params, torch.float32)
    mx = OrderedDict()
    for n, t in stored.items():
        if ".mlp.moe." not in n:
            mx[n] = t
            continue
        pre, rest = n.split(".mlp.moe.")
        m = pre + ".block_sparse_moe."
        if rest == "gate.wg.weight":
            mx[m + "gate.weight"] = t
        elif rest == "gate.gate_map.weight":
            continue
        elif rest.endswith(".up_proj.weight"):
            i = rest.split(".")[2]
            mx[m + f"experts.{i}.w1.weight"] = t[:I].contiguous()
            mx[m + f"experts.{i}.w3.weight"] = t[I:].contiguous()
        elif rest.endswith(".down_proj.weight"):
            i = rest.split(".")[2]
            mx[m + f"experts.{i}.w2.weight"] = t
        else:
            raise ValueError(n)
    path = os.path.join(folder, "model.safetensors")
    save_file(mx, path, metadata={"format": "pt"})
    check_st(path, mx)
    # Reference: decoder reference with gate_map zeroed (no gating residual).
    nog = OrderedDict((n, torch.zeros_like(t) if n.endswith("gate.gate_map.weight") else t)
                      for n, t in back.items())
    logits = logits_of(hf, nog, ids)
    logits_blk = logits_of(hf, nog, ids, moe_fn=dr.mixtral_block)
    direct, gap = mixtral_forward(mcfg, OrderedDict((n, t.to(DT)) for n, t in mx.items()), ids)
    d1 = float((logits - logits_blk).abs().max())
    d2 = float((logits - direct).abs().max())
    assert d1 < 1e-12 and d2 < 1e-12, (d1, d2)
    assert gap > 1e-3, f"near-tie between 2nd and 3rd router logits: {gap}"
    print(f"[mixtral] cross-checks: mixtral_block {d1:.1e}, direct Mixtral forward {d2:.1e}; "
          f"min gap between 2nd/3rd router logits {gap:.3e}", file=sys.stderr)
    write_expected(folder, ids, logits)
    return folder, logits


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/hf")
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    results = []
    hf, params, ids, ref = load_case("released")
    results.append(make_single_bin(a.out, "released_bin_f32", hf, params, ids,
                                   torch.float32, "float32") + (ref, 1e-5))
    results.append(make_single_bin(a.out, "released_bin_bf16", hf, params, ids,
                                   torch.bfloat16, "bfloat16") + (ref, None))
    hf, params, ids, ref = load_case("interval2")
    results.append(make_sharded(a.out, "interval2_bin_sharded", hf, params, ids, "bin")
                   + (ref, 1e-5))
    results.append(make_sharded(a.out, "interval2_st_sharded", hf, params, ids, "st")
                   + (ref, 1e-5))
    results.append(make_single_bin(a.out, "interval2_bin_bf16", hf, params, ids,
                                   torch.bfloat16, "bfloat16") + (ref, None))
    hf, params, ids, ref = load_case("mixtral_vanilla")
    results.append(make_mixtral(a.out, hf, params, ids) + (ref, None))
    for folder, logits, ref, tol in results:
        size = folder_size(folder)
        assert size < MAX_FOLDER_BYTES, f"{folder} is {size} bytes"
        d = float((logits - ref).abs().max())
        if tol is not None:
            assert d < tol, f"{folder}: differs from the decoder fixture by {d}"
        print(f"wrote {folder} ({size} bytes): max|logit| {float(logits.abs().max()):.6f}, "
              f"max|logits - decoder fixture| {d:.3e}", file=sys.stderr)


if __name__ == "__main__":
    main()
