#include "serve/server.h"

#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "data/tokenizer.h"
#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "kernels/quant.h"
#include "model/decoder_weights.h"
#include "model/model_folder.h"
#include "model/packed_model.h"
#include "serve/chat_template.h"
#include "serve/client_socket.h"
#include "serve/openai_api.h"
#include "serve/scheduler.h"
#include "serve/tokenizer_api.h"

namespace moepp {

using json = nlohmann::json;

namespace {

// Whether a request's credential equals the key, in a time that does not depend on where
// they first differ (an == would stop there, and its timing tells a guesser how far a
// guess got).
bool same_secret(const std::string& given, const std::string& key) {
  unsigned char diff = given.size() == key.size() ? 0 : 1;
  for (size_t i = 0; i < key.size(); ++i) diff |= static_cast<unsigned char>(key[i] ^ (i < given.size() ? given[i] : 0));
  return diff == 0;
}

// What every handler shares: the model, the tokenizer, the scheduler, the counters.
struct ServerState {
  ServeOptions opt;
  std::optional<LoadedModel> f32;
  std::unique_ptr<PackedModel> packed;
  ModelConfig cfg;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Scheduler> sched;
  std::string model_name;
  ChatTemplate chat = ChatTemplate::plain;
  std::string bos_text, eos_text;
  int64_t started = 0;
  std::atomic<uint64_t> next_seed{0}, next_id{0};
  std::atomic<int64_t> requests_completions{0}, requests_chat{0}, requests_failed{0}, rejected_queue_full{0};
};

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A model can emit bytes that are not UTF-8 (byte-fallback tokens of a broken character):
// JSON carries them as U+FFFD instead of failing the response.
std::string json_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(json_text(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status(), e.body()); }

// A token as the API shows it: SentencePiece's word mark as a space; BOS as empty text.
std::string token_text(const ServerState& st, int32_t id) {
  if (id == st.tok->bos_id()) return "";
  std::string p = st.tok->piece(id);
  std::string out;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p.compare(i, 3, "\xE2\x96\x81") == 0) {
      out += ' ';
      i += 2;
    } else {
      out += p[i];
    }
  }
  return out;
}

// Fills the token texts of a choice's log-probabilities.
void name_tokens(const ServerState& st, ApiChoice& c) {
  for (const auto& t : c.logprobs) {
    c.tokens.push_back(token_text(st, t.id));
    std::vector<std::string> top;
    for (const auto& [id, lp] : t.top) top.push_back(token_text(st, id));
    c.top_tokens.push_back(std::move(top));
  }
}

// The request's sequences, submitted: n per prompt, prompt-major (stream k runs prompt
// k / n with seed + k % n).
struct Submitted {
  std::vector<std::shared_ptr<Stream>> streams;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> prompt_texts;  // as echo shows them (BOS left out)
  ApiRequest request;
  size_t prompt_of(size_t stream) const { return stream / size_t(request.n); }
  int64_t prompt_tokens() const {
    int64_t total = 0;
    for (const auto& p : prompts) total += int64_t(p.size());
    return total;
  }
};

