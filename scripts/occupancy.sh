#!/usr/bin/env bash
# Prints KERNELS.md's occupancy table: runs check-kernels.sh for sm_80 and
# sm_90 (ptxas registers and static shared memory) and computes the blocks
# per SM of each kernel on an A100 and an H100 at both presets
# (crates/tensor/src/gpu/occupancy.rs; tests/occupancy.rs checks the table).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
ARCH=sm_80 PTX_DIR="$TMP/ptx80" bash scripts/check-kernels.sh >"$TMP/sm80.txt"
ARCH=sm_90 PTX_DIR="$TMP/ptx90" bash scripts/check-kernels.sh >"$TMP/sm90.txt"
cargo run --quiet -p diffuse-tensor --example occupancy -- "$TMP/sm80.txt" "$TMP/sm90.txt"
