#!/usr/bin/env python3
"""An independent unpacker for piso's GPTQ and compressed-tensors checkpoints (Debian numpy only).

Written from the published layouts, not from piso's C code:
  GPTQ (AutoGPTQ v1): qweight int32 [in*bits/32, out], each column one little-endian bit stream of
  the unsigned codes along the input (3-bit values cross word boundaries); qzeros int32
  [groups, out*bits/32], each row a bit stream of (zero - 1) along the output; scales fp16
  [groups, out]; g_idx int32 [in] the group of each input (desc_act true: groups follow the act
  order, so g_idx is any assignment; false: i // group); weight = scale[g_idx[i]] * (code - zero[g_idx[i]]).
  compressed-tensors pack-quantized: weight_packed int32 [out, ceil(in / (32 // bits))], value j of
  a word at bit bits*j, stored as code + 2^(bits-1); weight_zero_point int32 packed the same way
  along the output dimension (dim 0); weight_scale [out, groups]; weight_g_idx int32 [in] when
  actorder is "group" (the group of each input; else input i is in group i // group_size);
  weight = scale[:, g] * (q - zero_point[:, g]), g = the input's group.

For each configuration it runs `piso quantize`, unpacks every packed layer with numpy and checks
that the dequantized weights equal, bit for bit, scale * code from piso's own record
(quantization.safetensors, written by a different code path). Exit 77 = skipped.

usage: ckpt_unpack.py PISO_BIN DATA_DIR WORK_DIR
"""
import json
import os
import shutil
import struct
import subprocess
import sys

CI = os.environ.get("CI") == "true"


def skip(msg):
    print(("FAIL: " if CI else "SKIP: ") + msg, file=sys.stderr)
    sys.exit(1 if CI else 77)


try:
    import numpy as np
except ImportError:
    skip("python3-numpy is missing (apt-get install python3-numpy)")

DTYPES = {"F16": "<f2", "F32": "<f4", "I32": "<i4", "I64": "<i8", "I16": "<i2", "I8": "i1", "U8": "u1"}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(blob[base + lo:base + hi], dtype="<u2").astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(blob[base + lo:base + hi], dtype=DTYPES[info["dtype"]])
        out[name] = (info["dtype"], arr.reshape(info["shape"]))
    return out


def bit_stream(words, bits, count):
    """words uint32 [..., W] -> the first `count` values of the little-endian bit stream [..., count]."""
    w = words.astype(np.uint64)
    b = (w[..., :, None] >> np.arange(32, dtype=np.uint64)) & 1          # [..., W, 32]
    b = b.reshape(words.shape[:-1] + (-1,))[..., :count * bits]          # [..., W*32]
    b = b.reshape(words.shape[:-1] + (count, bits))
    return (b << np.arange(bits, dtype=np.uint64)).sum(-1).astype(np.int64)


def per_word(words, bits, count):
    """words uint32 [..., W] with 32 // bits values each -> [..., count]."""
    pf = 32 // bits
    v = (words.astype(np.uint64)[..., :, None] >> (bits * np.arange(pf, dtype=np.uint64))) & ((1 << bits) - 1)
    return v.reshape(words.shape[:-1] + (-1,))[..., :count].astype(np.int64)


def unpack_gptq(t, prefix, q):
    bits = q["bits"]
    qw = t[prefix + ".qweight"][1].view(np.uint32)
    qz = t[prefix + ".qzeros"][1].view(np.uint32)
    dt, sc = t[prefix + ".scales"]
    assert dt == "F16", f"{prefix}.scales is {dt}, GPTQ stores fp16"
    D, N = qw.shape[0] * 32 // bits, qw.shape[1]
    codes = bit_stream(np.ascontiguousarray(qw.T), bits, D)              # [N, D]
    zeros = bit_stream(qz, bits, N) + 1                                  # [groups, N]  (v1: zero - 1 stored)
    gidx = t[prefix + ".g_idx"][1].astype(np.int64)
    scale = sc.astype(np.float32)
    w = scale[gidx, :].T * (codes - zeros[gidx, :].T).astype(np.float32)
    return w.astype(np.float32)


