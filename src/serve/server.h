// `moepp serve`: an OpenAI-compatible HTTP server (cpp-httplib) over the continuous-batching
// scheduler. Endpoints: GET /health, GET /v1/models, POST /v1/completions, POST
// /v1/chat/completions (JSON or Server-Sent Events), GET /metrics (Prometheus text).
// Safe by default: binds 127.0.0.1, --api-key requires "Authorization: Bearer KEY", bodies
// over a limit get 413, reads and writes time out, SIGTERM/SIGINT stop admitting, let
// running requests finish within a deadline, cancel the rest and return 0.
#pragma once
#include <cstdint>
#include <string>

namespace moepp {

struct ServeOptions {
  std::string model_dir, dtype = "f32", host = "127.0.0.1", api_key, chat_template_file;
  int port = 8080;
  int max_seqs = 16;
  int64_t ctx = 0;            // positions per sequence (0: the model's)
  int max_queue = 64;
  int64_t max_body_bytes = 8 << 20;
  int timeout_s = 600;        // read/write timeout of a connection
  double drain_s = 30;        // after SIGTERM: how long running requests may finish
  int threads = 0;
  bool quiet = false;
  std::string kv_dtype = "auto";  // auto, f32 or bf16: the KV caches' element type (model/kv_cache.h)
  bool prompt_cache = true;       // reuse finished sequences' caches for prompts that begin alike
};

// Runs until SIGTERM or SIGINT; returns the process exit status.
int run_server(const ServeOptions& opt);

}  // namespace moepp
