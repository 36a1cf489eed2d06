// Reference evaluations in real llama.cpp (npm node-llama-cpp, prebuilt CPU build): the logits come
// from llama.cpp, the statistics are computed here, written independently of piso from
// llama-perplexity's published formulas (tools/perplexity/perplexity.cpp), with its float/double
// arithmetic emulated by Math.fround.
//
//   node evals.mjs kld BASE.gguf Q.gguf TOKENS.json CTX OUTDIR
//     llama-perplexity --kl-divergence-base + --kl-divergence: writes OUTDIR/base.kld (the base
//     model's log-probs in llama.cpp's layout), OUTDIR/q.logits (the Q model's raw float32 logits at
//     the scored positions, chunk by chunk) and prints llama-perplexity's summary block.
//   node evals.mjs hellaswag MODEL.gguf TASKS.txt IDX[,IDX...]
//     llama-perplexity --hellaswag on the given task indices (0-based, in that order): prints one
//     JSON object {"per_task": [{"task", "gold", "pred", "logprob": [4]}], "line": final line}.
// Both use an F32 KV cache and no flash attention, so an F32 model runs the arithmetic piso runs.
import fs from "node:fs";
import path from "node:path";
import {createRequire} from "node:module";
import {fileURLToPath} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const prefix = process.env.PISO_LLAMACPP_PREFIX || path.join(here, "..", "..", ".tools", "llamacpp");
const require = createRequire(path.join(prefix, "node_modules", "x.js"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));
const f32 = Math.fround;
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});

async function openModel(p, size) {
    const model = await llama.loadModel({modelPath: p});
    const context = await model.createContext({
        contextSize: size, batchSize: size, threads: 2, flashAttention: false,
        experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
    });
    return {model, context, seq: context.getSequence()};
}

// logits (Float32Array per wanted position) of tokens; wanted: positions whose logits are returned
async function logitsAt(h, tokens, wanted) {
    await h.seq.clearHistory();
    const want = new Set(wanted);
    const res = await h.seq.controlledEvaluate(tokens.map((t, j) => want.has(j) ? [t, {generateNext: {logits: true}}] : t));
    return wanted.map(j => {
        const row = new Float32Array(res[j].next.logits.size);
        for (const [tok, v] of res[j].next.logits) row[tok] = v;
        return row;
    });
}

// ---- KL divergence -----------------------------------------------------------------------------
function nearestEven(x) { // nearest integer, ties to even (llama.cpp's nearest_int)
    const f = Math.floor(x), d = x - f;
    return d > 0.5 ? f + 1 : d < 0.5 ? f : (f % 2 === 0 ? f : f + 1);
}

// llama-perplexity's compact row: [scale, min_log_prob] as two floats, then uint16 codes
function encodeRow(l, nv) {
    let mx = l[0], mn = l[0];
    for (const v of l) { if (v > mx) mx = v; if (v < mn) mn = v; }
    mn = Math.max(mn, f32(mx - 16));
    let s = 0;
    for (const v of l) s += f32(Math.exp(f32(v - mx)));
    const lse = f32(Math.log(s));
    const minLogProb = f32(f32(mn - mx) - lse), scale = f32(f32(mx - mn) / 65535);
    const buf = Buffer.alloc(2 * nv);
    buf.writeFloatLE(scale, 0);
    buf.writeFloatLE(minLogProb, 4);
    if (scale !== 0) {
        const inv = f32(1 / scale);
        for (let i = 0; i < l.length; i++) buf.writeUInt16LE(l[i] > mn ? nearestEven(f32(inv * f32(l[i] - mn))) : 0, 8 + 2 * i);
    }
    return buf;
}

