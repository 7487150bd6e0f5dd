// The C++ API (include/moepp/moepp.hpp) linked against libmoepp_c.so only, on the
// api_model fixture. Independent expectations: greedy generation (KV cache) equals the
// argmax chain of full-sequence logits (recomputed for every token); the routing of a prompt is the same through generate() and
// logits(); training through the API writes the same model, bit for bit, as `moepp train`
// with the same options; a stop request checkpoints after one step and the resumed run
// ends on the uninterrupted run's weights; errors come out as moepp::Error.
// Usage: cpp_api_test MOEPP_CLI FIXTURE_DIR SCRATCH_DIR
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "moepp/moepp.hpp"

namespace {

int g_pass = 0, g_fail = 0;

void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_pass;
  } else {
    ++g_fail;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const moepp::Error& e) {
    return e.what();
  }
  return "";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "(popen failed)";
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  return rc == 0 ? out : "(failed: " + cmd + ")";
}

// On bf16 weights, where logits() and generate() both run a Session (on f32, logits() runs
// the training forward like `moepp logits`, whose sums differ in the last bits).
void check_generation(const std::string& model_dir) {
  auto m = moepp::Model::load(model_dir, "bf16");
  const std::string prompt = "Line 7";
  const auto prompt_ids = m.tokenize(prompt);
  check(prompt_ids.size() >= 2 && prompt_ids[0] == 1, "tokenize starts with BOS");
  check(m.detokenize(prompt_ids) == prompt, "detokenize(tokenize(p)) == p");

  // Greedy decoding, computed here from full-sequence logits (no KV cache).
  const int V = m.vocab_size(), n_new = 10, eos = 2;
  std::vector<int32_t> seq = prompt_ids;
  for (int i = 0; i < n_new; ++i) {
    const auto lg = m.logits(seq);
    const float* last = lg.data() + (seq.size() - 1) * size_t(V);
    const int32_t next = int32_t(std::max_element(last, last + V) - last);  // first maximum: ties to the lower id
    if (next == eos) break;
    seq.push_back(next);
  }
  const std::string want = m.detokenize(seq).substr(prompt.size());

  moepp::Sampling greedy;
  greedy.temperature = 0;
  greedy.max_tokens = n_new;
  std::string streamed;
  int pieces = 0;
  const std::string got = m.generate(prompt, greedy, [&](const std::string& piece) {
    streamed += piece;
    ++pieces;
    return true;
  });
  check(got == want, "greedy generate '" + got + "' == argmax chain '" + want + "'");
  check(streamed == got, "the pieces make the returned text");
  std::printf("greedy: '%s' (%d pieces)\n", got.c_str(), pieces);
  const auto routed = m.routing();
  check(!routed.empty() && routed[0].tokens == int64_t(seq.size()),
        "generate routed the prompt and the generated tokens: " + std::to_string(routed.empty() ? -1 : routed[0].tokens) +
            " vs " + std::to_string(seq.size()));

  // OpenAI's penalties, computed here over the same logits: a token's logit raised by 1.5 for
  // each time it was generated and 0.5 once it was (negative penalties: greedy text that
  // never repeats a token would not show positive ones); and a stop string from that text.
  std::vector<int32_t> pen = prompt_ids;
  for (int i = 0; i < n_new; ++i) {
    auto lg = m.logits(pen);
    float* last = lg.data() + (pen.size() - 1) * size_t(V);
    for (size_t j = prompt_ids.size(); j < pen.size(); ++j) last[pen[j]] += 1.5f;
    std::vector<int32_t> distinct(pen.begin() + std::ptrdiff_t(prompt_ids.size()), pen.end());
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    for (int32_t t : distinct) last[t] += 0.5f;
    const int32_t next = int32_t(std::max_element(last, last + V) - last);
    if (next == eos) break;
    pen.push_back(next);
  }
  const std::string want_pen = m.detokenize(pen).substr(prompt.size());
  moepp::Sampling penalised = greedy;
  penalised.frequency_penalty = -1.5;
  penalised.presence_penalty = -0.5;
  const std::string got_pen = m.generate(prompt, penalised);
  check(got_pen == want_pen && want_pen != want, "penalised generate '" + got_pen + "' == '" + want_pen + "'");
  // A logit bias of -100 on the greedy first token, against the chain with it applied.
  std::vector<int32_t> biased_seq = prompt_ids;
  const int32_t banned = seq.size() > prompt_ids.size() ? seq[prompt_ids.size()] : 0;
  for (int i = 0; i < n_new; ++i) {
    auto lg = m.logits(biased_seq);
    float* last = lg.data() + (biased_seq.size() - 1) * size_t(V);
    last[banned] -= 100.0f;
    const int32_t next = int32_t(std::max_element(last, last + V) - last);
    if (next == eos) break;
    biased_seq.push_back(next);
  }
  moepp::Sampling biased = greedy;
  biased.logit_bias = {{banned, -100.0f}};
  const std::string got_biased = m.generate(prompt, biased), want_biased = m.detokenize(biased_seq).substr(prompt.size());
  check(got_biased == want_biased && got_biased != want,
        "logit_bias generate '" + got_biased + "' == '" + want_biased + "'");
  penalised.stop = {"not in it", want_pen.substr(want_pen.size() / 2, 2)};
  const std::string cut = m.generate(prompt, penalised);
  check(want_pen.size() >= 6 && cut == want_pen.substr(0, want_pen.find(penalised.stop[1])),
        "stop '" + penalised.stop[1] + "': '" + cut + "' of '" + want_pen + "'");

  // Stop after two pieces; an exception from the callback comes out of generate().
  int calls = 0;
  const std::string two = m.generate(prompt, greedy, [&](const std::string&) { return ++calls < 2; });
  check(calls == 2 && got.compare(0, two.size(), two) == 0, "the callback stopped generation after 2 pieces");
  bool thrown = false;
  try {
    m.generate(prompt, greedy, [](const std::string&) -> bool { throw std::logic_error("from the callback"); });
  } catch (const std::logic_error& e) {
    thrown = std::string(e.what()) == "from the callback";
  }
  check(thrown, "the callback's exception comes out of generate()");

  // The routing of the prompt alone: the same through generate (max_tokens 0) and logits.
  moepp::Sampling none = greedy;
  none.max_tokens = 0;
  check(m.generate(prompt, none).empty(), "max_tokens 0 generates nothing");
  const auto by_generate = m.routing();
  m.logits(prompt_ids);
  const auto by_logits = m.routing();
  bool same = by_generate.size() == by_logits.size() && !by_logits.empty();
  for (size_t l = 0; same && l < by_logits.size(); ++l)
    same = by_generate[l].layer == by_logits[l].layer && by_generate[l].tokens == int64_t(prompt_ids.size()) &&
           by_generate[l].tokens == by_logits[l].tokens &&
           by_generate[l].ffn_experts_per_token == by_logits[l].ffn_experts_per_token &&
           by_generate[l].share_zero == by_logits[l].share_zero;
  check(same, "a prompt routes the same through generate() and logits()");
  for (const auto& l : by_logits)
    std::printf("layer %d: %.3f FFN experts per token (k %d, %lld tokens)\n", l.layer, l.ffn_experts_per_token,
                l.top_k, (long long)l.tokens);
}

