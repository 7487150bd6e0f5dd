"""Minimal safetensors reader/writer (no dependency on the `safetensors` package).

File layout: 8-byte little-endian u64 header length N, then N bytes of JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
padded with spaces to a multiple of 8, then the raw little-endian tensor bytes.
"""
import json
import struct
import sys

import torch

_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_FROM_NAME = {v: k for k, v in _DTYPES.items()}


def _tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if sys.byteorder != "little":
        raise RuntimeError("big-endian hosts are not supported")
    # Reinterpret as raw bytes (works for every dtype, including bf16).
    return t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def save_file(tensors, path, metadata=None):
    """Write an ordered mapping name -> tensor. Tensors are stored in the order given."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata keys and values must be strings")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _DTYPES:
            raise TypeError(f"unsupported dtype {t.dtype} for {name}")
        data = _tensor_bytes(t)
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def load_file(path):
    """Return (dict name -> tensor, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        dt = _FROM_NAME[info["dtype"]]
        b, e = info["data_offsets"]
        buf = bytearray(raw[base + b:base + e])
        if len(buf):
            t = torch.frombuffer(buf, dtype=torch.uint8).view(dt)
        else:
            t = torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"]).clone()
    return out, meta
