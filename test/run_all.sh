#!/usr/bin/env bash
# The test command: installs what it needs, builds, installs the extension,
# starts its own throwaway PostgreSQL (and KMS) on loopback, runs every suite,
# stops what it started, and exits non-zero if any suite failed.
# Usage (as root on Debian bookworm): bash test/run_all.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source test/lib/deps.sh
source test/lib/cluster.sh

install_deps || { echo "dependency installation failed"; exit 1; }

CC_TEST_DIR=${CC_TEST_DIR:-/tmp/conn_crypto_tests}
CC_PORT=${CC_PORT:-25440}
mkdir -p "$CC_TEST_DIR"

passed=0; failed=0; failures=()
suite() {
    local name=$1; shift
    echo
    echo "=================== $name ==================="
    local start=$SECONDS
    if "$@"; then
        passed=$((passed + 1)); echo "--- $name: PASSED ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "--- $name: FAILED ($((SECONDS - start)) s)"
    fi
}

unit_tests() {
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONN_CRYPTO_BENCH=OFF >/dev/null &&
        cmake --build build -j2 >/dev/null &&
        (cd build && ctest --output-on-failure -j2)
}

build_extension() {
    make -j2 >/dev/null && make install >/dev/null
}

start_cluster() {
    cluster_start "$CC_TEST_DIR/main" "$CC_PORT"
}

regress() {
    make installcheck PGHOST=127.0.0.1 PGPORT="$CC_PORT" PGUSER=postgres || { cat regression.diffs 2>/dev/null | head -200; return 1; }
}

optional() {  # runs a suite script when it exists in this tree
    [ -f "$1" ] || { echo "(missing $1)"; return 1; }
    bash "$@"
}

trap 'cluster_stop "$CC_TEST_DIR/main" immediate 2>/dev/null' EXIT

suite "core unit tests" unit_tests
suite "core unit tests (ASan+UBSan)" optional test/run_sanitized_unit_tests.sh
suite "fuzzing" optional test/run_fuzz.sh
suite "build and install extension" build_extension
if [[ " ${failures[*]} " == *"build and install extension"* ]]; then
    echo "cannot continue without the extension"
else
    suite "start cluster" start_cluster
    suite "pg_regress" regress
    suite "python suites (interop, Airflow emulation)" optional test/python/run_interop.sh
    for extra in test/suites/*.sh; do
        [ -f "$extra" ] && suite "$(basename "$extra" .sh)" bash "$extra"
    done
    suite "KMIP against pykmip-server" optional test/kmip/run_kmip_tests.sh
    cluster_stop "$CC_TEST_DIR/main"
fi

echo
[ ${#failures[@]} -gt 0 ] && printf 'failed suite: %s\n' "${failures[@]}"
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
