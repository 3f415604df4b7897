#!/usr/bin/env bash
# Runs the KMIP provider's integration tests against a fresh pykmip-server:
# start the server, create an AES-256 key with PyKMIP's client, run the
# KmsIntegration gtests, stop the server, run the "server stopped" test.
#
# Environment:
#   CC_KMIP_PORT     port for the server (default 25700)
#   CC_KMIP_DIR      working directory for certificates, config, database
#                    (default: a new temporary directory, removed on success)
#   CC_UNIT_TESTS    the unit_tests binary (default: build-kms/unit_tests, then
#                    build/unit_tests; configured and built in build-kms if
#                    neither exists)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT=${CC_KMIP_PORT:-25700}
PY=/usr/bin/python3

if [ -n "${CC_KMIP_DIR:-}" ]; then
    DIR=$CC_KMIP_DIR
    OWN_DIR=0
else
    DIR=$(mktemp -d /tmp/cc_kmip.XXXXXX)
    OWN_DIR=1
fi

BIN=${CC_UNIT_TESTS:-}
if [ -z "$BIN" ]; then
    for candidate in "$ROOT/build-kms/unit_tests" "$ROOT/build/unit_tests"; do
        if [ -x "$candidate" ]; then BIN=$candidate; break; fi
    done
fi
if [ -z "$BIN" ]; then
    echo "== building unit_tests in build-kms"
    mkdir -p "$ROOT/build-kms"
    (cd "$ROOT/build-kms" && cmake .. -DCONN_CRYPTO_BENCH=OFF >/dev/null && make -j2 unit_tests)
    BIN=$ROOT/build-kms/unit_tests
fi

cleanup() {
    "$HERE/stop_server.sh" "$DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT

fail() {
    echo "FAILED: $*" >&2
    echo "--- server log ($DIR/server.log, last lines) ---" >&2
    tail -n 30 "$DIR/server.log" >&2 2>/dev/null || true
    exit 1
}

# Runs a gtest filter and fails when a test fails or when none really ran.
run_gtests() {  # filter [env assignments...]
    local filter=$1
    shift
    local out
    set +e
    out=$(env "$@" "$BIN" --gtest_filter="$filter" --gtest_color=no 2>&1)
    local rc=$?
    set -e
    printf '%s\n' "$out"
    [ $rc -eq 0 ] || fail "gtests $filter"
    if printf '%s\n' "$out" | grep -q '^\[  SKIPPED \]'; then fail "gtests $filter were skipped"; fi
    printf '%s\n' "$out" | grep -q '^\[  PASSED  \] [1-9]' || fail "no test of $filter ran"
}

echo "== starting pykmip-server on 127.0.0.1:$PORT in $DIR"
"$HERE/start_server.sh" "$DIR" "$PORT" || fail "server start"

echo "== creating an AES-256 key with PyKMIP's client"
KEY_ID=$("$PY" "$HERE/pykmip_client.py" create-key "$DIR" "$PORT") || fail "create-key"
echo "key id: $KEY_ID"

echo "== integration tests"
run_gtests 'KmsIntegration.*' CC_KMIP_DIR="$DIR" CC_KMIP_PORT="$PORT" CC_KMIP_KEY_ID="$KEY_ID" \
    CC_KMIP_HELPER="$HERE/pykmip_client.py"

echo "== stopping the server"
"$HERE/stop_server.sh" "$DIR"

echo "== server stopped"
run_gtests 'KmsIntegrationDown.*' CC_KMIP_DIR="$DIR" CC_KMIP_PORT="$PORT" CC_KMIP_KEY_ID="$KEY_ID" \
    CC_KMIP_EXPECT_DOWN=1

trap - EXIT
if [ "$OWN_DIR" = 1 ]; then rm -rf "$DIR"; fi
echo "== all KMIP integration tests passed"
