// Tokenizes a text with the vocabulary of a GGUF file in real llama.cpp (node-llama-cpp), with
// special tokens parsed and BOS added as the vocabulary says; prints {"ids": [...]}.
// usage: node tokenize.mjs MODEL.gguf TEXT
import path from "node:path";
import {createRequire} from "node:module";
import {fileURLToPath} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const prefix = process.env.PISO_LLAMACPP_PREFIX || path.join(here, "..", "..", ".tools", "llamacpp");
const require = createRequire(path.join(prefix, "node_modules", "x.js"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));
const [modelPath, text] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const ids = model.tokenize(text, true); // true: special-token text becomes its id, as piso_tokenize
process.stdout.write(JSON.stringify({ids: Array.from(ids), bos: model.tokens.bos}) + "\n");
await model.dispose();
await llama.dispose();
