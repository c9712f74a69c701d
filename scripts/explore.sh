#!/usr/bin/env bash
# Explore mode: runs the property tests RUNS times (default 5), each run with
# a fresh seed and more cases than CI (PROPTEST_CASES per test if set, else
# 10x each test's CI count; see proptest_config in crates/*/tests/common).
# CI (scripts/test.sh) always uses one fixed seed, so a commit gets one
# verdict; this script looks for the cases that seed does not draw.
#
# Only the test binaries that contain property tests are run, without their
# per-device (_cpu, _emu) tests. A failure is
# reported with the seed and the command that reproduces it; turn it into a
# committed regression case (a plain #[test] with the concrete inputs that
# proptest printed) before fixing the bug. Logs: target/explore/.
#
#   bash scripts/explore.sh [RUNS]
#   PROPTEST_CASES=500 bash scripts/explore.sh 20
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
case $runs in '' | *[!0-9]*) echo "error: RUNS must be a number, got '$runs'" >&2; exit 2 ;; esac

# package -> test targets that use proptest!
declare -A targets
for f in $(grep -l 'proptest!' crates/*/tests/*.rs tests/*.rs 2>/dev/null); do
    dir=${f%/tests/*}
    pkg=$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -n1)
    [ "$dir" = tests ] && pkg=$(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | head -n1)
    name=$(basename "$f" .rs)
    targets[$pkg]+=" --test $name"
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "error: no property tests found" >&2
    exit 2
fi

logs=${CARGO_TARGET_DIR:-target}/explore
mkdir -p "$logs"
export DIFFUSE_EXPLORE=1
cases_note=${PROPTEST_CASES:-"10x CI"}

echo "== building the property-test binaries"
for pkg in "${!targets[@]}"; do
    # shellcheck disable=SC2086
    cargo test -q -p "$pkg" ${targets[$pkg]} --no-run || exit 1
done

failed=0
start=$SECONDS
for run in $(seq 1 "$runs"); do
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    export PROPTEST_RNG_SEED=$seed
    for pkg in "${!targets[@]}"; do
        log=$logs/run-$run-$pkg.log
        # shellcheck disable=SC2086
        # (the per-device tests in the same files use fixed data: skipped)
        if cargo test -q -p "$pkg" ${targets[$pkg]} --no-fail-fast -- --skip _cpu --skip _emu > "$log" 2>&1; then
            echo "run $run/$runs ($pkg, seed $seed, cases $cases_note): ok ($((SECONDS - start)) s so far)"
        else
            failed=$((failed + 1))
            echo "run $run/$runs ($pkg, seed $seed, cases $cases_note): FAILED, log $log"
            grep -E '^test .* FAILED$|minimal failing input|panicked at' "$log" | head -n 20 | sed 's/^/    /'
            echo "    reproduce: DIFFUSE_EXPLORE=1 PROPTEST_RNG_SEED=$seed ${PROPTEST_CASES:+PROPTEST_CASES=$PROPTEST_CASES }cargo test -p $pkg${targets[$pkg]}"
        fi
    done
done
echo "== explore: $runs run(s), $failed failing run(s), $((SECONDS - start)) s"
[ "$failed" -eq 0 ]
