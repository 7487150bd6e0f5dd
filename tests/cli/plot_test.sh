#!/usr/bin/env bash
# `moepp plot` on two synthetic metrics.jsonl files (a MoE++ run and a vanilla run, written
# here with awkward doubles and per-layer routing): every PNG is a PNG, and the gnuplot data
# files hold exactly the numbers of the input, column by column. Skipped (77) without gnuplot.
# Usage: plot_test.sh BUILD_DIR
set -uo pipefail
moepp="$(cd "$1" && pwd)/moepp"
source "$(dirname "$0")/lib.sh"
if ! command -v gnuplot >/dev/null 2>&1; then echo "SKIP: gnuplot is not installed (apt-get install gnuplot-nox)"; exit 77; fi
py=python3

for i in $(seq 1 200); do echo "Line $i: the quick brown fox jumps over the lazy dog $((i % 11))."; done > "$tmp/corpus.txt"
check "prepare" "$moepp" prepare --input "$tmp/corpus.txt" --out "$tmp/data" --vocab-size 300
check "a MoE++ run (for its config)" "$moepp" train --data "$tmp/data" --out "$tmp/moe" --preset tiny --steps 1 --batch 2 --seq 8 --eval-batches 1
check "a vanilla run (for its config)" "$moepp" train --data "$tmp/data" --out "$tmp/van" --preset tiny --vanilla --steps 1 --batch 2 --seq 8 --eval-batches 1
for r in moe van; do mkdir -p "$tmp/runs/$r"; cp "$tmp/$r/config.json" "$tmp/runs/$r/"; done
printf '{"step": 1, "batch": 4, "seq": 8, "accum": 3, "model": "tiny preset"}\n' >"$tmp/runs/moe/trainer_state.json"
printf '{"step": 1, "batch": 2, "seq": 16, "accum": 1}\n' >"$tmp/runs/van/trainer_state.json"

# Synthetic logs: 30 steps, a validation line every 10, values with many significant digits;
# the MoE++ run dropped slots over capacity (routing.dropped_share), the vanilla run none.
check "synthetic metrics" $py - "$tmp/runs" <<'PY'
import json, math, sys
for run, zc in (("moe", True), ("van", False)):
    with open(f"{sys.argv[1]}/{run}/metrics.jsonl", "w") as f:
        for s in range(1, 31):
            x = s / 7.0
            sh = [0.5 + 0.01 * math.sin(x), 0.2 - 0.003 * x / 3, 0.1 + 1e-9 * s, 0.2 + math.cos(x) / 97] if zc else [1.0, 0, 0, 0]
            layers = [{"ffn_experts_per_token": 2 * sh[0] + l / 13.0, "share": {}} for l in range(2)]
            routing = {"ffn_experts_per_token": 2 * sh[0], "share": dict(zip(["ffn", "zero", "copy", "constant"], sh)),
                       "layers": layers}
            if zc:
                routing["dropped_share"] = 0.3 / (1 + x)
            f.write(json.dumps({"step": s, "loss": 5 - math.log1p(x) + (0.1 if zc else 0.0), "lm_loss": 4.9 - math.log1p(x) / 3,
                                "balance_loss": 0.01 * math.exp(-x), "lr": 1e-3 * min(1, s / 3) * (0.5 + 0.5 * math.cos(math.pi * s / 30)),
                                "grad_norm": 1 / (x + 0.3), "tokens_per_s": 1000 + math.pi * s, "routing": routing}) + "\n")
            if s % 10 == 0:
                f.write(json.dumps({"step": s, "val_loss": 4.5 - math.log1p(x) / 5, "val_perplexity": math.exp(4.5 - math.log1p(x) / 5),
                                    "val_tokens": 4096}) + "\n")
PY

"$moepp" plot "$tmp/runs/moe" "$tmp/runs/van" --out "$tmp/plots" >"$tmp/pngs" 2>"$tmp/plot.err"
check "plot exits 0" test $? -eq 0
check "six PNGs listed" test "$(wc -l < "$tmp/pngs")" -eq 6
for f in loss lr grad_norm ffn_per_token slot_shares ffn_per_token_by_layer-run1; do
  check "$f.png is a PNG" sh -c "head -c 8 '$tmp/plots/$f.png' | od -An -tx1 | tr -d ' \n' | grep -q '^89504e470d0a1a0a$'"
done
check "no per-layer plot for the vanilla run" test ! -e "$tmp/plots/ffn_per_token_by_layer-run2.png"
check "the loss plot draws lm_loss and val_loss" grep -q "using 2:4 .*using 2:3" "$tmp/plots/loss.gp"
check "the slot shares draw the MoE++ run's dropped share" grep -q "run1.steps.tsv' using 1:16 .*dropped over capacity" "$tmp/plots/slot_shares.gp"
check "no dropped line for the vanilla run" sh -c "! grep -q \"run2.steps.tsv' using 1:[0-9]* [^,]*dropped\" '$tmp/plots/slot_shares.gp'"

# Every number in the data files is the input's number, exactly (as a double).
check "data files hold the input numbers exactly" $py - "$tmp/runs" "$tmp/plots" <<'PY'
import json, math, sys
runs, plots = sys.argv[1], sys.argv[2]
tokens_per_step = {"moe": 4 * 8 * 3, "van": 2 * 16}
def same(cell, value):
    return (value is None and cell == "NaN") or (value is not None and float(cell) == float(value))
for i, run in enumerate(("moe", "van"), 1):
    lines = [json.loads(l) for l in open(f"{runs}/{run}/metrics.jsonl")]
    steps = [l for l in open(f"{plots}/run{i}.steps.tsv") if not l.startswith("#")]
    val = [l for l in open(f"{plots}/run{i}.val.tsv") if not l.startswith("#")]
    train = [l for l in lines if "loss" in l]
    evals = [l for l in lines if "val_loss" in l]
    assert len(steps) == len(train) == 30 and len(val) == len(evals) == 3, (len(steps), len(val))
    for row, l in zip(steps, train):
        c = row.rstrip("\n").split("\t")
        r = l["routing"]
        want = [l["step"], l["step"] * tokens_per_step[run], l["loss"], l["lm_loss"], l["balance_loss"], l["lr"],
                l["grad_norm"], l["tokens_per_s"], r["ffn_experts_per_token"]] + \
               [r["share"][k] for k in ("ffn", "zero", "copy", "constant")] + [x["ffn_experts_per_token"] for x in r["layers"]] + \
               [r.get("dropped_share", 0)]
        assert len(c) == len(want), (c, want)
        for a, b in zip(c, want):
            assert same(a, b), (run, l["step"], a, b)
    for row, l in zip(val, evals):
        c = row.rstrip("\n").split("\t")
        want = [l["step"], l["step"] * tokens_per_step[run], l["val_loss"], l["val_perplexity"], l["val_tokens"]]
        for a, b in zip(c, want):
            assert same(a, b), (run, a, b)
PY

check_error "plot: a folder without metrics" "metrics.jsonl: cannot open" "$moepp" plot "$tmp/data" --out "$tmp/p2"
printf '{"step": 1, "loss": 1}\nnot json\n{"step": 2, "loss": 1}\n' >"$tmp/runs/van/metrics.jsonl"
check_error "plot: a bad line inside the log" "metrics.jsonl: line 2 is not a JSON object" "$moepp" plot "$tmp/runs/van" --out "$tmp/p3"
echo "plot checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
