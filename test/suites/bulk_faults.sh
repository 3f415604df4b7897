#!/usr/bin/env bash
# Faults in the middle of CALL conn_crypto.rotate(500): the backend is
# terminated (pg_terminate_backend), the server stops with -m immediate
# (crash recovery), the call is cancelled by statement_timeout and by
# pg_cancel_backend; and (d) the server stops with -m immediate right after a
# CALL returned, which must lose nothing. After each fault every value must still decrypt with the
# keyring to what was inserted, with its original Fernet timestamp, nothing
# lost, nothing undecryptable; a second call must finish the job and change
# exactly the values the first one left under the old key.
# Runs its own cluster with keyring NEW (primary), OLD in postgresql.conf.
#
#   bash test/suites/bulk_faults.sh
#   CC_FAULT_ROWS=80000 bash test/suites/bulk_faults.sh    (more rows: a wider window for the faults)
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/lib/cluster.sh
DIR=${CC_FAULT_DIR:-/tmp/cc_fault}
PORT=${CC_FAULT_PORT:-25522}
ROWS=${CC_FAULT_ROWS:-50000}     # connections: password and extra under OLD
VARS=${CC_FAULT_VARS:-2000}      # variables: val under OLD
BATCH=500
NEW=6VEsHaOYfDtfszX38bcXaRtrojG4qZoqt5iU6HDyHmM=
OLD=JDRrh-YpUn8y1zOcJYoz0Yfa-TJFroQVNM_4k-B98iQ=
APP=cc_fault_rotate

cluster_stop "$DIR" immediate 2>/dev/null || true   # a leftover from an aborted run
cluster_start "$DIR" "$PORT" "conn_crypto.fernet_key = '$NEW,$OLD'"
ROT_PID=
cleanup() {
    if [ -n "$ROT_PID" ]; then kill "$ROT_PID" 2>/dev/null || true; fi
    cluster_stop "$DIR" immediate 2>/dev/null || true
}
trap cleanup EXIT
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "FAIL: $*"; exit 1; }

echo "-- setup: $ROWS connections and $VARS variables under the old key"
q -c "CREATE EXTENSION conn_crypto" -f test/sql/airflow_schema.sql
q <<SQL
-- What the values must decrypt to, and the Fernet timestamps rotation must keep.
CREATE TABLE orig_conn AS
SELECT i AS id, 'c' || i AS conn_id,
       conn_crypto.fernet_encrypt('pw-' || i, '$OLD') AS password,
       conn_crypto.fernet_encrypt('{"n": ' || i || ', "host": "h' || i || '.example"}', '$OLD') AS extra
FROM generate_series(1, $ROWS) i;
CREATE TABLE expected_conn AS
SELECT id, 'pw-' || id AS password, '{"n": ' || id || ', "host": "h' || id || '.example"}' AS extra,
       conn_crypto.fernet_extract_timestamp(password, '$OLD') AS password_ts,
       conn_crypto.fernet_extract_timestamp(extra, '$OLD') AS extra_ts
FROM orig_conn;
CREATE TABLE orig_var AS
SELECT i AS id, 'v' || i AS key, conn_crypto.fernet_encrypt('val-' || i, '$OLD') AS val FROM generate_series(1, $VARS) i;
CREATE TABLE expected_var AS
SELECT id, 'val-' || id AS val, conn_crypto.fernet_extract_timestamp(val, '$OLD') AS val_ts FROM orig_var;
SELECT conn_crypto.enable_airflow_encryption();
SQL
# The expected plaintexts really are what the OLD tokens hold.
[ "$(q -c "SELECT count(*) FROM orig_conn o JOIN expected_conn e USING (id)
           WHERE conn_crypto.fernet_decrypt(o.password, '$OLD') = e.password
             AND conn_crypto.fernet_decrypt(o.extra, '$OLD') = e.extra")" = "$ROWS" ] || fail "setup: bad tokens"

reset_data() {
    # Reloaded through the protection trigger: OLD tokens are keyring tokens, kept as they are.
    q -c "TRUNCATE connection, variable" \
      -c "INSERT INTO connection (id, conn_id, conn_type, password, extra, is_encrypted, is_extra_encrypted)
          SELECT id, conn_id, 'http', password, extra, true, true FROM orig_conn" \
      -c "INSERT INTO variable (id, key, val, is_encrypted) SELECT id, key, val, true FROM orig_var" \
      -c "VACUUM ANALYZE connection, variable"
    [ "$(status_line)" = "connection.extra:0/$ROWS connection.password:0/$ROWS variable.val:0/$VARS" ] \
        || fail "reset: unexpected status $(status_line)"
}

# "table.column:primary/older" for every target, from the status view.
status_line() {
    q -c "SELECT string_agg(format('%s.%s:%s/%s', table_name, column_name, primary_key, older_keys), ' '
                            ORDER BY table_name::text, column_name) FROM conn_crypto.status"
}

