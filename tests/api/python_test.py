#!/usr/bin/env python3
"""The Python package (python/moepp) on the api_model fixture, against the `moepp` CLI on
the same folder: logits for f32, bf16, q8_0 and q4 (each against `moepp logits --dtype X`, to
1e-6), greedy text (`moepp generate --temperature 0`), tokenize/detokenize, routing, an
early break out of generate(), and moepp.Error for missing and corrupt folders; the
logits again on the released model's layout (HF_FOLDER: pytorch_model.bin, no tokenizer).
Exits 77 (CTest's skip) without numpy, without libmoepp_c.so, or in a sanitized build.
Usage: python_test.py MOEPP_CLI FIXTURE_DIR SCRATCH_DIR HF_FOLDER (PYTHONPATH=python, MOEPP_LIB=...)"""
import os
import pathlib
import subprocess
import sys

SKIP = 77

if os.environ.get("MOEPP_SANITIZED", "0") not in ("", "0", "OFF", "FALSE"):
    print("skipped: a sanitized libmoepp_c.so needs libasan preloaded into Python")
    sys.exit(SKIP)
try:
    import numpy as np
except ImportError:
    print("skipped: numpy is missing (apt-get install python3-numpy)")
    sys.exit(SKIP)
import moepp  # noqa: E402  (PYTHONPATH=python)

try:
    print("library:", moepp.library_path(), "version", moepp.version())
except moepp.Error as e:
    print("skipped:", e)
    sys.exit(SKIP)

passed, failed = 0, 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


def read_logits(path):
    """The f32 tensor "logits" of a safetensors file, parsed here."""
    import json
    raw = pathlib.Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    t = header["logits"]
    assert t["dtype"] == "F32", t
    a, b = t["data_offsets"]
    return np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(t["shape"])


def check_logits(cli, scratch, m, folder, ids):
    """m.logits(ids) against `moepp logits` with the same folder and dtype, to 1e-6."""
    mine = m.logits(ids)
    check(mine.dtype == np.float32 and mine.shape == (len(ids), m.vocab_size), "logits %s %s" % (mine.dtype, mine.shape))
    out = scratch / ("logits_%s.safetensors" % m.dtype)
    subprocess.run([cli, "logits", "--model", str(folder), "--ids", ",".join(map(str, ids)), "--dtype", m.dtype,
                    "--out", str(out)], check=True, capture_output=True)
    theirs = read_logits(out)
    worst = float(np.max(np.abs(mine.astype(np.float64) - theirs)))
    check(worst <= 1e-6, "%s, %s: logits differ from `moepp logits` by %g" % (folder, m.dtype, worst))
    print("logits %s, %s: max |api - cli| = %g" % (folder, m.dtype, worst))


def main():
    cli, fixture, scratch = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    released = pathlib.Path(sys.argv[4])
    scratch.mkdir(parents=True, exist_ok=True)
    model = fixture / "model"
    ids = [1, 5, 9, 12, 40, 7, 399, 3, 250, 18]

    for dtype in ("f32", "bf16", "q8_0", "q4"):
        check_logits(cli, scratch, moepp.Model(released, dtype=dtype), released, [(i * 37 + 11) % 48 for i in range(60)])
        m = moepp.Model(model, dtype=dtype)
        check(m.vocab_size == 400, "vocab %d" % m.vocab_size)
        check_logits(cli, scratch, m, model, ids)
        routing = m.routing()
        check(len(routing) >= 1 and all(r.tokens == len(ids) for r in routing), "routing %s" % routing)
        check(all(abs(r.ffn_experts_per_token - r.top_k * r.share_ffn) < 1e-12 for r in routing),
              "FFN experts per token = k x FFN share")

        prompt = "Line 3"
        text = m.generate_text(prompt, max_tokens=12, temperature=0)
        shown = m.detokenize(m.tokenize(prompt))
        cli_text = subprocess.run([cli, "generate", "--model", str(model), "--prompt", prompt, "-n", "12",
                                   "--temperature", "0", "--dtype", dtype], check=True, capture_output=True).stdout
        check((shown + text + "\n").encode() == cli_text, "%s: api %r vs cli %r" % (dtype, shown + text, cli_text))
        print("generate %s: %r" % (dtype, text))
        check(m.routing()[0].tokens >= len(m.tokenize(prompt)), "routing after generate")

        it = m.generate(prompt, max_tokens=12, temperature=0)
        first = next(it)
        it.close()  # stops the worker
        check(text.startswith(first), "the first piece %r starts the text" % first)

    m = moepp.Model(model)
    toks = m.tokenize("Line 3: the quick brown fox")
    check(toks[0] == 1 and m.detokenize(toks) == "Line 3: the quick brown fox", "round trip %s" % toks)
    sampled = list(m.generate("Line 3", max_tokens=6, temperature=0.8, seed=5))
    again = list(m.generate("Line 3", max_tokens=6, temperature=0.8, seed=5))
    check(sampled == again, "a seed repeats its sample")
    # Stop strings, penalties and min-p, as `moepp generate` takes them.
    flags = dict(repeat_penalty=1.1, presence_penalty=0.5, frequency_penalty=1.5, min_p=0.05)
    penalised = m.generate_text("Line 3", max_tokens=16, temperature=0, **flags)
    cli_text = subprocess.run([cli, "generate", "--model", str(model), "--prompt", "Line 3", "-n", "16", "--temperature",
                               "0", "--repeat-penalty", "1.1", "--presence-penalty", "0.5", "--frequency-penalty", "1.5",
                               "--min-p", "0.05"], check=True, capture_output=True).stdout
    check(("Line 3" + penalised + "\n").encode() == cli_text, "penalised: api %r vs cli %r" % (penalised, cli_text))
    stop = penalised[len(penalised) // 2:len(penalised) // 2 + 2]
    cut = m.generate_text("Line 3", max_tokens=16, temperature=0, stop=["never here", stop], **flags)
    check(len(stop) == 2 and cut == penalised[:penalised.find(stop)], "stop %r: %r of %r" % (stop, cut, penalised))
    first = int(m.logits(m.tokenize("Line 3"))[-1].argmax())  # the greedy first token, banned
    banned = m.generate_text("Line 3", max_tokens=16, temperature=0, logit_bias={first: -100})
    cli_text = subprocess.run([cli, "generate", "--model", str(model), "--prompt", "Line 3", "-n", "16", "--temperature",
                               "0", "--logit-bias", "%d=-100" % first], check=True, capture_output=True).stdout
    check(("Line 3" + banned + "\n").encode() == cli_text and banned != m.generate_text("Line 3", max_tokens=16,
                                                                                          temperature=0),
          "logit_bias: api %r vs cli %r" % (banned, cli_text))

    for bad, needle in ((fixture / "nothing-here", "nothing-here"), (fixture / "corrupt", "config.json")):
        try:
            moepp.Model(bad)
            check(False, "%s loaded" % bad)
        except moepp.Error as e:
            check(needle in str(e), "message %r" % str(e))
            print("error:", e)
    for call, needle in ((lambda: m.logits([1, 400]), "outside the vocabulary"),
                         (lambda: moepp.Model(model, dtype="f16"), "f16"),
                         (lambda: list(m.generate("x", top_p=0)), "top_p"),
                         (lambda: list(m.generate("x", min_p=2)), "min_p")):
        try:
            call()
            check(False, "no error for " + needle)
        except moepp.Error as e:
            check(needle in str(e), "message %r" % str(e))

    print("python api: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
