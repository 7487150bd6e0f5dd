/* The C API (include/moepp/moepp.h) from C, linked against libmoepp_c.so only. On the
 * api_model fixture (tests/api/make_model.sh) it checks, against the `moepp` CLI run on the
 * same folder: logits for f32, bf16 and q8_0 (each against `moepp logits --dtype X`, to
 * 1e-6), greedy text (`moepp generate --temperature 0`), tokenize/detokenize, routing
 * statistics, a callback's stop, and the errors: missing and corrupt folders, bad
 * arguments, small buffers, ids outside the vocabulary; and that loading and scoring leave
 * no idle OpenMP workers behind (a program generating on another thread would be slowed). The logits again on the released
 * model's layout (HF_FOLDER, tests/fixtures/hf/released_bin_f32: pytorch_model.bin, no
 * tokenizer), 60 positions with logits of several units.
 * Usage: c_api_test MOEPP_CLI FIXTURE_DIR SCRATCH_DIR HF_FOLDER */
#include <dirent.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "moepp/moepp.h"

static int g_pass, g_fail;
#define CHECK(cond, ...)                                 \
  do {                                                   \
    if (cond) {                                          \
      ++g_pass;                                          \
    } else {                                             \
      ++g_fail;                                          \
      printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      printf(__VA_ARGS__);                               \
      printf("\n");                                      \
    }                                                    \
  } while (0)

static const char* g_cli;
static const char* g_model;
static const char* g_fixture;
static const char* g_scratch;

/* The whole output of a shell command (stdout), or NULL when it fails. */
static char* run_capture(const char* cmd) {
  FILE* p = popen(cmd, "r");
  if (!p) return NULL;
  size_t cap = 4096, len = 0;
  char* buf = malloc(cap);
  size_t got;
  while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
    len += got;
    if (cap - len - 1 == 0) buf = realloc(buf, cap *= 2);
  }
  buf[len] = '\0';
  if (pclose(p) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* Reads the f32 tensor "logits" of a safetensors file written by `moepp logits`: shape
 * [rows, cols] from the header, values after it. Returns NULL on any mismatch. */
static float* read_cli_logits(const char* path, long* rows, long* cols) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned char n8[8];
  float* out = NULL;
  if (fread(n8, 1, 8, f) == 8) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | n8[i];
    char* header = calloc(n + 1, 1);
    long b0 = 0, b1 = 0;
    const char *shape, *offsets;
    if (header && fread(header, 1, n, f) == n && strstr(header, "\"logits\"") && strstr(header, "\"F32\"") &&
        (shape = strstr(header, "\"shape\"")) && sscanf(strchr(shape, '['), "[%ld,%ld]", rows, cols) == 2 &&
        (offsets = strstr(header, "\"data_offsets\"")) && sscanf(strchr(offsets, '['), "[%ld,%ld]", &b0, &b1) == 2 &&
        b1 - b0 == *rows * *cols * 4) {
      out = malloc((size_t)(b1 - b0));
      if (fseek(f, (long)(8 + n + b0), SEEK_SET) != 0 || fread(out, 1, (size_t)(b1 - b0), f) != (size_t)(b1 - b0)) {
        free(out);
        out = NULL;
      }
    }
    free(header);
  }
  fclose(f);
  return out;
}

static int process_threads(void) {
  int n = 0;
  DIR* d = opendir("/proc/self/task");
  if (!d) return -1;
  for (struct dirent* e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}

/* The thread count once it is `want`, or after 5 s: a released worker ends on its own time, so
 * the kernel may list it a moment after the call that released it returned. */
static int process_threads_settled(int want) {
  struct timespec start, now, pause = {0, 1000000};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    const int n = process_threads();
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (n == want || now.tv_sec - start.tv_sec >= 5) return n;
    nanosleep(&pause, NULL);
  }
}

