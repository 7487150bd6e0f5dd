// moepp tokenize: text to token ids and pieces with a model folder's tokenizer (or a
// tokenizer.model file), with the BOS id the generator and `eval` put first unless --no-bos.
// Prints one line of ids (what `moepp logits --ids` takes), then one line per token:
// position, id, and the piece as SentencePiece spells it (U+2581 marks a leading space).
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "data/tokenizer.h"

namespace moepp::cli {

void add_tokenize(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "Text to token ids and pieces (what the model sees)");
  struct Args {
    std::string model, text, file;
    bool no_bos = false, ids_only = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("-m,--model", a->model, "Model folder (with tokenizer.model), or a tokenizer.model file")->required();
  auto* text = cmd->add_option("-p,--text", a->text, "The text to tokenize");
  auto* file = cmd->add_option("-f,--file", a->file, "A file whose whole content is tokenized");
  text->excludes(file);
  cmd->add_flag("--no-bos", a->no_bos, "Do not put the BOS id first");
  cmd->add_flag("--ids-only", a->ids_only, "Print the ids line only");
  cmd->callback([a] {
    MOEPP_CHECK(!a->text.empty() || !a->file.empty(), "tokenize: give --text or --file");
    const std::string text = text_or_file(a->text, a->file, "tokenize");
    const Tokenizer tok = folder_tokenizer(a->model);
    const std::vector<int32_t> ids = a->no_bos ? tok.encode(text) : tok.encode_prompt(text);
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? "," : "", ids[i]);
    std::printf("\n");
    if (a->ids_only) return;
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%zu\t%d\t%s\n", i, ids[i], tok.piece(ids[i]).c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "tokenize: %zu tokens (%s BOS)\n", ids.size(), a->no_bos ? "without" : "with");
  });
}

}  // namespace moepp::cli
