// A downward include, which the check accepts.
#include "core/tensor.h"
