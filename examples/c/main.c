/* moepp from C: load a model folder, print its greedy continuation of a prompt the way
 * `moepp generate --temperature 0` prints it (the decoded prompt, then the pieces as they
 * come, then a newline), and the routing of those tokens on stderr.
 * Usage: moepp_example_c MODEL_DIR PROMPT [MAX_TOKENS] [DTYPE] */
#include <moepp/moepp.h>
#include <stdio.h>
#include <stdlib.h>

static int print_piece(const char* piece, size_t length, void* user_data) {
  (void)user_data;
  fwrite(piece, 1, length, stdout);
  fflush(stdout);
  return 0; /* nonzero would stop generation */
}

static int fail(const char* what) {
  fprintf(stderr, "moepp_example_c: %s: %s\n", what, moepp_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL_DIR PROMPT [MAX_TOKENS] [DTYPE]\n", argv[0]);
    return 2;
  }
  moepp_model* model = NULL;
  if (moepp_model_load(argv[1], argc > 4 ? argv[4] : "f32", &model) != MOEPP_OK) return fail("load");

  /* The prompt as generation sees it, decoded back: what the CLI prints first. */
  int32_t ids[512];
  size_t n = 0, length = 0;
  char prompt[4096];
  if (moepp_tokenize(model, argv[2], ids, 512, &n) != MOEPP_OK) return fail("tokenize");
  if (moepp_detokenize(model, ids, n, prompt, sizeof prompt, &length) != MOEPP_OK) return fail("detokenize");
  fputs(prompt, stdout);

  moepp_sampling sampling;
  moepp_sampling_init(&sampling);
  sampling.temperature = 0; /* greedy */
  sampling.max_tokens = argc > 3 ? atoi(argv[3]) : 32;
  if (moepp_generate(model, argv[2], &sampling, print_piece, NULL) != MOEPP_OK) return fail("generate");
  printf("\n");

  moepp_layer_routing layers[256];
  size_t n_layers = 0;
  if (moepp_routing(model, layers, 256, &n_layers) != MOEPP_OK) return fail("routing");
  for (size_t l = 0; l < n_layers; ++l)
    fprintf(stderr, "layer %d: %lld tokens, %.3f FFN experts per token of k = %d\n", layers[l].layer,
            (long long)layers[l].tokens, layers[l].ffn_experts_per_token, layers[l].top_k);
  moepp_model_free(model);
  return 0;
}