static void check_logits(const char* dir, const char* dtype, const int32_t* ids, size_t n, int32_t vocab) {
  moepp_model* m = NULL;
  const int threads_before = process_threads();
  moepp_status s = moepp_model_load(dir, dtype, &m);
  CHECK(s == MOEPP_OK, "load %s: %s", dtype, moepp_last_error());
  if (s != MOEPP_OK) return;
  int threads_after = process_threads_settled(threads_before);
  CHECK(threads_after == threads_before, "load %s left %d threads running, %d before", dtype, threads_after,
        threads_before);
  float* mine = malloc(n * (size_t)vocab * sizeof(float));
  s = moepp_logits(m, ids, n, mine, n * (size_t)vocab);
  CHECK(s == MOEPP_OK, "logits %s: %s", dtype, moepp_last_error());
  threads_after = process_threads_settled(threads_before);
  CHECK(threads_after == threads_before, "logits %s left %d threads running, %d before", dtype, threads_after,
        threads_before);

  char out[1024], cmd[4096], list[2048] = "";
  for (size_t i = 0; i < n; ++i) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", ids[i]);
  snprintf(out, sizeof out, "%s/logits_%s.safetensors", g_scratch, dtype);
  snprintf(cmd, sizeof cmd, "'%s' logits --model '%s' --ids %s --dtype %s --out '%s'", g_cli, dir, list, dtype, out);
  char* log = run_capture(cmd);
  CHECK(log != NULL, "the CLI failed: %s", cmd);
  free(log);
  long rows = 0, cols = 0;
  float* cli = read_cli_logits(out, &rows, &cols);
  CHECK(cli && rows == (long)n && cols == vocab, "%s: cli logits [%ld, %ld]", out, rows, cols);
  if (cli && rows == (long)n && cols == vocab) {
    double worst = 0;
    for (size_t i = 0; i < n * (size_t)vocab; ++i) {
      const double d = fabs((double)mine[i] - (double)cli[i]);
      if (!(d <= worst)) worst = d; /* NaN counts as the worst */
    }
    CHECK(worst <= 1e-6, "%s logits differ from `moepp logits` by %g", dtype, worst);
    printf("logits %s, %s: max |api - cli| = %g over [%zu, %d]\n", dir, dtype, worst, n, vocab);
  }
  free(cli);

  /* Routing of that call: every MoE layer saw the n tokens, k slots each. */
  size_t layers = 0;
  CHECK(moepp_routing(m, NULL, 0, &layers) == MOEPP_BUFFER_TOO_SMALL && layers >= 1, "routing count %zu", layers);
  moepp_layer_routing r[64];
  if (layers >= 1 && layers <= 64 && moepp_routing(m, r, 64, &layers) == MOEPP_OK) {
    for (size_t l = 0; l < layers; ++l) {
      const double shares = r[l].share_ffn + r[l].share_zero + r[l].share_copy + r[l].share_constant;
      CHECK(r[l].tokens == (int64_t)n && r[l].top_k >= 1, "layer %zu: %lld tokens, k %d", l, (long long)r[l].tokens,
            r[l].top_k);
      CHECK(fabs(shares - 1) < 1e-12, "layer %zu shares sum to %g", l, shares);
      /* FFN experts per token = k * (share of FFN slots) */
      CHECK(fabs(r[l].ffn_experts_per_token - r[l].top_k * r[l].share_ffn) < 1e-12, "layer %zu: %g FFN/token", l,
            r[l].ffn_experts_per_token);
      CHECK(l == 0 || r[l].layer > r[l - 1].layer, "layer indices increase");
    }
  }
  free(mine);
  moepp_model_free(m);
}

struct pieces {
  char text[8192];
  int calls, stop_after;
};

static int collect(const char* piece, size_t len, void* user) {
  struct pieces* p = user;
  CHECK(strlen(piece) == len, "piece is NUL-terminated at its length");
  strncat(p->text, piece, sizeof p->text - strlen(p->text) - 1);
  ++p->calls;
  return p->stop_after > 0 && p->calls >= p->stop_after;
}

