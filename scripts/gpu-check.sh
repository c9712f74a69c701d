#!/usr/bin/env bash
# The one script to run when an NVIDIA GPU is lent (issue 12).
#
#   bash scripts/gpu-check.sh prepare [--debug] [--bundle DIR]
#       here: builds a stripped `diffuse` (release; --debug: the binary of
#       the test profile that `cargo test --workspace` builds, for CI) and collects what the GPU machine
#       needs into DIR (default .gpu-check/, git-ignored): the binary, this
#       script, the PyTorch step script and model, the test vectors, the
#       bundled MNIST digits. Fails if the folder reaches 64 MiB.
#   bash .gpu-check/gpu-check.sh run OUT_DIR
#       there (no Rust, no network): finds libcuda and libnvrtc, runs the
#       self-test, verify-step on every test vector, one training step under
#       compute-sanitizer (memcheck, racecheck, synccheck), bench kernels and
#       bench step for both presets (eager and --graph), and PyTorch's step (fp32, TF32, bf16
#       autocast, channels-last); writes OUT_DIR/report.json, report.md and
#       logs.tar.gz within an 8-minute budget (per-step timeouts; what does
#       not fit is reported as skipped).
#   bash scripts/gpu-check.sh run --dry-run OUT_DIR [--bundle DIR]
#       the same plan on the emulator and the CPU (selftest --quick on emu,
#       verify-step on the CPU, one step on the emulator, kernel counts, the
#       PyTorch script's argument check); every GPU check is listed in the
#       report as planned. CI runs prepare --debug and run --dry-run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIMIT_BYTES=$((64 * 1024 * 1024))
BUDGET_S="${GPU_CHECK_BUDGET_S:-450}" # whole run, under the 8 minutes asked

die() { echo "error: $*" >&2; exit 1; }

