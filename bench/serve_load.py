#!/usr/bin/env python3
"""Load for `moepp serve`: C concurrent clients, each sending R streaming completions of a
random P-token prompt (token ids) for T generated tokens (ignore_eos), one after the other.
Prints one JSON line: aggregate generated tokens/s over the wall time of the whole load,
time to first token (p50, p99) and inter-token latency (p50, p99, between streamed chunks).

Usage: serve_load.py --port N --clients C [--requests R] [--prompt P] [--tokens T] [--vocab V]
"""
import argparse
import http.client
import json
import random
import threading
import time


def percentile(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(q * len(v)))]


def one_request(port, prompt, tokens, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True, "ignore_eos": True})
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, r.status
    first, last, gaps, generated = None, None, [], 0
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
                generated = j["usage"]["completion_tokens"]
            if j["choices"] and j["choices"][0]["text"]:
                now = time.perf_counter()
                if first is None:
                    first = now - start
                else:
                    gaps.append(now - last)
                last = now
    conn.close()
    out.append({"ttft": first, "gaps": gaps, "generated": generated})


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--clients", type=int, required=True)
    a.add_argument("--requests", type=int, default=2)
    a.add_argument("--prompt", type=int, default=256)
    a.add_argument("--tokens", type=int, default=128)
    a.add_argument("--vocab", type=int, default=8192)
    args = a.parse_args()
    rng = random.Random(1)
    prompts = [[1] + [rng.randrange(3, args.vocab) for _ in range(args.prompt - 1)]
               for _ in range(args.clients * args.requests)]
    results = []

    def client(c):
        for r in range(args.requests):
            one_request(args.port, prompts[c * args.requests + r], args.tokens, results)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttft = [r["ttft"] for r in results]
    gaps = [g for r in results for g in r["gaps"]]
    print(json.dumps({"clients": args.clients, "requests": len(results), "wall_s": wall,
                      "generated": sum(r["generated"] for r in results),
                      "tokens_per_s": sum(r["generated"] for r in results) / wall,
                      "ttft_p50_s": percentile(ttft, 0.5), "ttft_p99_s": percentile(ttft, 0.99),
                      "itl_p50_s": percentile(gaps, 0.5), "itl_p99_s": percentile(gaps, 0.99)}))


if __name__ == "__main__":
    main()