static void check_generate(const char* dtype) {
  const char* prompt = "Line 3";
  moepp_model* m = NULL;
  if (moepp_model_load(g_model, dtype, &m) != MOEPP_OK) {
    CHECK(0, "load %s: %s", dtype, moepp_last_error());
    return;
  }
  moepp_sampling s;
  CHECK(moepp_sampling_init(&s) == MOEPP_OK, "sampling_init");
  CHECK(s.max_tokens == 128 && s.temperature == 0.8 && s.top_k == 40 && s.top_p == 0.95 && s.seed == 1,
        "the CLI's defaults");
  s.temperature = 0;
  s.max_tokens = 12;
  struct pieces got = {{0}, 0, 0};
  CHECK(moepp_generate(m, prompt, &s, collect, &got) == MOEPP_OK, "generate: %s", moepp_last_error());

  /* `moepp generate` prints the decoded prompt, the same pieces, then a newline. */
  int32_t ids[64];
  size_t n = 0, len = 0;
  char shown[256];
  CHECK(moepp_tokenize(m, prompt, ids, 64, &n) == MOEPP_OK && n >= 2 && ids[0] == 1, "tokenize: %zu ids", n);
  CHECK(moepp_detokenize(m, ids, n, shown, sizeof shown, &len) == MOEPP_OK && strcmp(shown, prompt) == 0,
        "detokenize gives '%s'", shown);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt '%s' -n 12 --temperature 0 --dtype %s", g_cli, g_model,
           prompt, dtype);
  char* cli = run_capture(cmd);
  char want[sizeof got.text + sizeof shown + 2];
  snprintf(want, sizeof want, "%s%s\n", shown, got.text);
  CHECK(cli && strcmp(cli, want) == 0, "%s: api '%s' vs cli '%s'", dtype, want, cli ? cli : "(failed)");
  printf("generate %s: '%s' in %d pieces\n", dtype, got.text, got.calls);
  free(cli);

  /* Routing of generate: the prompt and every generated token but the last one sampled. */
  size_t layers = 0;
  moepp_layer_routing r[64];
  CHECK(moepp_routing(m, r, 64, &layers) == MOEPP_OK && layers >= 1, "routing after generate");
  if (layers >= 1) CHECK(r[0].tokens >= (int64_t)n && r[0].tokens <= (int64_t)n + 12, "%lld tokens routed",
                         (long long)r[0].tokens);

  /* A callback returning nonzero stops after its piece; not an error. */
  struct pieces one = {{0}, 0, 1};
  CHECK(moepp_generate(m, prompt, &s, collect, &one) == MOEPP_OK && one.calls == 1, "stop: %d calls", one.calls);
  CHECK(got.calls < 2 || strncmp(got.text, one.text, strlen(one.text)) == 0, "the first piece is the same");
  moepp_model_free(m);
}

/* moepp_generate_with: penalties and min-p give `moepp generate`'s text with the same flags;
 * a stop string cuts the text before it; a struct of an older, shorter size is read only as
 * far as it reaches; bad options are refused. */
