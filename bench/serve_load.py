#!/usr/bin/env python3
"""Load for `moepp serve`. Two kinds:

- Completions (the default): C concurrent clients, each sending R streaming completions of
  a random P-token prompt (token ids) for T generated tokens (ignore_eos), one after the
  other (--n N: N sampled choices a request, streamed together; --shared-prefix S: every
  prompt begins with the same S tokens after BOS, as users of one system prompt send).
- Chats (--chat-turns N): C concurrent clients, each holding one conversation of N turns
  on /v1/chat/completions: a system message of --system words, then per turn a user
  message of --words words and a streamed reply of T tokens (greedy, ignore_eos), every
  request resending the whole conversation as chat clients do.
- Scoring (--score-choices K): C concurrent clients, each scoring R random P-token contexts
  with each of K random continuations of --continuation tokens, one request at a time, as
  evaluation harnesses score multiple-choice questions ("echo": true, "max_tokens": 0,
  "logprobs": 1 on the context and continuation together). --score-batch B sends B of these
  prompts a request, in order (a list of token-id lists, as lm-evaluation-harness's
  local-completions sends its batch_size).

--no-cache-prompt sends "cache_prompt": false (every prompt prefilled whole: the baseline of
the server's prompt cache).

Prints one JSON line: aggregate generated tokens/s over the wall time of the whole load,
time to first token (p50, p99) and inter-token latency (p50, p99, between streamed chunks);
for chats also the time to first token and the prompt's tokens by turn (medians over the
clients); for scoring, requests/s, scored tokens/s and request latency (p50, p99); for
both, the prompt tokens the server took from its prompt cache (its /metrics).

Usage: serve_load.py --port N --clients C [--requests R] [--prompt P] [--tokens T] [--vocab V] [--n N]
                     [--shared-prefix S] [--no-cache-prompt] [--seed S]
       serve_load.py --port N --clients C --chat-turns N [--system W] [--words W] [--tokens T]
                     [--no-cache-prompt] [--seed S]
       serve_load.py --port N --clients C --score-choices K [--requests R] [--prompt P]
                     [--continuation N] [--score-batch B] [--no-cache-prompt] [--seed S]
"""
import argparse
import http.client
import json
import random
import threading
import time

# Words of the KJV corpus the bench tokenizers are trained on: user messages are random
# sequences of them.
WORDS = ("and the of that he unto shall lord his they them in him not be is with all for thou thy was which "
         "my said god ye will have land from children israel king people house were upon out son day man "
         "hath there came before made also earth went against hand when even these one this come so").split()


def percentile(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(q * len(v)))]


