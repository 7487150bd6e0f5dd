// Public API: train a model from prepared token shards (see moepp prepare), resumably.
#pragma once
#include "data/corpus.h"     // IWYU pragma: export
#include "train/trainer.h"   // IWYU pragma: export
#include "train/evaluator.h" // IWYU pragma: export
