"""Generate the dmx-pt test fixtures with the real torch.save.

Run: /work/venv/bin/python crates/dmx-pt/tests/make_fixtures.py
Writes crates/dmx-pt/tests/fixtures/*.pt and expected.json. The JSON is this script's own
description: every storage's key, dtype, element count and exact byte range in the file
(found by reading the zip local headers or walking the legacy stream, and checked here
against the tensors' own bytes), and every tensor's name path, storage key, offset, shape
and stride taken from the saved Python objects.
"""

import collections
import io
import json
import os
import pickle
import pickletools
import struct
import zipfile

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")

DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.uint16: "U16", torch.uint32: "U32",
    torch.uint64: "U64", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.complex64: "C64",
}


class Net(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))
        self.to(dtype)

    def forward(self, x):
        return self.layer(x)


def walk(obj, prefix, out):
    """Name paths as dmx-pt builds them: dict keys and list/tuple indices joined by '.'."""
    if isinstance(obj, torch.Tensor):
        out.append((prefix, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            walk(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk(v, f"{prefix}.{i}" if prefix else str(i), out)


class Capture(pickle.Unpickler):
    """Reads a torch pickle with fake rebuild functions: records (key, storage type) per tensor."""

    def __init__(self, f):
        super().__init__(f)
        self.storages = {}

    def find_class(self, module, name):
        if name.endswith("Storage"):
            return name
        if name.startswith("_rebuild_tensor"):
            return lambda storage, *a: ("T", storage)
        if name == "_rebuild_from_type_v2":
            return lambda func, new_type, args, state: func(*args)
        if name.startswith("_rebuild_parameter"):
            return lambda data, *a: data
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch":
            return lambda *a: None
        raise pickle.UnpicklingError(f"fixture script refuses {module}.{name}")

    def persistent_load(self, pid):
        key, stype, numel = pid[2], pid[1], pid[4]
        self.storages[key] = (stype, numel)
        return key


def tensor_keys(data_pkl):
    cap = Capture(io.BytesIO(data_pkl))
    obj = cap.load()
    out = []
    walk_capture(obj, "", out)
    return dict(out), cap.storages


def walk_capture(obj, prefix, out):
    if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "T":
        out.append((prefix, obj[1]))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            walk_capture(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk_capture(v, f"{prefix}.{i}" if prefix else str(i), out)


def zip_storages(path):
    raw = open(path, "rb").read()
    z = zipfile.ZipFile(path)
    ranges, pkl = {}, None
    for info in z.infolist():
        name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        assert info.compress_type == 0
        if info.filename.endswith("/data.pkl"):
            pkl = raw[start:start + info.file_size]
        parts = info.filename.split("/")
        if len(parts) == 3 and parts[1] == "data":
            assert start % 64 == 0, "torch aligns storages to 64 bytes"
            ranges[parts[2]] = (start, info.file_size)
    return raw, pkl, ranges


def legacy_storages(path):
    raw = open(path, "rb").read()
    f = io.BytesIO(raw)
    for _ in range(3):  # magic, protocol, sys_info
        for _op in pickletools.genops(f):
            pass
    start = f.tell()
    for _op in pickletools.genops(f):
        pass
    pkl = raw[start:f.tell()]
    keys = pickle.load(f)
    _, storages = tensor_keys(pkl)
    ranges = {}
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        size = count * elem_size(storages[key][0])
        ranges[key] = (f.tell(), size)
        f.seek(size, 1)
    assert f.tell() == len(raw)
    return raw, pkl, ranges


def elem_size(stype):
    dtype = getattr(torch, stype)().dtype if stype != "UntypedStorage" else torch.uint8
    return torch.empty(0, dtype=dtype).element_size()


def describe(path, obj, legacy=False):
    raw, pkl, ranges = legacy_storages(path) if legacy else zip_storages(path)
    keys, storages = tensor_keys(pkl)
    tensors = []
    walked = []
    walk(obj, "", walked)
    storage_dtypes = {}
    for name, t in walked:
        key = keys[name]
        start, size = ranges[key]
        assert raw[start:start + size] == bytes(t.untyped_storage()), name
        dt = DTYPES[t.dtype]
        storage_dtypes.setdefault(key, dt)
        tensors.append({
            "name": name, "storage": key, "dtype": dt, "offset": t.storage_offset(),
            "shape": list(t.shape), "stride": list(t.stride()),
        })
    out_storages = []
    for key, (start, size) in sorted(ranges.items(), key=lambda kv: kv[1][0]):
        dt = storage_dtypes[key]
        el = torch.empty(0, dtype=getattr(torch, {v: k for k, v in {
            "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
            "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
            "bool": "BOOL", "uint16": "U16", "uint32": "U32", "uint64": "U64",
            "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "complex64": "C64",
        }.items()}[dt])).element_size()
        out_storages.append({"key": key, "dtype": dt, "numel": size // el,
                             "start": start, "end": start + size})
    return {"format": "legacy" if legacy else "zip", "storages": out_storages,
            "tensors": tensors}


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    def save(name, obj, legacy=False, weights_only=True, **kw):
        path = os.path.join(OUT, name)
        if legacy:
            kw["_use_new_zipfile_serialization"] = False
        torch.save(obj, path, **kw)
        # protocol 4 (FRAME) is beyond torch's weights_only reader; dmx-pt reads it anyway
        assert torch.load(path, weights_only=weights_only) is not None
        expected[name] = describe(path, obj, legacy)

    save("model_f32.pt", Net().state_dict())
    save("model_bf16.pt", Net(torch.bfloat16).state_dict())
    save("model_f16.pt", Net(torch.float16).state_dict())

    net = Net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(3, 8)).sum().backward()
    opt.step()
    save("adamw.pt", {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 1})

    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(3, 8)).sum().backward()
    opt.step()
    save("sgd_momentum.pt", opt.state_dict())

    base = torch.arange(64, dtype=torch.float32)
    emb = torch.randn(6, 4, dtype=torch.bfloat16)
    views = {
        "base": base,
        "slice": base[10:20],
        "transposed": base.view(8, 8).t(),
        "strided": base[3::5],
        "tied": [emb, emb[2:], (emb.t(),)],
        "scalar": torch.tensor(2.5, dtype=torch.float16),
        "empty": torch.zeros(0, 3),
        "mixed": {
            "i64": torch.arange(5), "bool": torch.tensor([True, False]),
            "u8": torch.arange(7, dtype=torch.uint8), "f8": torch.zeros(4, dtype=torch.float8_e4m3fn),
            "u16": torch.tensor([1, 2, 3], dtype=torch.uint16), "f64": torch.ones(2, dtype=torch.float64),
        },
    }
    save("views.pt", views)
    save("protocol4.pt", {"w": torch.randn(5, 3), "names": ["a", "b"], "v": base[4:9]},
         pickle_protocol=4, weights_only=False)
    save("legacy.pt", {"model": Net().state_dict(), "slice": base[2:7], "base": base}, legacy=True)
    single = torch.randn(3, 2).t()
    single.note = "a tensor with a Python attribute pickles through _rebuild_from_type_v2"
    save("single.pt", single)
    save("params.pt", {"p": nn.Parameter(torch.randn(2)), "frozen": [nn.Parameter(torch.ones(3), False)]})
    save("odd name-ü.v1.pt", {"päram.0": torch.randn(3, dtype=torch.bfloat16), 7: torch.ones(2)})

    class Evil:
        def __init__(self, fn, arg):
            self.fn, self.arg = fn, arg

        def __reduce__(self):
            return (self.fn, (self.arg,))

    marker = "/tmp/dmx_pt_pwned_marker"
    evil = {
        "weight": torch.randn(4, 4),
        "system": Evil(os.system, f"touch {marker}"),
        "eval": Evil(eval, f"open({marker!r}, 'w')"),
        "nested": {"bias": torch.randn(4)},
    }
    path = os.path.join(OUT, "malicious.pt")
    torch.save(evil, path)
    expected["malicious.pt"] = describe_known(path, {"weight": evil["weight"],
                                                     "nested": evil["nested"]})

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"{len(expected)} fixtures, {total} bytes")


def describe_known(path, known):
    """For the malicious file only the tensors (not the hostile objects) are described."""
    raw, pkl, ranges = zip_storages(path)
    walked = []
    walk(known, "", walked)
    storages, tensors = [], []
    for i, (name, t) in enumerate(walked):
        key = str(i)
        start, size = ranges[key]
        assert raw[start:start + size] == bytes(t.untyped_storage()), name
        storages.append({"key": key, "dtype": "F32", "numel": size // 4, "start": start,
                         "end": start + size})
        tensors.append({"name": name, "storage": key, "dtype": "F32", "offset": 0,
                        "shape": list(t.shape), "stride": list(t.stride())})
    return {"format": "zip", "storages": storages, "tensors": tensors}


if __name__ == "__main__":
    main()