def stream(port, path, body):
    """POSTs a streaming request; returns time to first text, the gaps between texts, the
    text and the usage chunk's counts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, (r.status, r.read()[:300])
    first, last, gaps, text, usage = None, None, [], "", {}
    buffer = b""
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            j = json.loads(event[6:])
            if j.get("usage"):
                usage = j["usage"]
            if not j["choices"]:
                continue
            c = j["choices"][0]
            piece = c.get("text") or c.get("delta", {}).get("content") or ""
            if piece:
                now = time.perf_counter()
                if first is None:
                    first = now - start
                else:
                    gaps.append(now - last)
                last = now
                text += piece
    conn.close()
    return first, gaps, text, usage


def one_request(port, prompt, args, out):
    ttft, gaps, _, usage = stream(port, "/v1/completions", {
        "prompt": prompt, "max_tokens": args.tokens, "temperature": 0 if args.n == 1 else 1, "seed": 7, "n": args.n,
        "stream": True, "ignore_eos": True, "cache_prompt": not args.no_cache_prompt})
    out.append({"ttft": ttft, "gaps": gaps, "generated": usage.get("completion_tokens", 0)})


def one_chat(port, rng, args, out):
    messages = [{"role": "system", "content": " ".join(rng.choice(WORDS) for _ in range(args.system))}]
    for turn in range(args.chat_turns):
        messages.append({"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(args.words))})
        ttft, gaps, text, usage = stream(port, "/v1/chat/completions", {
            "messages": messages, "max_tokens": args.tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "cache_prompt": not args.no_cache_prompt})
        messages.append({"role": "assistant", "content": text})
        out.append({"turn": turn, "ttft": ttft, "gaps": gaps, "generated": usage.get("completion_tokens", 0),
                    "prompt_tokens": usage.get("prompt_tokens", 0)})


def score_choices(port, rng, args, out):
    prompts = []
    for _ in range(args.requests):
        context = [1] + [rng.randrange(3, args.vocab) for _ in range(args.prompt - 1)]
        for _ in range(args.score_choices):
            prompts.append(context + [rng.randrange(3, args.vocab) for _ in range(args.continuation)])
    for first in range(0, len(prompts), args.score_batch):
        batch = prompts[first:first + args.score_batch]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        start = time.perf_counter()
        conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json"}, body=json.dumps({
            "prompt": batch[0] if args.score_batch == 1 else batch, "max_tokens": 0, "echo": True, "logprobs": 1,
            "cache_prompt": not args.no_cache_prompt}))
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body[:300])
        out.append({"latency": time.perf_counter() - start, "prompts": len(batch),
                    "prompt_tokens": json.loads(body)["usage"]["prompt_tokens"]})
        conn.close()


def cached_tokens(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith("moepp_prompt_tokens_cached_total "):
            return float(line.split()[1])
    return float("nan")


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--clients", type=int, required=True)
    a.add_argument("--requests", type=int, default=2)
    a.add_argument("--prompt", type=int, default=256)
    a.add_argument("--tokens", type=int, default=128)
    a.add_argument("--vocab", type=int, default=8192)
    a.add_argument("--chat-turns", type=int, default=0)
    a.add_argument("--system", type=int, default=100)
    a.add_argument("--words", type=int, default=40)
    a.add_argument("--n", type=int, default=1, help="completions: choices per request (sampled, seed 7)")
    a.add_argument("--shared-prefix", type=int, default=0,
                   help="completions: every prompt begins with the same this many random tokens (a system prompt)")
    a.add_argument("--score-choices", type=int, default=0)
    a.add_argument("--continuation", type=int, default=16)
    a.add_argument("--score-batch", type=int, default=1, help="scoring: prompts a request")
    a.add_argument("--no-cache-prompt", action="store_true")
    a.add_argument("--seed", type=int, default=1, help="the random prompts' and conversations' random words")
    args = a.parse_args()
    rng = random.Random(args.seed)
    shared = [rng.randrange(3, args.vocab) for _ in range(args.shared_prefix)]
    prompts = [[1] + shared + [rng.randrange(3, args.vocab) for _ in range(args.prompt - 1 - len(shared))]
               for _ in range(args.clients * args.requests)]
    results = []

    def client(c):
        if args.chat_turns:
            one_chat(args.port, random.Random(args.seed * 1000 + c), args, results)
            return
        if args.score_choices:
            score_choices(args.port, random.Random(args.seed * 1000 + c), args, results)
            return
        for r in range(args.requests):
            one_request(args.port, prompts[c * args.requests + r], args, results)

    cached_before = cached_tokens(args.port)
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if args.score_choices:
        latency = [r["latency"] for r in results]
        scored = sum(r["prompt_tokens"] for r in results)
        prompts = sum(r["prompts"] for r in results)
        report = {"clients": args.clients, "requests": len(results), "wall_s": wall, "score_choices": args.score_choices,
                  "score_batch": args.score_batch, "prompts": prompts, "prompts_per_s": prompts / wall,
                  "cache_prompt": not args.no_cache_prompt, "requests_per_s": len(results) / wall,
                  "scored_tokens_per_s": scored / wall, "latency_p50_s": percentile(latency, 0.5),
                  "latency_p99_s": percentile(latency, 0.99), "prompt_tokens": scored,
                  "prompt_tokens_cached": cached_tokens(args.port) - cached_before}
        print(json.dumps(report))
        return
    ttft = [r["ttft"] for r in results]
    gaps = [g for r in results for g in r["gaps"]]
    report = {"clients": args.clients, "requests": len(results), "wall_s": wall,
              "generated": sum(r["generated"] for r in results),
              "tokens_per_s": sum(r["generated"] for r in results) / wall,
              "ttft_p50_s": percentile(ttft, 0.5), "ttft_p99_s": percentile(ttft, 0.99),
              "itl_p50_s": percentile(gaps, 0.5), "itl_p99_s": percentile(gaps, 0.99)}
    if args.chat_turns:
        turns = range(args.chat_turns)
        report.update({"chat_turns": args.chat_turns, "cache_prompt": not args.no_cache_prompt,
                       "ttft_by_turn_s": [percentile([r["ttft"] for r in results if r["turn"] == t], 0.5) for t in turns],
                       "prompt_tokens_by_turn": [percentile([r["prompt_tokens"] for r in results if r["turn"] == t], 0.5)
                                                 for t in turns],
                       "prompt_tokens": sum(r["prompt_tokens"] for r in results),
                       "prompt_tokens_cached": cached_tokens(args.port) - cached_before})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
