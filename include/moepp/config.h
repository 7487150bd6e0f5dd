// Public API: model configuration (config.json, presets). See SPEC §3.2.
#pragma once
#include "model/config.h"  // IWYU pragma: export
