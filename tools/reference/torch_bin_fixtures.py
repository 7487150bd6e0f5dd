"""Fixtures for moepp's `pytorch_model.bin` reader (SPEC §3.3).

Writes, under --out (normally tests/fixtures/torch_bin):

  f32/pytorch_model.bin          torch.save(OrderedDict) of f32 tensors, including a
                                 non-contiguous view (a.transposed: the .t() of a [3, 5]
                                 tensor, stride (1, 5)), a view with a storage offset
                                 (a.offset = big[2:5], offset 2) sharing one storage with
                                 a.shared = big, and a 0-dim tensor (scalar)
  f32/expected.safetensors       the same tensors, contiguous, F32, same names
  bf16/pytorch_model.bin         w1 bf16 [4, 3], w2 bf16 [5] (w2[4] is a bf16 subnormal),
                                 h f16 [2, 2] (1, -2.5, 65504, 2^-24: max and a subnormal)
                                 -- saved through a file object, so the inner prefix is
                                 `archive/` (a path gives the file stem instead)
  bf16/expected.safetensors      those values as F32 (exact conversions)
  sharded/pytorch_model-0000{1,2}-of-00002.bin, sharded/pytorch_model.bin.index.json
                                 (HF layout: {"metadata": {"total_size"}, "weight_map"}),
  sharded/expected.safetensors   all 4 tensors (F32)
  bad/os_system.bin              data.pkl = hand-built pickle GLOBAL 'os system' + REDUCE
                                 (never unpickled here)
  bad/unknown_opcode.bin         data.pkl's first BINPUT opcode byte ('q', 0x71, at pickle
                                 offset 27) replaced by 0xa0, which is no pickle opcode
  bad/truncated.bin              a valid file cut to 60% of its bytes
  bad/short_storage.bin          one f32 [4, 4] tensor whose data/0 holds 32 bytes, not 64
  bad/missing_shard/             index.json naming two shards; only shard 1 is present

Archives that had to be altered are rebuilt with Python's zipfile (ZIP_STORED, fixed
timestamps) keeping torch's inner layout `<prefix>/data.pkl`, `<prefix>/data/<key>`,
`<prefix>/version` and torch's 64-byte data alignment (an "FB" extra field of 'Z' padding
in the local header, as torch writes). Unlike torch's own output they carry the sizes in
the local header (no data descriptor).

Run: /usr/bin/python3 tools/reference/torch_bin_fixtures.py --out tests/fixtures/torch_bin
"""
import argparse
import collections
import io
import json
import os
import pickletools
import shutil
import struct
import sys
import tempfile
import zipfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save_file, load_file  # noqa: E402

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def torch_save_path(obj, path):
    """torch.save to a path (inner prefix = file stem), default zip format."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(obj, path, _use_new_zipfile_serialization=True)


def torch_save_bytes(obj, name):
    """torch.save into a temporary file called `name`; returns its bytes."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, name)
        torch_save_path(obj, p)
        with open(p, "rb") as f:
            return f.read()


def read_entries(data):
    """Ordered list of (name, bytes) of a zip archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def write_zip(entries, path):
    """ZIP_STORED archive with every entry's data aligned to 64 bytes like torch."""
    offset = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            nb = name.encode("utf-8")
            base = offset + 30 + len(nb)
            extra_len = (-base) % 64
            if extra_len < 4:
                extra_len += 64
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            info.extra = b"FB" + struct.pack("<H", extra_len - 4) + b"Z" * (extra_len - 4)
            z.writestr(info, data)
            offset = base + extra_len + len(data)
    # Check the alignment and the offsets we assumed.
    with open(path, "rb") as f:
        raw = f.read()
    with zipfile.ZipFile(path) as z:
        for i in z.infolist():
            n, e = struct.unpack("<HH", raw[i.header_offset + 26:i.header_offset + 30])
            assert (i.header_offset + 30 + n + e) % 64 == 0, (path, i.filename)


def replace_entry(entries, suffix, data):
    out, hit = [], 0
    for name, d in entries:
        if name.endswith(suffix):
            d, hit = data, hit + 1
        out.append((name, d))
    assert hit == 1, suffix
    return out


