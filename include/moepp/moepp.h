/* moepp.h: the C API of moepp. Load a model folder (any layout `moepp` reads), tokenize,
 * compute logits, generate text, read the routing statistics (how many FFN experts each
 * token used per MoE layer), train a model. Self-contained: it needs nothing but the C
 * standard headers and libmoepp_c.so (CMake: find_package(moepp) and moepp::moepp).
 *
 * Conventions
 *   - Every function but moepp_last_error, moepp_version, moepp_model_free and
 *     moepp_train_request_stop returns a moepp_status: MOEPP_OK (0) or an error code.
 *     moepp_last_error() then gives the message (per thread), e.g. "runs/x: not a model
 *     folder (no config.json)". No C++ exception ever leaves the library and no error
 *     aborts the process.
 *   - Variable-length results go into caller buffers: the function always writes the
 *     size it needs (*n_ids, *length, *n_layers) and returns MOEPP_BUFFER_TOO_SMALL when
 *     the capacity given is less; call once with capacity 0 to learn the size.
 *   - A moepp_model serialises the calls made on it (one at a time, from any thread);
 *     different models run in parallel. OpenMP threads: OMP_NUM_THREADS.
 *
 *   moepp_model* m;
 *   if (moepp_model_load("runs/a", "f32", &m) != MOEPP_OK) { puts(moepp_last_error()); ... }
 *   moepp_sampling s;  moepp_sampling_init(&s);  s.temperature = 0;   (greedy)
 *   moepp_generate(m, "And God said", &s, print_piece, NULL);
 *   moepp_model_free(m);
 *
 * docs/library.md describes the API, the libraries and the Python package over it. */
#ifndef MOEPP_MOEPP_H
#define MOEPP_MOEPP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOEPP_API_VERSION 2 /* 2: moepp_generate_with and its options */

typedef enum moepp_status {
  MOEPP_OK = 0,
  MOEPP_ERROR = 1,             /* the engine refused or failed: a bad folder or file, an id
                                  outside the vocabulary, non-finite logits, ... */
  MOEPP_INVALID_ARGUMENT = 2,  /* a NULL pointer or an out-of-range value given to the API */
  MOEPP_BUFFER_TOO_SMALL = 3,  /* the caller's buffer is too small; the needed size is written */
  MOEPP_OUT_OF_MEMORY = 4
} moepp_status;

/* The message of the calling thread's most recent failed call ("" before any); it stays
 * valid until that thread's next failed call. */
const char* moepp_last_error(void);
/* The library's version, "MAJOR.MINOR.PATCH". */
const char* moepp_version(void);

/* ---- models ------------------------------------------------------------------------ */

typedef struct moepp_model moepp_model;

/* Loads a model folder: config.json (MoE++ or Mixtral) and its weights (model.safetensors,
 * sharded safetensors, pytorch_model.bin, sharded .bin), and tokenizer.model when present.
 * dtype: "f32" (the training forward's weights), "bf16", "q8_0" or "q4" (large matrices packed
 * on load; docs/quantization.md); NULL means "f32". On success *out owns the model. */
moepp_status moepp_model_load(const char* dir, const char* dtype, moepp_model** out);
/* Frees a model (NULL is fine). */
void moepp_model_free(moepp_model* model);

moepp_status moepp_model_vocab_size(moepp_model* model, int32_t* vocab_size);
/* The longest sequence the model takes (max_position_embeddings). */
moepp_status moepp_model_max_length(moepp_model* model, int64_t* max_length);

/* ---- text ----------------------------------------------------------------------------- */

/* text -> token ids as generation sees a prompt: BOS first (when the tokenizer has one),
 * then the text's pieces. Needs the folder's tokenizer.model. */
moepp_status moepp_tokenize(moepp_model* model, const char* text, int32_t* ids, size_t capacity, size_t* n_ids);
/* token ids -> text (control tokens such as BOS and EOS give no text). Writes a
 * NUL-terminated string; *length is its length without the NUL, so capacity must be at
 * least *length + 1. */
moepp_status moepp_detokenize(moepp_model* model, const int32_t* ids, size_t n_ids, char* text, size_t capacity,
                              size_t* length);

/* ---- logits -------------------------------------------------------------------------- */

/* The logits of every position of one sequence of n_ids token ids: logits[i * vocab + v]
 * for i < n_ids (row-major [n_ids, vocab]; capacity counts floats and must be at least
 * n_ids * vocab). The same numbers as `moepp logits --model DIR --ids ... --dtype X` (whose
 * default KV cache, like this call's and moepp_generate's, is f32 beside f32 weights and bf16
 * beside bf16, q8_0 and q4 ones: docs/quantization.md).
 * Also sets the routing statistics (moepp_routing). */
moepp_status moepp_logits(moepp_model* model, const int32_t* ids, size_t n_ids, float* logits, size_t capacity);

/* ---- generation ---------------------------------------------------------------------- */

/* Sampling parameters; moepp_sampling_init sets the `moepp generate` defaults. */
typedef struct moepp_sampling {
  int32_t max_tokens; /* tokens to generate at most (128); generation also stops at EOS and
                         at the model's context */
  double temperature; /* 0.8; 0 is greedy (argmax, ties to the lower id) */
  int32_t top_k;      /* 40; 0: no limit */
  double top_p;       /* 0.95; in (0, 1], 1: no limit */
  uint64_t seed;      /* 1 */
} moepp_sampling;

moepp_status moepp_sampling_init(moepp_sampling* sampling);

/* Receives each new piece of the continuation (length bytes at piece, NUL-terminated; not
 * the prompt). Return 0 to go on, nonzero to stop generating. */
