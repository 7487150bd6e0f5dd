#!/usr/bin/env python3
"""Write a vanilla-MoE model folder as a GGUF file for llama.cpp (bench/peer_llamacpp).

The folder is one moepp writes for a vanilla MoE (`decode_bench --write-folders`: MoE++
tensor names, no zero-computation experts, no gating residual, no logit normalization) or a
Hugging Face Mixtral folder, in f32 safetensors. Its weights go out as llama.cpp's `llama`
architecture with experts (how llama.cpp runs Mixtral), in one of:

  f32   every tensor as stored
  bf16  matrices rounded to bf16 (nearest even), norms and routers f32
  q8_0  matrices as llama.cpp's Q8_0 (blocks of 32: an f16 scale max|w|/127, 32 int8)
  q4_0  matrices as llama.cpp's Q4_0 (blocks of 32: an f16 scale -p/8 where p is the value
        of largest magnitude, 32 codes q+8 in 4 bits; byte i holds values i and i+16)

Every matrix takes the named format, the embedding and the LM head included (llama.cpp's
`--pure`), as `moepp convert` does; norms and routers (ffn_gate_inp) stay f32 in both.

Two things differ from the Hugging Face layout and are converted here:
  - llama.cpp's `llama` rotates adjacent pairs (x0, x1) of a head where Hugging Face rotates
    the two halves (x_i, x_{i+d/2}); the rows of q_proj and k_proj are permuted within each
    head so both give the same attention scores.
  - A SwiGLU expert's up_proj [2I, D] holds the gate rows first, then the up rows
    (ffn_gate_exps and ffn_up_exps, stacked over experts).

The tokenizer is a placeholder (the benchmark feeds token ids): <unk>, <s>, </s>, 256 byte
pieces, then one piece per remaining id, so its size equals the model's vocabulary.

Usage: folder_to_gguf.py FOLDER OUT.gguf --type f32|bf16|q8_0|q4_0
Needs numpy only.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32

# gguf metadata value types
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9
# ggml tensor types and llama file types
GGML_F32, GGML_Q4_0, GGML_Q8_0, GGML_BF16 = 0, 2, 8, 30
FILE_TYPE = {"f32": (GGML_F32, 0), "bf16": (GGML_BF16, 32), "q8_0": (GGML_Q8_0, 7), "q4_0": (GGML_Q4_0, 2)}
QBLOCK = 32


def fail(msg):
    sys.exit(f"folder_to_gguf: {msg}")


# ---- reading the folder ----------------------------------------------------------------

def safetensors_files(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted({os.path.join(folder, v) for v in json.load(f)["weight_map"].values()})
    single = os.path.join(folder, "model.safetensors")
    if not os.path.exists(single):
        fail(f"{folder}: no model.safetensors or model.safetensors.index.json")
    return [single]


def read_tensors(folder):
    """name -> float32 array (a view of the mapped file where possible)."""
    out = {}
    for path in safetensors_files(folder):
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                fail(f"{path}: header length {n} beyond the file's {size} bytes")
            header = json.loads(f.read(n))
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] != "F32":
                fail(f"{path}: tensor {name} is {info['dtype']}; write the folder in f32 (moepp convert --dtype f32)")
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            if end > data.size or end - begin != 4 * int(np.prod(shape, dtype=np.int64)):
                fail(f"{path}: tensor {name} offsets {begin}..{end} do not fit shape {shape} or the file")
            out[name] = data[begin:end].view(np.float32).reshape(shape)
    return out


def check_config(cfg, folder):
    mixtral = cfg.get("model_type") == "mixtral"
    if mixtral:
        return cfg["num_local_experts"], cfg["num_experts_per_tok"], True
    moepp = cfg.get("moepp", {})
    zero_compute = sum(moepp.get(k, d) for k, d in
                       (("num_constant_experts", 2), ("num_copy_experts", 1), ("num_zero_experts", 1)))
    refusals = {
        "zero-computation experts": zero_compute != 0,
        "gating residuals": moepp.get("gating_residual", True),
        "logit normalization": cfg.get("moe_use_logits_norm", False),
        "a two-layer router": cfg.get("moe_2layer_gate", False),
        "dense layers between MoE layers": cfg.get("moe_expert_interval", 1) != 1,
        "inputs scaled by k": not cfg.get("moe_feature_no_mul_topk", False) and not cfg.get("moe_use_mixtral_gating"),
        "gate weights without renormalization": moepp.get("gate_weights", "official") == "softmax",
        "rope scaling": cfg.get("rope_scaling") is not None,
    }
    bad = [k for k, v in refusals.items() if v]
    if bad:
        fail(f"{folder}: llama.cpp runs vanilla (Mixtral-style) MoE only; this model has " + ", ".join(bad))
    return cfg["num_experts"][0], moepp.get("top_k", 2), False


def rope_pairs_from_halves(w, heads):
    """Rows of q_proj/k_proj reordered so llama.cpp's adjacent-pair rotation equals HF's halves."""
    rows, cols = w.shape
    return w.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def gguf_tensors(t, cfg, n_expert, mixtral):
    """(gguf name, array in numpy order, is_matrix) in llama.cpp's names."""
    L = cfg["num_hidden_layers"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    I = cfg["intermediate_size"]
    yield "token_embd.weight", t["model.embed_tokens.weight"], True
    yield "output_norm.weight", t["model.norm.weight"], False
    if not cfg.get("tie_word_embeddings", False):
        yield "output.weight", t["lm_head.weight"], True
    for l in range(L):
        p = f"model.layers.{l}."
        b = f"blk.{l}."
        yield b + "attn_norm.weight", t[p + "input_layernorm.weight"], False
        yield b + "ffn_norm.weight", t[p + "post_attention_layernorm.weight"], False
        yield b + "attn_q.weight", rope_pairs_from_halves(t[p + "self_attn.q_proj.weight"], H), True
        yield b + "attn_k.weight", rope_pairs_from_halves(t[p + "self_attn.k_proj.weight"], KV), True
        yield b + "attn_v.weight", t[p + "self_attn.v_proj.weight"], True
        yield b + "attn_output.weight", t[p + "self_attn.o_proj.weight"], True
        if mixtral:
            m = p + "block_sparse_moe."
            yield b + "ffn_gate_inp.weight", t[m + "gate.weight"], False
            gate = [t[f"{m}experts.{e}.w1.weight"] for e in range(n_expert)]
            up = [t[f"{m}experts.{e}.w3.weight"] for e in range(n_expert)]
            down = [t[f"{m}experts.{e}.w2.weight"] for e in range(n_expert)]
        else:
            m = p + "mlp.moe."
            yield b + "ffn_gate_inp.weight", t[m + "gate.wg.weight"], False
            ups = [t[f"{m}experts.experts.{e}.up_proj.weight"] for e in range(n_expert)]
            gate = [u[:I] for u in ups]
            up = [u[I:] for u in ups]
            down = [t[f"{m}experts.experts.{e}.down_proj.weight"] for e in range(n_expert)]
        yield b + "ffn_gate_exps.weight", np.stack(gate), True
        yield b + "ffn_up_exps.weight", np.stack(up), True
        yield b + "ffn_down_exps.weight", np.stack(down), True


# ---- encodings (llama.cpp's reference quantizers, vectorized) ---------------------------

def to_bf16(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x.reshape(-1)).reshape(x.shape)
    rounded[nan] = ((u[nan] >> 16) | 64).astype(np.uint16)  # quiet NaN, as ggml does
    return rounded.tobytes()


def to_q8_0(x):
    blocks = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, QBLOCK)
    d = np.abs(blocks).max(axis=1) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    scaled = (blocks * inv[:, None]).astype(np.float64)
    q = (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(np.int8)  # roundf: halves away from zero
    out = np.empty((blocks.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.tobytes()


def to_q4_0(x):
    blocks = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, QBLOCK)
    pick = np.abs(blocks).argmax(axis=1)  # first of equal magnitudes, as the C loop keeps it
    peak = blocks[np.arange(blocks.shape[0]), pick]
    d = peak / -8.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    codes = np.minimum(15, np.trunc(blocks * inv[:, None] + 8.5)).astype(np.uint8)
    out = np.empty((blocks.shape[0], 18), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = codes[:, :16] | (codes[:, 16:] << 4)
    return out.tobytes()


def encode(array, ggml_type):
    if ggml_type == GGML_F32:
        return np.ascontiguousarray(array, dtype=np.float32).tobytes()
    if ggml_type == GGML_BF16:
        return to_bf16(array)
    if array.shape[-1] % QBLOCK:
        fail(f"rows of {array.shape[-1]} values are not a multiple of {QBLOCK}")
    return (to_q8_0 if ggml_type == GGML_Q8_0 else to_q4_0)(array)


def encoded_size(shape, ggml_type):
    n = int(np.prod(shape, dtype=np.int64))
    return {GGML_F32: 4 * n, GGML_BF16: 2 * n, GGML_Q8_0: n // QBLOCK * 34, GGML_Q4_0: n // QBLOCK * 18}[ggml_type]


# ---- writing ------------------------------------------------------------------------------

def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = gguf_string(key) + struct.pack("<I", vtype)
    if vtype == T_UINT32:
        return out + struct.pack("<I", value)
    if vtype == T_FLOAT32:
        return out + struct.pack("<f", value)
    if vtype == T_BOOL:
        return out + struct.pack("<?", value)
    if vtype == T_STRING:
        return out + gguf_string(value)
    elem, items = value
    out += struct.pack("<IQ", elem, len(items))
    if elem == T_STRING:
        return out + b"".join(gguf_string(s) for s in items)
    return out + np.asarray(items, dtype={T_FLOAT32: "<f4", T_INT32: "<i4"}[elem]).tobytes()


def placeholder_vocab(n):
    tokens, types = ["<unk>", "<s>", "</s>"], [2, 3, 3]  # unknown, control, control
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256  # byte
    tokens += [f"\u2581t{i}" for i in range(len(tokens), n)]
    types += [1] * (n - len(types))  # normal
    if len(tokens) != n:
        fail(f"a vocabulary of {n} is smaller than the {len(tokens)} placeholder pieces")
    return tokens, [-float(i) for i in range(n)], types


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--type", choices=sorted(FILE_TYPE), default="f32")
    a = ap.parse_args()
    with open(os.path.join(a.folder, "config.json")) as f:
        cfg = json.load(f)
    n_expert, top_k, mixtral = check_config(cfg, a.folder)
    matrix_type, file_type = FILE_TYPE[a.type]
    tensors = read_tensors(a.folder)
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    tokens, scores, types = placeholder_vocab(cfg["vocab_size"])
    meta = [
        kv("general.architecture", T_STRING, "llama"),
        kv("general.name", T_STRING, os.path.basename(os.path.normpath(a.folder))),
        kv("general.file_type", T_UINT32, file_type),
        kv("general.alignment", T_UINT32, ALIGNMENT),
        kv("llama.vocab_size", T_UINT32, cfg["vocab_size"]),
        kv("llama.context_length", T_UINT32, cfg["max_position_embeddings"]),
        kv("llama.embedding_length", T_UINT32, D),
        kv("llama.block_count", T_UINT32, cfg["num_hidden_layers"]),
        kv("llama.feed_forward_length", T_UINT32, cfg["intermediate_size"]),
        kv("llama.attention.head_count", T_UINT32, H),
        kv("llama.attention.head_count_kv", T_UINT32, cfg["num_key_value_heads"]),
        kv("llama.rope.dimension_count", T_UINT32, D // H),
        kv("llama.rope.freq_base", T_FLOAT32, float(cfg.get("rope_theta", 10000.0))),
        kv("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, float(cfg.get("rms_norm_eps", 1e-6))),
        kv("llama.expert_count", T_UINT32, n_expert),
        kv("llama.expert_used_count", T_UINT32, top_k),
        kv("tokenizer.ggml.model", T_STRING, "llama"),
        kv("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, tokens)),
        kv("tokenizer.ggml.scores", T_ARRAY, (T_FLOAT32, scores)),
        kv("tokenizer.ggml.token_type", T_ARRAY, (T_INT32, types)),
        kv("tokenizer.ggml.bos_token_id", T_UINT32, 1),
        kv("tokenizer.ggml.eos_token_id", T_UINT32, 2),
        kv("tokenizer.ggml.unknown_token_id", T_UINT32, 0),
        kv("tokenizer.ggml.add_bos_token", T_BOOL, False),
    ]
    plan = []  # (name, array, ggml type, offset)
    offset = 0
    for name, array, is_matrix in gguf_tensors(tensors, cfg, n_expert, mixtral):
        ggml_type = matrix_type if is_matrix and array.ndim >= 2 and name.find("gate_inp") < 0 else GGML_F32
        plan.append((name, array, ggml_type, offset))
        offset += (encoded_size(array.shape, ggml_type) + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    infos = b""
    for name, array, ggml_type, off in plan:
        dims = list(reversed(array.shape))  # ggml's ne[0] is the contiguous (last numpy) axis
        infos += gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        infos += struct.pack("<IQ", ggml_type, off)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(plan), len(meta)))
        f.write(b"".join(meta))
        f.write(infos)
        f.write(b"\0" * (-f.tell() % ALIGNMENT))
        base = f.tell()
        for i, (name, array, ggml_type, off) in enumerate(plan):
            f.write(b"\0" * (base + off - f.tell()))
            f.write(encode(array, ggml_type))
            print(f"\r[{i + 1}/{len(plan)}] {name}" + " " * 20, end="", file=sys.stderr, flush=True)
        f.write(b"\0" * (-f.tell() % ALIGNMENT))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, a.out)
    print(f"\nwrote {a.out}: {len(plan)} tensors, matrices {a.type}, {os.path.getsize(a.out) / 1e9:.2f} GB",
          file=sys.stderr)


if __name__ == "__main__":
    main()