function kldStats(rows, qLogits, targets, V) {
    const a = {nll: 0, nll2: 0, nb: 0, nb2: 0, nnb: 0, kld: 0, kld2: 0, dp: 0, dp2: 0, dp4: 0, same: 0, n: 0};
    const klds = [], dps = [];
    for (let r = 0; r < rows.length; r++) {
        const l = qLogits[r], row = rows[r], tok = targets[r];
        let mx = l[0], imax = 0;
        for (let i = 1; i < V; i++) if (l[i] > mx) { mx = l[i]; imax = i; }
        let s = 0;
        for (let i = 0; i < V; i++) s += f32(Math.exp(f32(l[i] - mx)));
        const lse = f32(Math.log(s));
        const scale = row.readFloatLE(0), minLp = row.readFloatLE(4);
        const code = i => row.readUInt16LE(8 + 2 * i);
        const nll = f32(f32(mx + lse) - l[tok]);
        const nllBase = -f32(f32(scale * code(tok)) + minLp);
        a.nll += nll; a.nll2 += f32(nll * nll);
        a.nb += nllBase; a.nb2 += f32(nllBase * nllBase); a.nnb += f32(nll * nllBase);
        const norm = f32(mx + lse);
        let k = 0, ib = 0, lbMax = 0;
        for (let i = 0; i < V; i++) {
            const lb = f32(f32(scale * code(i)) + minLp);
            if (i === 0 || lb > lbMax) { lbMax = lb; ib = i; }
            if (lb > -16) k += f32(f32(Math.exp(lb)) * f32(f32(lb - l[i]) + norm));
        }
        a.kld += k; a.kld2 += k * k; a.n++;
        if (imax === ib) a.same++;
        const pd = f32(f32(Math.exp(-nll)) - f32(Math.exp(-nllBase)));
        const pd2 = f32(pd * pd);
        a.dp += pd; a.dp2 += pd2; a.dp4 += pd2 * pd2;
        klds.push(f32(k)); dps.push(pd);
    }
    return {a, klds, dps};
}

function meanUnc(sum, sum2, n) {
    const f = sum / n, v = sum2 / n - f * f;
    return [f, v > 0 && n > 10 ? Math.sqrt(v / (n - 1)) : 0];
}

function pct(v, frac) { // v sorted; llama-perplexity's percentile lambda, float arithmetic
    if (frac <= 0) return v[0];
    if (frac >= 1) return v[v.length - 1];
    let p = f32(f32(frac) * (v.length - 1));
    const ip = Math.floor(p);
    p = f32(p - ip);
    return f32(f32(f32(1 - p) * v[ip]) + f32(p * v[Math.min(ip + 1, v.length - 1)]));
}

function fmt(x, w, d) { return x.toFixed(d).padStart(w); }