Submitted submit(ServerState& st, ApiRequest r) {
  Submitted s;
  const int64_t ctx = st.sched->context();
  const char* param = r.chat ? "messages" : "prompt";
  {
    std::lock_guard<std::mutex> lock(st.sched->tokenizer_mutex());
    if (r.chat) s.prompts.push_back(st.tok->encode_chat_prompt(render_chat(st.chat, r.messages, st.bos_text, st.eos_text)));
    for (const ApiPrompt& p : r.prompts) s.prompts.push_back(p.ids.empty() ? st.tok->encode_prompt(p.text) : p.ids);
    for (const auto& prompt : s.prompts) {
      for (int32_t id : prompt)
        if (id >= st.cfg.vocab_size)
          throw ApiError(400, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                  std::to_string(st.cfg.vocab_size), param, "invalid_value");
      std::vector<int32_t> text_ids(prompt.begin() + (!prompt.empty() && prompt[0] == st.tok->bos_id()), prompt.end());
      s.prompt_texts.push_back(st.tok->decode(text_ids));
    }
  }
  for (const auto& [id, bias] : r.logit_bias)
    if (id >= st.cfg.vocab_size)
      throw ApiError(400, "logit_bias: token id " + std::to_string(id) + " is outside the vocabulary of " +
                              std::to_string(st.cfg.vocab_size), "logit_bias", "invalid_value");
  int64_t longest = 0;
  for (const auto& prompt : s.prompts) {
    if (prompt.empty()) throw ApiError(400, "the prompt is empty", param, "invalid_value");
    const int64_t n = int64_t(prompt.size());
    if (n > ctx || (n == ctx && r.max_tokens != 0))
      throw ApiError(400, "the prompt is " + std::to_string(n) + " tokens; the context holds " + std::to_string(ctx) +
                              (r.max_tokens != 0 ? " with room for at least one generated token" : ""),
                     param, "context_length_exceeded");
    longest = std::max(longest, n);
  }
  if (r.max_tokens < 0) r.max_tokens = int(ctx - longest);  // chat without max_tokens
  if (!r.seeded) r.sampler.seed = uint64_t(unix_now()) * 1000003u + st.next_seed++;
  std::vector<SequenceRequest> sequences;
  for (const auto& prompt : s.prompts)
    for (int i = 0; i < r.n; ++i) {
      SequenceRequest q;
      q.prompt = prompt;
      q.options.max_tokens = r.max_tokens;
      q.options.sampler = r.sampler;
      q.options.sampler.seed = r.sampler.seed + uint64_t(i);
      q.options.stop = r.stop;
      q.options.ignore_eos = r.ignore_eos;
      q.options.presence_penalty = r.presence_penalty;
      q.options.frequency_penalty = r.frequency_penalty;
      q.options.logit_bias = r.logit_bias;
      q.options.repeat_penalty = r.repeat_penalty;
      q.options.repeat_last_n = r.repeat_last_n;
      q.top_logprobs = r.logprobs;
      q.prompt_logprobs = r.echo && r.logprobs >= 0 ? r.logprobs : -1;
      q.cache_prompt = r.cache_prompt;
      sequences.push_back(std::move(q));
    }
  try {
    s.streams = st.sched->submit_all(std::move(sequences));
  } catch (const QueueFull& e) {
    throw ApiError(429, std::string(e.what()) + "; retry shortly", "", "queue_full");
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "", "invalid_value");
  }
  s.request = std::move(r);
  return s;
}

// Thrown when a non-streaming client went away while its text was being generated.
struct ClientGone {};

// One choice's whole text. client_fd (or -1) is looked at every 100 ms while it waits: a
// client that left has its request's sequences cancelled, as a streaming one's are.
ApiChoice collect(ServerState& st, const Submitted& s, size_t k, int client_fd) {
  Stream& stream = *s.streams[k];
  const size_t p = s.prompt_of(k);
  ApiChoice c;
  std::string piece;
  for (Stream::Poll got; (got = stream.poll(piece, std::chrono::milliseconds(100))) != Stream::Poll::ended;) {
    if (got == Stream::Poll::text) c.text += piece;
    if (client_gone(client_fd)) throw ClientGone{};
  }
  if (!stream.error().empty()) throw ApiError(500, stream.error(), "", "generation_failed");
  c.finish_reason = finish_reason(stream.stats());
  if (s.request.logprobs >= 0) {
    if (s.request.echo) {
      TokenLogprob first;
      first.id = s.prompts[p][0];
      first.logprob = std::nanf("");
      c.logprobs.push_back(first);
      for (const auto& t : stream.prompt_logprobs()) c.logprobs.push_back(t);
    }
    for (const auto& t : stream.logprobs()) c.logprobs.push_back(t);
    std::lock_guard<std::mutex> lock(st.sched->tokenizer_mutex());
    name_tokens(st, c);
  }
  if (s.request.echo) c.text = s.prompt_texts[p] + c.text;
  return c;
}

