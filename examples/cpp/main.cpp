// moepp from C++: load a model folder, write the logits of a prompt's tokens (raw
// little-endian f32, [tokens, vocab]) and print the greedy continuation the way `moepp
// generate --temperature 0` prints it. The prompt's token ids go to stderr as "ids: 1,2,3",
// with the routing of the logits call.
// Usage: moepp_example_cpp MODEL_DIR PROMPT [MAX_TOKENS] [DTYPE] [LOGITS_FILE]
#include <cstdio>
#include <fstream>
#include <iostream>
#include <moepp/moepp.hpp>
#include <string>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR PROMPT [MAX_TOKENS] [DTYPE] [LOGITS_FILE]\n";
    return 2;
  }
  try {
    auto model = moepp::Model::load(argv[1], argc > 4 ? argv[4] : "f32");
    const std::string prompt = argv[2];
    const auto ids = model.tokenize(prompt);
    std::cerr << "ids: ";
    for (size_t i = 0; i < ids.size(); ++i) std::cerr << (i ? "," : "") << ids[i];
    std::cerr << "\n";

    const auto logits = model.logits(ids);  // [ids.size(), vocab]
    if (argc > 5) {
      std::ofstream out(argv[5], std::ios::binary);
      out.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
    }
    for (const auto& layer : model.routing())
      std::cerr << "layer " << layer.layer << ": " << layer.ffn_experts_per_token << " FFN experts per token, "
                << layer.share_zero << " of slots to zero experts\n";

    moepp::Sampling greedy;
    greedy.temperature = 0;
    greedy.max_tokens = argc > 3 ? std::stoi(argv[3]) : 32;
    std::cout << model.detokenize(ids) << std::flush;
    model.generate(prompt, greedy, [](const std::string& piece) {
      std::cout << piece << std::flush;
      return true;  // false would stop
    });
    std::cout << "\n";
  } catch (const moepp::Error& e) {
    std::cerr << "moepp_example_cpp: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
