#!/usr/bin/env bash
# Builds the libFuzzer targets of test/fuzz/ with clang (ASan + UBSan, core
# instrumented) in build-fuzz/, writes seed corpora from the Fernet spec
# vectors and runs every target in turn.
#
#   bash test/run_fuzz.sh            # about 60 s of fuzzing in total (quick check)
#   bash test/run_fuzz.sh 600        # longer run: 10 minutes per target
#
# Exits non-zero on any crash, leak, timeout or sanitizer report. Findings are
# kept in build-fuzz/artifacts/ (reproduce with build-fuzz/<target> <file>);
# the growing corpora in build-fuzz/corpus/<target>/ are reused by later runs.
# Environment: FERNET_SPEC_DIR (default ../shared/fernet-spec next to the repo).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-fuzz"
SPEC_DIR="${FERNET_SPEC_DIR:-$ROOT/../shared/fernet-spec}"
TARGETS=(token_fuzz keyring_fuzz base64_fuzz differential_fuzz ttlv_fuzz)
SECONDS_PER_TARGET="${1:-$((60 / ${#TARGETS[@]}))}"

mkdir -p "$BUILD"
GENERATOR=()  # Ninja when available, but never switch an existing build dir
if [ ! -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null; then GENERATOR=(-G Ninja); fi
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCONN_CRYPTO_FUZZ=ON -DFERNET_SPEC_DIR="$SPEC_DIR" >"$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" --target fuzz_targets

rm -rf "$BUILD/seeds"
/usr/bin/python3 "$ROOT/test/fuzz/make_seeds.py" "$SPEC_DIR" "$BUILD/seeds"
mkdir -p "$BUILD/artifacts" "$BUILD/logs"

# UB must abort (it is also compiled -fno-sanitize-recover); leaks are checked
# at exit of every input run by libFuzzer itself (-detect_leaks=1).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$BUILD/corpus/$t"
    log="$BUILD/logs/$t.log"
    echo "== $t: ${SECONDS_PER_TARGET}s"
    status=0
    # First corpus directory receives new inputs; the seeds stay untouched.
    "$BUILD/$t" -max_total_time="$SECONDS_PER_TARGET" -detect_leaks=1 -timeout=25 -rss_limit_mb=2048 \
        -print_final_stats=1 -dict="$ROOT/test/fuzz/fernet.dict" \
        -artifact_prefix="$BUILD/artifacts/$t-" \
        "$BUILD/corpus/$t" "$BUILD/seeds/$t" >"$log" 2>&1 || status=$?
    grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb' "$log" || true
    # Any sanitizer output counts, even one that did not stop the run.
    if [ "$status" -ne 0 ] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer|UndefinedBehaviorSanitizer)|runtime error:|invariant broken|mismatch at line|Sanitizer has encountered a fatal error' "$log"; then
        echo "!! $t FAILED (exit $status), see $log"
        grep -E 'ERROR:|runtime error:|invariant broken|mismatch at line|Test unit written to' "$log" | head -20
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzzing found problems in: ${failed[*]}"
    exit 1
fi
echo "fuzzing: no crash, leak or sanitizer report (${SECONDS_PER_TARGET}s per target)"
