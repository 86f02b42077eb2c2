#!/usr/bin/env python3
"""Helper of bench/instructions.sh (standard library only).

  slice SRC DST [--include RE] [--max-values N]
      Write a .safetensors holding whole tensors of SRC (in file order, names matching RE)
      until N values; a first tensor larger than N is cut along dim 0 to N values.
  tiny SRC DST
      Write a .safetensors with one small tensor (<= 256 values) of SRC's first float
      tensor, same name and dtype: the input of the baseline runs.
  values FILE
      Print the number of float values (F16, BF16, F32, F64 elements) in FILE.
  report CASES.tsv OUTDIR
      Read the callgrind outputs named in CASES.tsv and print the Markdown table.
"""

import json
import math
import os
import re
import struct
import subprocess
import sys

FLOAT_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
DTYPE_BYTES = {**FLOAT_BYTES, "I8": 1, "U8": 1, "BOOL": 1, "I16": 2, "U16": 2,
               "I32": 4, "U32": 4, "I64": 8, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def write_file(dst, tensors):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, off = {}, 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, data in tensors:
            f.write(data)


def ordered(header):
    return sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])


def cmd_slice(src, dst, include=".*", max_values=3_000_000):
    header, base = read_header(src)
    pat = re.compile(include)
    out, total = [], 0
    with open(src, "rb") as f:
        for name, t in ordered(header):
            if t["dtype"] not in FLOAT_BYTES or not pat.search(name):
                continue
            n = math.prod(t["shape"])
            shape = list(t["shape"])
            if total + n > max_values:
                if out:
                    break
                row = math.prod(shape[1:]) if len(shape) > 1 else 1
                rows = max(1, max_values // row)
                shape[0] = rows
                n = rows * row
            f.seek(base + t["data_offsets"][0])
            out.append((name, t["dtype"], shape, f.read(n * FLOAT_BYTES[t["dtype"]])))
            total += n
    if not out:
        sys.exit(f"slice: no float tensor of {src} matches {include!r}")
    write_file(dst, out)
    print(total)


def cmd_tiny(src, dst):
    header, base = read_header(src)
    for name, t in ordered(header):
        if t["dtype"] not in FLOAT_BYTES:
            continue
        shape = list(t["shape"])
        if len(shape) >= 2:
            shape = [1, min(256, math.prod(shape[1:]))]
        else:
            shape = [min(256, math.prod(shape))]
        n = math.prod(shape)
        with open(src, "rb") as f:
            f.seek(base + t["data_offsets"][0])
            data = f.read(n * FLOAT_BYTES[t["dtype"]])
        write_file(dst, [(name, t["dtype"], shape, data)])
        return
    sys.exit(f"tiny: no float tensor in {src}")


def float_values(path):
    header, _ = read_header(path)
    return sum(math.prod(t["shape"]) for t in header.values() if t["dtype"] in FLOAT_BYTES)


# --- callgrind ----------------------------------------------------------------------------

def total_ir(cg):
    with open(cg) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {cg}")


LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def self_by_function(cg):
    """Self Ir per function, summed over the source files inlined code is attributed to.

    Keys are function names; code without a symbol (hand-written assembly) is named
    `file.S:0xADDR` -> `[file.S]`. Returns {name: (ir, files joined)} for classification."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", cg],
                         check=True, capture_output=True, text=True).stdout
    funcs = {}
    # The function table follows the "file:function" heading; skip everything before it.
    out = out.split("file:function", 1)[1]
    for line in out.splitlines():
        m = LINE.match(line)
        if not m or "PROGRAM TOTALS" in m.group(2):
            continue
        ir = int(m.group(1).replace(",", ""))
        name = re.sub(r" \[[^\]]*\]$", "", m.group(2))   # object file
        file, _, fn = name.partition(":")
        if re.fullmatch(r"0x[0-9a-fA-F]+", fn):
            fn = "[" + os.path.basename(file) + "]"
        old_ir, old_files = funcs.get(fn, (0, ""))
        funcs[fn] = (old_ir + ir, old_files + " " + file)
    return funcs


def short(fn, width=48):
    fn = re.sub(r"<([^<>]*)>", lambda m: "<" + m.group(1).split("::")[-1] + ">", fn)
    fn = re.sub(r"::\{\{closure\}\}", "::{closure}", fn)
    fn = re.sub(r"::h[0-9a-f]{16}$", "", fn)
    return fn if len(fn) <= width else fn[: width - 1] + "…"


HASH = re.compile(r"sha2::|blake3|xxh|sha256|xxhash", re.I)
ZSTD = re.compile(r"ZSTD_|HUF_|FSE_|zstd", re.I)


def cmd_report(cases_tsv, outdir):
    rows = []
    with open(cases_tsv) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            case, inp, dtype, direction, values, codec = line.rstrip("\n").split("\t")
            rows.append((case, inp, dtype, direction, int(values), codec))
    print("| case | input | dtype | values | dir | Ir total | Ir − baseline | Ir/value "
          "| hash Ir/value | zstd Ir/value | other Ir/value | top 5 functions by self Ir (% of total) |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for case, inp, dtype, direction, values, codec in rows:
        cg = os.path.join(outdir, f"{case}.{direction}.cg")
        cgb = os.path.join(outdir, f"{case}.{direction}.base.cg")
        total, base = total_ir(cg), total_ir(cgb)
        net = total - base
        funcs = self_by_function(cg)
        fb = self_by_function(cgb)

        def part(fs, pat):
            return sum(ir for k, (ir, files) in fs.items() if pat.search(k + files))

        hashed = part(funcs, HASH) - part(fb, HASH)
        zstd = part(funcs, ZSTD) - part(fb, ZSTD)
        funcs = {k: ir for k, (ir, _) in funcs.items()}
        top = sorted(funcs.items(), key=lambda kv: -kv[1])[:5]
        tops = "<br>".join(f"`{short(k)}` {100 * v / total:.0f}%" for k, v in top)
        with open(os.path.join(outdir, f"{case}.{direction}.top.txt"), "w") as f:
            for k, v in sorted(funcs.items(), key=lambda kv: -kv[1])[:40]:
                f.write(f"{v:>14,} {100 * v / total:6.2f}%  {k}\n")
        print(f"| {case} | {inp} | {dtype} | {values:,} | {direction} | {total:,} | {net:,} "
              f"| {net / values:.1f} | {hashed / values:.1f} | {zstd / values:.1f} "
              f"| {(net - hashed - zstd) / values:.1f} | {tops} |")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "slice":
        src, dst = args[0], args[1]
        include, maxv = ".*", 3_000_000
        rest = args[2:]
        while rest:
            if rest[0] == "--include":
                include, rest = rest[1], rest[2:]
            elif rest[0] == "--max-values":
                maxv, rest = int(rest[1]), rest[2:]
            else:
                sys.exit(f"slice: unknown option {rest[0]}")
        cmd_slice(src, dst, include, maxv)
    elif cmd == "tiny":
        cmd_tiny(args[0], args[1])
    elif cmd == "values":
        print(float_values(args[0]))
    elif cmd == "report":
        cmd_report(args[0], args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
