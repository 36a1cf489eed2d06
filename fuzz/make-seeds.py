#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/corpus/ from the shared data (small slices only):
   python3 fuzz/make-seeds.py [PISO_DATA] [path/to/piso]
Each seed is a few KB: real files when they are small, otherwise a slice (the first tokens of a
vocabulary, with the merges among them) or a tiny model written in the real format."""
import json, os, struct, subprocess, sys, random

data = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PISO_DATA", "../shared")
piso = sys.argv[2] if len(sys.argv) > 2 else "build/piso"
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
rnd = random.Random(15)

def out(target, name, blob):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)

def read(rel):
    with open(os.path.join(data, rel), "rb") as f:
        return f.read()

# ---- safetensors / problem files ----
def safetensors(tensors, meta=None):
    hdr, off, blobs = {}, 0, []
    for name, dtype, shape, blob in tensors:
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        off += len(blob)
        blobs.append(blob)
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)

def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)

N, D = 3, 8
W = [rnd.uniform(-1, 1) for _ in range(N * D)]
X = [rnd.uniform(-1, 1) for _ in range(5 * D)]
H = [sum(X[t * D + i] * X[t * D + j] for t in range(5)) for i in range(D) for j in range(D)]
out("fuzz_problem", "hessian.safetensors", safetensors([("weight", "F32", [N, D], f32(W)), ("hessian", "F32", [D, D], f32(H))]))
out("fuzz_problem", "inputs.safetensors", safetensors([("weight", "F32", [N, D], f32(W)), ("inputs", "F32", [5, D], f32(X))]))
out("fuzz_problem", "cross.safetensors", safetensors([("weight", "F32", [N, D], f32(W)), ("hessian", "F32", [D, D], f32(H)), ("cross", "F32", [D, D], f32(H))]))
out("fuzz_safetensors", "problem.safetensors", safetensors([("weight", "F32", [N, D], f32(W)), ("hessian", "F32", [D, D], f32(H))]))
out("fuzz_safetensors", "dtypes.safetensors", safetensors([
    ("a", "F16", [2, 2], struct.pack("<4e", 1, -2, 0.5, 65504)), ("b", "BF16", [3], b"\x80\x3f\x00\x40\x00\xc0"),
    ("c", "I8", [4], b"\x01\xff\x7f\x80"), ("d", "F64", [1], struct.pack("<d", 3.25)), ("e", "F32", [0], b"")],
    {"format": "pt", "note": "seed"}))
# the first tensors of stories260K-hf's header, with their real names and shapes, data cut short
st = read("models/stories260K-hf/model.safetensors")
hlen = struct.unpack("<Q", st[:8])[0]
hdr = json.loads(st[8:8 + hlen])
keep = [k for k in sorted(hdr) if k != "__metadata__"][:3]
ts = []
for k in keep:
    a, b = hdr[k]["data_offsets"]
    n = min(b - a, 256)
    shape = [n // 4] if hdr[k]["dtype"] == "F32" else [n // 2]
    ts.append((k, hdr[k]["dtype"], shape, st[8 + hlen + a: 8 + hlen + a + n]))
out("fuzz_safetensors", "stories260K-slice.safetensors", safetensors(ts, hdr.get("__metadata__")))

# ---- llama2.c checkpoints: a tiny model in the real layout ----
def llama2c(dim, hidden, layers, heads, kv, vocab, seq, shared=True):
    hd = dim // heads
    n = vocab * dim + layers * (dim + heads * hd * dim + 2 * kv * hd * dim + dim * heads * hd + dim + 3 * hidden * dim) + dim
    n += seq * hd  # freq_cis_real + imag
    if not shared:
        n += vocab * dim
    vals = [rnd.uniform(-0.5, 0.5) for _ in range(n)]
    return struct.pack("<7i", dim, hidden, layers, heads, kv, vocab if shared else -vocab, seq) + f32(vals)

tiny = llama2c(8, 16, 1, 2, 2, 32, 8)
out("fuzz_llama2c", "tiny.bin", tiny)
out("fuzz_llama2c", "tiny-gqa-unshared.bin", llama2c(8, 12, 2, 2, 1, 16, 4, shared=False))
out("fuzz_llama2c_tokenizer", "tok512.bin", read("models/stories260K/tok512.bin"))

# ---- GGUF: tiny models exported by piso, vocab slices of llama.cpp's vocab files ----
def gguf_read(blob):
    p = [0]
    def take(fmt):
        v = struct.unpack_from("<" + fmt, blob, p[0]); p[0] += struct.calcsize("<" + fmt); return v[0]
    def s():
        n = take("Q"); v = blob[p[0]:p[0] + n]; p[0] += n; return v
    scal = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    def val(t):
        if t == 8: return s()
        if t == 9:
            at, n = take("I"), take("Q")
            return (at, [val(at) for _ in range(n)])
        return take(scal[t])
    assert blob[:4] == b"GGUF"
    p[0] = 4
    take("I"); nt = take("Q"); nkv = take("Q")
    kvs = []
    for _ in range(nkv):
        k = s(); t = take("I"); kvs.append((k, t, val(t)))
    return kvs

def gguf_write(kvs):
    scal = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    def s(b): return struct.pack("<Q", len(b)) + b
    def val(t, v):
        if t == 8: return s(v)
        if t == 9:
            at, items = v
            return struct.pack("<IQ", at, len(items)) + b"".join(val(at, x) for x in items)
        return struct.pack("<" + scal[t], v)
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for k, t, v in kvs:
        body += s(k) + struct.pack("<I", t) + val(t, v)
    return body

def slice_vocab(kvs, n):
    res = []
    for k, t, v in kvs:
        if t == 9 and k in (b"tokenizer.ggml.tokens", b"tokenizer.ggml.scores", b"tokenizer.ggml.token_type"):
            v = (v[0], v[1][:n])
        elif t == 9 and k == b"tokenizer.ggml.merges":
            v = (v[0], v[1][:n // 2])
        elif t == 9 and len(v[1]) > n:
            continue
        elif t in (4, 5, 10, 11) and k.endswith(b"_token_id") and v >= n:
            v = 1
        res.append((k, t, v))
    return res

for name in ("llama-spm", "gpt-neox", "bert-bge", "deepseek-coder"):
    try:
        blob = read("tokenizers/llamacpp-vocab/ggml-vocab-%s.gguf" % name)
    except OSError:
        continue
    out("fuzz_gguf", "vocab-%s.gguf" % name, gguf_write(slice_vocab(gguf_read(blob), 300)))

tmpd = "/tmp/piso-make-seeds"
os.makedirs(tmpd, exist_ok=True)
with open(tmpd + "/tiny.bin", "wb") as f:
    f.write(tiny)
for t in ("F32", "Q8_0"):
    g = "%s/tiny-%s.gguf" % (tmpd, t)
    if subprocess.call([piso, "quantize", "--model", tmpd + "/tiny.bin", "--type", t, "--out", g, "--quiet"]) == 0:
        with open(g, "rb") as f:
            out("fuzz_gguf", "tiny-%s.gguf" % t, f.read())

# ---- imatrix: computed by piso on stories260K (GGUF and .dat), then cut to 3 entries ----
im = tmpd + "/im.gguf"
if subprocess.call([piso, "imatrix", "--model", os.path.join(data, "models/stories260K/stories260K.bin"), "--calib",
                    os.path.join(data, "data/tinystories/TinyStories-valid.small30KB.txt"), "--ctx", "64", "--chunks", "2",
                    "-o", tmpd + "/im.dat", "--quiet"]) == 0:
    with open(tmpd + "/im.dat", "rb") as f:
        b = f.read()
    # keep the first 3 entries of the .dat
    p, n = 4, struct.unpack_from("<i", b, 0)[0]
    for _ in range(3):
        ln = struct.unpack_from("<i", b, p)[0]; p += 4 + ln
        ncall, nval = struct.unpack_from("<ii", b, p); p += 8 + 4 * nval
    out("fuzz_imatrix", "stories260K-3.dat", struct.pack("<i", 3) + b[4:p] + struct.pack("<i", 2) + struct.pack("<i", 4) + b"seed")
ent = [(b"blk.0.attn_q.weight", [0.5, 1.0, 2.0, 0.0]), (b"blk.0.ffn_down.weight", [1.0, 3.0])]
kvs = [(b"general.type", 8, b"imatrix"), (b"imatrix.chunk_count", 4, 2), (b"imatrix.chunk_size", 4, 64),
       (b"imatrix.datasets", 9, (8, [b"seed.txt"]))]
# a GGUF imatrix with tensors: written by hand (header, tensor infos, aligned data)
def gguf_with_tensors(kvs, tensors):
    body = gguf_write(kvs)
    body = body[:8] + struct.pack("<Q", len(tensors)) + body[16:]
    infos, data_, off = b"", b"", 0
    for name, ne, blob in tensors:
        infos += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne)
        infos += struct.pack("<IQ", 0, off)
        pad = -len(blob) % 32
        data_ += blob + b"\0" * pad
        off += len(blob) + pad
    head = body + infos
    head += b"\0" * (-len(head) % 32)
    return head + data_
tens = []
for name, vals in ent:
    tens.append((name + b".in_sum2", [len(vals), 1], f32(vals)))
    tens.append((name + b".counts", [1, 1], f32([2.0])))
out("fuzz_imatrix", "hand.gguf", gguf_with_tensors(kvs, tens))

# ---- config.json, tokenizer.json ----
out("fuzz_config_json", "stories260K-hf.json", read("models/stories260K-hf/config.json"))
cfg = json.loads(read("models/stories260K-hf/config.json"))
cfg.update({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 256}})
out("fuzz_config_json", "rope-llama3.json", json.dumps(cfg).encode())
cfg = json.loads(read("models/stories260K-hf/config.json"))
cfg.update({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": 8, "tie_word_embeddings": True})
out("fuzz_config_json", "qwen3.json", json.dumps(cfg).encode())

out("fuzz_tokenizer_json", "stories260K-hf.json", read("models/stories260K-hf/tokenizer.json"))
def slice_tokjson(rel, n):
    tj = json.loads(read(rel))
    vocab = {k: v for k, v in tj["model"]["vocab"].items() if v < n}
    merges = []
    for m in tj["model"]["merges"]:
        a, b = (m.split(" ", 1) if isinstance(m, str) else m)
        if a in vocab and b in vocab and (a + b) in vocab:
            merges.append(m)
    tj["model"]["vocab"] = vocab
    tj["model"]["merges"] = merges[:200]
    added = [a for a in tj.get("added_tokens", [])][:8]
    for i, a in enumerate(added):
        a["id"] = n + i
    tj["added_tokens"] = added
    return json.dumps(tj, ensure_ascii=False).encode()
for name in ("llama3", "qwen3", "llama2"):
    try:
        out("fuzz_tokenizer_json", "%s-slice.json" % name, slice_tokjson("tokenizers/%s/tokenizer.json" % name, 400))
    except (OSError, KeyError, ValueError) as e:
        print("skip", name, e)

# ---- arbitrary text for the tokenizers ----
txt = read("data/tinystories/tinystories_sample.cs336.txt")[:400]
out("fuzz_tokenize", "tinystories.txt", txt)
out("fuzz_tokenize", "unicode.txt", "naïve café — 東京 🙂 <s> </s> <|endoftext|>\t\n  x".encode())
out("fuzz_tokenize", "bytes.bin", bytes(range(256)))
print("seeds written to", root)
