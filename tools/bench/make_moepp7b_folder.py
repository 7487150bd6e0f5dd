#!/usr/bin/env python3
"""Writes a randomly initialised Hugging Face folder with the released MoE++7B's shapes
(vocab 65,536, hidden 1,536, FFN 4,096, 24 layers, 16 heads, 16 FFN + 2 constant + copy +
zero experts, linear router, logit norm, inputs not scaled by k) as bf16 safetensors in
13 shards with model.safetensors.index.json: about 15.4 GB. For `decode_bench --model`
(load time, resident memory, decode speed); never committed.

Usage: /usr/bin/python3 tools/bench/make_moepp7b_folder.py OUT_DIR [--layers 24] [--bin]
Needs numpy only (bf16 written as raw bits); about a minute per 5 GB on 2 cores.
--bin writes the shards as the released MoE++7B ships them instead: torch.save'd
pytorch_model-0000N-of-0000M.bin with pytorch_model.bin.index.json (needs Debian's
python3-torch).
"""
import argparse
import json
import os
import struct

import numpy as np

V, D, I, H, E, NFFN = 65536, 1536, 4096, 16, 20, 16


def tensors_of_layer(l):
    p = f"model.layers.{l}."
    yield p + "input_layernorm.weight", (D,), "norm"
    yield p + "post_attention_layernorm.weight", (D,), "norm"
    for n in "qkvo":
        yield p + f"self_attn.{n}_proj.weight", (D, D), "w"
    yield p + "mlp.moe.gate.wg.weight", (E, D), "router"
    yield p + "mlp.moe.gate.gate_map.weight", (E, E), "zero"
    for e in range(NFFN):
        yield p + f"mlp.moe.experts.experts.{e}.up_proj.weight", (2 * I, D), "w"
        yield p + f"mlp.moe.experts.experts.{e}.down_proj.weight", (D, I), "w"
    for e in (NFFN, NFFN + 1):
        yield p + f"mlp.moe.experts.experts.{e}.constant", (D,), "w"
        yield p + f"mlp.moe.experts.experts.{e}.wg.weight", (2, D), "w"


def bf16_bits(shape, kind, rng):
    n = int(np.prod(shape))
    if kind == "norm":
        x = np.ones(n, np.float32)
    elif kind == "zero":
        x = np.zeros(n, np.float32)
    else:  # uniform with std 0.02 (router 0.5: decisive routing, like a trained model)
        a = (0.5 if kind == "router" else 0.02) * 3 ** 0.5
        x = rng.uniform(-a, a, n).astype(np.float32)
    return (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation: fine for random weights


def write_shard(path, items, rng):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, shape, kind in items:
        b = bf16_bits(shape, kind, rng).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def write_bin_shard(path, items, rng):
    import torch  # only here: the safetensors folders need numpy alone
    state = {}
    for name, shape, kind in items:
        bits = bf16_bits(shape, kind, rng).view(np.int16)
        state[name] = torch.from_numpy(bits).view(torch.bfloat16).reshape(shape)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--bin", action="store_true", help="torch.save shards (pytorch_model-*.bin) instead of safetensors")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(1)
    groups = [[("model.embed_tokens.weight", (V, D), "w")]]
    for l in range(a.layers):
        if l % 2 == 0:
            groups.append([])
        groups[-1].extend(tensors_of_layer(l))
    groups[-1] += [("model.norm.weight", (D,), "norm"), ("lm_head.weight", (V, D), "w")]
    weight_map = {}
    for i, items in enumerate(groups, 1):
        if a.bin:
            fname = f"pytorch_model-{i:05d}-of-{len(groups):05d}.bin"
            write_bin_shard(os.path.join(a.out, fname), items, rng)
        else:
            fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
            write_shard(os.path.join(a.out, fname), items, rng)
        weight_map.update({n: fname for n, _, _ in items})
        print(f"wrote {fname}", flush=True)
    index = "pytorch_model.bin.index.json" if a.bin else "model.safetensors.index.json"
    with open(os.path.join(a.out, index), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    cfg = {"model_type": "MoE++", "vocab_size": V, "hidden_size": D, "intermediate_size": I,
           "num_hidden_layers": a.layers, "num_attention_heads": H, "num_key_value_heads": H,
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
           "tie_word_embeddings": False, "num_experts": [E], "moe_expert_interval": 1,
           "moe_use_mixtral_gating": False, "moe_2layer_gate": False, "moe_use_logits_norm": True,
           "moe_gate_norm_std": 1.0, "moe_feature_no_mul_topk": True, "bos_token_id": 1, "eos_token_id": 2,
           "torch_dtype": "bfloat16"}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


if __name__ == "__main__":
    main()
