// Perplexity in real llama.cpp (npm node-llama-cpp, prebuilt CPU build) with llama-perplexity's
// protocol: chunks of n_ctx tokens, the first token of each replaced by BOS, a fresh KV cache per
// chunk, and the predictions of positions n_ctx/2 .. n_ctx-2 scored (log-softmax, natural log).
// usage: node perplexity.mjs MODEL.gguf TOKENS.json [n_ctx=512] [BASE.gguf]
//   with BASE: also the mean KL divergence KL(base || model) over the scored positions (as
//   llama-perplexity --kl-divergence) and how often both pick the same top token.
//   TOKENS.json: {"ids": [...]} (the whole file tokenized once, BOS first, e.g. `piso tokenize --json`)
// prints one JSON object {"ppl", "nll", "count", "chunks"}.
import fs from "node:fs";
import path from "node:path";
import {createRequire} from "node:module";
import {fileURLToPath} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const prefix = process.env.PISO_LLAMACPP_PREFIX || path.join(here, "..", "..", ".tools", "llamacpp");
const require = createRequire(path.join(prefix, "node_modules", "x.js"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));

const [modelPath, tokPath, ctxArg, basePath] = process.argv.slice(2);
if (!modelPath || !tokPath) {
    console.error("usage: node perplexity.mjs MODEL.gguf TOKENS.json [n_ctx]");
    process.exit(2);
}
const nCtx = Number(ctxArg || 512);
const ids = JSON.parse(fs.readFileSync(tokPath, "utf8")).ids;
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const nChunk = Math.floor(ids.length / nCtx);
const first = Math.floor(nCtx / 2);

// log-softmax rows (Float64Array per scored position) of one model over all chunks
async function evaluate(pathToModel) {
    const model = await llama.loadModel({modelPath: pathToModel});
    const bos = model.tokens.bos ?? 1;
    const rows = [], targets = [];
    for (let c = 0; c < nChunk; c++) {
        const context = await model.createContext({contextSize: nCtx, batchSize: nCtx, threads: 2});
        const seq = context.getSequence();
        const chunk = ids.slice(c * nCtx, (c + 1) * nCtx);
        chunk[0] = bos;
        const input = chunk.map((t, j) => (j >= first && j < nCtx - 1) ? [t, {generateNext: {logits: true}}] : t);
        const res = await seq.controlledEvaluate(input);
        for (let j = first; j < nCtx - 1; j++) {
            const logits = res[j].next.logits;
            let mx = -Infinity;
            for (const v of logits.values()) if (v > mx) mx = v;
            let s = 0;
            for (const v of logits.values()) s += Math.exp(v - mx);
            const lse = mx + Math.log(s);
            const row = new Float64Array(logits.size);
            for (const [tok, v] of logits) row[tok] = v - lse;
            rows.push(row);
            targets.push(chunk[j + 1]);
        }
        await context.dispose();
    }
    await model.dispose();
    return {rows, targets};
}

const q = await evaluate(modelPath);
let nll = 0;
for (let i = 0; i < q.rows.length; i++) nll -= q.rows[i][q.targets[i]];
const count = q.rows.length;
const result = {ppl: Math.exp(nll / count), nll: nll / count, count, chunks: nChunk};
if (basePath) {
    const b = await evaluate(basePath);
    let kld = 0, same = 0;
    for (let i = 0; i < count; i++) {
        const pb = b.rows[i], pq = q.rows[i];
        let k = 0, ab = 0, aq = 0;
        for (let t = 0; t < pb.length; t++) {
            k += Math.exp(pb[t]) * (pb[t] - pq[t]);
            if (pb[t] > pb[ab]) ab = t;
            if (pq[t] > pq[aq]) aq = t;
        }
        kld += k;
        same += ab === aq ? 1 : 0;
    }
    result.kld = kld / count;
    result.same_top = same / count;
}
process.stdout.write(JSON.stringify(result) + "\n");
await llama.dispose();
