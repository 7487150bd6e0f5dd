#!/usr/bin/env python3
"""`moepp serve` over HTTP, with the Python standard library as the client.

The server's answers are checked against the library's, computed by other commands:
greedy completions against `moepp generate --temp 0`, seeded sampling against itself,
echo + logprobs against log-softmax of `moepp logits` (1e-4); all while 8 other requests
decode in the same batch. Then one check per client mistake (the OpenAI error shape and
a 4xx status each, and a good request after them), 401 without the key, 413, 429 with
Retry-After under an overfull queue, clients that disconnect (mid-stream, and while a
non-streaming request runs), /metrics, and
SIGTERM draining a running request before exiting 0.

Usage: serve_test.py MOEPP_BINARY SCRATCH_DIR
"""
import http.client
import json
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

MOEPP = sys.argv[1]
SCRATCH = pathlib.Path(sys.argv[2])
KEY = "test-key-123"
failed = 0
passed = 0


def check(ok, what):
    global failed, passed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, flush=True)


def run(*args, **kw):
    return subprocess.run([MOEPP, *args], check=True, capture_output=True, text=True, **kw)


def make_model():
    """A tiny MoE++ model trained for a few steps, its context widened to 8192 positions
    (the weights do not depend on it) so that long generations are possible: a request that
    must still be running when the test acts (a disconnect, a burst, a drain) asks for
    thousands of tokens, since this model makes ~15,000 a second."""
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    SCRATCH.mkdir(parents=True)
    corpus = SCRATCH / "corpus.txt"
    corpus.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 7}.\n" for i in range(400)))
    run("prepare", "--input", str(corpus), "--out", str(SCRATCH / "data"), "--vocab-size", "300")
    run("train", "--data", str(SCRATCH / "data"), "--out", str(SCRATCH / "tiny"), "--preset", "tiny", "--steps", "30",
        "--batch", "4", "--seq", "32", "--eval-batches", "1")
    config = (SCRATCH / "tiny" / "config.json").resolve()
    c = json.loads(config.read_text())
    c["max_position_embeddings"] = 8192
    config.write_text(json.dumps(c, indent=2))
    return SCRATCH / "tiny"


