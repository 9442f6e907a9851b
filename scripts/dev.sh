#!/usr/bin/env bash
# Builds the web app and Salon, then starts `salon dev` on 127.0.0.1:7880.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is needed: https://rustup.rs" >&2; exit 1; }
command -v npm >/dev/null || { echo "Node.js and npm are needed for the web app" >&2; exit 1; }
if [ ! -d web/node_modules ]; then npm --prefix web ci --no-audit --no-fund; fi
npm --prefix web run build
exec cargo run --release --bin salon -- dev "$@"
