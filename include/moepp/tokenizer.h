// Public API: the SentencePiece tokenizer of a model folder (tokenizer.model).
#pragma once
#include "data/tokenizer.h"  // IWYU pragma: export