void check_errors(const std::string& fixture) {
  const std::string missing = error_of([&] { moepp::Model::load(fixture + "/nothing-here"); });
  check(missing.find("nothing-here") != std::string::npos, "missing folder: '" + missing + "'");
  const std::string corrupt = error_of([&] { moepp::Model::load(fixture + "/corrupt", "bf16"); });
  check(corrupt.find("config.json") != std::string::npos, "corrupt config: '" + corrupt + "'");
  auto m = moepp::Model::load(fixture + "/model", "q8_0");
  const std::string vocab = error_of([&] { m.logits({1, 2, 400}); });
  check(vocab.find("outside the vocabulary") != std::string::npos, "id 400: '" + vocab + "'");
  check(error_of([&] { m.logits({}); }).find("no token ids") != std::string::npos, "no ids");
  check(m.logits({1, 2}).size() == 2 * size_t(m.vocab_size()), "the model works after errors");
  bool runtime = false;
  try {
    moepp::Model::load(fixture + "/corrupt");
  } catch (const std::runtime_error&) {
    runtime = true;
  }
  check(runtime, "moepp::Error is a std::runtime_error");
}

moepp::TrainOptions tiny(const std::string& data, const std::string& out, int64_t steps) {
  moepp::TrainOptions o;
  o.data_dir = data;
  o.out_dir = out;
  o.preset = "tiny";
  o.steps = steps;
  o.batch = 2;
  o.seq = 16;
  o.eval_batches = 1;
  return o;
}