class Server:
    def __init__(self, model, *flags, env=None):
        self.proc = subprocess.Popen([MOEPP, "serve", "-m", str(model), "--port", "0", *flags],
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.log = []
        deadline = time.time() + 60
        self.port = None
        while time.time() < deadline and self.port is None:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"on http://[0-9.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        if self.port is None:
            raise RuntimeError("the server did not start: " + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def request(self, method, path, body=None, key=KEY, raw=None, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = "Bearer " + key
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        return r.status, dict(r.getheaders()), text

    def post(self, path, body, **kw):
        status, headers, text = self.request("POST", path, body, **kw)
        try:
            return status, headers, json.loads(text)
        except json.JSONDecodeError:
            return status, headers, text

    def stream(self, path, body):
        """The SSE events of a streaming request, as parsed JSON ("[DONE]" as the string)."""
        status, _, text = self.request("POST", path, dict(body, stream=True))
        events = []
        for block in text.split("\n\n"):
            if block.startswith("data: "):
                payload = block[len("data: "):]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
        return status, events

    def metric(self, name):
        _, _, text = self.request("GET", "/metrics")
        m = re.search(r"^" + re.escape(name) + r" ([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def read_logits(path):
    raw = pathlib.Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    t = json.loads(raw[8:8 + n])["logits"]
    a, b = t["data_offsets"]
    rows, vocab = t["shape"]
    values = struct.unpack("<%df" % (rows * vocab), raw[8 + n + a:8 + n + b])
    return [values[r * vocab:(r + 1) * vocab] for r in range(rows)]


def log_softmax_at(row, i):
    m = max(row)
    return row[i] - (m + math.log(sum(math.exp(v - m) for v in row)))


def background_load(server, n, stop_event, results):
    """n clients sampling long completions until told to stop: the batch the checks share."""
    def client(k):
        while not stop_event.is_set():
            status, _, body = server.post("/v1/completions", {"prompt": f"Line {k}: the", "max_tokens": 40,
                                                              "temperature": 0.9, "seed": k})
            results.append(status)
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    return threads


def main():
    if subprocess.run([MOEPP, "serve", "--help"], capture_output=True).returncode != 0 or \
            "without cpp-httplib" in subprocess.run([MOEPP, "serve", "-m", "/nonexistent"], capture_output=True,
                                                    text=True).stderr:
        print("SKIP: moepp was built without cpp-httplib (apt-get install libcpp-httplib-dev)")
        return 77
    model = make_model()
    name = model.name
    prompt = "Line 12: the quick brown"
    n_new = 16
    # What the library says, before any server runs.
    greedy_cli = run("generate", "-m", str(model), "-p", prompt, "-n", str(n_new), "--temp", "0", "-q").stdout
    greedy_cli = greedy_cli[:-1] if greedy_cli.endswith("\n") else greedy_cli  # the line end generate adds
    penalised_cli = run("generate", "-m", str(model), "-p", prompt, "-n", str(n_new), "--temp", "0", "-q",
                        "--frequency-penalty", "1.5", "--presence-penalty", "0.5").stdout
    penalised_cli = penalised_cli[:-1] if penalised_cli.endswith("\n") else penalised_cli
    ids = [int(x) for x in run("tokenize", "-m", str(model), "-p", prompt, "--ids-only").stdout.strip().split(",")]
    run("logits", "--model", str(model), "--text", prompt, "--out", str(SCRATCH / "logits.safetensors"))
    logits = read_logits(SCRATCH / "logits.safetensors")
    context = "Line 12: the quick brown fox jumps over the lazy dog 12.\nLine 13: the quick brown fox"
    context_ids = [int(x) for x in run("tokenize", "-m", str(model), "-p", context, "--ids-only").stdout.strip().split(",")]
    run("logits", "--model", str(model), "--text", context, "--out", str(SCRATCH / "context_logits.safetensors"))
    context_logits = read_logits(SCRATCH / "context_logits.safetensors")

    server = Server(model, "--api-key", KEY, "--max-seqs", "12", "--max-queue", "16")
    try:
        status, _, text = server.request("GET", "/health", key=None)
        check(status == 200 and json.loads(text)["status"] == "ok", "/health without a key: " + text)
        status, _, text = server.request("GET", "/v1/models")
        check(status == 200 and json.loads(text)["data"][0]["id"] == name, "/v1/models names the folder: " + text)

        # vLLM's tokenizer endpoints (lm-evaluation-harness's remote tokenizer): the ids
        # `moepp tokenize` gives, and back.
        status, _, text = server.request("GET", "/tokenizer_info")
        check(status == 200 and "eos_token" in json.loads(text), "/tokenizer_info names the EOS token: " + text)
        status, _, r = server.post("/tokenize", {"prompt": prompt})
        check(status == 200 and r["tokens"] == ids, f"/tokenize gives moepp tokenize's ids: {r}")
        status, _, r = server.post("/detokenize", {"tokens": ids[1:]})
        check(status == 200 and r["prompt"] == prompt, f"/detokenize gives the text back: {r}")

        stop = threading.Event()
        load_results = []
        threads = background_load(server, 8, stop, load_results)
        most = 0
        for _ in range(40):
            most = max(most, server.metric("moepp_running_sequences") or 0)
            time.sleep(0.025)
        check(most >= 2, f"the background requests run together (at most {most} running)")

        # Penalties and biases: greedy with OpenAI's penalties equals `moepp generate` with
        # them; a logit_bias of -100 on the most likely first token gives the second most
        # likely (by `moepp logits`), whose log-probability is reported unbiased.
        status, _, r = server.post("/v1/completions", {"prompt": prompt, "max_tokens": n_new, "temperature": 0,
                                                       "frequency_penalty": 1.5, "presence_penalty": 0.5})
        check(status == 200 and prompt + r["choices"][0]["text"] == penalised_cli and penalised_cli != greedy_cli,
              f"penalised greedy equals generate with the penalties: {r} vs {penalised_cli!r}")
        last = logits[len(ids) - 1]
        first, second = sorted(range(len(last)), key=lambda v: -last[v])[:2]
        status, _, r = server.post("/v1/completions", {"prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 1,
                                                       "logit_bias": {str(first): -100}})
        got = r["choices"][0]["logprobs"]["token_logprobs"][0] if status == 200 else None
        check(got is not None and abs(got - log_softmax_at(last, second)) <= 1e-4,
              f"logit_bias -100 on the first choice gives the second: {got} vs {log_softmax_at(last, second)}")
        status, _, r = server.post("/v1/completions", {"prompt": prompt, "logit_bias": {str(len(last)): 1}})
        check(status == 400 and r["error"]["param"] == "logit_bias", f"a bias outside the vocabulary: {status} {r}")

        # Greedy equals `moepp generate --temp 0`, token for token (as text).
        status, _, r = server.post("/v1/completions", {"model": name, "prompt": prompt, "max_tokens": n_new,
                                                       "temperature": 0})
        check(status == 200, f"greedy completion status {status}: {r}")
        if status == 200:
            got = prompt + r["choices"][0]["text"]
            check(got == greedy_cli, f"greedy under load equals generate: {got!r} vs {greedy_cli!r}")
            u = r["usage"]
            check(u["prompt_tokens"] == len(ids) and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"],
                  f"usage counts: {u}")
        # Seeded sampling is reproducible, under load and alone alike.
        body = {"prompt": prompt, "max_tokens": 20, "temperature": 0.8, "top_p": 0.9, "top_k": 20, "seed": 77}
        a = server.post("/v1/completions", body)[2]["choices"][0]["text"]
        b = server.post("/v1/completions", body)[2]["choices"][0]["text"]
        check(a == b and len(a) > 0, f"seeded sampling repeats: {a!r} vs {b!r}")
        # echo + logprobs with max_tokens 0 score the prompt: log-softmax of `moepp logits`.
        status, _, r = server.post("/v1/completions", {"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2})
        check(status == 200, f"echo scoring status {status}: {r}")
        if status == 200:
            lp = r["choices"][0]["logprobs"]
            check(r["choices"][0]["text"] == prompt, "echo returns the prompt: " + r["choices"][0]["text"])
            check(len(lp["token_logprobs"]) == len(ids) and lp["token_logprobs"][0] is None,
                  f"one log-probability per prompt token, none for the first: {lp['token_logprobs'][:3]}")
            worst = max(abs(lp["token_logprobs"][p] - log_softmax_at(logits[p - 1], ids[p])) for p in range(1, len(ids)))
            check(worst <= 1e-4, f"echo logprobs equal log-softmax of moepp logits (worst {worst:.2e})")
            check(all(len(t) == 2 for t in lp["top_logprobs"][1:]), "two alternatives per scored token")
        # As lm-evaluation-harness's local-completions scores: the prompt as a batch of one
        # token-id list, echo, logprobs 1 and max_tokens 1; the prompt's scores come first,
        # then the generated token's.
        status, _, r = server.post("/v1/completions", {"prompt": [ids], "max_tokens": 1, "echo": True, "logprobs": 1,
                                                       "temperature": 0, "seed": 1234})
        check(status == 200, f"lm-eval-style scoring status {status}: {r}")
        if status == 200:
            lp = r["choices"][0]["logprobs"]["token_logprobs"]
            worst = max(abs(lp[p] - log_softmax_at(logits[p - 1], ids[p])) for p in range(1, len(ids)))
            check(len(lp) == len(ids) + 1 and worst <= 1e-4,
                  f"batch-of-one token prompt scored like the text (worst {worst:.2e}, {len(lp)} scores)")
        # A batch of prompts with n = 2: choices prompt-major, each as its prompt alone gives.
        other = "Line 3: the"
        status, _, r = server.post("/v1/completions", {"prompt": [prompt, other], "n": 2, "max_tokens": 8,
                                                       "temperature": 0})
        alone = [server.post("/v1/completions", {"prompt": q, "max_tokens": 8, "temperature": 0})[2]["choices"][0]["text"]
                 for q in (prompt, other)]
        if status == 200:
            texts = [c["text"] for c in sorted(r["choices"], key=lambda c: c["index"])]
            other_ids = run("tokenize", "-m", str(model), "-p", other, "--ids-only").stdout.strip().split(",")
            check(texts == [alone[0], alone[0], alone[1], alone[1]],
                  f"a batch of 2 prompts x 2 choices gives each prompt's text: {texts!r} vs {alone!r}")
            check(r["usage"]["prompt_tokens"] == len(ids) + len(other_ids), f"batch usage counts each prompt: {r['usage']}")
        else:
            check(False, f"batch of prompts status {status}: {r}")
        # Streaming gives the same text as the whole response.
        status, events = server.stream("/v1/completions", {"prompt": prompt, "max_tokens": n_new, "temperature": 0})
        text = "".join(e["choices"][0]["text"] for e in events if isinstance(e, dict) and e["choices"])
        check(status == 200 and events and events[-1] == "[DONE]", "the stream ends with [DONE]")
        check(prompt + text == greedy_cli, f"streamed greedy text equals generate: {text!r}")
        finals = [e for e in events if isinstance(e, dict) and e["choices"] and e["choices"][0]["finish_reason"]]
        check(len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] in ("stop", "length"), "one finish_reason")
        chunks = [e for e in events if isinstance(e, dict)]
        check(all(e["choices"] for e in chunks) and chunks[-1].get("usage", {}).get("completion_tokens") == n_new and
              chunks[-1]["usage"]["prompt_tokens"] == len(ids),
              "every chunk has a choice (no usage chunk unasked); the last carries the usage: " + str(chunks[-1:]))
        # Streamed log-probabilities: each chunk carries those of the tokens generated since the
        # one before; together they are the whole response's (completions and chat).
        body = {"prompt": prompt, "max_tokens": n_new, "temperature": 0, "logprobs": 2}
        status, _, whole = server.post("/v1/completions", body)
        status_s, events = server.stream("/v1/completions", dict(body, stream=True))
        parts = [e["choices"][0]["logprobs"] for e in events if isinstance(e, dict) and e["choices"]
                 and e["choices"][0]["logprobs"]]
        if status == 200 and status_s == 200:
            w = whole["choices"][0]["logprobs"]
            got = {k: [x for p in parts for x in p[k]] for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
            # (values to 1e-5: the two ran in different batches beside the background load)
            worst = max([abs(a - b) for a, b in zip(got["token_logprobs"], w["token_logprobs"])] +
                        [abs(x[k] - y[k]) for x, y in zip(got["top_logprobs"], w["top_logprobs"]) for k in y])
            check(got["tokens"] == w["tokens"] and [list(x) for x in got["top_logprobs"]] ==
                  [list(y) for y in w["top_logprobs"]] and got["text_offset"] == w["text_offset"] and len(parts) > 1 and
                  worst <= 1e-5,
                  f"streamed logprobs in {len(parts)} chunks equal the whole response's: {got} vs {w}")
        else:
            check(False, f"logprobs whole {status}, streamed {status_s}")
        chat_lp = {"messages": [{"role": "user", "content": "Line 3: the"}], "max_tokens": 8, "temperature": 0,
                   "logprobs": True, "top_logprobs": 1}
        status, _, whole = server.post("/v1/chat/completions", chat_lp)
        status_s, events = server.stream("/v1/chat/completions", dict(chat_lp, stream=True))
        content = [x for e in events if isinstance(e, dict) and e["choices"] and e["choices"][0]["logprobs"]
                   for x in e["choices"][0]["logprobs"]["content"]]
        check(status == 200 and status_s == 200 and
              [x["token"] for x in content] == [x["token"] for x in whole["choices"][0]["logprobs"]["content"]],
              f"streamed chat logprobs equal the whole response's: {content} vs {whole}")
        status, _, r = server.post("/v1/completions", dict(body, stream=True, echo=True))
        check(status == 400 and r["error"]["param"] == "echo", f"a streamed prompt score is refused: {status} {r}")
        # stream_options.include_usage: then a last chunk with empty choices and the usage, as OpenAI sends it.
        status, events = server.stream("/v1/completions", {"prompt": prompt, "max_tokens": 4, "temperature": 0,
                                                           "stream_options": {"include_usage": True}})
        chunks = [e for e in events if isinstance(e, dict)]
        check(status == 200 and chunks and chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4,
              "include_usage ends with a usage chunk: " + str(chunks[-1:]))
        status, _, r = server.post("/v1/completions", {"prompt": prompt, "stream_options": {"include_usage": True}})
        check(status == 400 and r["error"]["param"] == "stream_options", f"stream_options without stream: {status} {r}")
        # Chat, whole and streamed.
        chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Line 3: the"}],
                "max_tokens": 12, "temperature": 0}
        status, _, r = server.post("/v1/chat/completions", chat)
        check(status == 200 and r["choices"][0]["message"]["role"] == "assistant", f"chat: {status} {r}")
        status, events = server.stream("/v1/chat/completions", chat)
        streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events
                           if isinstance(e, dict) and e["choices"])
        check(status == 200 and r["choices"][0]["message"]["content"] == streamed,
              f"streamed chat equals whole chat: {streamed!r}")
        # n choices, each its own seed.
        status, _, r = server.post("/v1/completions", {"prompt": prompt, "max_tokens": 8, "n": 3, "seed": 5})
        check(status == 200 and [c["index"] for c in r["choices"]] == [0, 1, 2], "n = 3 gives three choices")
        # n choices streamed: each choice's chunks join to the text it gives whole, and the
        # choices arrive interleaved (the second starts before the first has finished).
        body = {"prompt": prompt, "max_tokens": 24, "n": 2, "seed": 9, "temperature": 0.8, "ignore_eos": True}
        status, _, whole = server.post("/v1/completions", body)
        status_s, events = server.stream("/v1/completions", body)
        order = [c["index"] for e in events if isinstance(e, dict) for c in e["choices"] if c.get("text")]
        texts = ["".join(c["text"] for e in events if isinstance(e, dict) for c in e["choices"] if c["index"] == i)
                 for i in range(2)]
        check(status == 200 and status_s == 200 and texts == [c["text"] for c in whole["choices"]],
              f"streamed n = 2 equals whole n = 2: {texts!r}")
        check(1 in order and 0 in order[order.index(1):], f"the two streamed choices interleave: {order}")

        stop.set()
        for t in threads:
            t.join(timeout=120)
        check(load_results and all(s == 200 for s in load_results), f"the background requests succeeded: {set(load_results)}")

        # Scoring a context, then the context with a continuation (as evaluation harnesses
        # score each choice): the second takes the first's cache and its log-probabilities,
        # which equal log-softmax of `moepp logits` over the context.
        def score(text):
            status, _, r = server.post("/v1/completions", {"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 1})
            check(status == 200, f"scoring status {status}: {r}")
            return r["choices"][0]["logprobs"]["token_logprobs"] if status == 200 else []

        def worst_against_logits(token_logprobs):
            return max(abs(token_logprobs[p] - log_softmax_at(context_logits[p - 1], context_ids[p]))
                       for p in range(1, len(context_ids)))

        first_scores = score(context)
        before = server.metric("moepp_prompt_tokens_cached_total")
        second_scores = score(context + " jumps over the lazy dog")
        cached = server.metric("moepp_prompt_tokens_cached_total") - before
        if first_scores and second_scores:
            check(cached >= len(context_ids) - 2 and len(second_scores) > len(context_ids),
                  f"the continuation's scoring took the context's cache ({cached:.0f} of {len(context_ids)} tokens)")
            worst = max(worst_against_logits(first_scores), worst_against_logits(second_scores))
            check(worst <= 1e-4, f"scores from the cache equal log-softmax of moepp logits (worst {worst:.2e})")

        # A harness's batch: one request scoring a context with three continuations (token
        # ids, as lm-eval sends them). The prompts run together; the second and third copy the
        # first's context and its scores as it prefills, and score as each prompt alone does.
        def ids_of(text, *flags):
            return [int(x) for x in run("tokenize", "-m", str(model), "-p", text, "--ids-only", *flags).stdout.strip().split(",")]
        ctx2 = ids_of("Line 14: the quick brown fox jumps over the lazy dog 14.\nLine 15: the quick brown fox")
        batch = [ctx2 + ids_of(c, "--no-bos") for c in (" jumps over", " sleeps", " runs far away")]
        before = server.metric("moepp_prompt_tokens_cached_total")
        status, _, r = server.post("/v1/completions", {"prompt": batch, "max_tokens": 0, "echo": True, "logprobs": 1})
        cached = server.metric("moepp_prompt_tokens_cached_total") - before
        common = [next(i for i, (x, y) in enumerate(zip(batch[0], p)) if x != y) for p in batch[1:]]
        check(status == 200 and common[0] >= len(ctx2) and cached == sum(common) - 2,
              f"a batch of a context's continuations prefills the context once (copied {cached:.0f}; "
              f"{common} shared, one less of each expected)")
        if status == 200:
            got = [c["logprobs"]["token_logprobs"] for c in sorted(r["choices"], key=lambda c: c["index"])]
            alone = [server.post("/v1/completions", {"prompt": p, "max_tokens": 0, "echo": True, "logprobs": 1,
                                                     "cache_prompt": False})[2]["choices"][0]["logprobs"]["token_logprobs"]
                     for p in batch]
            worst = max(abs(x - y) for g, w in zip(got, alone) for x, y in zip(g[1:], w[1:]))
            check(all(len(g) == len(p) for g, p in zip(got, batch)) and worst <= 1e-4,
                  f"the batch's scores equal each prompt's scored alone (worst {worst:.2e})")

        # The prompt cache: a chat's next turn resends the conversation, whose first turn's
        # tokens (prompt and reply) come from the kept cache; the reply is the one the whole
        # prompt gives prefilled (cache_prompt false).
        turn1 = {"messages": [{"role": "system", "content": "Answer in the words of the corpus, line by line."},
                              {"role": "user", "content": "Line 3: the quick brown fox"}],
                 "max_tokens": 12, "temperature": 0}
        status, _, r1 = server.post("/v1/chat/completions", turn1)
        check(status == 200, f"chat turn 1: {status} {r1}")
        if status == 200:
            turn2 = dict(turn1, messages=turn1["messages"] + [
                {"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
                {"role": "user", "content": "Line 4: the"}])
            before = server.metric("moepp_prompt_tokens_cached_total")
            status, _, r2 = server.post("/v1/chat/completions", turn2)
            cached = server.metric("moepp_prompt_tokens_cached_total") - before
            status_w, _, whole = server.post("/v1/chat/completions", dict(turn2, cache_prompt=False))
            check(status == 200 and status_w == 200 and cached >= r1["usage"]["prompt_tokens"] - 1,
                  f"chat turn 2 starts from turn 1's cache ({cached:.0f} tokens; turn 1's prompt "
                  f"{r1['usage']['prompt_tokens']})")
            check(server.metric("moepp_prompt_tokens_cached_total") - before == cached,
                  "cache_prompt false prefills the whole prompt")
            if status == 200 and status_w == 200:
                got, want = r2["choices"][0]["message"]["content"], whole["choices"][0]["message"]["content"]
                check(got == want, f"chat turn 2 from the cache equals it prefilled whole: {got!r} vs {want!r}")

        # Every client mistake: a 4xx with the OpenAI error shape.
        def error_case(what, body, status_want, path="/v1/completions", raw=None, key=KEY):
            status, _, text = server.request("POST", path, body, raw=raw, key=key)
            try:
                err = json.loads(text)["error"]
                shaped = all(k in err for k in ("message", "type", "param", "code"))
            except (json.JSONDecodeError, KeyError, TypeError):
                shaped = False
            check(status == status_want and shaped, f"{what}: {status} {text[:200]}")

        error_case("malformed JSON", None, 400, raw="{not json")
        error_case("a number beyond double's range", None, 400, raw='{"prompt": "x", "top_p": 1e309}')
        error_case("a wrong type", {"prompt": "x", "temperature": "hot"}, 400)
        error_case("an unknown model", {"model": "gpt-4", "prompt": "x"}, 404)
        error_case("no prompt", {"max_tokens": 3}, 400)
        error_case("no messages", {"max_tokens": 3}, 400, path="/v1/chat/completions")
        error_case("max_tokens negative", {"prompt": "x", "max_tokens": -1}, 400)
        error_case("max_tokens beyond the context", {"prompt": "x", "max_tokens": 9000}, 400)
        error_case("temperature negative", {"prompt": "x", "temperature": -0.5}, 400)
        error_case("temperature NaN (not JSON)", None, 400, raw='{"prompt": "x", "temperature": NaN}')
        error_case("top_p zero", {"prompt": "x", "top_p": 0}, 400)
        error_case("cache_prompt not a boolean", {"prompt": "x", "cache_prompt": "yes"}, 400)
        error_case("top_p above 1", {"prompt": "x", "top_p": 1.5}, 400)
        error_case("n too large", {"prompt": "x", "n": 1000}, 400)
        error_case("a prompt longer than the context", {"prompt": [5] * 8300, "max_tokens": 1}, 400)
        error_case("a token id outside the vocabulary", {"prompt": [1, 99999]}, 400)
        error_case("no key", {"prompt": "x"}, 401, key=None)
        error_case("a wrong key", {"prompt": "x"}, 401, key="nope")
        error_case("a body over the limit", None, 413, raw=json.dumps({"prompt": "x" * (9 << 20)}))
        error_case("an unknown route", {"prompt": "x"}, 404, path="/v1/nothing")
        status, _, r = server.post("/v1/completions", {"prompt": prompt, "max_tokens": 4})
        check(status == 200, "a good request after all the bad ones succeeds")

        # A client that disconnects mid-stream: its sequence leaves the batch.
        before = server.metric("moepp_generated_tokens_total")
        sock = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps({"prompt": prompt, "max_tokens": 8000, "temperature": 1.0, "seed": 3, "stream": True})
        sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
        first = b""
        sock.settimeout(10)
        while b"data: " not in first:
            got = sock.recv(4096)
            if not got:
                break
            first += got
        sock.close()
        check(b"data: " in first, "the stream started before the disconnect")
        deadline = time.time() + 20
        while time.time() < deadline and server.metric("moepp_running_sequences") != 0:
            time.sleep(0.05)
        after = server.metric("moepp_generated_tokens_total")
        check(server.metric("moepp_running_sequences") == 0, "the disconnected sequence left the batch")
        check(after - before < 8000, f"it stopped early: {after - before:.0f} of 8000 tokens generated")
        check(server.metric("moepp_ffn_experts_per_token_mean") is not None, "/metrics has FFN experts per token")

        # A non-streaming client that disconnects while its text is generated: the same.
        before = server.metric("moepp_generated_tokens_total")
        sock = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps({"prompt": prompt, "max_tokens": 8000, "temperature": 1.0, "seed": 4, "ignore_eos": True})
        sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
        deadline = time.time() + 20
        while time.time() < deadline and server.metric("moepp_generated_tokens_total") - before < 5:
            time.sleep(0.05)
        started = server.metric("moepp_generated_tokens_total") - before
        sock.close()
        deadline = time.time() + 20
        while time.time() < deadline and server.metric("moepp_running_sequences") != 0:
            time.sleep(0.05)
        after = server.metric("moepp_generated_tokens_total")
        check(started >= 5 and server.metric("moepp_running_sequences") == 0,
              "the disconnected non-streaming sequence left the batch")
        check(after - before < 8000, f"it stopped early: {after - before:.0f} of 8000 tokens generated")
    finally:
        server.stop()
    check(server.proc.returncode == 0, f"SIGTERM on an idle server exits 0 (got {server.proc.returncode})")

    # The key from a file or from MOEPP_API_KEY, kept out of the process list.
    key_file = SCRATCH / "api-key"
    key_file.write_text("file-key\n")
    for source, server_args, env in (("--api-key-file", ["--api-key-file", str(key_file)], None),
                                     ("MOEPP_API_KEY", [], dict(os.environ, MOEPP_API_KEY="env-key"))):
        keyed = Server(model, *server_args, env=env)
        try:
            want = "file-key" if env is None else "env-key"
            without, _, _ = keyed.request("GET", "/v1/models", key=None)
            wrong, _, _ = keyed.request("GET", "/v1/models", key=want + "x")
            right, _, _ = keyed.request("GET", "/v1/models", key=want)
            check((without, wrong, right) == (401, 401, 200), f"the key from {source}: {without}, {wrong}, {right}")
        finally:
            keyed.stop()

    # 429 under an overfull queue: one running sequence, one waiting, many arriving. This
    # server runs q8_0 weights, so it keeps its KV caches in bf16 (--kv-dtype auto, the
    # default): half the bytes per position.
    small = Server(model, "--max-seqs", "1", "--max-queue", "1", "--dtype", "q8_0", "--chat-template", "mistral")
    c = json.loads((model / "config.json").read_text())
    kv_heads = c.get("num_key_value_heads", c["num_attention_heads"])
    bf16_bytes_per_position = c["num_hidden_layers"] * 2 * kv_heads * (c["hidden_size"] // c["num_attention_heads"]) * 2
    try:
        # A named chat template: Mixtral-Instruct's text, its <s> and </s> as BOS and EOS
        # tokens (one BOS, and the earlier reply closed by EOS, as the model was trained).
        chat = {"messages": [{"role": "user", "content": "Line 3:"}, {"role": "assistant", "content": "the quick"},
                             {"role": "user", "content": "Line 4:"}], "max_tokens": 1, "temperature": 0}
        status, _, r = small.post("/v1/chat/completions", chat)
        _, _, tokens = small.post("/tokenize", {"prompt": "<s>[INST] Line 3: [/INST]the quick</s>[INST] Line 4: [/INST]",
                                                "add_special_tokens": False})
        check(status == 200 and r["usage"]["prompt_tokens"] == tokens["count"],
              f"a mistral chat is its template's text with BOS and EOS tokens: {r.get('usage')} vs {tokens}")
        statuses, retry = [], []

        def burst():
            status, headers, _ = small.request("POST", "/v1/completions", {"prompt": prompt, "max_tokens": 2000},
                                               key=None)
            statuses.append(status)
            if status == 429:
                retry.append(headers.get("Retry-After"))
        threads = [threading.Thread(target=burst) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(429 in statuses and set(statuses) <= {200, 429}, f"an overfull queue answers 429: {statuses}")
        check(retry and all(r is not None for r in retry), f"429 carries Retry-After: {retry}")

        # SIGTERM drains: a running streamed request completes, then the server exits 0.
        result = {}

        def long_stream():
            result["r"] = small.stream("/v1/completions", {"prompt": prompt, "max_tokens": 2000, "seed": 1})
        t = threading.Thread(target=long_stream)
        t.start()
        deadline = time.time() + 20
        positions = kv_bytes = 0
        while time.time() < deadline and not positions:  # both from one /metrics snapshot
            _, _, text = small.request("GET", "/metrics")
            found = dict(re.findall(r"^(moepp_kv_cache_(?:positions|bytes)) ([0-9.e+-]+)$", text, re.M))
            positions = float(found.get("moepp_kv_cache_positions", 0))
            kv_bytes = float(found.get("moepp_kv_cache_bytes", 0))
        check(positions and kv_bytes == positions * bf16_bytes_per_position,
              f"bf16 KV caches beside q8_0 weights: {kv_bytes} bytes for {positions} positions "
              f"({bf16_bytes_per_position} each)")
        small.proc.send_signal(signal.SIGTERM)
        t.join(timeout=120)
        small.proc.wait(timeout=60)
        status, events = result.get("r", (0, []))
        check(status == 200 and events and events[-1] == "[DONE]", "the running request finished during the drain")
        check(small.proc.returncode == 0, f"the drained server exits 0 (got {small.proc.returncode})")
    finally:
        small.stop()
    print(f"serve checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
