// Real llama.cpp (npm node-llama-cpp, prebuilt CPU build) evaluates a token sequence from a GGUF
// file and prints, for each position, the log-probability of the next token and the full
// log-softmax summary: one JSON object {"n_vocab", "logprobs": [[...]...]} where logprobs[i] is
// the log-softmax of the logits after tokens[0..i].
// usage: node logprobs.mjs MODEL.gguf TOKENS(comma-separated ids)
import path from "node:path";
import {createRequire} from "node:module";
import {fileURLToPath} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const prefix = process.env.PISO_LLAMACPP_PREFIX || path.join(here, "..", "..", ".tools", "llamacpp");
const require = createRequire(path.join(prefix, "node_modules", "x.js"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));

const [modelPath, tokArg] = process.argv.slice(2);
if (!modelPath || !tokArg) {
    console.error("usage: node logprobs.mjs MODEL.gguf TOKENS");
    process.exit(2);
}
const tokens = tokArg.split(",").map(Number);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
// F32 KV cache and no flash attention, so an F32 model is compared without fp16 rounding
const context = await model.createContext({
    contextSize: Math.max(64, tokens.length + 8), batchSize: 512, threads: 1,
    flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const seq = context.getSequence();
const nVocab = model.tokens.length ?? model.fileInsights?.vocabularySize;
const input = tokens.map(t => [t, {generateNext: {logits: true}}]);
const res = await seq.controlledEvaluate(input);
const out = [];
for (let i = 0; i < tokens.length; i++) {
    const logits = res[i]?.next?.logits;
    if (!logits) throw new Error(`no logits at position ${i}`);
    let mx = -Infinity;
    const v = new Float64Array(logits.size);
    let k = 0;
    const ids = [];
    for (const [tok, lg] of logits) { ids.push(tok); v[k++] = lg; if (lg > mx) mx = lg; }
    let s = 0;
    for (let j = 0; j < k; j++) s += Math.exp(v[j] - mx);
    const lse = mx + Math.log(s);
    const row = new Array(k);
    for (let j = 0; j < k; j++) row[ids[j]] = +(v[j] - lse).toFixed(7);
    out.push(row);
}
process.stdout.write(JSON.stringify({n_vocab: out[0].length, logprobs: out}) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
