#!/usr/bin/env bash
# Key rotation benchmark (bench/rotate_bench.py) on a throwaway cluster whose
# keyring is NEW,OLD in postgresql.conf. The extension must be installed.
#
#   bash bench/rotate_bench.sh
#   CC_RBENCH_DIR=/tmp/x CC_RBENCH_PORT=25524 CC_RBENCH_ROWS=100000 CC_RBENCH_REPS=3 bash bench/rotate_bench.sh
#
# Prints a table with OK/MISS per target; exits 0 even on MISS, non-zero only
# when the cluster or the benchmark errs.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${CC_RBENCH_DIR:-/tmp/cc_rbench}
port=${CC_RBENCH_PORT:-25523}
NEW=6VEsHaOYfDtfszX38bcXaRtrojG4qZoqt5iU6HDyHmM=
OLD=JDRrh-YpUn8y1zOcJYoz0Yfa-TJFroQVNM_4k-B98iQ=

# shellcheck source=../test/lib/cluster.sh
source "$ROOT/test/lib/cluster.sh"
cluster_stop "$dir" immediate 2>/dev/null   # a leftover from an aborted run
trap 'cluster_stop "$dir"' EXIT
cluster_start "$dir" "$port" "conn_crypto.fernet_key = '$NEW,$OLD'" "shared_buffers = '256MB'" \
        "max_wal_size = '4GB'" "max_parallel_workers_per_gather = 0" "jit = off" \
    || { echo "rotate_bench.sh: could not start a cluster in $dir on port $port" >&2; exit 2; }

CC_PGHOST=127.0.0.1 CC_PGPORT=$port CC_PGUSER=postgres CC_PGDATABASE=postgres PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 "$ROOT/bench/rotate_bench.py"
