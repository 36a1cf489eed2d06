#!/usr/bin/env bash
# Extracts llama.cpp's reference vocab files (models/ggml-vocab-*.gguf + .inp/.out) from the git
# bundle inside the npm package node-llama-cpp (installed by setup-llamacpp.sh) into
# .tools/llamacpp-vocab. The tokenizer test prefers these intact copies where the shared .gguf files
# are damaged (the shared copies had every byte >= 0x80 replaced by U+FFFD). Idempotent.
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.tools/llamacpp/node_modules/node-llama-cpp/llama/gitRelease.bundle
OUT=.tools/llamacpp-vocab
[ -f "$OUT/.done" ] && exit 0
if [ ! -f "$BUNDLE" ]; then
    echo "setup-llamacpp-vocab: notice: $BUNDLE not found (run scripts/setup-llamacpp.sh)" >&2
    [ "${CI:-}" = "true" ] && exit 1
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q --no-checkout "$BUNDLE" "$tmp/llama.cpp" || { echo "setup-llamacpp-vocab: cannot read $BUNDLE" >&2; exit 1; }
mkdir -p "$OUT"
(cd "$tmp/llama.cpp" && git ls-tree -r --name-only HEAD models | grep '/ggml-vocab-') | while read -r f; do
    git -C "$tmp/llama.cpp" show "HEAD:$f" > "$OUT/$(basename "$f")"
done
touch "$OUT/.done"
echo "setup-llamacpp-vocab: $(ls "$OUT" | grep -c '\.gguf$') vocab files in $OUT" >&2
