#!/usr/bin/env bash
# Fetches the crates the workspace needs (crates.io is reachable; nothing
# else is downloaded). Kept apart from setup-host.sh, which needs root and apt.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "[setup] cargo not found: install Rust (rustup) first" >&2; exit 1; }
cargo fetch --locked -q 2>/dev/null || cargo fetch -q
echo "[setup] ok: crates fetched"