def os_system_pickle():
    """Protocol-2 pickle: os.system('echo pwned > /tmp/moepp_pwned'), built by hand."""
    cmd = "echo pwned > /tmp/moepp_pwned".encode("utf-8")
    return (b"\x80\x02"                       # PROTO 2
            b"cos\nsystem\n"                  # GLOBAL 'os system'
            b"X" + struct.pack("<I", len(cmd)) + cmd  # BINUNICODE
            + b"\x85"                         # TUPLE1
            b"R"                              # REDUCE
            b".")                             # STOP


def contiguous(sd):
    return collections.OrderedDict((k, v.contiguous().clone()) for k, v in sd.items())


def generate(out):
    torch.manual_seed(0)
    if os.path.isdir(out):
        for sub in ("f32", "bf16", "sharded", "bad"):
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    written = []

    def note(p):
        written.append(os.path.relpath(p, out))

    # 1-2. f32
    a = torch.randn(3, 5)
    big = torch.randn(8)
    sd = collections.OrderedDict()
    sd["model.embed_tokens.weight"] = torch.randn(6, 4)
    sd["model.norm.weight"] = torch.randn(4)
    sd["a.transposed"] = a.t()
    sd["a.offset"] = big[2:5]
    sd["a.shared"] = big
    sd["scalar"] = torch.randn(())
    assert sd["a.transposed"].stride() == (1, 5) and not sd["a.transposed"].is_contiguous()
    assert sd["a.offset"].storage_offset() == 2
    p = os.path.join(out, "f32", "pytorch_model.bin")
    torch_save_path(sd, p)
    note(p)
    p = os.path.join(out, "f32", "expected.safetensors")
    save_file(contiguous(sd), p)
    note(p)

    # 3. bf16 / f16
    w2 = torch.randn(5)
    w2[4] = 1e-40  # exactly representable bf16 subnormal after the cast below
    sd = collections.OrderedDict()
    sd["w1"] = torch.randn(4, 3).to(torch.bfloat16)
    sd["w2"] = w2.to(torch.bfloat16)
    sd["h"] = torch.tensor([[1.0, -2.5], [65504.0, 2.0 ** -24]], dtype=torch.float16)
    assert sd["w2"][4].item() != 0.0
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=True)  # file object: `archive/`
    p = os.path.join(out, "bf16", "pytorch_model.bin")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(buf.getvalue())
    note(p)
    p = os.path.join(out, "bf16", "expected.safetensors")
    save_file(collections.OrderedDict((k, v.float()) for k, v in sd.items()), p)
    note(p)

    # 4. sharded
    s1 = collections.OrderedDict()
    s1["model.layers.0.mlp.w1.weight"] = torch.randn(3, 4)
    s1["model.layers.0.mlp.w2.weight"] = torch.randn(4, 3)
    s2 = collections.OrderedDict()
    s2["model.layers.1.mlp.w1.weight"] = torch.randn(3, 4)
    s2["lm_head.weight"] = torch.randn(6, 4)
    names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    weight_map, total = {}, 0
    for shard, fname in zip((s1, s2), names):
        p = os.path.join(out, "sharded", fname)
        torch_save_path(shard, p)
        note(p)
        for k, v in shard.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    index_text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    p = os.path.join(out, "sharded", "pytorch_model.bin.index.json")
    with open(p, "w") as f:
        f.write(index_text)
    note(p)
    p = os.path.join(out, "sharded", "expected.safetensors")
    save_file(collections.OrderedDict(list(s1.items()) + list(s2.items())), p)
    note(p)

    # 5. bad files
    bad = os.path.join(out, "bad")
    os.makedirs(bad, exist_ok=True)

    one = collections.OrderedDict([("w", torch.randn(2, 3))])
    p = os.path.join(bad, "os_system.bin")
    ents = read_entries(torch_save_bytes(one, "os_system.bin"))
    write_zip(replace_entry(ents, "/data.pkl", os_system_pickle()), p)
    note(p)

    p = os.path.join(bad, "unknown_opcode.bin")
    ents = read_entries(torch_save_bytes(one, "unknown_opcode.bin"))
    pkl = dict(ents)["unknown_opcode/data.pkl"]
    pos = next(pos for op, _, pos in pickletools.genops(pkl) if op.name == "BINPUT")
    assert pkl[pos:pos + 1] == b"q" and pos == 27, pos
    assert 0xa0 not in {ord(op.code) for op in pickletools.opcodes}
    pkl = pkl[:pos] + b"\xa0" + pkl[pos + 1:]
    write_zip(replace_entry(ents, "/data.pkl", pkl), p)
    note(p)

    p = os.path.join(bad, "truncated.bin")
    raw = torch_save_bytes(one, "truncated.bin")
    with open(p, "wb") as f:
        f.write(raw[:len(raw) * 6 // 10])
    note(p)

    p = os.path.join(bad, "short_storage.bin")
    ents = read_entries(torch_save_bytes(collections.OrderedDict([("w", torch.randn(4, 4))]),
                                         "short_storage.bin"))
    assert len(dict(ents)["short_storage/data/0"]) == 64
    write_zip(replace_entry(ents, "/data/0", dict(ents)["short_storage/data/0"][:32]), p)
    note(p)

    d = os.path.join(bad, "missing_shard")
    p = os.path.join(d, names[0])
    torch_save_path(s1, p)
    note(p)
    p = os.path.join(d, "pytorch_model.bin.index.json")
    with open(p, "w") as f:
        f.write(index_text)
    note(p)
    assert not os.path.exists(os.path.join(d, names[1]))
    return written


def check(out):
    """torch.load (weights_only) the good files against expected; bad ones must fail.
    bad/os_system.bin is only disassembled, never unpickled."""
    def load(p):
        return torch.load(p, map_location="cpu", weights_only=True)

    def same(got, path):
        exp, _ = load_file(path)
        assert list(got) == list(exp), (list(got), list(exp))
        for k in exp:
            assert exp[k].dtype == torch.float32 and got[k].shape == exp[k].shape, k
            assert torch.equal(got[k].float(), exp[k]), k

    same(load(os.path.join(out, "f32", "pytorch_model.bin")),
         os.path.join(out, "f32", "expected.safetensors"))
    same(load(os.path.join(out, "bf16", "pytorch_model.bin")),
         os.path.join(out, "bf16", "expected.safetensors"))
    with open(os.path.join(out, "sharded", "pytorch_model.bin.index.json")) as f:
        idx = json.load(f)
    merged = collections.OrderedDict()
    for fname in sorted(set(idx["weight_map"].values())):
        merged.update(load(os.path.join(out, "sharded", fname)))
    exp, _ = load_file(os.path.join(out, "sharded", "expected.safetensors"))
    assert set(merged) == set(exp) == set(idx["weight_map"])
    assert idx["metadata"]["total_size"] == sum(v.numel() * 4 for v in exp.values())
    same(collections.OrderedDict((k, merged[k]) for k in exp),
         os.path.join(out, "sharded", "expected.safetensors"))
    # torch 1.13 itself *accepts* short_storage.bin (it reads 64 bytes from a 32-byte
    # record: the last 8 floats are whatever memory held), so check it statically.
    with zipfile.ZipFile(os.path.join(out, "bad", "short_storage.bin")) as z:
        assert len(z.read("short_storage/data/0")) == 32
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(z.read("short_storage/data.pkl"))]
    i = ops.index(("BINUNICODE", "cpu"))
    assert ops[i + 1:i + 3] == [("BINPUT", 7), ("BININT1", 16)], ops  # storage numel 16
    for name in ("unknown_opcode.bin", "truncated.bin"):
        try:
            load(os.path.join(out, "bad", name))
        except Exception:
            pass
        else:
            raise AssertionError(f"bad/{name} loaded")
    with zipfile.ZipFile(os.path.join(out, "bad", "os_system.bin")) as z:
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(z.read("os_system/data.pkl"))]
    assert ops[1] == ("GLOBAL", "os system") and ops[-2][0] == "REDUCE", ops
    for root, _, files in os.walk(out):
        for fn in files:
            assert os.path.getsize(os.path.join(root, fn)) < 40 * 1024, fn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/torch_bin")
    args = ap.parse_args()
    written = generate(args.out)
    check(args.out)
    for w in written:
        print(os.path.join(args.out, w))


if __name__ == "__main__":
    main()