function summary({a, klds, dps}) {
    const n = a.n, out = [];
    const [lq, lqu] = meanUnc(a.nll, a.nll2, n), [lb, lbu] = meanUnc(a.nb, a.nb2, n);
    const ppl = Math.exp(lq), pplU = ppl * lqu, pb = Math.exp(lb), pbU = pb * lbu;
    const cov = (a.nnb / n - (a.nll / n) * (a.nb / n)) / (n - 1);
    out.push("====== Perplexity statistics ======");
    out.push(`Mean PPL(Q)                   : ${fmt(ppl, 10, 6)} ± ${fmt(pplU, 10, 6)}`);
    out.push(`Mean PPL(base)                : ${fmt(pb, 10, 6)} ± ${fmt(pbU, 10, 6)}`);
    out.push(`Cor(ln(PPL(Q)), ln(PPL(base))): ${fmt(100 * cov / (lqu * lbu), 6, 2)}%`);
    const lr = lq - lb, lru = Math.sqrt(lqu * lqu + lbu * lbu - 2 * cov);
    out.push(`Mean ln(PPL(Q)/PPL(base))     : ${fmt(lr, 10, 6)} ± ${fmt(lru, 10, 6)}`);
    out.push(`Mean PPL(Q)/PPL(base)         : ${fmt(Math.exp(lr), 10, 6)} ± ${fmt(Math.exp(lr) * lru, 10, 6)}`);
    const du = Math.sqrt(pplU * pplU + pbU * pbU - 2 * ppl * pb * cov);
    out.push(`Mean PPL(Q)-PPL(base)         : ${fmt(ppl - pb, 10, 6)} ± ${fmt(du, 10, 6)}`);
    out.push("");
    out.push("====== KL divergence statistics ======");
    const [km, ku] = meanUnc(a.kld, a.kld2, n);
    out.push(`Mean    KLD: ${fmt(km, 10, 6)} ± ${fmt(ku, 10, 6)}`);
    const k = Float32Array.from(klds).sort(), d = Float32Array.from(dps).sort();
    const med = v => v.length % 2 === 0 ? f32(0.5 * f32(v[v.length / 2] + v[v.length / 2 - 1])) : v[(v.length - 1) / 2];
    const kRows = [["Maximum", 1], ["99.9%  ", 0.999], ["99.0%  ", 0.99], ["95.0%  ", 0.95], ["90.0%  ", 0.9], ["Median ", -1],
        ["10.0%  ", 0.1], [" 5.0%  ", 0.05], [" 1.0%  ", 0.01], [" 0.1%  ", 0.001], ["Minimum", 0]];
    for (const [name, fr] of kRows) out.push(`${name} KLD: ${fmt(fr < 0 ? med(k) : pct(k, fr), 10, 6)}`);
    out.push("");
    out.push("====== Token probability statistics ======");
    const [dm, dmu] = meanUnc(a.dp, a.dp2, n);
    out.push(`Mean    Δp: ${fmt(100 * dm, 6, 3)} ± ${fmt(100 * dmu, 5, 3)} %`);
    const dRows = [["Maximum", 1], ["99.9%  ", 0.999], ["99.0%  ", 0.99], ["95.0%  ", 0.95], ["90.0%  ", 0.9], ["75.0%  ", 0.75],
        ["Median ", -1], ["25.0%  ", 0.25], ["10.0%  ", 0.1], [" 5.0%  ", 0.05], [" 1.0%  ", 0.01], [" 0.1%  ", 0.001], ["Minimum", 0]];
    for (const [name, fr] of dRows) out.push(`${name} Δp: ${fmt(100 * (fr < 0 ? med(d) : pct(d, fr)), 6, 3)}%`);
    const [mse, mseU] = meanUnc(a.dp2, a.dp4, n), rms = Math.sqrt(mse);
    out.push(`RMS Δp    : ${fmt(100 * rms, 6, 3)} ± ${fmt(100 * 0.5 / rms * mseU, 5, 3)} %`);
    const st = a.same / n;
    out.push(`Same top p: ${fmt(100 * st, 6, 3)} ± ${fmt(100 * Math.sqrt(st * (1 - st) / (n - 1)), 5, 3)} %`);
    return out.join("\n") + "\n";
}

async function kld(basePath, qPath, tokPath, ctxArg, outDir) {
    const ids = JSON.parse(fs.readFileSync(tokPath, "utf8")).ids;
    const nCtx = Number(ctxArg), nChunk = Math.floor(ids.length / nCtx), first = Math.floor(nCtx / 2);
    const wanted = [];
    for (let j = first; j < nCtx - 1; j++) wanted.push(j);
    const b = await openModel(basePath, nCtx), q = await openModel(qPath, nCtx);
    const V = (await logitsAt(b, [b.model.tokens.bos], [0]))[0].length;
    const nv = 2 * Math.floor((V + 1) / 2) + 4;
    const head = Buffer.alloc(20 + 4 * nChunk * nCtx);
    head.write("_logits_", 0, "latin1");
    head.writeUInt32LE(nCtx, 8);
    head.writeInt32LE(V, 12);
    head.writeInt32LE(nChunk, 16);
    for (let i = 0; i < nChunk * nCtx; i++) head.writeInt32LE(ids[i], 20 + 4 * i);
    const parts = [head], qParts = [], rows = [], qRows = [], targets = [];
    for (let c = 0; c < nChunk; c++) {
        const chunk = ids.slice(c * nCtx, (c + 1) * nCtx);
        chunk[0] = b.model.tokens.bos;
        const lb = await logitsAt(b, chunk, wanted), lq = await logitsAt(q, chunk, wanted);
        for (let j = 0; j < wanted.length; j++) {
            const row = encodeRow(lb[j], nv);
            parts.push(row);
            rows.push(row);
            qRows.push(lq[j]);
            qParts.push(Buffer.from(lq[j].buffer));
            targets.push(ids[c * nCtx + wanted[j] + 1]);
        }
    }
    fs.writeFileSync(path.join(outDir, "base.kld"), Buffer.concat(parts));
    fs.writeFileSync(path.join(outDir, "q.logits"), Buffer.concat(qParts));
    process.stdout.write(summary(kldStats(rows, qRows, targets, V)));
}

