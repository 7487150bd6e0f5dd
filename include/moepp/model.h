// Public API: load, save and run a model folder.
//   auto m = moepp::load_model_folder("runs/a");          // config + f32 parameters
//   moepp::ModelCache<float> cache;
//   moepp::model_forward(m.config, m.params, ids.data(), 1, ids.size(), cache);  // cache.logits
//   moepp::save_model_folder("copy", m.config, m.params);
#pragma once
#include "io/model_folder.h"    // IWYU pragma: export
#include "model/transformer.h"  // IWYU pragma: export
