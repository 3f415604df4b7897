#!/usr/bin/env bash
# SQL-level benchmark of conn_crypto (bench/sql_bench.py) on a throwaway cluster.
# The extension must already be installed (make install).
#
#   bash bench/sql_bench.sh
#   CC_BENCH_DIR=/tmp/x CC_BENCH_PORT=25600 CC_BENCH_ROWS=100000 bash bench/sql_bench.sh
#
# Prints a table with OK/MISS per target; exits 0 even on MISS (benchmarks do
# not fail builds), non-zero only when the cluster or the benchmark errs.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${CC_BENCH_DIR:-/tmp/cc_sql_bench}
port=${CC_BENCH_PORT:-25501}

# shellcheck source=../test/lib/cluster.sh
source "$ROOT/test/lib/cluster.sh"
trap 'cluster_stop "$dir"' EXIT
cluster_start "$dir" "$port" "shared_buffers = '256MB'" \
    || { echo "sql_bench.sh: could not start a cluster in $dir on port $port" >&2; exit 2; }

CC_PGHOST=127.0.0.1 CC_PGPORT=$port CC_PGUSER=postgres CC_PGDATABASE=postgres PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 "$ROOT/bench/sql_bench.py"