# Every value is intact: counts unchanged, nothing undecryptable or plaintext,
# every value decrypts with the keyring to the inserted plaintext and keeps its
# Fernet timestamp, flags set, verify() silent.
check_intact() {
    local what=$1 bad
    bad=$(q -c "SELECT string_agg(format('%s.%s total=%s primary=%s older=%s plain=%s empty=%s undecryptable=%s',
                                         table_name, column_name, total, primary_key, older_keys, plaintext, empty,
                                         undecryptable), '; ')
                FROM conn_crypto.status
                WHERE undecryptable <> 0 OR plaintext <> 0 OR empty <> 0 OR primary_key + older_keys <> total
                   OR total <> CASE WHEN table_name = 'variable'::regclass THEN $VARS ELSE $ROWS END")
    [ -z "$bad" ] || fail "$what: status: $bad"
    [ "$(q -c "SELECT count(*) FROM conn_crypto.status")" = 3 ] || fail "$what: status lost a target"
    bad=$(q -c "SELECT count(*) FROM expected_conn e FULL JOIN connection c USING (id)
                WHERE e.id IS NULL OR c.id IS NULL
                   OR conn_crypto.fernet_decrypt(c.password) IS DISTINCT FROM e.password
                   OR conn_crypto.fernet_decrypt(c.extra) IS DISTINCT FROM e.extra
                   OR conn_crypto.fernet_extract_timestamp(c.password) IS DISTINCT FROM e.password_ts
                   OR conn_crypto.fernet_extract_timestamp(c.extra) IS DISTINCT FROM e.extra_ts
                   OR c.is_encrypted IS NOT TRUE OR c.is_extra_encrypted IS NOT TRUE")
    [ "$bad" = 0 ] || fail "$what: $bad connection rows missing, extra, or not decrypting to the inserted values"
    bad=$(q -c "SELECT count(*) FROM expected_var e FULL JOIN variable v USING (id)
                WHERE e.id IS NULL OR v.id IS NULL
                   OR conn_crypto.fernet_decrypt(v.val) IS DISTINCT FROM e.val
                   OR conn_crypto.fernet_extract_timestamp(v.val) IS DISTINCT FROM e.val_ts
                   OR v.is_encrypted IS NOT TRUE")
    [ "$bad" = 0 ] || fail "$what: $bad variable rows missing, extra, or not decrypting to the inserted values"
    [ "$(q -c "SELECT count(*) FROM conn_crypto.verify()")" = 0 ] || fail "$what: verify() reports rows"
}

older_total() { q -c "SELECT sum(older_keys) FROM conn_crypto.status"; }

start_rotate() {
    PGAPPNAME=$APP psql -X -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = notice" \
        -c "CALL conn_crypto.rotate($BATCH)" >"$DIR/rotate.out" 2>"$DIR/rotate.err" &
    ROT_PID=$!
}

# Waits until the rotation has committed $1 batches of the connection table
# (password and extra together). The trigger is the rotation's own
# progress NOTICE, sent right after each batch's COMMIT: polling the status
# view is too slow for it (it scans every value once per key, ~2 s for 50k
# rows on 2 CPUs, as long as half the password pass, so the rotation was
# often over by the time a poll said "part-way"). The status view then
# confirms the part-way state after the fault (finish_and_check).
wait_midway() {
    local batches=$1 deadline=$((SECONDS + 300)) n
    while :; do
        n=$(grep -Ec 'rotate: public\.connection \(extra, password\) [0-9]+ / [0-9]+ rows scanned' "$DIR/rotate.err" || true)
        if [ "$n" -ge "$batches" ]; then
            echo "   $n batches of the connection table committed"
            return 0
        fi
        kill -0 "$ROT_PID" 2>/dev/null || fail "the rotation ended before the fault ($(grep -v NOTICE "$DIR/rotate.err"))"
        [ $SECONDS -lt $deadline ] || fail "the rotation did not get part-way in time"
        sleep 0.02
    done
}

# The first call failed with the expected error.
expect_rotate_failed() {
    local what=$1 pattern=$2 rc=0
    wait "$ROT_PID" || rc=$?
    ROT_PID=
    [ $rc -ne 0 ] || fail "$what: the interrupted CALL succeeded"
    grep -Eq "$pattern" "$DIR/rotate.err" || { cat "$DIR/rotate.err"; fail "$what: unexpected error"; }
}

# The fault left the rotation part-way: the data is intact, the password column
# mixed. Then a second call finishes, changing exactly what was left.
finish_and_check() {
    local what=$1 left line changed
    line=$(status_line)
    echo "   after the fault: $line"
    case $line in
        *"connection.password:0/"*|*"connection.password:"*"/0 "*) fail "$what: the fault did not hit the password rotation part-way" ;;
    esac
    check_intact "$what, after the fault"
    left=$(older_total)
    q -c "SET client_min_messages = notice" -c "CALL conn_crypto.rotate($BATCH)" 2>"$DIR/second.err" \
        || { cat "$DIR/second.err"; fail "$what: second rotate failed"; }
    changed=$(sed -n 's/.*conn_crypto rotate: finished: \([0-9]*\) value(s) changed.*/\1/p' "$DIR/second.err")
    [ "$changed" = "$left" ] || fail "$what: the second call changed ${changed:-?} values, $left were left under the old key"
    line=$(status_line)
    [ "$line" = "connection.extra:$ROWS/0 connection.password:$ROWS/0 variable.val:$VARS/0" ] \
        || fail "$what: after the second call: $line"
    check_intact "$what, after the second call"
    echo "   second call changed the $changed values left; nothing under the old key"
}

