#!/usr/bin/env bash
# Cost of the protection trigger (bench/trigger_bench.py) on a throwaway
# cluster whose postgresql.conf holds a fresh Fernet key. The extension must
# already be built and installed (make && make install).
#
#   bash bench/trigger_bench.sh
#   CC_BENCH_DIR=/tmp/x CC_BENCH_PORT=25600 CC_BENCH_ROWS=100000 CC_BENCH_REPS=5 bash bench/trigger_bench.sh
#
# Prints a table with OK/MISS per target; exits 0 even on MISS (benchmarks do
# not fail builds), non-zero only when the cluster or the benchmark errs.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${CC_BENCH_DIR:-/tmp/cc_trigger_bench}
port=${CC_BENCH_PORT:-25511}

key=$(/usr/bin/python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())') \
    || { echo "trigger_bench.sh: could not make a key (python3-cryptography?)" >&2; exit 2; }

# shellcheck source=../test/lib/cluster.sh
source "$ROOT/test/lib/cluster.sh"
trap 'cluster_stop "$dir"' EXIT
cluster_start "$dir" "$port" "conn_crypto.fernet_key = '$key'" "shared_buffers = '256MB'" \
    "max_wal_size = '4GB'" "checkpoint_timeout = '30min'" \
    || { echo "trigger_bench.sh: could not start a cluster in $dir on port $port" >&2; exit 2; }

CC_PGHOST=127.0.0.1 CC_PGPORT=$port CC_PGUSER=postgres CC_PGDATABASE=postgres PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 "$ROOT/bench/trigger_bench.py"
