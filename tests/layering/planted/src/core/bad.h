// A planted upward include: core must never reach model (the layering test's own fixture).
#include "model/config.h"
