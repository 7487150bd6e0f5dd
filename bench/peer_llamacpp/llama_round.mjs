// llama.cpp's side of one round of bench/peer_llamacpp/run.sh, through node-llama-cpp's
// prebuilt CPU binary (version pinned in package-lock.json), doing what bench/peer_round
// does with moepp: load a GGUF (timed), prefill the prompt on an empty sequence twice (the
// process's first prefill, then again warm), then decode --decode tokens one at a time,
// each the greedy choice after the last. Prints one JSON object on stdout.
//
//   node llama_round.mjs --model F.gguf --ids FILE [--decode 128] [--threads 2]
//   node llama_round.mjs --model F.gguf --ids FILE --probs OUT.json [--positions 32]
//       instead: the next-token distribution (temperature 1, no top-k/top-p/min-p cut)
//       after each of the first --positions prompt tokens, as [[token, p], ...] lists, with
//       an f32 KV cache and no flash attention.
import fs from "node:fs";
import process from "node:process";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

function flags(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

const f = flags(process.argv.slice(2));
if (!f.model || !f.ids) throw new Error("usage: llama_round.mjs --model F.gguf --ids FILE [--decode 128] [--threads 2]");
const prompt = fs.readFileSync(f.ids, "utf8").split(",").map((s) => s.trim()).filter((s) => s).map(Number);
const decode = Number(f.decode ?? 128);
const threads = Number(f.threads ?? 2);
const peakRssGb = () => Number(/VmHWM:\s*(\d+)/.exec(fs.readFileSync("/proc/self/status", "utf8"))[1]) * 1024 / 1e9;
const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;

const t0 = process.hrtime.bigint();
// build "never": the prebuilt binary or fail, never a local build that would differ by machine.
const llama = await getLlama({ gpu: false, build: "never", maxThreads: threads, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: f.model, gpuLayers: 0 });
const context = await model.createContext({
  contextSize: prompt.length + decode + 16,
  batchSize: prompt.length,  // the whole prompt in one batch, as moepp prefills it
  threads,
  sequences: 1,
  // The agreement check compares f32 with f32: an f32 KV cache and no flash attention (on
  // the CPU it rounds to f16; log-probabilities then move 1e-3). Timing rounds keep
  // llama.cpp's defaults (f16 cache, flash attention "auto"), what its users run.
  ...(f.probs ? { experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", flashAttention: false } : {}),
});
const sequence = context.getSequence();
const loadS = seconds(t0);
const rssLoaded = process.memoryUsage().rss / 1e9;

if (f.probs) {
  const positions = Math.min(Number(f.positions ?? 32), prompt.length);
  const sampling = { temperature: 1, topK: 0, topP: 1, minP: 0 };
  const items = prompt.slice(0, positions).map((t) => [t, { generateNext: { probabilities: true, options: sampling } }]);
  const results = await sequence.controlledEvaluate(items);
  const dists = results.map((r) => [...r.next.probabilities.entries()]);
  fs.writeFileSync(f.probs, JSON.stringify({ engine: "llama.cpp", model: f.model, prompt: prompt.slice(0, positions), dists }));
  console.log(JSON.stringify({ engine: "llama.cpp", positions, vocab_returned: dists[0].length }));
} else {
  const prefill = [];
  for (let round = 0; round < 2; ++round) {
    await sequence.clearHistory();
    const t = process.hrtime.bigint();
    await sequence.evaluateWithoutGeneratingNewTokens(prompt);
    prefill.push(seconds(t));
  }
  // evaluate() takes the prompt's last token again to sample from; feed it the token after
  // the prompt instead by dropping the last prompt token and re-evaluating it (one token).
  await sequence.eraseContextTokenRanges([{ start: prompt.length - 1, end: prompt.length }]);
  let produced = 0;
  const t = process.hrtime.bigint();
  for await (const token of sequence.evaluate([prompt[prompt.length - 1]], { temperature: 0 })) {
    void token;
    if (++produced === decode) break;
  }
  const decodeS = seconds(t);
  console.log(JSON.stringify({
    engine: "llama.cpp", load_s: loadS, prompt: prompt.length,
    prefill_cold_tps: prompt.length / prefill[0], prefill_tps: prompt.length / prefill[1],
    decode, decode_tps: decode / decodeS, rss_loaded_gb: rssLoaded, rss_gb: process.memoryUsage().rss / 1e9,
    rss_peak_gb: peakRssGb(),
  }));
}
await context.dispose();
await model.dispose();