rotate_backend() { q -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$APP' AND query LIKE 'CALL%'"; }

echo "-- (a) pg_terminate_backend mid-rotation"
reset_data
start_rotate
wait_midway 3
pid=$(rotate_backend)
[ -n "$pid" ] || fail "(a): rotation backend not found"
[ "$(q -c "SELECT pg_terminate_backend($pid)")" = t ] || fail "(a): pg_terminate_backend failed"
expect_rotate_failed "(a)" "terminating connection due to administrator command"
finish_and_check "(a)"

echo "-- (b) pg_ctl stop -m immediate mid-rotation, crash recovery"
reset_data
start_rotate
wait_midway 20
as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null
expect_rotate_failed "(b)" "server closed the connection unexpectedly|terminating connection|connection to server was lost"
log_lines=$(wc -l <"$DIR/server.log")
as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start >/dev/null || { tail "$DIR/server.log"; fail "(b): restart failed"; }
tail -n +"$((log_lines + 1))" "$DIR/server.log" | grep -q "automatic recovery in progress" \
    || fail "(b): no crash recovery in the server log"
finish_and_check "(b)"

echo "-- (c) statement_timeout = 300ms cancels the rotation"
reset_data
rc=0
q -c "SET client_min_messages = warning" -c "SET statement_timeout = '300ms'" -c "CALL conn_crypto.rotate($BATCH)" \
    >/dev/null 2>"$DIR/timeout.err" || rc=$?
[ $rc -ne 0 ] || fail "(c): the CALL outlived statement_timeout"
grep -q "canceling statement due to statement timeout" "$DIR/timeout.err" || { cat "$DIR/timeout.err"; fail "(c): unexpected error"; }
line=$(status_line)
echo "   after the timeout: $line"
# 300 ms is part-way through the first column: some batches committed, most left.
case $line in
    "connection.extra:0/"*) fail "(c): no batch committed before the timeout" ;;
    "connection.extra:$ROWS/0"*) fail "(c): the first column finished before the timeout" ;;
esac
check_intact "(c), after the timeout"
left=$(older_total)
q -c "SET client_min_messages = notice" -c "CALL conn_crypto.rotate($BATCH)" 2>"$DIR/second.err" || fail "(c): second rotate failed"
changed=$(sed -n 's/.*conn_crypto rotate: finished: \([0-9]*\) value(s) changed.*/\1/p' "$DIR/second.err")
[ "$changed" = "$left" ] || fail "(c): the second call changed ${changed:-?} values, $left were left"
[ "$(status_line)" = "connection.extra:$ROWS/0 connection.password:$ROWS/0 variable.val:$VARS/0" ] \
    || fail "(c): after the second call: $(status_line)"
check_intact "(c), after the second call"
echo "   second call changed the $changed values left; nothing under the old key"

echo "-- (c') pg_cancel_backend mid-rotation"
reset_data
start_rotate
wait_midway 40
pid=$(rotate_backend)
[ -n "$pid" ] || fail "(c'): rotation backend not found"
[ "$(q -c "SELECT pg_cancel_backend($pid)")" = t ] || fail "(c'): pg_cancel_backend failed"
expect_rotate_failed "(c')" "canceling statement due to user request"
finish_and_check "(c')"

echo "-- (d) pg_ctl stop -m immediate right after CALL returns: the run's work is durable"
# Batches commit without waiting for their WAL; the run's last commit must wait
# for all of it. With the WAL writer paused (SIGSTOP), nothing else writes the
# last batches' WAL before the immediate stop unless that final commit does.
reset_data
walwriter=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
[ -n "$walwriter" ] || fail "(d): no WAL writer process"
kill -STOP "$walwriter"
rc=0
q -c "SET client_min_messages = warning" -c "CALL conn_crypto.rotate($BATCH)" || rc=$?
as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -W stop >/dev/null
kill -CONT "$walwriter" 2>/dev/null || true   # lets it take the immediate stop's SIGQUIT
[ $rc -eq 0 ] || fail "(d): rotate failed"
for _ in $(seq 1 60); do [ -f "$DIR/data/postmaster.pid" ] || break; sleep 0.5; done
as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start >/dev/null || { tail "$DIR/server.log"; fail "(d): restart failed"; }
line=$(status_line)
[ "$line" = "connection.extra:$ROWS/0 connection.password:$ROWS/0 variable.val:$VARS/0" ] \
    || fail "(d): after crash recovery: $line (work of a returned CALL was lost)"
check_intact "(d), after crash recovery"
echo "   after crash recovery: $line"

echo "bulk faults: all checks passed"