void check_training(const std::string& cli, const std::string& fixture, const std::string& scratch) {
  const std::string data = fixture + "/data";
  for (const char* d : {"/api", "/cli", "/stopped"}) std::filesystem::remove_all(scratch + d);

  const auto r = moepp::train(tiny(data, scratch + "/api", 4));
  check(r.steps_done == 4 && !r.interrupted && std::isfinite(r.val_loss) && r.val_loss > 0,
        "train: 4 steps, val loss " + std::to_string(r.val_loss));
  const std::string line = run("'" + cli + "' train --data '" + data + "' --out '" + scratch +
                               "/cli' --preset tiny --steps 4 --batch 2 --seq 16 --eval-batches 1 2>/dev/null");
  double cli_val = -1;
  const auto at = line.find("\"val_loss\": ");
  if (at != std::string::npos) cli_val = std::strtod(line.c_str() + at + 12, nullptr);
  check(std::fabs(cli_val - r.val_loss) < 1e-6, "val loss: API " + std::to_string(r.val_loss) + ", CLI " + line);
  const std::string weights = read_file(scratch + "/api/model.safetensors");
  check(!weights.empty() && weights == read_file(scratch + "/cli/model.safetensors"),
        "the API and the CLI train the same weights, bit for bit");

  // A stop requested before the run stops it after its first step, with a checkpoint;
  // the request is then cleared, and resuming ends on the uninterrupted weights.
  moepp::request_training_stop();
  const auto stopped = moepp::train(tiny(data, scratch + "/stopped", 4));
  check(stopped.interrupted && stopped.steps_done == 1, "stopped after step " + std::to_string(stopped.steps_done));
  check(read_file(scratch + "/stopped/trainer_state.json").find("\"step\": 1") != std::string::npos,
        "the checkpoint records step 1");
  auto resume = tiny(data, scratch + "/stopped", 4);
  resume.resume = true;
  const auto resumed = moepp::train(resume);
  check(resumed.steps_done == 4 && !resumed.interrupted, "resumed to step " + std::to_string(resumed.steps_done));
  check(read_file(scratch + "/stopped/model.safetensors") == weights, "stop + resume == the uninterrupted run");
  const std::string bad = error_of([&] { moepp::train(tiny(fixture + "/no-data", scratch + "/x", 2)); });
  check(!bad.empty(), "training without data fails with '" + bad + "'");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: cpp_api_test MOEPP_CLI FIXTURE_DIR SCRATCH_DIR\n");
    return 2;
  }
  const std::string cli = argv[1], fixture = argv[2], scratch = argv[3];
  std::filesystem::create_directories(scratch);
  try {
    check_generation(fixture + "/model");
    check_errors(fixture);
    check_training(cli, fixture, scratch);
  } catch (const std::exception& e) {
    check(false, std::string("unexpected exception: ") + e.what());
  }
  std::printf("c++ api: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
