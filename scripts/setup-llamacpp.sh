#!/usr/bin/env bash
# Installs real llama.cpp (the npm package node-llama-cpp, pinned, with its prebuilt linux-x64 CPU
# libraries) into .tools/llamacpp for the GGUF interop test. Idempotent: fast when installed.
# Under CI=true a failure is fatal; otherwise the interop test is skipped with a notice.
set -uo pipefail
cd "$(dirname "$0")/.."
VERSION=3.22.1
PREFIX=.tools/llamacpp
PKG="$PREFIX/node_modules/node-llama-cpp/package.json"
if [ -f "$PKG" ] && grep -q "\"version\": \"$VERSION\"" "$PKG"; then
    exit 0
fi
fail() {
    if [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; then
        echo "setup-llamacpp: error: $1" >&2
        exit 1
    fi
    echo "setup-llamacpp: notice: $1 (the llama.cpp interop test will be skipped)" >&2
    exit 0
}
command -v npm >/dev/null 2>&1 || fail "npm not found"
mkdir -p "$PREFIX"
echo "setup-llamacpp: installing node-llama-cpp@$VERSION into $PREFIX" >&2
# --ignore-scripts: the prebuilt binaries ship in @node-llama-cpp/linux-x64; no build at install.
npm install --prefix "$PREFIX" --no-audit --no-fund --ignore-scripts "node-llama-cpp@$VERSION" >&2 \
    || fail "npm install node-llama-cpp@$VERSION failed"
[ -f "$PKG" ] || fail "node-llama-cpp did not install"