usage() {
    sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

# ------------------------------------------------------------------ prepare
prepare() {
    local root profile=release bundle=""
    root="$(cd "$HERE/.." && pwd)"
    [[ -f "$root/Cargo.toml" ]] || die "prepare runs from the source tree (scripts/gpu-check.sh), not from a bundle"
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --debug) profile=test ;;
            --bundle) bundle="${2:?--bundle needs a folder}"; shift ;;
            -h | --help) usage ;;
            *) die "prepare: unknown argument $1" ;;
        esac
        shift
    done
    bundle="${bundle:-$root/.gpu-check}"
    local shared="${DIFFUSE_SHARED:-$root/../shared}"
    local vectors="$shared/testvectors"
    [[ -d "$vectors" ]] || vectors="$root/tests/data/testvectors"
    ls "$vectors"/*.safetensors > /dev/null 2>&1 || die "no test vectors in $vectors"
    local reference="$shared/reference"
    [[ -f "$reference/ddpm_unet.py" ]] || die "no PyTorch model at $reference/ddpm_unet.py"

    local target="${CARGO_TARGET_DIR:-$root/target}"
    local outdir=release
    [[ $profile == test ]] && outdir=debug
    if [[ $profile == test ]]; then
        # the binary `cargo test --workspace` builds (opt-level 2, debug
        # info): free right after the test run, as in scripts/test.sh
        echo "== cargo test --workspace --no-run (the test profile's diffuse)"
        (cd "$root" && cargo test --workspace --no-run)
    else
        echo "== cargo build --release --bin diffuse"
        (cd "$root" && cargo build --release --bin diffuse)
    fi
    [[ -x "$target/$outdir/diffuse" ]] || die "no binary at $target/$outdir/diffuse"

    local tmp="$bundle.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp/testvectors" "$tmp/data"
    strip -o "$tmp/diffuse" "$target/$outdir/diffuse"
    cp "$root/scripts/gpu-check.sh" "$root/scripts/gpu-check/torch_gpu_step.py" "$root/scripts/gpu-check/report.py" "$tmp/"
    cp "$root/scripts/gpu-check/multigpu_compare.py" "$root/scripts/gpu-check/curve_compare.py" "$tmp/"
    cp "$reference/ddpm_unet.py" "$tmp/"
    cp "$vectors"/*.safetensors "$tmp/testvectors/"
    # the vectors made here (the class-conditional step), not in ../shared
    cp -n "$root"/tests/data/testvectors/*.safetensors "$tmp/testvectors/"
    cp -r "$root/data/mnist10k" "$tmp/data/"
    local bytes
    bytes=$(du -sb "$tmp" | cut -f1)
    python3 - "$tmp" "$profile" "$bytes" "$(cd "$root" && git rev-parse --short HEAD 2> /dev/null || echo unknown)" << 'PY'
import json, os, sys, time
tmp, profile, total, commit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
files = {}
for d, _, fs in os.walk(tmp):
    for f in fs:
        p = os.path.join(d, f)
        files[os.path.relpath(p, tmp)] = os.path.getsize(p)
json.dump(dict(commit=commit, profile=profile, built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               bytes=total, files=files), open(os.path.join(tmp, "MANIFEST.json"), "w"), indent=1)
PY
    if ((bytes >= LIMIT_BYTES)); then
        rm -rf "$tmp"
        die "the prepared folder would be $((bytes / 1024 / 1024)) MiB, over the 64 MiB that can travel"
    fi
    rm -rf "$bundle"
    mv "$tmp" "$bundle"
    echo "prepared $bundle: $(du -sh "$bundle" | cut -f1) ($bytes bytes, limit $LIMIT_BYTES; $profile build)"
}

# ---------------------------------------------------------------------- run
START=$(date +%s)
OUT=""
STEPS=""
FAILED=0

remaining() { echo $((BUDGET_S - ($(date +%s) - START))); }

# record NAME STATUS RC SECONDS LOG COMMAND
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$STEPS"; }

# step NAME TIMEOUT_S COMMAND: runs COMMAND (a shell string) with its output
# in logs/NAME.log, killed after TIMEOUT_S or when the budget runs out.
step() {
    local name="$1" limit="$2" cmd="$3" left log rc t0 t1 status
    left=$(remaining)
    log="$OUT/logs/$name.log"
    if ((left < 5)); then
        record "$name" skipped - 0 - "$cmd (out of time: the run's ${BUDGET_S} s budget is spent)"
        echo "-- $name: skipped (out of time)"
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "-- $name (timeout ${limit} s): $cmd"
    t0=$(date +%s.%N)
    set +e
    timeout --kill-after=5 "$limit" bash -c "$cmd" > "$log" 2>&1
    rc=$?
    set -e
    t1=$(date +%s.%N)
    case $rc in
        0) status=pass ;;
        124 | 137) status=timeout ;;
        *) status=fail ;;
    esac
    [[ $status == pass ]] || FAILED=$((FAILED + 1))
    record "$name" "$status" "$rc" "$(python3 -c "print(round($t1 - $t0, 2))")" "logs/$name.log" "$cmd"
    echo "   $status (rc $rc)"
    [[ $status == pass ]] || tail -5 "$log" | sed 's/^/   | /'
}

# plan NAME COMMAND: a GPU check the dry run does not run.
plan() { record "$1" planned - 0 - "$2"; }

# skip NAME WHY
skip() {
    record "$1" skipped - 0 - "$2"
    echo "-- $1: skipped ($2)"
}

# Puts libcuda's and libnvrtc's folders on LD_LIBRARY_PATH (NVIDIA's
# mounts, the CUDA toolkit, then PyTorch's nvidia-* wheels).
find_cuda_libs() {
    local d found_cuda="" found_nvrtc=""
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/compat; do
        ls "$d"/libcuda.so* > /dev/null 2>&1 && { found_cuda="$d"; break; }
    done
    [[ -z $found_cuda ]] && found_cuda="$(ldconfig -p 2> /dev/null | awk '/libcuda\.so/ {print $NF; exit}' | xargs -r dirname)"
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        ls "$d"/libnvrtc.so* > /dev/null 2>&1 && { found_nvrtc="$d"; break; }
    done
    if [[ -z $found_nvrtc ]]; then
        found_nvrtc="$(python3 - 2> /dev/null << 'PY' || true
import glob, os, site, sys
for base in site.getsitepackages() + [site.getusersitepackages()] + sys.path:
    for p in glob.glob(os.path.join(base, "nvidia", "cu*", "lib", "libnvrtc.so*")) + glob.glob(os.path.join(base, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")):
        print(os.path.dirname(p)); raise SystemExit
PY
)"
    fi
    [[ -z $found_nvrtc ]] && found_nvrtc="$(timeout 20 find / -xdev -name "libnvrtc.so*" -print -quit 2> /dev/null | xargs -r dirname)"
    # NCCL for --gpus 0,1 (issue 18): the system's, else PyTorch's nvidia-nccl-cu12 wheel
    local found_nccl
    found_nccl="$(ldconfig -p 2> /dev/null | awk '/libnccl\.so\.2/ {print $NF; exit}' | xargs -r dirname)"
    [[ -z $found_nccl ]] && found_nccl="$(python3 -c 'import glob, site, sys, os
for b in site.getsitepackages() + sys.path:
    for p in glob.glob(os.path.join(b, "nvidia", "nccl", "lib", "libnccl.so*")):
        print(os.path.dirname(p)); raise SystemExit' 2> /dev/null || true)"
    for d in $found_cuda $found_nvrtc $found_nccl; do
        case ":${LD_LIBRARY_PATH:-}:" in *":$d:"*) ;; *) export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;; esac
    done
    [[ -d /usr/local/cuda/include ]] && export DIFFUSE_NVRTC_INCLUDE=/usr/local/cuda/include
    echo "libcuda: ${found_cuda:-not found}; libnvrtc: ${found_nvrtc:-not found}; libnccl: ${found_nccl:-not found}"
    LIBS_NOTE="libcuda: ${found_cuda:-not found}; libnvrtc: ${found_nvrtc:-not found}; libnccl: ${found_nccl:-not found}"
}

run() {
    local dry=0 bundle=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dry-run) dry=1 ;;
            --bundle) bundle="${2:?--bundle needs a folder}"; shift ;;
            -h | --help) usage ;;
            -*) die "run: unknown option $1" ;;
            *) [[ -z $OUT ]] || die "run: one OUT_DIR only"; OUT="$1" ;;
        esac
        shift
    done
    [[ -n $OUT ]] || die "run needs an OUT_DIR"
    if [[ -z $bundle ]]; then
        # from inside a bundle, the bundle; from the source tree, .gpu-check/
        if [[ -x "$HERE/diffuse" ]]; then bundle="$HERE"; else bundle="$(cd "$HERE/.." && pwd)/.gpu-check"; fi
    fi
    [[ -x "$bundle/diffuse" ]] || die "no prepared folder at $bundle (run: bash scripts/gpu-check.sh prepare)"
    bundle="$(cd "$bundle" && pwd)"
    mkdir -p "$OUT/logs"
    OUT="$(cd "$OUT" && pwd)"
    STEPS="$OUT/steps.tsv"
    : > "$STEPS"
    local D
    D="$(printf %q "$bundle/diffuse")"
    local B="$bundle" O="$OUT" V
    cd "$bundle"
    LIBS_NOTE="(dry run: no GPU libraries looked for)"
    ((dry)) || find_cuda_libs

    # -- the machine
    step env 20 "uname -a; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true; echo \"$LIBS_NOTE\"; $D info"

    # -- correctness: the self-test, the PyTorch vectors
    if ((dry)); then
        plan selftest-cuda "$D selftest --device cuda --json"
        step selftest-emu-quick 150 "$D selftest --device emu --quick --json > $O/selftest.jsonl"
    else
        step selftest-cuda 150 "$D selftest --device cuda --json > $O/selftest.jsonl"
    fi
    for V in "$B"/testvectors/*.safetensors; do
        local vn
        vn="$(basename "$V" .safetensors)"
        if ((dry)); then
            plan "verify-$vn-cuda" "$D verify-step --device cuda $V"
            step "verify-$vn-cpu" 120 "$D verify-step --device cpu $V >> $O/verify.jsonl"
        else
            step "verify-$vn-cuda" 60 "$D verify-step --device cuda $V >> $O/verify.jsonl"
        fi
    done

    # -- bf16 training follows fp32 (tests/bf16_training_curve.rs on the
    #    tensor cores): 300 tiny-mnist steps each, 50-step windows within 5%
    local curve_cmd="train --config tiny-mnist --data $B/data/mnist10k --steps 300 --batch-size 8 --seed 0 --sample-every 0 --checkpoint-every 300 --log-every 1"
    if ((dry)); then
        plan bf16-curve-cuda "$D $curve_cmd --device cuda --precision bf16 ... and fp32; curve_compare.py"
        # that the comparison runs: 4 CPU steps each, windows of 2
        local short_cmd="train --config tiny-mnist --data $B/data/mnist10k --steps 4 --batch-size 2 --sample-every 0 --checkpoint-every 4 --log-every 1 --device cpu"
        step bf16-curve-cpu-short 120 "$D $short_cmd --precision bf16 --out $O/curve-bf16 && $D $short_cmd --precision fp32 --out $O/curve-fp32 && python3 $B/curve_compare.py $O/curve-bf16 $O/curve-fp32 2 0.05 > $O/bf16-curve.json"
    else
        step bf16-curve-cuda 120 "$D $curve_cmd --device cuda --precision bf16 --out $O/curve-bf16 && $D $curve_cmd --device cuda --precision fp32 --out $O/curve-fp32 && python3 $B/curve_compare.py $O/curve-bf16 $O/curve-fp32 > $O/bf16-curve.json"
    fi

    # -- one training step under compute-sanitizer (emulator in a dry run:
    #    its guard pages and hazard detector are the sanitizer's twins)
    local train_cmd="train --config tiny-mnist --data $B/data/mnist10k --steps 1 --batch-size 2 --sample-every 0 --checkpoint-every 1 --log-every 1"
    local sanitize="compute-sanitizer --error-exitcode 9 --print-limit 20"
    if ((dry)); then
        plan memcheck "$sanitize --tool memcheck --leak-check full $D $train_cmd --device cuda --out $O/run-memcheck"
        plan racecheck "$sanitize --tool racecheck --racecheck-report all $D $train_cmd --device cuda --out $O/run-racecheck"
        plan synccheck "$sanitize --tool synccheck $D $train_cmd --device cuda --out $O/run-synccheck"
        step train-step-emu 120 "$D $train_cmd --device emu --out $O/run-emu"
    elif command -v compute-sanitizer > /dev/null; then
        step memcheck 90 "$sanitize --tool memcheck --leak-check full $D $train_cmd --device cuda --out $O/run-memcheck"
    else
        skip memcheck "compute-sanitizer not on PATH"
    fi

    # -- speed: kernels, whole steps, PyTorch beside them (mnist first: the
    #    budget cuts cifar10 before mnist)
    local has_bench_step=0
    "$bundle/diffuse" bench step --help > /dev/null 2>&1 && has_bench_step=1
    local preset batch tpreset
    for preset in mnist cifar10; do
        batch=64
        tpreset=mnist
        [[ $preset == cifar10 ]] && { batch=128; tpreset=cifar; }
        if ((dry)); then
            plan "bench-kernels-$preset-cuda" "$D bench kernels --device cuda --config $preset --json"
            plan "bench-kernels-$preset-fp32-cuda" "$D bench kernels --device cuda --config $preset --precision fp32 --json"
            step "bench-kernels-$preset-emu" 120 "$D bench kernels --device emu --config $preset --json > $O/bench-kernels-$preset.jsonl"
        else
            step "bench-kernels-$preset-cuda" 90 "$D bench kernels --device cuda --config $preset --reps 10 --json > $O/bench-kernels-$preset.jsonl"
            # the default above is bf16 tensor cores on sm_80+; the FP32 kernels beside them
            step "bench-kernels-$preset-fp32-cuda" 60 "$D bench kernels --device cuda --config $preset --reps 5 --precision fp32 --json > $O/bench-kernels-$preset-fp32.jsonl"
        fi
        if ((has_bench_step)); then
            if ((dry)); then
                plan "bench-step-$preset-cuda" "$D bench step --config $preset --batch-size $batch --device cuda"
                plan "bench-step-graph-$preset-cuda" "$D bench step --config $preset --batch-size $batch --device cuda --graph --counters"
                # a whole step on the emulator is the other tests' job: here,
                # that the options the GPU run passes exist
                [[ $preset == mnist ]] && step bench-step-options 20 "$D bench step --help > $O/logs/bench-step-help.txt && grep -q -- --config $O/logs/bench-step-help.txt && grep -q -- --batch-size $O/logs/bench-step-help.txt && grep -q -- --device $O/logs/bench-step-help.txt && grep -q -- --graph $O/logs/bench-step-help.txt"
            else
                step "bench-step-$preset-cuda" 60 "$D bench step --config $preset --batch-size $batch --device cuda > $O/bench-step-$preset.txt"
                # the training step as a CUDA graph (train --graph): one cuGraphLaunch a step
                step "bench-step-graph-$preset-cuda" 45 "$D bench step --config $preset --batch-size $batch --device cuda --graph --counters > $O/bench-step-graph-$preset.txt"
            fi
        else
            skip "bench-step-$preset" "this diffuse has no 'bench step' subcommand (issue 12 items 1-5 not merged in this build)"
        fi
        local torch_cmd="cd $B && PYTHONUNBUFFERED=1 python3 torch_gpu_step.py --config $tpreset --batch $batch --steps 10 --warmup 3"
        if ((dry)); then
            plan "torch-$preset" "$torch_cmd >> $O/torch.jsonl"
        else
            step "torch-$preset" 120 "$torch_cmd >> $O/torch.jsonl"
        fi
    done
    ((dry)) && step torch-script-check 20 "cd $B && python3 torch_gpu_step.py --check"

    # -- several GPUs (issue 18), only when more than one is present: the
    #    same run on 1 and 2 GPUs (loss, gradient norm and weights compared,
    #    images/s scaling). The dry run does it on 1 and 2 emulated devices.
    local ngpu=0 dp_lr=1e-3
    ((dry)) || ngpu=$(nvidia-smi --list-gpus 2> /dev/null | grep -c '^GPU' || true)
    local dp_cmd="train --data $B/data/mnist10k --sample-every 0 --log-every 1 --seed 3 --lr $dp_lr --warmup 0"
    if ((dry)); then
        local dp_emu="$D $dp_cmd --config tiny-mnist --steps 1 --batch-size 2 --checkpoint-every 1 --device emu"
        plan multigpu-1-cuda "$D $dp_cmd --config mnist --steps 30 --batch-size 128 --checkpoint-every 30 --gpus 0 --out $O/run-dp1"
        plan multigpu-2-cuda "$D $dp_cmd --config mnist --steps 30 --batch-size 128 --checkpoint-every 30 --gpus 0,1 --out $O/run-dp2"
        step multigpu-emu 120 "$dp_emu --out $O/run-dp1 && $dp_emu --gpus 0,1 --out $O/run-dp2 && python3 $B/multigpu_compare.py $dp_lr $O/run-dp1 $O/run-dp2 > $O/multigpu.jsonl"
    elif ((ngpu > 1)); then
        local dp_gpu="$D $dp_cmd --config mnist --steps 30 --batch-size 128 --checkpoint-every 30"
        step multigpu-1-cuda 90 "$dp_gpu --gpus 0 --out $O/run-dp1"
        step multigpu-2-cuda 90 "$dp_gpu --gpus 0,1 --out $O/run-dp2"
        step multigpu-compare 20 "python3 $B/multigpu_compare.py $dp_lr $O/run-dp1 $O/run-dp2 > $O/multigpu.jsonl"
    else
        skip multigpu "$ngpu GPU(s): the data-parallel section needs more than one"
    fi

    # -- the slower sanitizer tools last, in what is left of the budget
    if ((!dry)); then
        if command -v compute-sanitizer > /dev/null; then
            step racecheck 90 "$sanitize --tool racecheck --racecheck-report all $D $train_cmd --device cuda --out $O/run-racecheck"
            step synccheck 60 "$sanitize --tool synccheck $D $train_cmd --device cuda --out $O/run-synccheck"
        else
            skip racecheck "compute-sanitizer not on PATH"
            skip synccheck "compute-sanitizer not on PATH"
        fi
    fi

    python3 "$bundle/report.py" "$OUT" "$dry" "$(($(date +%s) - START))" "$BUDGET_S" "$bundle/MANIFEST.json"
    # what comes back from a GPU machine is a few files: logs travel as one archive
    rm -rf "$OUT"/run-*
    tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs steps.tsv $(cd "$OUT" && ls ./*.jsonl ./*.txt 2> /dev/null)
    rm -rf "$OUT/logs" "$OUT/steps.tsv" "$OUT"/*.jsonl "$OUT"/*.txt
    echo "report: $OUT/report.md, $OUT/report.json ($(($(date +%s) - START)) s)"
    ((FAILED == 0)) || die "$FAILED check(s) failed (see $OUT/report.md)"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    -h | --help | help) usage ;;
    *) usage 1 >&2 ;;
esac
