#!/usr/bin/env bash
# Compiles every kernels/*.cu to PTX with NVRTC (compute_90, through the
# crate's own compile path: examples/dump_ptx.rs) and runs ptxas -arch=sm_90
# -v on it, printing one line per kernel: registers, static + dynamic-free
# shared memory, stack frame, spill stores/loads. Exits non-zero if any
# kernel spills (or anything fails to compile).
#
# Needs the PyPI CUDA wheels: installs them with setup-cuda-wheels.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup-cuda-wheels.sh >/dev/null
# shellcheck source=cuda-env.sh
source scripts/cuda-env.sh
ARCH="${ARCH:-sm_90}"
OUTDIR="${PTX_DIR:-$ROOT/target/kernels-ptx}"
rm -rf "$OUTDIR"
mkdir -p "$(dirname "$OUTDIR")"
if ! cargo run --quiet -p diffuse-tensor --example dump_ptx -- "$OUTDIR" "compute_${ARCH#sm_}" >/dev/null 2>"$OUTDIR.log"; then
    cat "$OUTDIR.log" >&2
    exit 1
fi

status=0
printf '%-34s %5s %8s %6s %12s %12s\n' kernel regs smem_B stack_B spill_st_B spill_ld_B
for ptx in "$OUTDIR"/*.ptx; do
    log="$("$PTXAS" -arch="$ARCH" -v "$ptx" -o /dev/null 2>&1)" || { echo "$log"; status=1; continue; }
    # ptxas -v prints, per function:
    #   Compiling entry function 'NAME' for 'sm_90'
    #   Function properties for NAME
    #       S bytes stack frame, A bytes spill stores, B bytes spill loads
    #   Used R registers, used 1 barriers, M bytes smem, ... bytes cmem[0]
    summary="$(awk -v file="$(basename "$ptx" .ptx)" '
        /Compiling entry function/ { match($0, /\x27[^\x27]+\x27/); name = substr($0, RSTART+1, RLENGTH-2) }
        /bytes stack frame/ { stack=$1; spst=$5; spld=$9 }
        /Used [0-9]+ registers/ {
            regs=$0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
            smem=0; if (match($0, /[0-9]+ bytes smem/)) { smem=substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", smem) }
            printf "%-34s %5s %8s %6s %12s %12s\n", name, regs, smem, stack, spst, spld
        }' <<<"$log")"
    echo "$summary"
    if awk '$5 != 0 || $6 != 0 { bad=1 } END { exit !bad }' <<<"$summary"; then
        echo "SPILL in $(basename "$ptx")" >&2
        status=1
    fi
done
if [[ $status -eq 0 ]]; then
    echo "check-kernels: $(ls "$OUTDIR"/*.ptx | wc -l) files, no spills ($ARCH)"
fi
exit $status
