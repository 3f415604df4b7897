#!/usr/bin/env bash
# The three key sources and their precedence (GUC > key command > environment),
# key command failures, reloads, and that the server log never shows key
# material or plaintext secrets, with log_min_messages = debug5 and every error
# path exercised. Runs its own cluster.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/lib/cluster.sh
DIR=${CC_KEYS_DIR:-/tmp/conn_crypto_keys}
PORT=${CC_KEYS_PORT:-25465}
PY=/usr/bin/python3
newkey() { $PY -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'; }
K_ENV=$(newkey); K_CMD=$(newkey); K_GUC=$(newkey); K_CMD2=$(newkey); K_BAD=$(newkey)
SECRET="plaintext-secret-$RANDOM$RANDOM"
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d postgres "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
# Which key made a token (checked in Python, independently of the extension).
key_of() { TOKEN=$1 KEYS="$K_ENV $K_CMD $K_GUC $K_CMD2" $PY -c '
import os
from cryptography.fernet import Fernet, InvalidToken
for k in os.environ["KEYS"].split():
    try:
        Fernet(k).decrypt(os.environ["TOKEN"].encode()); print(k); break
    except InvalidToken: pass
else: print("none")'; }

# PostgreSQL itself dumps the postmaster's environment at startup when
# log_min_messages is debug3 or lower (before any extension loads), so debug5
# is switched on by a reload after startup; see README "Security model".
cluster_start "$DIR" "$PORT" "log_error_verbosity = verbose" "log_min_error_statement = panic" "log_statement = 'none'"
trap 'cluster_stop "$DIR" immediate >/dev/null 2>&1 || true' EXIT
restart_with_env() {  # the environment the postmaster (and so every backend) sees
    cluster_stop "$DIR"
    as_postgres env AIRFLOW__CORE__FERNET_KEY="$1" "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
}
q -c "CREATE EXTENSION conn_crypto"

echo "-- environment only"
restart_with_env "$K_ENV"
[ "$(key_of "$(q -c "SELECT conn_crypto.fernet_encrypt('x')")")" = "$K_ENV" ] || fail "environment key not used"

echo "-- key command beats the environment"
printf '%s\n' "$K_CMD" > "$DIR/keyfile"; chown postgres "$DIR/keyfile"; chmod 600 "$DIR/keyfile"
echo "conn_crypto.fernet_key_command = 'cat $DIR/keyfile'" >> "$DIR/data/postgresql.conf"
q -c "SELECT pg_reload_conf()" >/dev/null; sleep 1
[ "$(key_of "$(q -c "SELECT conn_crypto.fernet_encrypt('x')")")" = "$K_CMD" ] || fail "key command not preferred"
echo "-- a keyring from the command: first key encrypts, both decrypt"
printf ' %s , %s \n' "$K_CMD2" "$K_CMD" > "$DIR/keyfile"
OLD=$(q -c "SELECT conn_crypto.fernet_encrypt('old')")   # same backend: cached keyring
NEW=$(q -c "SELECT conn_crypto.fernet_encrypt('new')")   # new backend: runs the command again
[ "$(key_of "$NEW")" = "$K_CMD2" ] || fail "new backend did not re-run the key command"
[ "$(q -c "SELECT conn_crypto.fernet_decrypt('$OLD')")" = old ] || fail "second key of the command's keyring does not decrypt"

echo "-- the GUC beats both; SET is a superuser's session override"
[ "$(key_of "$(q -c "SET conn_crypto.fernet_key = '$K_GUC'" -c "SELECT conn_crypto.fernet_encrypt('x')")")" = "$K_GUC" ] || fail "GUC not preferred"

echo "-- key command failures are clear errors, never a partial keyring"
check_error() {  # $1 command output setup, $2 expected message fragment
    local out
    out=$(q -c "SELECT conn_crypto.fernet_encrypt('x')" 2>&1 || true)
    echo "$out" | grep -q "$2" || fail "expected '$2', got: $out"
}
sed -i "s|^conn_crypto.fernet_key_command = .*|conn_crypto.fernet_key_command = 'exit 3'|" "$DIR/data/postgresql.conf"
q -c "SELECT pg_reload_conf()" >/dev/null; sleep 1
check_error "" "conn_crypto.fernet_key_command failed: child process exited with exit code 3"
printf '%s,not-a-key-%s\n' "$K_CMD" "$K_BAD" > "$DIR/keyfile"
sed -i "s|^conn_crypto.fernet_key_command = .*|conn_crypto.fernet_key_command = 'cat $DIR/keyfile'|" "$DIR/data/postgresql.conf"
q -c "SELECT pg_reload_conf()" >/dev/null; sleep 1
check_error "" "conn_crypto.fernet_key_command: key 2 of 2 is not 32 url-safe base64-encoded bytes"
: > "$DIR/keyfile"
check_error "" "conn_crypto.fernet_key_command: the keyring is empty"
echo "-- only postgresql.conf may set the key command"
out=$(q -c "SET conn_crypto.fernet_key_command = 'echo x'" 2>&1 || true)
echo "$out" | grep -q "cannot be changed now" || fail "key command settable by SET: $out"

echo "-- every error path, then the log must hold no key and no plaintext"
printf '%s\n' "$K_CMD" > "$DIR/keyfile"
echo "log_min_messages = debug5" >> "$DIR/data/postgresql.conf"
echo "-- the key is not inherited by programs the server runs"
q -c "CREATE TEMP TABLE envdump (line text)" -c "COPY envdump FROM PROGRAM 'env'" -c "SELECT count(*) FROM envdump WHERE line LIKE 'AIRFLOW__CORE__FERNET_KEY%'" | tail -1 | grep -qx 0 \
    || fail "programs started by the server inherit AIRFLOW__CORE__FERNET_KEY"
# A reload that changes the key in postgresql.conf must not log it either.
echo "conn_crypto.fernet_key = '$K_GUC'" >> "$DIR/data/postgresql.conf"
q -c "SELECT pg_reload_conf()" >/dev/null; sleep 1
sed -i "s|^conn_crypto.fernet_key = .*|conn_crypto.fernet_key = '$K_CMD2'|" "$DIR/data/postgresql.conf"
q -c "SELECT pg_reload_conf()" >/dev/null; sleep 1
TOK=$(KEY=$K_GUC S=$SECRET $PY -c 'import os; from cryptography.fernet import Fernet; print(Fernet(os.environ["KEY"]).encrypt(os.environ["S"].encode()).decode())')
BADUTF=$(KEY=$K_CMD2 $PY -c 'import os; from cryptography.fernet import Fernet; print(Fernet(os.environ["KEY"]).encrypt(b"\xc3(secret-bytes").decode())')
q <<SQL >/dev/null 2>&1 || true
SET client_min_messages = error;
CREATE TABLE t (tok text);
INSERT INTO t VALUES ('$TOK'), ('$BADUTF'), ('garbage'), (left('$TOK', 50)), ('$TOK' || 'AAAA');
DO \$\$ DECLARE r record; BEGIN
  FOR r IN SELECT tok FROM t LOOP
    BEGIN PERFORM conn_crypto.fernet_decrypt(r.tok); EXCEPTION WHEN OTHERS THEN RAISE LOG 'caught: %', SQLERRM; END;
    BEGIN PERFORM conn_crypto.fernet_decrypt(r.tok, ttl => 1); EXCEPTION WHEN OTHERS THEN RAISE LOG 'caught: %', SQLERRM; END;
    BEGIN PERFORM conn_crypto.fernet_rotate(r.tok); EXCEPTION WHEN OTHERS THEN RAISE LOG 'caught: %', SQLERRM; END;
    BEGIN PERFORM conn_crypto.fernet_extract_timestamp(r.tok); EXCEPTION WHEN OTHERS THEN RAISE LOG 'caught: %', SQLERRM; END;
  END LOOP;
END \$\$;
SQL
# Errors that reach the log as errors (not caught).
for stmt in "SELECT conn_crypto.fernet_decrypt(tok) FROM t" \
            "SELECT conn_crypto.fernet_decrypt(tok) FROM t WHERE tok LIKE 'gAAAAA%' AND length(tok) > 100 LIMIT 1 OFFSET 1" \
            "SET conn_crypto.fernet_key = 'short,$K_BAD'; SELECT conn_crypto.fernet_encrypt('x')" \
            "CREATE TABLE connection (id serial primary key, conn_id text, conn_type text, password text, is_encrypted boolean, extra text, is_extra_encrypted boolean); SELECT conn_crypto.enable_airflow_encryption(); INSERT INTO connection (conn_id, conn_type, password) SELECT 'x', 'y', tok FROM t WHERE tok = '$TOK'"; do
    q -c "$stmt" >/dev/null 2>&1 || true
done
cluster_stop "$DIR"
LOG="$DIR/server.log"
[ -s "$LOG" ] || fail "no server log"
grep -q "DEBUG" "$LOG" || fail "debug5 logging was not active"
grep -q "no key of the keyring authenticates it" "$LOG" || fail "error paths were not exercised"
for k in "$K_ENV" "$K_CMD" "$K_GUC" "$K_CMD2" "$K_BAD"; do
    for frag in "$k" "${k:0:20}" "${k:20:20}"; do
        grep -qF -- "$frag" "$LOG" && fail "key material in the server log: $frag"
    done
done
grep -qF -- "$SECRET" "$LOG" && fail "plaintext secret in the server log"
grep -qF -- "secret-bytes" "$LOG" && fail "plaintext of an invalid-UTF-8 token in the server log"
echo "key sources and log secrecy: all checks passed ($(wc -l < "$LOG") log lines checked)"