static void check_generation_options(void) {
  const char* prompt = "Line 3";
  moepp_model* m = NULL;
  if (moepp_model_load(g_model, "f32", &m) != MOEPP_OK) {
    CHECK(0, "load: %s", moepp_last_error());
    return;
  }
  moepp_sampling s;
  moepp_sampling_init(&s);
  s.temperature = 0;
  s.max_tokens = 16;
  moepp_generation_options o;
  CHECK(moepp_generation_options_init(&o) == MOEPP_OK && o.size == sizeof o && o.n_stop == 0 &&
            o.repeat_penalty == 1.0 && o.repeat_last_n == 64 && o.presence_penalty == 0 && o.min_p == 0,
        "generation options: the CLI's defaults");
  o.repeat_penalty = 1.1;
  o.presence_penalty = 0.5;
  o.frequency_penalty = 1.5;
  o.min_p = 0.05;
  struct pieces penalised = {{0}, 0, 0};
  CHECK(moepp_generate_with(m, prompt, &s, &o, collect, &penalised) == MOEPP_OK, "generate_with: %s",
        moepp_last_error());
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "'%s' generate --model '%s' --prompt '%s' -n 16 --temperature 0 --repeat-penalty 1.1 "
           "--presence-penalty 0.5 --frequency-penalty 1.5 --min-p 0.05",
           g_cli, g_model, prompt);
  char* cli = run_capture(cmd);
  char want[sizeof penalised.text + 64];
  snprintf(want, sizeof want, "%s%s\n", prompt, penalised.text);
  CHECK(cli && strcmp(cli, want) == 0, "penalised: api '%s' vs cli '%s'", want, cli ? cli : "(failed)");
  free(cli);
  struct pieces plain = {{0}, 0, 0};
  CHECK(moepp_generate(m, prompt, &s, collect, &plain) == MOEPP_OK && strcmp(plain.text, penalised.text) != 0,
        "the penalties change the greedy text: '%s'", plain.text);

  /* A stop string from the middle of the penalised text: the text ends before it. */
  const size_t len = strlen(penalised.text);
  char stop[3] = {0};
  if (len >= 6) memcpy(stop, penalised.text + len / 2, 2);
  const char* stops[] = {"never in this text", stop};
  o.stop = stops;
  o.n_stop = 2;
  struct pieces cut = {{0}, 0, 0};
  CHECK(len >= 6 && moepp_generate_with(m, prompt, &s, &o, collect, &cut) == MOEPP_OK, "generate_with a stop: %s",
        moepp_last_error());
  const char* at = strstr(penalised.text, stop);
  CHECK(at && strlen(cut.text) == (size_t)(at - penalised.text) && strncmp(cut.text, penalised.text, strlen(cut.text)) == 0,
        "stop '%s': '%s' of '%s'", stop, cut.text, penalised.text);

  /* An older caller's struct: only the fields its size covers are read. */
  moepp_generation_options old = o;
  old.size = offsetof(moepp_generation_options, repeat_penalty);
  old.repeat_penalty = -1; /* beyond its size: not read */
  struct pieces short_struct = {{0}, 0, 0};
  CHECK(moepp_generate_with(m, prompt, &s, &old, collect, &short_struct) == MOEPP_OK, "an older size: %s",
        moepp_last_error());
  const char* plain_at = strstr(plain.text, stop);
  CHECK(strncmp(short_struct.text, plain.text, strlen(short_struct.text)) == 0 &&
            (plain_at ? strlen(short_struct.text) == (size_t)(plain_at - plain.text) : strcmp(short_struct.text, plain.text) == 0),
        "an older size: the stop strings without the penalties: '%s' of '%s'", short_struct.text, plain.text);

  /* A logit bias of -100 on the greedy first token (by moepp_logits): `moepp generate
   * --logit-bias ID=-100`'s text, which starts otherwise. */
  int32_t ids[64];
  size_t n_ids = 0;
  static float logits[64 * 400];
  int32_t first = -1;
  if (moepp_tokenize(m, prompt, ids, 64, &n_ids) == MOEPP_OK &&
      moepp_logits(m, ids, n_ids, logits, sizeof logits / sizeof logits[0]) == MOEPP_OK) {
    const float* last = logits + (n_ids - 1) * 400;
    first = 0;
    for (int32_t v = 1; v < 400; ++v)
      if (last[v] > last[first]) first = v;
  }
  moepp_generation_options biased;
  moepp_generation_options_init(&biased);
  const int32_t bias_ids[] = {first};
  const float bias_values[] = {-100.0f};
  biased.logit_bias_ids = bias_ids;
  biased.logit_bias_values = bias_values;
  biased.n_logit_bias = 1;
  struct pieces banned = {{0}, 0, 0};
  CHECK(first >= 0 && moepp_generate_with(m, prompt, &s, &biased, collect, &banned) == MOEPP_OK, "logit bias: %s",
        moepp_last_error());
  snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt '%s' -n 16 --temperature 0 --logit-bias %d=-100",
           g_cli, g_model, prompt, first);
  cli = run_capture(cmd);
  snprintf(want, sizeof want, "%s%s\n", prompt, banned.text);
  CHECK(cli && strcmp(cli, want) == 0 && strcmp(banned.text, plain.text) != 0, "logit bias: api '%s' vs cli '%s' (plain '%s')",
        want, cli ? cli : "(failed)", plain.text);
  free(cli);
  biased.logit_bias_ids = NULL;
  CHECK(moepp_generate_with(m, prompt, &s, &biased, NULL, NULL) == MOEPP_INVALID_ARGUMENT, "bias ids NULL: %s",
        moepp_last_error());
  const int32_t outside[] = {400};
  biased.logit_bias_ids = outside;
  CHECK(moepp_generate_with(m, prompt, &s, &biased, NULL, NULL) == MOEPP_INVALID_ARGUMENT, "bias token 400: %s",
        moepp_last_error());

  moepp_generation_options bad;
  moepp_generation_options_init(&bad);
  bad.size = 0;
  CHECK(moepp_generate_with(m, prompt, &s, &bad, NULL, NULL) == MOEPP_INVALID_ARGUMENT, "size 0: %s", moepp_last_error());
  moepp_generation_options_init(&bad);
  bad.presence_penalty = 3;
  CHECK(moepp_generate_with(m, prompt, &s, &bad, NULL, NULL) == MOEPP_INVALID_ARGUMENT, "presence 3: %s",
        moepp_last_error());
  moepp_generation_options_init(&bad);
  bad.n_stop = 1;
  CHECK(moepp_generate_with(m, prompt, &s, &bad, NULL, NULL) == MOEPP_INVALID_ARGUMENT, "stop NULL: %s",
        moepp_last_error());
  const char* empty[] = {""};
  bad.stop = empty;
  CHECK(moepp_generate_with(m, prompt, &s, &bad, NULL, NULL) == MOEPP_INVALID_ARGUMENT, "an empty stop: %s",
        moepp_last_error());
  CHECK(moepp_generate_with(m, prompt, &s, NULL, NULL, NULL) == MOEPP_OK, "NULL options: the defaults");
  moepp_model_free(m);
}

