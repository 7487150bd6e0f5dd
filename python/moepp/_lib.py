"""Finding and loading libmoepp_c.so, and the C API's types and signatures
(include/moepp/moepp.h) for ctypes. Loaded on first use, so `import moepp` works without
the library and the first call says where it looked."""
import ctypes
import os
import pathlib
import threading

LIBRARY = "libmoepp_c.so"


class Error(Exception):
    """A failure reported by moepp; the message is the C API's (moepp_last_error)."""


class Sampling(ctypes.Structure):
    _fields_ = [("max_tokens", ctypes.c_int32), ("temperature", ctypes.c_double), ("top_k", ctypes.c_int32),
                ("top_p", ctypes.c_double), ("seed", ctypes.c_uint64)]


class GenerationOptions(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("stop", ctypes.POINTER(ctypes.c_char_p)), ("n_stop", ctypes.c_size_t),
                ("repeat_penalty", ctypes.c_double), ("repeat_last_n", ctypes.c_int32),
                ("presence_penalty", ctypes.c_double), ("frequency_penalty", ctypes.c_double),
                ("min_p", ctypes.c_double), ("logit_bias_ids", ctypes.POINTER(ctypes.c_int32)),
                ("logit_bias_values", ctypes.POINTER(ctypes.c_float)), ("n_logit_bias", ctypes.c_size_t)]


class LayerRoutingC(ctypes.Structure):
    _fields_ = [("layer", ctypes.c_int32), ("top_k", ctypes.c_int32), ("tokens", ctypes.c_int64),
                ("ffn_experts_per_token", ctypes.c_double), ("share_ffn", ctypes.c_double),
                ("share_zero", ctypes.c_double), ("share_copy", ctypes.c_double), ("share_constant", ctypes.c_double)]


class TrainOptions(ctypes.Structure):
    _fields_ = [("data_dir", ctypes.c_char_p), ("out_dir", ctypes.c_char_p), ("preset", ctypes.c_char_p),
                ("vanilla", ctypes.c_int), ("steps", ctypes.c_int64), ("batch", ctypes.c_int64),
                ("seq", ctypes.c_int64), ("accum", ctypes.c_int64), ("lr", ctypes.c_double),
                ("seed", ctypes.c_uint64), ("checkpoint_every", ctypes.c_int64), ("eval_every", ctypes.c_int64),
                ("eval_batches", ctypes.c_int64), ("time_limit_s", ctypes.c_double), ("stop_after", ctypes.c_int64),
                ("resume", ctypes.c_int), ("quiet", ctypes.c_int)]


class TrainResultC(ctypes.Structure):
    _fields_ = [("steps_done", ctypes.c_int64), ("last_loss", ctypes.c_double), ("val_loss", ctypes.c_double),
                ("tokens_per_s", ctypes.c_double), ("interrupted", ctypes.c_int), ("time_limited", ctypes.c_int)]


# int (*)(const char* piece, size_t length, void* user_data)
TextCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t, ctypes.c_void_p)

OK, BUFFER_TOO_SMALL = 0, 3

_P = ctypes.c_void_p
_SIGNATURES = {
    "moepp_last_error": (ctypes.c_char_p, []),
    "moepp_version": (ctypes.c_char_p, []),
    "moepp_model_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_P)]),
    "moepp_model_free": (None, [_P]),
    "moepp_model_vocab_size": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int32)]),
    "moepp_model_max_length": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int64)]),
    "moepp_tokenize": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t,
                                      ctypes.POINTER(ctypes.c_size_t)]),
    "moepp_detokenize": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, ctypes.c_char_p,
                                        ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]),
    "moepp_logits": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t,
                                    ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]),
    "moepp_sampling_init": (ctypes.c_int, [ctypes.POINTER(Sampling)]),
    "moepp_generate": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(Sampling), TextCallback, _P]),
    "moepp_generation_options_init": (ctypes.c_int, [ctypes.POINTER(GenerationOptions)]),
    "moepp_generate_with": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(Sampling),
                                           ctypes.POINTER(GenerationOptions), TextCallback, _P]),
    "moepp_routing": (ctypes.c_int, [_P, ctypes.POINTER(LayerRoutingC), ctypes.c_size_t,
                                     ctypes.POINTER(ctypes.c_size_t)]),
    "moepp_train_options_init": (ctypes.c_int, [ctypes.POINTER(TrainOptions)]),
    "moepp_train": (ctypes.c_int, [ctypes.POINTER(TrainOptions), ctypes.POINTER(TrainResultC)]),
    "moepp_train_request_stop": (None, []),
}

_lock = threading.Lock()
_lib = None
_path = None


def candidates():
    """Where the library is looked for, in order."""
    env = os.environ.get("MOEPP_LIB")
    if env:
        return [pathlib.Path(env)]
    here = pathlib.Path(__file__).resolve().parent
    found = [here / LIBRARY]
    try:  # written by `cmake --install` (cmake/install.cmake)
        from . import _libdir
        found.append((here / _libdir.LIBDIR / LIBRARY).resolve())
    except ImportError:
        pass
    found.append(here.parent.parent / "build" / LIBRARY)  # python/moepp in a source checkout
    return found


def lib():
    """The loaded C API, its functions typed."""
    global _lib, _path
    with _lock:
        if _lib is None:
            tried = candidates()
            path = next((p for p in tried if p.is_file()), None)
            if path is None:
                raise Error("moepp: cannot find %s (tried %s; set MOEPP_LIB to its path)"
                            % (LIBRARY, ", ".join(str(p) for p in tried)))
            try:
                loaded = ctypes.CDLL(str(path))
            except OSError as e:
                raise Error("moepp: cannot load %s: %s" % (path, e)) from None
            for name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(loaded, name)
                fn.restype, fn.argtypes = restype, argtypes
            _lib, _path = loaded, path
        return _lib


def library_path():
    """The path of the loaded libmoepp_c.so (loading it if needed)."""
    lib()
    return _path


def message():
    """The calling thread's last error message."""
    return lib().moepp_last_error().decode("utf-8", errors="replace")


def check(status):
    if status != OK:
        raise Error(message())