def unpack_ct(t, prefix, q):
    wq = q["config_groups"]["group_0"]["weights"]
    bits, sym = wq["num_bits"], wq["symmetric"]
    N, D = (int(x) for x in t[prefix + ".weight_shape"][1])
    wp = t[prefix + ".weight_packed"][1].view(np.uint32)
    qv = per_word(wp, bits, D) - (1 << (bits - 1))                       # signed codes [N, D]
    scale = t[prefix + ".weight_scale"][1].astype(np.float32)            # [N, groups]
    G = scale.shape[1]
    gs = wq["group_size"] if wq["strategy"] == "group" else D
    if prefix + ".weight_g_idx" in t:                                    # actorder "group"
        gidx = t[prefix + ".weight_g_idx"][1].astype(np.int64)
    else:
        gidx = np.arange(D) // gs
    if sym:
        zp = np.zeros((N, G), dtype=np.int64)
    else:
        zpk = t[prefix + ".weight_zero_point"][1].view(np.uint32)        # [ceil(N/pf), G]
        zp = per_word(np.ascontiguousarray(zpk.T), bits, N).T - (1 << (bits - 1))
    w = scale[:, gidx] * (qv - zp[:, gidx]).astype(np.float32)
    return w.astype(np.float32)


def reference(side, name):
    sc = side[name + ".scales"][1].astype(np.float32)
    codes = side[name + ".codes"][1].astype(np.float32)
    N, D = codes.shape
    gs = -(-D // sc.shape[1])
    gidx = side[name + ".g_idx"][1].astype(np.int64) if name + ".g_idx" in side else np.arange(D) // gs
    return sc[:, gidx] * codes, sc


def check_groups(t, name, key, group, errors):
    """desc_act / actorder "group": g_idx must put exactly `group` inputs in every group and differ
    from the contiguous i // group somewhere (else the act-order path was not exercised)."""
    if name + key not in t:
        errors.append(f"{name}: no {key} with act order groups")
        return 0
    g = t[name + key][1].astype(np.int64)
    counts = np.bincount(g)
    if not np.all(counts == group):
        errors.append(f"{name}{key}: group sizes {sorted(set(counts.tolist()))}, expected all {group}")
    return int(np.any(g != np.arange(g.size) // group))


def check_dir(out, fmt, bits, group, asym, desc_act=False):
    cfg = json.load(open(os.path.join(out, "config.json")))
    q = cfg["quantization_config"]
    errors = []
    if fmt == "gptq":
        want = {"quant_method": "gptq", "checkpoint_format": "gptq", "bits": bits,
                "group_size": group if group else -1, "sym": not asym, "desc_act": desc_act}
        for k, v in want.items():
            if q.get(k) != v:
                errors.append(f"quantization_config.{k} = {q.get(k)!r}, expected {v!r}")
    else:
        wq = q["config_groups"]["group_0"]["weights"]
        if q.get("format") != "pack-quantized" or q.get("quant_method") != "compressed-tensors":
            errors.append("not a pack-quantized compressed-tensors config")
        if wq["num_bits"] != bits or wq["symmetric"] != (not asym) or wq["type"] != "int":
            errors.append(f"weights config {wq}")
        if wq["strategy"] != ("group" if group else "channel"):
            errors.append(f"strategy {wq['strategy']}")
        if desc_act and wq.get("actorder") != "group":
            errors.append(f"actorder {wq.get('actorder')!r}, expected 'group'")
    t = read_safetensors(os.path.join(out, "model.safetensors"))
    side = read_safetensors(os.path.join(out, "quantization.safetensors"))
    key = ".qweight" if fmt == "gptq" else ".weight_packed"
    layers = sorted(n[:-len(key)] for n in t if n.endswith(key))
    if not layers:
        errors.append("no packed layer")
    permuted = 0
    for name in layers:
        if desc_act:
            permuted += check_groups(t, name, ".g_idx" if fmt == "gptq" else ".weight_g_idx", group, errors)
        w = unpack_gptq(t, name, q) if fmt == "gptq" else unpack_ct(t, name, q)
        ref, sc = reference(side, name)
        if not np.array_equal(sc, sc.astype(np.float16).astype(np.float32)):
            errors.append(f"{name}: piso's scales are not fp16 values")
        if w.shape != ref.shape:
            errors.append(f"{name}: shape {w.shape} vs {ref.shape}")
        elif not np.array_equal(w.view(np.uint32), ref.view(np.uint32)):
            bad = int(np.sum(w.view(np.uint32) != ref.view(np.uint32)))
            errors.append(f"{name}: {bad} of {w.size} weights differ (max |d| {np.max(np.abs(w - ref)):.3g})")
        if name + ".weight" in t:
            errors.append(f"{name}: both packed and dense")
    # layers kept dense are the piso record's dequantized weights too
    for n in side:
        if n.endswith(".scales") and n[:-7] not in layers:
            if n[:-7] + ".weight" not in t:
                errors.append(f"{n[:-7]}: neither packed nor dense")
    if desc_act and not permuted:
        errors.append("every g_idx is i // group: the act order did not reach the groups")
    return layers, errors


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    piso, data, work = sys.argv[1:]
    data = os.environ.get("PISO_DATA") or data  # as the C tests: $PISO_DATA wins over the default
    model = os.path.join(data, "models/stories260K/stories260K.bin")
    if not os.path.exists(model):
        skip(f"test data {model} is missing (set PISO_DATA)")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    # (out-format, bits, group, asym, scale): data-free RTN, so no calibration text is needed
    cases = [("gptq", 4, 0, True, "piso-datafree"), ("gptq", 3, 0, False, "absmax"),
             ("gptq", 3, 32, True, "piso-datafree"), ("gptq", 2, 32, False, "piso-datafree"),
             ("gptq", 8, 0, True, "absmax"), ("compressed-tensors", 4, 32, True, "piso-datafree"),
             ("compressed-tensors", 4, 0, False, "absmax"), ("compressed-tensors", 3, 0, True, "mse-grid"),
             ("compressed-tensors", 2, 32, False, "piso-datafree"), ("compressed-tensors", 8, 0, True, "absmax")]
    cases = [c + ("rtn",) for c in cases]
    # GPTQ/Qronos with --act-order and a group: groups follow the act order (g_idx, desc_act)
    calib = os.path.join(data, "data/tinystories/TinyStories-valid.small30KB.txt")
    if os.path.exists(calib):
        cases += [("gptq", 4, 32, True, "piso", "gptq"), ("gptq", 3, 32, False, "absmax", "gptq"),
                  ("compressed-tensors", 4, 32, True, "piso", "qronos"),
                  ("compressed-tensors", 2, 32, False, "absmax", "gptq")]
    else:
        skip(f"calibration text {calib} is missing (set PISO_DATA)")
    failures = 0
    for i, (fmt, bits, group, asym, scale, rounding) in enumerate(cases):
        out = os.path.join(work, f"c{i}")
        cmd = [piso, "quantize", "--quiet", "--model", model, "--format", f"int{bits}", "--group", str(group),
               "--rounding", rounding, "--scale", scale, "--out-format", fmt, "--out", out] + (["--asym"] if asym else [])
        desc_act = rounding != "rtn"
        if desc_act:
            cmd += ["--act-order", "--calib", calib, "--nsamples", "2", "--seqlen", "64"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL {' '.join(cmd)}: {r.stderr.strip()}", file=sys.stderr)
            failures += 1
            continue
        layers, errors = check_dir(out, fmt, bits, group, asym, desc_act)
        for e in errors:
            print(f"FAIL {fmt} int{bits} group {group} asym {asym}: {e}", file=sys.stderr)
        failures += bool(errors)
        print(f"{'ok  ' if not errors else 'FAIL'} {fmt:18s} int{bits} group {group:2d} {'asym' if asym else 'sym '} "
              f"{rounding:6s}{' act order' if desc_act else ''}: "
              f"{len(layers)} packed layers equal bit for bit")
    shutil.rmtree(work, ignore_errors=True)
    print(f"{len(cases) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
