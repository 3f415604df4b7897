#!/usr/bin/env bash
# Builds the unit tests with g++ under AddressSanitizer + UndefinedBehavior-
# Sanitizer (-DCONN_CRYPTO_SANITIZE=ON) in build-asan/ and runs them.
#
#   bash test/run_sanitized_unit_tests.sh
#
# Exits non-zero on a failing test or on any sanitizer report (leaks included).
# Needs g++'s sanitizer runtimes: Debian packages libasan8 and libubsan1
# (pulled in by g++-12 through libgcc-12-dev).
# Environment: FERNET_SPEC_DIR (default ../shared/fernet-spec next to the repo).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-asan"
SPEC_DIR="${FERNET_SPEC_DIR:-$ROOT/../shared/fernet-spec}"

for lib in libasan.so libubsan.so; do
    if [ ! -e "$(g++ -print-file-name=$lib)" ] || [ "$(g++ -print-file-name=$lib)" = "$lib" ]; then
        echo "g++ cannot find $lib: apt-get install libasan8 libubsan1 (g++ 12)" >&2
        exit 1
    fi
done

mkdir -p "$BUILD"
GENERATOR=()  # Ninja when available, but never switch an existing build dir
if [ ! -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null; then GENERATOR=(-G Ninja); fi
CC=gcc CXX=g++ cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCONN_CRYPTO_SANITIZE=ON -DCONN_CRYPTO_BENCH=OFF -DFERNET_SPEC_DIR="$SPEC_DIR" \
    >"$BUILD/configure.log" 2>&1 || { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" --target unit_tests

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

log="$BUILD/unit_tests.log"
status=0
# Run the binary directly: one process, so one leak check covers every test.
"$BUILD/unit_tests" --gtest_color=no >"$log" 2>&1 || status=$?
grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?|^\[==========\] [0-9]+ tests' "$log" || true
if [ "$status" -ne 0 ] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer|Sanitizer has encountered a fatal error' "$log"; then
    echo "sanitized unit tests FAILED (exit $status), see $log"
    grep -E 'ERROR:|runtime error:|SUMMARY:|\[  FAILED  \]' "$log" | head -20
    exit 1
fi
echo "sanitized unit tests: passed, no sanitizer report"
