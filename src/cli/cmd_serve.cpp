// moepp serve: an OpenAI-compatible HTTP server with continuous batching (src/serve/).
#include <cstdlib>
#include <fstream>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "kernels/quant.h"
#include "serve/server.h"

namespace moepp::cli {

namespace {

// The file's first line, without its line end and surrounding spaces.
std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("serve: cannot read " + path);
  std::string line;
  std::getline(in, line);
  const char* space = " \t\r\n";
  const size_t first = line.find_first_not_of(space);
  return first == std::string::npos ? "" : line.substr(first, line.find_last_not_of(space) - first + 1);
}

}  // namespace

void add_serve(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "serve",
      "OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions (streaming), /v1/models, /health, "
      "/metrics; many requests decode together in one batch (docs/serve.md)");
  auto o = std::make_shared<ServeOptions>();
  cmd->add_option("-m,--model", o->model_dir, "Model folder (with tokenizer.model)")->required();
  cmd->add_option("--dtype", o->dtype, "Weights in memory: f32, bf16, q8_0 or q4 (packed on load; docs/quantization.md)")
      ->default_val("f32")
      ->check(CLI::IsMember(weight_type_names()));
  add_kv_dtype_option(cmd, &o->kv_dtype);
  cmd->add_option("--host", o->host, "Address to listen on (127.0.0.1: this machine only)")->default_val("127.0.0.1");
  cmd->add_option("--port", o->port, "Port (0: any free port, printed at start)")->default_val(8080)->check(CLI::Range(0, 65535));
  cmd->add_option("--max-seqs", o->max_seqs, "Sequences decoded together at most")
      ->default_val(16)
      ->check(positive_number());
  cmd->add_option("-c,--ctx", o->ctx, "Positions per sequence, prompt included (0: the model's context)")
      ->default_val(0)
      ->check(non_negative_number());
  cmd->add_option("--max-queue", o->max_queue, "Requests waiting beyond the running batch before 429")
      ->default_val(64)
      ->check(non_negative_number());
  auto* key = cmd->add_option("--api-key", o->api_key,
                              "Require \"Authorization: Bearer KEY\" on every endpoint but /health (any user of this "
                              "machine can read a command line: prefer --api-key-file or MOEPP_API_KEY)");
  auto key_file = std::make_shared<std::string>();
  auto* key_from_file =
      cmd->add_option("--api-key-file", *key_file, "Read the API key from the first line of FILE")->check(CLI::ExistingFile);
  key->excludes(key_from_file);
  cmd->add_option("--chat-template", o->chat_template_file,
                  "A Jinja chat template file (its family is recognised: chatml, llama2, mistral, zephyr) or one of those "
                  "names, or plain; default: the folder's tokenizer_config.json, else plain");
  cmd->add_option("--max-body", o->max_body_bytes, "Largest request body in bytes (413 beyond)")
      ->default_val(8 << 20)
      ->check(positive_number());
  cmd->add_option("--timeout", o->timeout_s, "Read and write timeout of a connection, seconds")
      ->default_val(600)
      ->check(positive_number());
  cmd->add_option("--drain", o->drain_s, "On SIGTERM: seconds running requests may take to finish before they are cancelled")
      ->default_val(30)
      ->check(non_negative_number());
  cmd->add_flag("!--no-prompt-cache", o->prompt_cache,
               "Prefill every prompt whole (default: a prompt that begins with the tokens of a finished sequence, "
               "as a chat's next turn does, starts from a copy of their KV cache; docs/serve.md)");
  add_threads_option(cmd, &o->threads);
  cmd->callback([o, key_file] {
#ifdef MOEPP_HAVE_HTTPLIB
    if (!key_file->empty()) {
      o->api_key = read_first_line(*key_file);
      if (o->api_key.empty()) fail("serve: " + *key_file + " holds no API key on its first line");
    } else if (o->api_key.empty()) {
      if (const char* env = std::getenv("MOEPP_API_KEY")) o->api_key = env;
    }
    apply_threads(o->threads);
    const int status = run_server(*o);
    if (status != 0) throw CLI::RuntimeError(status);
#else
    fail("serve: this moepp was built without cpp-httplib (apt-get install libcpp-httplib-dev, then rebuild)");
#endif
  });
}

}  // namespace moepp::cli