typedef int (*moepp_text_callback)(const char* piece, size_t length, void* user_data);

/* Continues prompt (encoded with BOS, like moepp_tokenize) with a KV cache, calling
 * on_text (may be NULL) as the text grows; `moepp generate` with the same parameters and
 * dtype prints the decoded prompt followed by exactly these pieces. A stop asked by the
 * callback is not an error. Sets the routing statistics to those of every token run
 * (the prompt and the generated tokens). */
moepp_status moepp_generate(moepp_model* model, const char* prompt, const moepp_sampling* sampling,
                            moepp_text_callback on_text, void* user_data);

/* What generation does beyond sampling (API version 2): stop strings, and the penalties and
 * min-p of `moepp generate` (docs/decisions.md, "Penalties, logit biases and min-p").
 * `size` is the struct's size as the caller was compiled (moepp_generation_options_init
 * sets it): the library reads only the fields it covers and keeps the defaults for the
 * rest, so a program goes on working with a later library that adds fields. */
typedef struct moepp_generation_options {
  size_t size;              /* sizeof(moepp_generation_options) */
  const char* const* stop;  /* n_stop non-empty strings (NULL when n_stop is 0): the text
                               ends before the first of them it contains, not shown */
  size_t n_stop;            /* 0 */
  double repeat_penalty;    /* 1 (off); > 0: divides the positive logits of tokens among the
                               last repeat_last_n (prompt included), multiplies negative ones */
  int32_t repeat_last_n;    /* 64; >= 0 */
  double presence_penalty;  /* 0; in [-2, 2]: lowers a token's logit once it was generated */
  double frequency_penalty; /* 0; in [-2, 2]: lowers it for each time it was generated */
  double min_p;             /* 0 (off); in [0, 1]: only tokens at least this likely relative to
                               the most likely, at the sampling temperature */
  const int32_t* logit_bias_ids;   /* n_logit_bias token ids (NULL when 0) whose logits get */
  const float* logit_bias_values;  /* these finite values added at every step (-100: banned) */
  size_t n_logit_bias;             /* 0 */
} moepp_generation_options;

moepp_status moepp_generation_options_init(moepp_generation_options* options);

/* moepp_generate with options (NULL: the defaults, which moepp_generate uses). The stop
 * strings are read during the call only. */
moepp_status moepp_generate_with(moepp_model* model, const char* prompt, const moepp_sampling* sampling,
                                 const moepp_generation_options* options, moepp_text_callback on_text,
                                 void* user_data);

/* ---- routing statistics ----------------------------------------------------------- */

/* Where the tokens of the last moepp_logits or moepp_generate call went, per MoE layer. */
typedef struct moepp_layer_routing {
  int32_t layer;                /* the decoder layer's index (0-based) */
  int32_t top_k;                /* expert slots per token */
  int64_t tokens;               /* tokens routed */
  double ffn_experts_per_token; /* mean FFN experts a token used (the MoE++ paper's measure, <= top_k) */
  double share_ffn, share_zero, share_copy, share_constant; /* shares of the slots per expert kind */
} moepp_layer_routing;

/* One entry per MoE layer into layers[0 .. *n_layers); *n_layers is 0 before any
 * moepp_logits or moepp_generate call. */
moepp_status moepp_routing(moepp_model* model, moepp_layer_routing* layers, size_t capacity, size_t* n_layers);

/* ---- training --------------------------------------------------------------------------- */

/* A training run, as `moepp train` does it: data_dir holds prepared shards (`moepp
 * prepare`: train.bin, val.bin, tokenizer.model); out_dir becomes a run folder (a model
 * folder plus optimizer and trainer state). moepp_train_options_init sets the
 * `moepp train` defaults. With resume set, the run in out_dir continues exactly where it
 * stopped, with its recorded batch, sequence, seed and schedule (the options' values for
 * those are not used) up to `steps`. */
typedef struct moepp_train_options {
  const char* data_dir;
  const char* out_dir;
  const char* preset;  /* "tiny", "small" (default), "paper-0.6b"; a new run only */
  int vanilla;         /* the preset's vanilla twin (no zero-computation experts) */
  int64_t steps;       /* 1000 */
  int64_t batch, seq;  /* 8 sequences of 128 tokens per micro-batch */
  int64_t accum;       /* 1 micro-batch per step */
  double lr;           /* 1e-3 peak learning rate */
  uint64_t seed;       /* 1 */
  int64_t checkpoint_every, eval_every; /* 0: at the end only */
  int64_t eval_batches;                 /* 16 */
  double time_limit_s;                  /* 0: no limit */
  int64_t stop_after;                   /* 0: run to steps */
  int resume;
  int quiet;                            /* 1 (default): no progress lines on stderr */
} moepp_train_options;

typedef struct moepp_train_result {
  int64_t steps_done;
  double last_loss, val_loss, tokens_per_s;
  int interrupted;  /* stopped by moepp_train_request_stop (a checkpoint was written) */
  int time_limited; /* stopped by time_limit_s or stop_after */
} moepp_train_result;

moepp_status moepp_train_options_init(moepp_train_options* options);
/* Trains; returns when the run finished or stopped, with its checkpoint written. */
moepp_status moepp_train(const moepp_train_options* options, moepp_train_result* result);
/* Asks the running moepp_train calls to write a checkpoint and return after their current
 * step (interrupted = 1). Async-signal-safe: call it from a SIGINT handler. A request
 * made while no training runs stops the next one after its first step; moepp_train
 * clears the request when it returns. */
void moepp_train_request_stop(void);

#ifdef __cplusplus
}
#endif

#endif /* MOEPP_MOEPP_H */
