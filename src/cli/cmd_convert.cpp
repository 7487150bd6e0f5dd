// moepp convert: any folder moepp reads (safetensors or pytorch_model.bin, sharded or
// not, MoE++ or Mixtral) to a moepp folder: config.json + model.safetensors in f32 or bf16
// (+ tokenizer.model when present).
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/model_folder.h"
#include "io/safetensors.h"

namespace moepp::cli {

void add_convert(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Write any readable model folder as safetensors (f32 or bf16)");
  struct Args {
    std::string in, out, dtype = "f32";
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--in", a->in, "Model folder to read")->required();
  cmd->add_option("--out", a->out, "Folder to write")->required();
  cmd->add_option("--dtype", a->dtype, "Weight type written: f32 or bf16 (q8_0 is not implemented yet)")
      ->default_val("f32")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->callback([a] {
    MOEPP_CHECK(a->in != a->out, "convert: --in and --out are the same folder");
    LoadedModel m = load_model_folder(a->in);
    make_dirs(a->out);
    const bool bf = a->dtype == "bf16";
    std::vector<std::vector<uint16_t>> halves;
    std::vector<SafetensorsWriteItem> items;
    m.params.for_each(m.config, [&](const std::string& name, const Tensor<float>& t) {
      if (!bf) {
        items.push_back({name, DType::f32, t.shape().dims, t.data()});
        return;
      }
      halves.emplace_back(size_t(t.numel()));
      for (int64_t i = 0; i < t.numel(); ++i) halves.back()[size_t(i)] = f32_to_bf16(t[i]).bits;
      items.push_back({name, DType::bf16, t.shape().dims, halves.back().data()});
    });
    write_safetensors(a->out + "/model.safetensors", items, {{"format", "pt"}, {"writer", "moepp convert"}});
    if (file_exists(a->in + "/tokenizer.model")) copy_file_atomic(a->in + "/tokenizer.model", a->out + "/tokenizer.model");
    m.config.torch_dtype = bf ? "bfloat16" : "float32";
    write_file_atomic(a->out + "/config.json", m.config.to_json().dump(2) + "\n");
    std::fprintf(stderr, "convert: %s -> %s (%zu tensors, %s)\n", a->in.c_str(), a->out.c_str(), items.size(),
                 a->dtype.c_str());
  });
}

}  // namespace moepp::cli
