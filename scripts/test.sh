#!/usr/bin/env bash
# Runs every test: formatting and lints, Rust unit and integration tests, then
# the end-to-end tests (real salon, Debian's chromium, the LiveKit SDKs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
for bin in cargo npm node; do
  command -v "$bin" >/dev/null || { echo "missing $bin" >&2; exit 1; }
done
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "chromium is needed: apt-get install chromium" >&2; exit 1; }
if [ ! -d web/node_modules ]; then npm --prefix web ci --no-audit --no-fund; fi
if [ ! -d tests/e2e/node_modules ]; then npm --prefix tests/e2e ci --no-audit --no-fund; fi

echo "== web app: logic tests, build"
npm --prefix web test --silent
npm --prefix web run build

echo "== cargo fmt, clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== Rust tests"
cargo test --workspace --quiet

echo "== end-to-end tests"
cargo build --bin salon --quiet
export SALON_BIN="$CARGO_TARGET_DIR/debug/salon"
npm --prefix tests/e2e test --silent
