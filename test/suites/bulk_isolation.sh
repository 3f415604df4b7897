#!/usr/bin/env bash
# Concurrency of the bulk operations (rotate, encrypt_plaintext) under
# PostgreSQL's isolation tester: lock waits only at the end, no lost updates,
# no deadlock errors for concurrent writers. Specs in test/isolation/specs,
# expected outputs in test/isolation/expected. Runs its own cluster whose
# keyring is NEW (primary) + OLD; the specs make OLD tokens with the explicit
# key. Exits non-zero when a spec's output differs (the diffs are printed).
#
#   bash test/suites/bulk_isolation.sh [spec ...]     (default: every spec)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
source test/lib/cluster.sh
DIR=${CC_ISO_DIR:-/tmp/cc_iso}
PORT=${CC_ISO_PORT:-25521}
NEW=6VEsHaOYfDtfszX38bcXaRtrojG4qZoqt5iU6HDyHmM=
OLD=JDRrh-YpUn8y1zOcJYoz0Yfa-TJFroQVNM_4k-B98iQ=
ISOLATION_DIR=$(pg_config --pkglibdir)/pgxs/src/test/isolation
REGRESS=$ISOLATION_DIR/pg_isolation_regress
[ -x "$REGRESS" ] || { echo "pg_isolation_regress not found at $REGRESS"; exit 1; }

if [ $# -gt 0 ]; then
    specs=("$@")
else
    specs=()
    for f in test/isolation/specs/*.spec; do specs+=("$(basename "$f" .spec)"); done
fi

cluster_start "$DIR" "$PORT" "conn_crypto.fernet_key = '$NEW,$OLD'" "max_connections = 30"
trap 'cluster_stop "$DIR"' EXIT

OUT=$DIR/out
mkdir -p "$OUT"
chmod 777 "$OUT"
DB=conn_crypto_isolation
# --use-existing makes pg_isolation_regress skip creating the database: do it here.
psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE $DB" -c "\\c $DB" -c "CREATE EXTENSION conn_crypto" >/dev/null
status=0
# pg_isolation_regress finds isolationtester next to itself (--bindir is for psql).
"$REGRESS" --use-existing --host=127.0.0.1 --port="$PORT" --user=postgres \
    --dbname="$DB" \
    --inputdir="$ROOT/test/isolation" --outputdir="$OUT" --bindir="$PGBIN" \
    "${specs[@]}" || status=$?
if [ $status -ne 0 ]; then
    [ -f "$OUT/regression.diffs" ] && cat "$OUT/regression.diffs"
    echo "bulk isolation: FAILED"
    exit 1
fi
echo "bulk isolation: all specs passed"
