"""moepp.Model and moepp.train over the C API (_lib.py): numpy arrays in and out, errors
as moepp.Error, generation as an iterator of text pieces."""
import ctypes
import dataclasses
import queue
import threading

import numpy as np

from . import _lib
from ._lib import Error


@dataclasses.dataclass(frozen=True)
class LayerRouting:
    """Where the tokens of the last logits() or generate() went, in one MoE layer."""
    layer: int                    # decoder layer index
    top_k: int
    tokens: int
    ffn_experts_per_token: float  # the MoE++ paper's measure, <= top_k
    share_ffn: float
    share_zero: float
    share_copy: float
    share_constant: float


@dataclasses.dataclass(frozen=True)
class TrainResult:
    steps_done: int
    last_loss: float
    val_loss: float
    tokens_per_s: float
    interrupted: bool
    time_limited: bool


def version():
    return _lib.lib().moepp_version().decode()


def _ids_array(ids):
    a = np.asarray(ids)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise Error("moepp: token ids must be a flat sequence of integers, got %s of shape %s" % (a.dtype, a.shape))
    if a.size and (a.min() < -2**31 or a.max() >= 2**31):
        raise Error("moepp: token id %d does not fit in 32 bits" % (a.max() if a.max() >= 2**31 else a.min()))
    return np.ascontiguousarray(a, dtype=np.int32)


