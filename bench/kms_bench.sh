#!/usr/bin/env bash
# Cost of per-connection KMS encryption (bench/kms_bench.py) on a throwaway
# cluster with a fresh Fernet key and its own pykmip-server. The extension
# must already be built and installed (make && make install).
#
#   bash bench/kms_bench.sh
#   CC_BENCH_ROWS=200 CC_BENCH_REPS=7 bash bench/kms_bench.sh
#
# Directories and ports: CC_BENCH_DIR (/tmp/cc_kms_suite_bench), pykmip-server
# on CC_BENCH_KMIP_PORT (25721), PostgreSQL on CC_BENCH_PORT (25727).
# Prints a table of ms per row and ratios; exits 0 when the measurements ran
# (benchmarks do not fail builds), non-zero only when setup or the run errs.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
dir=${CC_BENCH_DIR:-/tmp/cc_kms_suite_bench}
kport=${CC_BENCH_KMIP_PORT:-25721}
port=${CC_BENCH_PORT:-25727}
PY=/usr/bin/python3

key=$($PY -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())') \
    || { echo "kms_bench.sh: could not make a key (python3-cryptography?)" >&2; exit 2; }

# shellcheck source=../test/lib/cluster.sh
source "$ROOT/test/lib/cluster.sh"
cleanup() {
    local rc=$?
    "$ROOT/test/kmip/stop_server.sh" "$dir/kmip" >/dev/null 2>&1
    cluster_stop "$dir/pg" >/dev/null 2>&1
    if [ "$rc" = 0 ]; then rm -rf "$dir"; else echo "kms_bench.sh: logs kept in $dir" >&2; fi
    exit "$rc"
}
[ -d "$dir/kmip" ] && "$ROOT/test/kmip/stop_server.sh" "$dir/kmip" >/dev/null 2>&1
[ -d "$dir/pg" ] && cluster_stop "$dir/pg" immediate >/dev/null 2>&1
rm -rf "$dir"
mkdir -p "$dir"
trap cleanup EXIT

"$ROOT/test/kmip/start_server.sh" "$dir/kmip" "$kport" >"$dir/kmip_start.log" 2>&1 \
    || { cat "$dir/kmip_start.log" >&2; echo "kms_bench.sh: pykmip-server did not start on port $kport" >&2; exit 2; }
key_id=$($PY "$ROOT/test/kmip/pykmip_client.py" create-key "$dir/kmip" "$kport") \
    || { echo "kms_bench.sh: could not create a KMIP key" >&2; exit 2; }
cluster_start "$dir/pg" "$port" "conn_crypto.fernet_key = '$key'" "shared_buffers = '128MB'" \
    || { echo "kms_bench.sh: could not start a cluster in $dir/pg on port $port" >&2; exit 2; }
psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE EXTENSION conn_crypto" -f "$ROOT/test/sql/airflow_schema.sql" -c "SELECT conn_crypto.enable_kms()" >/dev/null \
    || { echo "kms_bench.sh: extension setup failed" >&2; exit 2; }

CC_PGHOST=127.0.0.1 CC_PGPORT=$port CC_PGUSER=postgres CC_PGDATABASE=postgres \
    CC_KMIP_DIR="$dir/kmip" CC_KMIP_PORT=$kport CC_KMIP_KEY_ID=$key_id PYTHONDONTWRITEBYTECODE=1 \
    $PY "$ROOT/bench/kms_bench.py"
