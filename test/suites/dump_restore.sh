#!/usr/bin/env bash
# pg_dump / pg_restore of a protected database: into a database with the same
# key the rows stay byte-identical; with another key the restore fails loudly
# and nothing is encrypted twice. Runs its own cluster with the key in postgresql.conf.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/lib/cluster.sh
DIR=${CC_DUMP_DIR:-/tmp/conn_crypto_dump}
PORT=${CC_DUMP_PORT:-25460}
K1=cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=
K2=YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=
cluster_start "$DIR" "$PORT" "conn_crypto.fernet_key = '$K1'"
trap 'cluster_stop "$DIR"; rm -rf "$DIR"' EXIT
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
snapshot() { q -d "$1" -c "SELECT conn_id, password, extra, is_encrypted, is_extra_encrypted FROM connection ORDER BY conn_id" \
                -c "SELECT key, val, is_encrypted FROM variable ORDER BY key"; }

createdb src
q -d src -c "CREATE EXTENSION conn_crypto" -f test/sql/airflow_schema.sql -c "SELECT conn_crypto.enable_airflow_encryption()"
q -d src <<'SQL'
INSERT INTO connection (conn_id, conn_type, password, extra)
SELECT 'c' || i, 'http', 'secret-' || i || '-ü', CASE WHEN i % 3 = 0 THEN '' ELSE '{"n": ' || i || '}' END
FROM generate_series(1, 200) i;
INSERT INTO connection (conn_id, conn_type, password) VALUES ('nullpw', 'http', NULL);
INSERT INTO variable (key, val) SELECT 'v' || i, 'value ' || i FROM generate_series(1, 50) i;
INSERT INTO variable (key, val) VALUES ('empty', '');
SQL
snapshot src > "$DIR/src.txt"
[ "$(grep -c gAAAAA "$DIR/src.txt")" -ge 250 ] || fail "source rows are not encrypted"

echo "-- custom-format dump restored into a database with the same key"
pg_dump -Fc -d src -f "$DIR/src.dump"
createdb same
pg_restore -d same --exit-on-error "$DIR/src.dump"
snapshot same > "$DIR/same.txt"
cmp -s "$DIR/src.txt" "$DIR/same.txt" || { diff "$DIR/src.txt" "$DIR/same.txt" | head; fail "restored rows differ"; }
[ "$(q -d same -c "SELECT count(*) FROM conn_crypto.protected_columns")" = 3 ] || fail "protection not restored"
[ "$(q -d same -c "SELECT conn_crypto.connection_password('c7')")" = "secret-7-ü" ] || fail "restored row unreadable"
q -d same -c "INSERT INTO connection (conn_id, conn_type, password) VALUES ('new', 'http', 'after restore')"
[ "$(q -d same -c "SELECT is_encrypted FROM connection WHERE conn_id = 'new'")" = t ] || fail "trigger inactive after restore"

echo "-- plain SQL dump replayed with psql"
pg_dump -d src -f "$DIR/src.sql"
createdb plain
q -d plain -f "$DIR/src.sql" >/dev/null
snapshot plain > "$DIR/plain.txt"
cmp -s "$DIR/src.txt" "$DIR/plain.txt" || fail "plain-format restore changed rows"

echo "-- restore into a database whose server key differs: must fail loudly"
createdb other
if PGOPTIONS="-c conn_crypto.fernet_key=$K2" pg_restore -d other "$DIR/src.dump" 2>"$DIR/other.err"; then
    fail "restore with a different key succeeded"
fi
grep -q "no key of the server keyring decrypts" "$DIR/other.err" || { cat "$DIR/other.err"; fail "restore error does not say why"; }
snapshot other > "$DIR/other.txt" 2>/dev/null || true
# Whatever was loaded was loaded verbatim: nothing encrypted twice.
if [ -s "$DIR/other.txt" ]; then
    cmp -s "$DIR/src.txt" "$DIR/other.txt" || fail "failed restore altered rows"
fi
echo "-- the same as one transaction leaves nothing behind"
createdb other1
if PGOPTIONS="-c conn_crypto.fernet_key=$K2" pg_restore -d other1 --single-transaction --exit-on-error "$DIR/src.dump" 2>/dev/null; then
    fail "single-transaction restore with a different key succeeded"
fi
[ "$(q -d other1 -c "SELECT count(*) FROM pg_class WHERE relname = 'connection'")" = 0 ] || fail "partial restore left behind"

echo "-- data-only restore into an existing protected schema"
createdb target
q -d target -c "CREATE EXTENSION conn_crypto" -f test/sql/airflow_schema.sql -c "SELECT conn_crypto.enable_airflow_encryption()"
pg_restore -d target --data-only --exit-on-error -t connection -t variable "$DIR/src.dump"
snapshot target > "$DIR/target.txt"
cmp -s "$DIR/src.txt" "$DIR/target.txt" || fail "data-only restore through the triggers changed tokens"
createdb target2
q -d target2 -c "CREATE EXTENSION conn_crypto" -f test/sql/airflow_schema.sql -c "SELECT conn_crypto.enable_airflow_encryption()"
if PGOPTIONS="-c conn_crypto.fernet_key=$K2" pg_restore -d target2 --data-only --exit-on-error -t connection "$DIR/src.dump" 2>"$DIR/t2.err"; then
    fail "data-only restore with a different key succeeded"
fi
grep -q "no key of the server keyring decrypts" "$DIR/t2.err" || fail "data-only restore error does not say why"
[ "$(q -d target2 -c "SELECT count(*) FROM connection")" = 0 ] || fail "rows written despite the error"
echo "dump/restore: all checks passed"