class Model:
    """A loaded model folder. dtype: "f32", "bf16", "q8_0" or "q4" (docs/quantization.md)."""

    def __init__(self, path, dtype="f32"):
        lib = _lib.lib()
        handle = ctypes.c_void_p()
        _lib.check(lib.moepp_model_load(str(path).encode(), dtype.encode(), ctypes.byref(handle)))
        self._h = handle
        self.path, self.dtype = str(path), dtype
        v = ctypes.c_int32()
        _lib.check(lib.moepp_model_vocab_size(self._h, ctypes.byref(v)))
        n = ctypes.c_int64()
        _lib.check(lib.moepp_model_max_length(self._h, ctypes.byref(n)))
        self.vocab_size, self.max_length = v.value, n.value

    def close(self):
        if getattr(self, "_h", None):
            _lib.lib().moepp_model_free(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _handle(self):
        if not self._h:
            raise Error("moepp: the model was closed")
        return self._h

    def tokenize(self, text):
        """BOS, then the text's pieces (as generate() encodes a prompt): a list of ints."""
        lib, raw, n = _lib.lib(), text.encode(), ctypes.c_size_t()
        status = lib.moepp_tokenize(self._handle(), raw, None, 0, ctypes.byref(n))
        if status != _lib.BUFFER_TOO_SMALL:
            _lib.check(status)
        out = (ctypes.c_int32 * n.value)()
        _lib.check(lib.moepp_tokenize(self._handle(), raw, out, n.value, ctypes.byref(n)))
        return list(out)

    def detokenize(self, ids):
        lib, a, n = _lib.lib(), _ids_array(ids), ctypes.c_size_t()
        p = a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        status = lib.moepp_detokenize(self._handle(), p, a.size, None, 0, ctypes.byref(n))
        if status != _lib.BUFFER_TOO_SMALL:
            _lib.check(status)
        buf = ctypes.create_string_buffer(n.value + 1)
        _lib.check(lib.moepp_detokenize(self._handle(), p, a.size, buf, n.value + 1, ctypes.byref(n)))
        return buf.raw[:n.value].decode("utf-8", errors="replace")

    def logits(self, ids):
        """numpy float32 [len(ids), vocab_size]: the same numbers as `moepp logits`."""
        a = _ids_array(ids)
        out = np.empty((a.size, self.vocab_size), dtype=np.float32)
        _lib.check(_lib.lib().moepp_logits(self._handle(), a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), a.size,
                                           out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.size))
        return out

    def generate(self, prompt, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, seed=1, stop=(),
                 repeat_penalty=1.0, repeat_last_n=64, presence_penalty=0.0, frequency_penalty=0.0, min_p=0.0,
                 logit_bias=None):
        """An iterator over the pieces of text continuing prompt (not the prompt itself), as
        `moepp generate` with the same options gives it: stop (strings the text ends before),
        the penalties, min_p and logit_bias ({token id: bias}) as moepp_generation_options in
        moepp.h describes them.
        Generation runs in a worker thread; leaving the loop early stops it."""
        s = _lib.Sampling()
        _lib.check(_lib.lib().moepp_sampling_init(ctypes.byref(s)))
        s.max_tokens, s.temperature, s.top_k, s.top_p, s.seed = max_tokens, temperature, top_k, top_p, seed
        o = _lib.GenerationOptions()
        _lib.check(_lib.lib().moepp_generation_options_init(ctypes.byref(o)))
        if isinstance(stop, str):
            stop = (stop,)
        stops = (ctypes.c_char_p * max(len(stop), 1))(*[x.encode() for x in stop])
        o.stop, o.n_stop = ctypes.cast(stops, ctypes.POINTER(ctypes.c_char_p)), len(stop)
        o.repeat_penalty, o.repeat_last_n, o.min_p = repeat_penalty, repeat_last_n, min_p
        o.presence_penalty, o.frequency_penalty = presence_penalty, frequency_penalty
        bias = sorted((logit_bias or {}).items())
        bias_ids = (ctypes.c_int32 * max(len(bias), 1))(*[int(k) for k, _ in bias])
        bias_values = (ctypes.c_float * max(len(bias), 1))(*[float(v) for _, v in bias])
        o.logit_bias_ids = ctypes.cast(bias_ids, ctypes.POINTER(ctypes.c_int32))
        o.logit_bias_values = ctypes.cast(bias_values, ctypes.POINTER(ctypes.c_float))
        o.n_logit_bias = len(bias)
        return self._stream(prompt.encode(), s, o, (stops, bias_ids, bias_values))

    def generate_text(self, prompt, **sampling):
        """The whole continuation as one string (generate() joined)."""
        return "".join(self.generate(prompt, **sampling))

    def _stream(self, prompt, sampling, options, keep_alive):
        # keep_alive: what options point to (the stop strings), held by this frame until the call ends
        handle, lib = self._handle(), _lib.lib()
        pieces, stop = queue.Queue(), threading.Event()
        done = object()

        def on_text(piece, length, user):
            if stop.is_set():
                return 1
            pieces.put(ctypes.string_at(piece, length))
            return 0

        callback = _lib.TextCallback(on_text)
        result = {}

        def work():
            status = lib.moepp_generate_with(handle, prompt, ctypes.byref(sampling), ctypes.byref(options), callback,
                                             None)
            if status != _lib.OK:
                result["error"] = _lib.message()  # this thread's message
            pieces.put(done)

        worker = threading.Thread(target=work, name="moepp-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = pieces.get()
                if item is done:
                    break
                yield item.decode("utf-8", errors="replace")
        finally:
            stop.set()
            worker.join()
        if "error" in result:
            raise Error(result["error"])

    def routing(self):
        """Per MoE layer, where the tokens of the last logits() or generate() went."""
        lib, n = _lib.lib(), ctypes.c_size_t()
        status = lib.moepp_routing(self._handle(), None, 0, ctypes.byref(n))
        if status != _lib.BUFFER_TOO_SMALL:
            _lib.check(status)
        raw = (_lib.LayerRoutingC * n.value)()
        _lib.check(lib.moepp_routing(self._handle(), raw, n.value, ctypes.byref(n)))
        return [LayerRouting(*(getattr(r, f) for f, _ in _lib.LayerRoutingC._fields_)) for r in raw]


def train(data_dir, out_dir, preset="small", vanilla=False, steps=1000, batch=8, seq=128, accum=1, lr=1e-3, seed=1,
          checkpoint_every=0, eval_every=0, eval_batches=16, time_limit_s=0.0, stop_after=0, resume=False,
          quiet=True):
    """Trains as `moepp train` does (moepp_train in moepp.h). Ctrl-C (KeyboardInterrupt)
    asks the run to write a checkpoint and stop; the result then says interrupted."""
    lib = _lib.lib()
    o = _lib.TrainOptions()
    _lib.check(lib.moepp_train_options_init(ctypes.byref(o)))
    o.data_dir, o.out_dir, o.preset = str(data_dir).encode(), str(out_dir).encode(), preset.encode()
    o.vanilla, o.steps, o.batch, o.seq, o.accum, o.lr, o.seed = int(vanilla), steps, batch, seq, accum, lr, seed
    o.checkpoint_every, o.eval_every, o.eval_batches = checkpoint_every, eval_every, eval_batches
    o.time_limit_s, o.stop_after, o.resume, o.quiet = time_limit_s, stop_after, int(resume), int(quiet)
    r, outcome = _lib.TrainResultC(), {}

    def work():
        outcome["status"] = lib.moepp_train(ctypes.byref(o), ctypes.byref(r))
        if outcome["status"] != _lib.OK:
            outcome["error"] = _lib.message()

    worker = threading.Thread(target=work, name="moepp-train", daemon=True)
    worker.start()
    while worker.is_alive():  # the main thread stays free to receive Ctrl-C
        try:
            worker.join(0.1)
        except KeyboardInterrupt:
            lib.moepp_train_request_stop()
    if "error" in outcome:
        raise Error(outcome["error"])
    return TrainResult(r.steps_done, r.last_loss, r.val_loss, r.tokens_per_s, bool(r.interrupted),
                       bool(r.time_limited))


def request_training_stop():
    """Asks running train() calls to write a checkpoint and return."""
    _lib.lib().moepp_train_request_stop()
