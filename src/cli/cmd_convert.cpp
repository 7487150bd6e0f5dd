// moepp convert: any folder moepp reads (safetensors or pytorch_model.bin, sharded or
// not, MoE++ or Mixtral) to a moepp folder: config.json + model.safetensors in f32, bf16,
// q8_0 or q4 (+ tokenizer.model when present). q8_0 and q4 layouts: docs/quantization.md.
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "cli/commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "model/model_folder.h"
#include "io/quant_layout.h"
#include "io/safetensors.h"

namespace moepp::cli {

namespace {

namespace fs = std::filesystem;

// The folder a path names once symlinks, "..", "." and a trailing "/" are resolved; for a
// path that does not exist yet, its deepest existing ancestor is resolved and the rest
// appended.
fs::path resolved_folder(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path), ec);
  if (ec) p = fs::absolute(path).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  return p;
}

// Writing into the folder being read would replace model.safetensors and config.json
// while (or before) they are read: refuse when --out is --in under any spelling.
void check_not_same_folder(const std::string& in, const std::string& out) {
  std::error_code ec;
  const bool same = fs::exists(out, ec) ? fs::equivalent(in, out, ec) : false;
  const fs::path rin = resolved_folder(in), rout = resolved_folder(out);
  MOEPP_CHECK(!same && rin != rout, "convert: --out ", out, " is the input folder ", in, " (", rin.string(),
              "); writing there would overwrite the model being converted");
}

// Streams the folder in tensor by tensor, packing matrices as q8_0 or q4, and writes them
// with their scales; what stays f32 in a PackedModel is written as f32.
void convert_quantized(const std::string& in, const std::string& out, WeightType type) {
  const auto m = load_packed_model_folder(in, type);
  make_dirs(out);
  std::vector<SafetensorsWriteItem> items;
  m->rest.for_each(m->config, [&](const std::string& name, const Tensor<float>& t) {
    if (t.numel()) items.push_back({name, DType::f32, t.shape().dims, t.data()});
  });
  m->for_each_packed([&](const std::string& name, const PackedMatrix& p) {
    switch (p.type) {
      case WeightType::q8_0:
        add_q8_0_items(items, name, p.rows, p.cols, p.q.data(), p.scales.data());
        break;
      case WeightType::q4:
        add_q4_items(items, name, p.rows, p.cols, p.nibbles.data(), p.scales.data());
        break;
      case WeightType::f32:  // rows too short for q8_0 / q4 blocks: row-major again, as written
        items.push_back({name, DType::f32, {p.rows, p.cols},
                         [&p](void* out) { p.unpack_rows(0, p.rows, static_cast<float*>(out)); }});
        break;
      case WeightType::bf16:
        fail("convert: unexpected bf16 matrix ", name);
    }
  });
  const std::string type_name = weight_type_name(type);
  write_safetensors(out + "/model.safetensors", items,
                    {{"format", "pt"}, {"writer", "moepp convert"}, {"moepp.weights", type_name}});
  if (file_exists(in + "/tokenizer.model")) copy_file_atomic(in + "/tokenizer.model", out + "/tokenizer.model");
  ModelConfig cfg = m->config;
  cfg.torch_dtype = "float32";  // the type of the tensors that stay unquantized
  // Said in config.json too, in the key Hugging Face folders use for quantized weights, so
  // that neither a person nor a tool takes the folder for an f32 one.
  nlohmann::json j = cfg.to_json();
  j["quantization_config"] = {{"quant_method", "moepp_" + type_name}, {"bits", type == WeightType::q4 ? 4 : 8},
                              {"group_size", 32},
                              {"scale_dtype", "float16"}, {"layout", "docs/quantization.md"},
                              {"not_quantized", "norms, routers, gate maps, constant experts, rows not a multiple of 32"}};
  write_file_atomic(out + "/config.json", j.dump(2) + "\n");
  std::fprintf(stderr, "convert: %s -> %s (%zu tensors, %s: %.1f MB of packed weights)\n", in.c_str(), out.c_str(),
               items.size(), type_name.c_str(), double(m->packed_bytes()) / 1e6);
}

}  // namespace

void add_convert(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Write any readable model folder as safetensors (f32, bf16, q8_0 or q4)");
  struct Args {
    std::string in, out, dtype = "f32";
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--in", a->in, "Model folder to read")->required();
  cmd->add_option("--out", a->out, "Folder to write")->required();
  cmd->add_option("--dtype", a->dtype,
                  "Weight type written: f32, bf16, q8_0 (matrices as int8 + per-32 scales) or q4 (4-bit values + "
                  "per-32 scales); with q8_0 and q4, routers, norms and constant experts stay f32; "
                  "docs/quantization.md")
      ->default_val("f32")
      ->check(CLI::IsMember(weight_type_names()));
  cmd->callback([a] {
    check_not_same_folder(a->in, a->out);
    if (a->dtype == "q8_0" || a->dtype == "q4") {
      convert_quantized(a->in, a->out, parse_weight_type(a->dtype));
      return;
    }
    LoadedModel m = load_model_folder(a->in);
    make_dirs(a->out);
    const bool bf = a->dtype == "bf16";
    std::vector<SafetensorsWriteItem> items;
    m.params.for_each(m.config, [&](const std::string& name, const Tensor<float>& t) {
      if (!bf) {
        items.push_back({name, DType::f32, t.shape().dims, t.data()});
        return;
      }
      // Rounded as the writer reaches it: one bf16 tensor in memory at a time.
      items.push_back({name, DType::bf16, t.shape().dims, [&t](void* out) {
                         auto* halves = static_cast<uint16_t*>(out);
                         for (int64_t i = 0; i < t.numel(); ++i) halves[i] = f32_to_bf16(t[i]).bits;
                       }});
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