/* A folder without tokenizer.model loads; the text functions say what is missing. */
static void check_no_tokenizer(const char* dir) {
  moepp_model* m = NULL;
  if (moepp_model_load(dir, "f32", &m) != MOEPP_OK) {
    CHECK(0, "load %s: %s", dir, moepp_last_error());
    return;
  }
  int32_t ids[8];
  size_t n = 0;
  CHECK(moepp_tokenize(m, "x", ids, 8, &n) == MOEPP_ERROR && strstr(moepp_last_error(), "tokenizer.model"),
        "no tokenizer: %s", moepp_last_error());
  moepp_sampling s;
  moepp_sampling_init(&s);
  CHECK(moepp_generate(m, "x", &s, NULL, NULL) == MOEPP_ERROR && strstr(moepp_last_error(), "tokenizer.model"),
        "generate without a tokenizer: %s", moepp_last_error());
  moepp_model_free(m);
}

static void check_errors(void) {
  moepp_model* m = (moepp_model*)&g_pass; /* must be reset to NULL on failure */
  char missing[1024];
  snprintf(missing, sizeof missing, "%s/no-such-folder", g_scratch);
  moepp_status s = moepp_model_load(missing, "f32", &m);
  CHECK(s == MOEPP_ERROR && m == NULL, "missing folder: status %d", s);
  CHECK(strlen(moepp_last_error()) > 0 && strstr(moepp_last_error(), "no-such-folder"), "message '%s'",
        moepp_last_error());
  printf("missing folder: %s\n", moepp_last_error());

  char corrupt[1024];
  snprintf(corrupt, sizeof corrupt, "%s/corrupt", g_fixture);
  for (int t = 0; t < 2; ++t) {
    s = moepp_model_load(corrupt, t ? "q8_0" : "f32", &m);
    CHECK(s == MOEPP_ERROR && m == NULL, "corrupt config.json: status %d", s);
    CHECK(strstr(moepp_last_error(), "config.json") != NULL, "message '%s'", moepp_last_error());
  }
  printf("corrupt config.json: %s\n", moepp_last_error());

  CHECK(moepp_model_load(g_model, "f16", &m) == MOEPP_INVALID_ARGUMENT && strstr(moepp_last_error(), "f16"),
        "bad dtype: %s", moepp_last_error());
  CHECK(moepp_model_load(NULL, "f32", &m) == MOEPP_INVALID_ARGUMENT, "NULL dir");
  CHECK(moepp_model_vocab_size(NULL, NULL) == MOEPP_INVALID_ARGUMENT, "NULL model");

  if (moepp_model_load(g_model, NULL, &m) != MOEPP_OK) {
    CHECK(0, "load: %s", moepp_last_error());
    return;
  }
  int32_t vocab = 0;
  CHECK(moepp_model_vocab_size(m, &vocab) == MOEPP_OK && vocab == 400, "vocab %d", vocab);
  int64_t max_len = 0;
  CHECK(moepp_model_max_length(m, &max_len) == MOEPP_OK && max_len > 16, "max length %lld", (long long)max_len);
  const int32_t bad[] = {1, 400};
  float out[2 * 400];
  CHECK(moepp_logits(m, bad, 2, out, 800) == MOEPP_ERROR && strstr(moepp_last_error(), "outside the vocabulary"),
        "id 400: %s", moepp_last_error());
  CHECK(moepp_logits(m, bad, 1, out, 399) == MOEPP_BUFFER_TOO_SMALL, "399 floats for [1, 400]");
  CHECK(moepp_logits(m, bad, 0, out, 800) == MOEPP_INVALID_ARGUMENT, "no ids");
  CHECK(moepp_logits(m, bad, (size_t)max_len + 1, out, 800) == MOEPP_ERROR &&
            strstr(moepp_last_error(), "exceeds max_position_embeddings"),
        "too long: %s", moepp_last_error());
  CHECK(moepp_logits(m, bad, SIZE_MAX / 2, out, 800) == MOEPP_ERROR, "absurd length: %s", moepp_last_error());
  int32_t ids[2];
  size_t n = 0;
  CHECK(moepp_tokenize(m, "Line 3: the quick brown fox", ids, 2, &n) == MOEPP_BUFFER_TOO_SMALL && n > 2,
        "tokenize into 2 ids: needs %zu", n);
  char small[2];
  size_t len = 0;
  const int32_t line[] = {1, 5, 9};
  CHECK(moepp_detokenize(m, line, 3, small, 2, &len) == MOEPP_BUFFER_TOO_SMALL && len >= 2, "needs %zu", len);
  moepp_sampling s2;
  moepp_sampling_init(&s2);
  s2.top_p = 0;
  CHECK(moepp_generate(m, "Line", &s2, NULL, NULL) == MOEPP_INVALID_ARGUMENT, "top_p 0: %s", moepp_last_error());
  moepp_model_free(m);
  moepp_model_free(NULL);
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: c_api_test MOEPP_CLI FIXTURE_DIR SCRATCH_DIR HF_FOLDER\n");
    return 2;
  }
  g_cli = argv[1];
  static char model[1024];
  snprintf(model, sizeof model, "%s/model", argv[2]);
  g_model = model;
  g_fixture = argv[2];
  g_scratch = argv[3];
  mkdir(g_scratch, 0755); /* may exist */
  printf("moepp %s, C API %d\n", moepp_version(), MOEPP_API_VERSION);
  CHECK(strcmp(moepp_version(), MOEPP_EXPECTED_VERSION) == 0, "version %s", moepp_version());
  const int32_t ids[] = {1, 5, 9, 12, 40, 7, 399, 3, 250, 18};
  const char* dtypes[] = {"f32", "bf16", "q8_0"};
  int32_t released[60];
  for (int i = 0; i < 60; ++i) released[i] = (int32_t)((i * 37 + 11) % 48); /* its vocabulary: 48 */
  for (int d = 0; d < 3; ++d) {
    check_logits(g_model, dtypes[d], ids, sizeof ids / sizeof ids[0], 400);
    check_logits(argv[4], dtypes[d], released, 60, 48);
  }
  check_no_tokenizer(argv[4]);
  check_generate("f32");
  check_generate("bf16");
  check_generate("q8_0");
  check_generation_options();
  check_errors();
  printf("c api: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
