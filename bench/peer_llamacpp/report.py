#!/usr/bin/env python3
"""The tables of bench/peer_llamacpp/run.sh (standard library only).

  report.py agreement MOEPP_LOGITS.safetensors LLAMA_PROBS.json
      moepp's log-softmax against llama.cpp's next-token probabilities, every position and
      every token of the vocabulary: the largest |difference of log-probabilities|.
  report.py summary RESULTS.jsonl CONFIG.json
      medians over the rounds, per engine and format, the ratios moepp / llama.cpp, and
      prefill as a fraction of the same run's GEMM rate (f32 for f32, bf16 for bf16, int8 for
      q8_0 and q4 where the run measured it).
"""
import json
import math
import statistics
import struct
import sys
from array import array


def read_logits(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    info = json.loads(raw[8:8 + n])["logits"]
    if info["dtype"] != "F32" or len(info["shape"]) != 2:
        sys.exit(f"{path}: expected an F32 [T, vocab] tensor 'logits', got {info['dtype']} {info['shape']}")
    begin, end = info["data_offsets"]
    values = array("f")
    values.frombytes(raw[8 + n + begin:8 + n + end])
    rows, vocab = info["shape"]
    return [values[r * vocab:(r + 1) * vocab] for r in range(rows)]


def log_softmax(row):
    top = max(row)
    total = math.fsum(math.exp(v - top) for v in row)
    return [v - top - math.log(total) for v in row]


def agreement(logits_path, probs_path):
    logits = read_logits(logits_path)
    with open(probs_path) as f:
        dists = json.load(f)["dists"]
    if len(dists) > len(logits):
        sys.exit(f"{probs_path}: {len(dists)} positions but moepp's logits have {len(logits)}")
    worst, smallest_p = 0.0, 1.0
    for row, dist in zip(logits, dists):
        ours = log_softmax(row)
        if len(dist) != len(row):
            sys.exit(f"{probs_path}: llama.cpp returned {len(dist)} of {len(row)} probabilities")
        for token, p in dist:
            smallest_p = min(smallest_p, p)
            worst = max(worst, abs(math.log(p) - ours[token]) if p > 0 else math.inf)
    print(json.dumps({"positions": len(dists), "vocab": len(logits[0]), "max_abs_logprob_diff": worst,
                      "smallest_p": smallest_p}))


def flops_per_prefill_token(cfg, prompt):
    """Multiply-adds x 2 a vanilla MoE decoder does per prompt token: projections, router,
    top-k SwiGLU experts, causal attention (mean context (P + 1) / 2), the LM head once."""
    D, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = D // H
    E = cfg["num_experts"][0] if "num_experts" in cfg else cfg["num_local_experts"]
    k = cfg.get("moepp", {}).get("top_k", cfg.get("num_experts_per_tok", 2))
    per_layer = 2 * D * (2 * H * hd + 2 * KV * hd) + 2 * D * E + k * 2 * 3 * D * I + 2 * 2 * H * hd * (prompt + 1) / 2
    return cfg["num_hidden_layers"] * per_layer + 2 * V * D / prompt


def summary(results_path, config_path):
    with open(config_path) as f:
        cfg = json.load(f)
    runs, gemm = {}, []
    with open(results_path) as f:
        for line in f:
            r = json.loads(line)
            if "gemm" in r:
                gemm.append(r)
            else:
                runs.setdefault((r["dtype"], r["engine"]), []).append(r)
    med = lambda rs, key: statistics.median(r[key] for r in rs)
    f32_rate = statistics.median(g["f32_gflops"] for g in gemm) if gemm else 0
    bf16_rate = statistics.median(g["bf16_gflops"] for g in gemm) if gemm else 0
    # oneDNN's plain int8 GEMM (no block scales): q8_0 and q4 prompts are measured against it
    # when the run has it, since moepp multiplies them in int8 (VNNI or AMX); runs before it
    # was measured compare them with bf16.
    int8_rates = [g["int8_gops"] for g in gemm if g.get("int8_gops")]
    int8_rate = statistics.median(int8_rates) if int8_rates else 0
    rounds = max(len(v) for v in runs.values())
    prompt = next(iter(runs.values()))[0]["prompt"]
    decode = next(iter(runs.values()))[0]["decode"]
    fpt = flops_per_prefill_token(cfg, prompt)
    print(f"{rounds} rounds, prompt {prompt}, decode {decode}; medians. GEMM rate this run "
          f"(C = A W^T, {gemm[0]['gemm'] if gemm else '-'}): f32 {f32_rate:.0f}, bf16 {bf16_rate:.0f} GFLOP/s"
          + (f", int8 {int8_rate:.0f} GOP/s (q8_0 and q4 against it)" if int8_rate else "") + "; "
          f"prefill does {fpt / 1e9:.3f} GFLOP per token\n")
    print("| format | engine | load s | RSS GB | prefill t/s (first) | prefill t/s | of GEMM rate | decode t/s |")
    print("|---|---|---|---|---|---|---|---|")
    dtypes = []
    for dtype, _ in runs:
        if dtype not in dtypes:
            dtypes.append(dtype)
    ratios = []
    for dtype in dtypes:
        rate = f32_rate if dtype == "f32" else int8_rate if dtype in ("q8_0", "q4") and int8_rate else bf16_rate
        row = {}
        for engine in ("moepp", "llama.cpp"):
            rs = runs.get((dtype, engine))
            if not rs:
                continue
            row[engine] = {k: med(rs, k) for k in ("load_s", "rss_gb", "prefill_cold_tps", "prefill_tps", "decode_tps")}
            m = row[engine]
            of_gemm = f"{100 * m['prefill_tps'] * fpt / 1e9 / rate:.0f}%" if rate else "-"
            print(f"| {dtype} | {engine} | {m['load_s']:.2f} | {m['rss_gb']:.2f} | {m['prefill_cold_tps']:.0f} | "
                  f"{m['prefill_tps']:.0f} | {of_gemm} | {m['decode_tps']:.1f} |")
        if len(row) == 2:
            ratios.append((dtype, row["moepp"], row["llama.cpp"]))
    print("\nmoepp / llama.cpp (medians of the same rounds; load and RSS: lower is better)\n")
    print("| format | prefill | prefill (first) | decode | load time | RSS |")
    print("|---|---|---|---|---|---|")
    for dtype, m, l in ratios:
        print(f"| {dtype} | {m['prefill_tps'] / l['prefill_tps']:.2f}x | {m['prefill_cold_tps'] / l['prefill_cold_tps']:.2f}x"
              f" | {m['decode_tps'] / l['decode_tps']:.2f}x | {m['load_s'] / l['load_s']:.2f}x | "
              f"{m['rss_gb'] / l['rss_gb']:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "agreement":
        agreement(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "summary":
        summary(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
