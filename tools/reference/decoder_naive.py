#!/usr/bin/env python3
"""A naive float64 re-implementation of the MoE++ decoder forward, for decoder_reference.py's
cross-check: per-token and per-head loops, RoPE as explicit pair rotations, routing by
sorting. It shares no code with decoder_reference.forward() nor with moe_reference.py,
so the two agreeing to 1e-11 checks both (`decoder_reference.py --selftest`, and every
fixture it writes)."""
import math

import torch

DT = torch.float64


def is_moe_layer(hf, l):
    iv = hf["moe_expert_interval"]
    return iv == 1 or (l + 1) % iv == 0


def lm_head_weight(hf, params):
    return params["model.embed_tokens.weight"] if hf["tie_word_embeddings"] \
        else params["lm_head.weight"]


def naive_forward(hf, params, ids):
    """Per-token / per-head loops, RoPE as explicit pair rotations, routing by sorting;
    shares no code with forward() (nor with moe_reference.py). Returns floats + logits."""
    T = ids.shape[0]
    D, I = hf["hidden_size"], hf["intermediate_size"]
    H, KV = hf["num_attention_heads"], hf["num_key_value_heads"]
    hd, half = D // H, D // H // 2
    m = hf["moepp"]
    E, k = hf["num_experts"][0], m["top_k"]
    C, P, Z = m["num_constant_experts"], m["num_copy_experts"], m["num_zero_experts"]
    N = E - C - P - Z
    mixtral = hf["moe_use_mixtral_gating"]
    scale = k if (not hf["moe_feature_no_mul_topk"] and not mixtral) else 1
    eps = hf["rms_norm_eps"]

    def rms(vec, w):
        ms = sum(float(c) ** 2 for c in vec) / len(vec)
        return w * vec / math.sqrt(ms + eps)

    def softmax(vals):
        mx = max(vals)
        e = [math.exp(v - mx) for v in vals]
        s = sum(e)
        return [v / s for v in e]

    def silu(t):
        return t / (1 + torch.exp(-t))

    def rope(vec, pos):  # vec [hd]; pairs (j, j+half) rotated by pos * theta^(-2j/hd)
        out = vec.clone()
        for j in range(half):
            ang = pos * hf["rope_theta"] ** (-2.0 * j / hd)
            c, s = math.cos(ang), math.sin(ang)
            x1, x2 = float(vec[j]), float(vec[j + half])
            out[j] = x1 * c - x2 * s
            out[j + half] = x2 * c + x1 * s
        return out

    x = [params["model.embed_tokens.weight"][int(ids[t])].clone() for t in range(T)]
    z_prev = None
    lbs = []
    for l in range(hf["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        Wq, Wk, Wv, Wo = (params[pre + f"self_attn.{n}_proj.weight"] for n in "qkvo")
        a = [rms(x[t], params[pre + "input_layernorm.weight"]) for t in range(T)]
        qs = [[rope(torch.mv(Wq[h * hd:(h + 1) * hd], a[t]), t) for h in range(H)]
              for t in range(T)]
        ks = [[rope(torch.mv(Wk[g * hd:(g + 1) * hd], a[t]), t) for g in range(KV)]
              for t in range(T)]
        vs = [[torch.mv(Wv[g * hd:(g + 1) * hd], a[t]) for g in range(KV)] for t in range(T)]
        hres = []
        for t in range(T):
            heads = []
            for h in range(H):
                g = h // (H // KV)
                sc = [float(torch.dot(qs[t][h], ks[s][g])) / math.sqrt(hd) for s in range(t + 1)]
                w = softmax(sc)
                acc = torch.zeros(hd, dtype=DT)
                for s in range(t + 1):
                    acc = acc + w[s] * vs[s][g]
                heads.append(acc)
            hres.append(x[t] + torch.mv(Wo, torch.cat(heads)))
        b = [rms(hres[t], params[pre + "post_attention_layernorm.weight"]) for t in range(T)]
        if is_moe_layer(hf, l):
            q = pre + "mlp.moe."
            z_all, p_all, counts, newx = [], [], [0] * E, []
            for t in range(T):
                if hf["moe_2layer_gate"]:
                    zt = torch.mv(params[q + "gate.wg.2.weight"],
                                  torch.tanh(torch.mv(params[q + "gate.wg.0.weight"], b[t])))
                else:
                    zt = torch.mv(params[q + "gate.wg.weight"], b[t])
                if z_prev is not None:
                    zt = zt + torch.mv(params[q + "gate.gate_map.weight"], z_prev[t])
                z_all.append(zt)
                zl = [float(v) for v in zt]
                if hf["moe_use_logits_norm"]:
                    mu = sum(zl) / E
                    sd = math.sqrt(sum((v - mu) ** 2 for v in zl) / (E - 1))
                    sl = [v / (sd / hf["moe_gate_norm_std"]) for v in zl]
                else:
                    sl = zl
                pt = softmax(sl)
                p_all.append(pt)
                order = sorted(range(E), key=lambda i: (-sl[i], i))[:k]
                if mixtral:
                    gt = softmax([sl[i] for i in order])
                else:
                    gt = [pt[i] if i < N + C + P else 0.0 for i in order]
                    tot = sum(gt)
                    gt = [v / tot for v in gt] if tot > 0 else [0.0] * k
                xin = b[t] * scale
                y = torch.zeros(D, dtype=DT)
                for j, i in enumerate(order):
                    counts[i] += 1
                    e = q + f"experts.experts.{i}."
                    if i < N:
                        u = torch.mv(params[e + "up_proj.weight"], xin)
                        o = torch.mv(params[e + "down_proj.weight"], silu(u[:I]) * u[I:])
                    elif i < N + C:
                        w = softmax([float(v) for v in torch.mv(params[e + "wg.weight"], xin)])
                        o = w[0] * xin + w[1] * params[e + "constant"]
                    elif i < N + C + P:
                        o = xin
                    else:
                        o = torch.zeros(D, dtype=DT)
                    y = y + gt[j] * o
                newx.append(hres[t] + y)
            lb = 0.0
            for i in range(E):
                eta = 1.0 if i < N else m["balance_tau"]
                lb += eta * (counts[i] / T) * (sum(p_all[t][i] for t in range(T)) / T)
            lbs.append(lb)
            z_prev = z_all
            x = newx
        else:
            d = pre + "mlp."
            x = [hres[t] + torch.mv(params[d + "down_proj.weight"],
                                    silu(torch.mv(params[d + "gate_proj.weight"], b[t]))
                                    * torch.mv(params[d + "up_proj.weight"], b[t]))
                 for t in range(T)]
    Wlm = lm_head_weight(hf, params)
    logits = torch.stack([torch.mv(Wlm, rms(x[t], params["model.norm.weight"]))
                          for t in range(T)])
    lm = 0.0
    for t in range(T - 1):
        row = [float(v) for v in logits[t]]
        mx = max(row)
        lse = mx + math.log(sum(math.exp(v - mx) for v in row))
        lm += lse - row[int(ids[t + 1])]
    lm /= T - 1
    lb = sum(lbs) / len(lbs)
    return dict(logits=logits, loss=lm + m["balance_coef"] * lb, lm_loss=lm, balance_loss=lb)