void handle_generation(ServerState& st, const httplib::Request& req, httplib::Response& res, bool chat) {
  (chat ? st.requests_chat : st.requests_completions)++;
  if (!st.sched->admitting()) throw ApiError(503, "the server is shutting down", "", "shutting_down");
  const ApiLimits limits{st.model_name, st.sched->context(), st.opt.max_seqs, st.opt.max_seqs + st.opt.max_queue};
  ApiRequest r = chat ? parse_chat_request(req.body, limits) : parse_completion_request(req.body, limits);
  auto s = std::make_shared<Submitted>(submit(st, std::move(r)));
  const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(st.started) + "-" + std::to_string(st.next_id++);
  const int64_t created = unix_now();
  if (!s->request.stream) {
    std::vector<ApiChoice> choices;
    int64_t completion_tokens = 0;
    const int client_fd = find_client_socket(req.remote_addr, req.remote_port);
    try {
      for (size_t k = 0; k < s->streams.size(); ++k) {
        choices.push_back(collect(st, *s, k, client_fd));
        completion_tokens += s->streams[k]->stats().generated_tokens;
      }
    } catch (const ClientGone&) {
      for (auto& stream : s->streams) stream->cancel();
      res.status = 499;  // nobody reads it (nginx's "client closed request")
      return;
    } catch (...) {
      for (auto& stream : s->streams) stream->cancel();  // the other choices stop too
      throw;
    }
    const int64_t prompt_tokens = s->prompt_tokens();
    send_json(res, 200,
              chat ? chat_response(id, created, st.model_name, choices, prompt_tokens, completion_tokens,
                                   s->request.logprobs >= 0)
                   : completion_response(id, created, st.model_name, choices, prompt_tokens, completion_tokens));
    return;
  }
  // Server-Sent Events: one "data: {chunk}" per piece of text (with its tokens'
  // log-probabilities when asked), a last chunk per choice with its finish_reason (the
  // request's last one with the usage), a usage chunk if stream_options asks for one, then
  // "data: [DONE]". A failed write means the client went away: its sequences are cancelled
  // and leave the batch at the next step.
  ServerState* state = &st;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [state, s, id, created, chat](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          const std::string line = "data: " + json_text(j) + "\n\n";
          return sink.is_writable() && sink.write(line.data(), line.size());
        };
        auto cancel_all = [&] {
          for (auto& other : s->streams) other->cancel();
          return false;
        };
        // The choices (n a prompt) decode together; their chunks go out as each has text, in turns.
        const size_t n = s->streams.size();
        std::vector<bool> first(n, true), over(n, false);
        const bool logprobs = s->request.logprobs >= 0;
        std::vector<size_t> text_offset(n, 0);
        // The log-probabilities of the tokens generated since a choice's last chunk, named.
        auto logprobs_json = [&](size_t i, std::vector<TokenLogprob> fresh) -> json {
          if (!logprobs) return nullptr;
          ApiChoice c;
          c.logprobs = std::move(fresh);
          {
            std::lock_guard<std::mutex> lock(state->sched->tokenizer_mutex());
            name_tokens(*state, c);
          }
          return chat ? chat_logprobs(c) : completion_logprobs(c, text_offset[i]);
        };
        size_t left = n;
        int64_t completion_tokens = 0;
        if (s->request.echo && !chat) {
          for (size_t i = 0; i < n; ++i) {
            if (!send(completion_chunk(id, created, state->model_name, int(i), s->prompt_texts[s->prompt_of(i)], "")))
              return cancel_all();
            first[i] = false;
          }
        }
        while (left > 0) {
          // The first choice still running is waited on (briefly while others run, so that
          // none of them waits long for its turn); the others are only looked at.
          bool waited = false;
          for (size_t i = 0; i < n; ++i) {
            if (over[i]) continue;
            Stream& stream = *s->streams[i];
            std::string piece;
            std::vector<TokenLogprob> fresh;
            const auto wait = waited ? std::chrono::milliseconds(0) : std::chrono::milliseconds(left > 1 ? 5 : 1000);
            waited = true;
            const Stream::Poll got = stream.poll(piece, wait, logprobs ? &fresh : nullptr);
            if (got == Stream::Poll::nothing) continue;
            if (got == Stream::Poll::text) {
              const json lp = logprobs_json(i, std::move(fresh));
              const json chunk = chat ? chat_chunk(id, created, state->model_name, int(i), piece, "", first[i], lp)
                                      : completion_chunk(id, created, state->model_name, int(i), piece, "", lp);
              if (!send(chunk)) return cancel_all();
              first[i] = false;
              continue;
            }
            if (!stream.error().empty()) {
              send(ApiError(500, stream.error(), "", "generation_failed").body());
              return cancel_all();
            }
            completion_tokens += stream.stats().generated_tokens;
            const std::string reason = finish_reason(stream.stats());
            json last = chat ? chat_chunk(id, created, state->model_name, int(i), "", reason, first[i])
                             : completion_chunk(id, created, state->model_name, int(i), "", reason);
            over[i] = true;
            --left;
            // The request's last choice to finish carries the usage (as llama.cpp's server
            // sends it): a client that reads choices[0] of every chunk still gets its text.
            if (left == 0) last["usage"] = usage_json(s->prompt_tokens(), completion_tokens);
            if (!send(last)) return cancel_all();
          }
        }
        if (s->request.include_usage) {
          const json usage_chunk = {{"id", id},
                                    {"object", chat ? "chat.completion.chunk" : "text_completion"},
                                    {"created", created},
                                    {"model", state->model_name},
                                    {"choices", json::array()},
                                    {"usage", usage_json(s->prompt_tokens(), completion_tokens)}};
          send(usage_chunk);
        }
        const std::string done = "data: [DONE]\n\n";
        sink.write(done.data(), done.size());
        sink.done();
        return true;
      },
      [s](bool) {
        for (auto& stream : s->streams) stream->cancel();  // a no-op for finished ones
      });
}

