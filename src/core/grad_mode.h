// GradMode: how a backward pass writes its parameter gradients. `accumulate` adds to what
// the gradient buffers hold (the later micro-batches of a step); `overwrite` writes them
// whatever they held (a step's first micro-batch), so a step needs no zeroing pass, and
// the largest gradients (the FFN experts', tens of MB each) are written without being
// read first. Activation gradients (dx, dz) are unaffected: they always accumulate.
#pragma once

namespace moepp {

enum class GradMode { accumulate, overwrite };

}  // namespace moepp