// ---- HellaSwag ---------------------------------------------------------------------------------
async function hellaswag(modelPath, tasksPath, idxArg) {
    const lines = fs.readFileSync(tasksPath, "utf8").split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    const h = await openModel(modelPath, 1024);
    const bos = h.model.tokens.bos;
    const V = (await logitsAt(h, [bos], [0]))[0].length;
    const logprob = (l, tok, floatSum) => { // log-softmax at tok
        let mx = l[0];
        for (let i = 1; i < V; i++) if (l[i] > mx) mx = l[i];
        let s = 0;
        for (let i = 0; i < V; i++) s = floatSum ? f32(s + f32(Math.exp(f32(l[i] - mx)))) : s + f32(Math.exp(f32(l[i] - mx)));
        return {mx, s};
    };
    const perTask = [];
    let correct = 0;
    for (const idx of idxArg.split(",").map(Number)) {
        const context = lines[6 * idx], gold = parseInt(lines[6 * idx + 1], 10);
        const seqs = [0, 1, 2, 3].map(e => [bos, ...h.model.tokenize(context + " " + lines[6 * idx + 2 + e], false)]);
        let cp = 0;
        while (seqs.every(s => cp < s.length && s[cp] === seqs[0][cp])) cp++;
        const lp = [];
        let firstRow = null;
        for (let e = 0; e < 4; e++) {
            const s = seqs[e], wanted = [];
            for (let j = cp - 1; j < s.length - 1; j++) wanted.push(j);
            const rows = await logitsAt(h, s.slice(0, s.length - 1), wanted);
            if (e === 0) firstRow = rows[0];
            // the prefix's last position: float softmax with a double sum, log of the float probability
            const {mx, s: sum} = logprob(firstRow, s[cp], false);
            let v = f32(Math.log(f32(f32(Math.exp(f32(firstRow[s[cp]] - mx))) / sum)));
            for (let j = cp; j < s.length - 1; j++) {
                const r = rows[j - cp + 1], t = s[j + 1], q = logprob(r, t, true);
                v += f32(f32(r[t] - q.mx) - f32(Math.log(q.s)));
            }
            lp.push(v / (s.length - cp));
        }
        let pred = 0;
        for (let e = 1; e < 4; e++) if (lp[e] > lp[pred]) pred = e;
        if (pred === gold) correct++;
        perTask.push({task: idx, gold, pred, logprob: lp});
    }
    const n = perTask.length, f = correct / n, za = 1.95996398454, z = za * za / n;
    const half = z * Math.sqrt(n * (4 * f * (1 - f) + z)) / (za + za);
    const lo = (f + z * 0.5 - half) / (1 + z), hi = (f + z * 0.5 + half) / (1 + z);
    const line = `${n}\t${(100 * f).toFixed(8)}%\t[${(100 * lo).toFixed(4)}%, ${(100 * hi).toFixed(4)}%]`;
    process.stdout.write(JSON.stringify({per_task: perTask, line}) + "\n");
}

const [mode, ...args] = process.argv.slice(2);
if (mode === "kld") await kld(...args);
else if (mode === "hellaswag") await hellaswag(...args);
else { console.error("usage: node evals.mjs kld|hellaswag ..."); process.exit(2); }
await llama.dispose();