std::string metrics_text(ServerState& st) {
  const SchedulerMetrics m = st.sched->metrics();
  std::ostringstream o;
  auto metric = [&](const char* name, const char* type, const char* help, const std::string& value) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << value << "\n";
  };
  auto num = [](double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  o << "# HELP moepp_requests_total Requests received, by endpoint.\n# TYPE moepp_requests_total counter\n"
    << "moepp_requests_total{endpoint=\"completions\"} " << st.requests_completions.load() << "\n"
    << "moepp_requests_total{endpoint=\"chat_completions\"} " << st.requests_chat.load() << "\n";
  metric("moepp_requests_failed_total", "counter", "Requests answered with an error status.",
         num(double(st.requests_failed.load())));
  metric("moepp_requests_rejected_queue_full_total", "counter", "Requests refused with 429 (queue full).",
         num(double(st.rejected_queue_full.load())));
  metric("moepp_prompt_tokens_total", "counter", "Prompt tokens admitted.", num(double(m.tokens_in)));
  metric("moepp_generated_tokens_total", "counter", "Tokens generated.", num(double(m.tokens_out)));
  metric("moepp_queue_length", "gauge", "Sequences waiting for admission.", num(double(m.queued)));
  metric("moepp_running_sequences", "gauge", "Sequences in the running batch.", num(double(m.running)));
  metric("moepp_batch_size", "gauge", "Sequences in the last decoder step.", num(m.last_batch_size));
  metric("moepp_decoder_steps_total", "counter", "Decoder steps run.", num(double(m.steps)));
  metric("moepp_decoder_threads", "gauge", "Threads a decoder step runs on.", num(double(m.decoder_threads)));
  metric("moepp_decoder_step_rows_total", "counter", "Token rows run through decoder steps.", num(double(m.step_rows)));
  metric("moepp_kv_cache_bytes", "gauge", "KV-cache memory held by running sequences.", num(double(m.kv_bytes_in_use)));
  metric("moepp_kv_cache_positions", "gauge", "KV-cache positions held by running sequences.",
         num(double(m.kv_positions_in_use)));
  metric("moepp_prompt_cache_bytes", "gauge", "KV-cache memory kept from finished sequences for later prompts.",
         num(double(m.kv_bytes_kept)));
  metric("moepp_prompt_cache_positions", "gauge", "KV-cache positions kept from finished sequences.",
         num(double(m.kv_positions_kept)));
  metric("moepp_prompt_tokens_cached_total", "counter",
         "Prompt tokens copied from the prompt cache or a running sequence instead of prefilled.",
         num(double(m.prompt_tokens_cached)));
  o << "# HELP moepp_ffn_experts_per_token Mean FFN experts per token routed over the last window of 64 steps "
       "(MoE++: below top-k where tokens chose zero-computation experts), by MoE layer.\n"
    << "# TYPE moepp_ffn_experts_per_token gauge\n";
  for (size_t l = 0; l < m.ffn_per_token_by_layer.size(); ++l)
    o << "moepp_ffn_experts_per_token{layer=\"" << l << "\"} " << num(m.ffn_per_token_by_layer[l]) << "\n";
  metric("moepp_ffn_experts_per_token_mean", "gauge", "Mean FFN experts per token over all MoE layers, last window.",
         num(m.ffn_per_token));
  return o.str();
}

}  // namespace

