#!/usr/bin/env python3
"""Compares the tensors of two GGUF files byte for byte (type, shape, data).
usage: scripts/gguf-compare.py A.gguf B.gguf  -> one line per tensor and a summary line."""
import struct
import sys

SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}
NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 12: "Q4_K",
         13: "Q5_K", 14: "Q6_K", 30: "BF16"}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def read(path):
    f = open(path, "rb").read()
    o = 4
    _, nt, nkv = struct.unpack_from("<IQQ", f, o)
    o += 20

    def skip_str(o):
        return o + 8 + struct.unpack_from("<Q", f, o)[0]

    align = 32
    for _ in range(nkv):
        klen = struct.unpack_from("<Q", f, o)[0]
        key = f[o + 8:o + 8 + klen].decode()
        o += 8 + klen
        t = struct.unpack_from("<I", f, o)[0]
        o += 4
        if t == 8:
            o = skip_str(o)
        elif t == 9:
            at, n = struct.unpack_from("<IQ", f, o)
            o += 12
            for _ in range(n):
                o = skip_str(o) if at == 8 else o + SCALAR[at]
        else:
            if key == "general.alignment":
                align = struct.unpack_from("<I", f, o)[0]
            o += SCALAR[t]
    infos = []
    for _ in range(nt):
        nlen = struct.unpack_from("<Q", f, o)[0]
        name = f[o + 8:o + 8 + nlen].decode()
        o += 8 + nlen
        nd = struct.unpack_from("<I", f, o)[0]
        o += 4
        ne = struct.unpack_from("<%dQ" % nd, f, o)
        o += 8 * nd
        t, off = struct.unpack_from("<IQ", f, o)
        o += 12
        infos.append((name, ne, t, off))
    start = (o + align - 1) // align * align
    out = {}
    for name, ne, t, off in infos:
        blk, bs = SIZES[t]
        rows = 1
        for d in ne[1:]:
            rows *= d
        nbytes = ne[0] // blk * bs * rows
        out[name] = (t, ne, f[start + off:start + off + nbytes])
    return out


a, b = read(sys.argv[1]), read(sys.argv[2])
same = compared = 0
for name in sorted(a):
    if name not in b:
        print("%-28s only in %s" % (name, sys.argv[1]))
        continue
    ta, na, da = a[name]
    tb, nb, db = b[name]
    if ta != tb or na != nb:
        print("%-28s types differ: %s vs %s" % (name, NAMES.get(ta, ta), NAMES.get(tb, tb)))
        continue
    compared += 1
    if da == db:
        same += 1
        print("%-28s %-5s identical" % (name, NAMES.get(ta, ta)))
    else:
        nblk = len(da) // SIZES[ta][1]
        diff = sum(1 for i in range(nblk) if da[i * SIZES[ta][1]:(i + 1) * SIZES[ta][1]] != db[i * SIZES[ta][1]:(i + 1) * SIZES[ta][1]])
        print("%-28s %-5s %d of %d blocks differ" % (name, NAMES.get(ta, ta), diff, nblk))
print("SUMMARY %d of %d same-type tensors identical" % (same, compared))
