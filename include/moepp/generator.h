// Public API: generate text from a model folder, or drive a KV-cache session directly.
#pragma once
#include "infer/generator.h"  // IWYU pragma: export
#include "infer/session.h"    // IWYU pragma: export