namespace {

// SIGINT / SIGTERM set this (any thread may take the signal: libraries start threads of
// their own before main, so a signal mask cannot route it to one); a watcher thread polls it.
std::atomic<int> g_stop_signal{0};
extern "C" void on_serve_signal(int sig) { g_stop_signal = sig; }

}  // namespace

int run_server(const ServeOptions& opt) {
  struct sigaction action {};
  action.sa_handler = on_serve_signal;
  sigemptyset(&action.sa_mask);
  struct sigaction old_int {}, old_term {};
  sigaction(SIGINT, &action, &old_int);
  sigaction(SIGTERM, &action, &old_term);

  ServerState st;
  st.opt = opt;
  st.started = unix_now();
  const WeightType type = parse_weight_type(opt.dtype);
  if (type == WeightType::f32) {
    st.f32.emplace(load_model_folder(opt.model_dir));
    st.cfg = st.f32->config;
  } else {
    st.packed = load_packed_model_folder(opt.model_dir, type);
    st.cfg = st.packed->config;
  }
  MOEPP_CHECK(file_exists(opt.model_dir + "/tokenizer.model"), "serve: ", opt.model_dir,
              " has no tokenizer.model; the server needs one to read prompts");
  st.tok = std::make_unique<Tokenizer>(opt.model_dir + "/tokenizer.model");
  st.bos_text = st.tok->bos_id() >= 0 ? st.tok->piece(st.tok->bos_id()) : "";
  st.eos_text = st.tok->eos_id() >= 0 ? st.tok->piece(st.tok->eos_id()) : "";
  if (!opt.chat_template_file.empty()) {
    // A family's name, else a file holding a template (or a name).
    const ChatTemplate named = detect_chat_template(opt.chat_template_file);
    if (opt.chat_template_file == chat_template_name(named)) {
      st.chat = named;
    } else {
      const MappedFile f(opt.chat_template_file);
      st.chat = detect_chat_template(std::string(reinterpret_cast<const char*>(f.data()), f.size()));
    }
  } else {
    st.chat = folder_chat_template(opt.model_dir);
  }
  std::filesystem::path p = std::filesystem::path(opt.model_dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  st.model_name = p.filename().string();
  DecoderWeights<float> weights = st.f32 ? DecoderWeights<float>::of(st.f32->params) : DecoderWeights<float>::of(*st.packed);
  st.sched = std::make_unique<Scheduler>(st.cfg, std::move(weights), *st.tok,
                                         SchedulerOptions{opt.max_seqs, opt.ctx, opt.max_queue, 256,
                                                          parse_kv_dtype(opt.kv_dtype, type), opt.prompt_cache});

  httplib::Server svr;
  const int pool = std::min(512, opt.max_seqs + opt.max_queue + 8);
  svr.new_task_queue = [pool] { return new httplib::ThreadPool(size_t(pool)); };
  svr.set_payload_max_length(size_t(opt.max_body_bytes));
  svr.set_read_timeout(opt.timeout_s, 0);
  svr.set_write_timeout(opt.timeout_s, 0);
  svr.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    if (opt.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (same_secret(req.get_header_value("Authorization"), "Bearer " + opt.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    ++st.requests_failed;
    send_error(res, ApiError(401, "a valid API key is required: Authorization: Bearer KEY", "", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors httplib answers itself (404 routes, 413 bodies, 400 framing) in the OpenAI shape.
  svr.set_error_handler([&](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ++st.requests_failed;
    const std::string why = res.status == 404   ? "no route " + req.method + " " + req.path
                            : res.status == 413 ? "the request body is larger than the limit of " +
                                                      std::to_string(opt.max_body_bytes) + " bytes"
                                                : "the request could not be read";
    send_error(res, ApiError(res.status, why, "", res.status == 413 ? "request_too_large" : ""));
  });
  svr.set_exception_handler([&](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    ++st.requests_failed;
    try {
      std::rethrow_exception(ep);
    } catch (const ApiError& e) {
      if (e.status() == 429) {
        ++st.rejected_queue_full;
        res.set_header("Retry-After", "1");
      }
      send_error(res, e);
    } catch (const std::exception& e) {
      send_error(res, ApiError(500, e.what(), "", "internal_error"));
    } catch (...) {
      send_error(res, ApiError(500, "unknown error", "", "internal_error"));
    }
  });
  svr.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
    send_json(res, st.sched->admitting() ? 200 : 503, {{"status", st.sched->admitting() ? "ok" : "shutting_down"}});
  });
  svr.Get("/v1/models", [&](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              {{"object", "list"},
               {"data", {{{"id", st.model_name}, {"object", "model"}, {"created", st.started}, {"owned_by", "moepp"}}}}});
  });
  svr.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(st), "text/plain; version=0.0.4");
  });
  // The tokenizer (vLLM's endpoints; lm-evaluation-harness's remote tokenizer reads them).
  auto with_tokenizer = [&](const auto& answer) {
    std::lock_guard<std::mutex> lock(st.sched->tokenizer_mutex());
    return answer();
  };
  svr.Get("/tokenizer_info", [&](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, with_tokenizer([&] { return tokenizer_info(*st.tok, st.sched->context()); }));
  });
  svr.Post("/tokenize", [&](const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, with_tokenizer([&] { return tokenize_request(*st.tok, req.body, st.sched->context()); }));
  });
  svr.Post("/detokenize", [&](const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, with_tokenizer([&] { return detokenize_request(*st.tok, req.body); }));
  });
  svr.Post("/v1/completions",
           [&](const httplib::Request& req, httplib::Response& res) { handle_generation(st, req, res, false); });
  svr.Post("/v1/chat/completions",
           [&](const httplib::Request& req, httplib::Response& res) { handle_generation(st, req, res, true); });

  int port = opt.port;
  if (port == 0) {
    port = svr.bind_to_any_port(opt.host);
    MOEPP_CHECK(port > 0, "serve: cannot bind ", opt.host, " to any port");
  } else {
    MOEPP_CHECK(svr.bind_to_port(opt.host, port), "serve: cannot bind ", opt.host, ":", port,
                " (in use, or not an address of this machine)");
  }
  std::fprintf(stderr, "serve: %s (%s, %s weights, chat template %s) on http://%s:%d (max %d sequences, context %lld)\n",
               st.model_name.c_str(), st.cfg.model_type.c_str(), opt.dtype.c_str(), chat_template_name(st.chat),
               opt.host.c_str(), port, opt.max_seqs, (long long)st.sched->context());

  std::atomic<bool> listening_ended{false};
  std::thread stopper([&] {
    while (g_stop_signal == 0 && !listening_ended) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (listening_ended) return;
    const int sig = g_stop_signal;
    std::fprintf(stderr, "serve: %s: no new requests; letting running ones finish (up to %.0f s)\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", opt.drain_s);
    st.sched->stop_admitting();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(opt.drain_s);
    while (!st.sched->idle() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!st.sched->idle()) std::fprintf(stderr, "serve: drain deadline reached; cancelling what still runs\n");
    st.sched->cancel_all();
    svr.stop();
  });
  const bool ok = svr.listen_after_bind();
  // listen returns once stop() ran (or on a socket failure): make sure the stopper ends.
  listening_ended = true;
  stopper.join();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  std::fprintf(stderr, "serve: stopped\n");
  return ok ? 0 : 1;
}

}  // namespace moepp
