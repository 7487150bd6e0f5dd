"""moepp from Python: load a MoE++ (or Mixtral) model folder, tokenize, compute logits,
stream generated text and read the routing statistics, over moepp's C API (libmoepp_c.so)
with ctypes and numpy only.

    import moepp
    m = moepp.Model("runs/a", dtype="q8_0")
    ids = m.tokenize("And God said")          # [1, ...]: BOS first
    logits = m.logits(ids)                     # numpy float32 [len(ids), m.vocab_size]
    for piece in m.generate("And God said", max_tokens=32, temperature=0):
        print(piece, end="", flush=True)
    print([layer.ffn_experts_per_token for layer in m.routing()])

The library is found through $MOEPP_LIB (the path of libmoepp_c.so), else next to this
package when installed, else in the build/ folder of a source checkout (docs/library.md).
"""
from ._lib import Error, library_path
from ._model import LayerRouting, Model, TrainResult, request_training_stop, train, version

__all__ = ["Error", "LayerRouting", "Model", "TrainResult", "library_path", "request_training_stop", "train",
           "version"]
