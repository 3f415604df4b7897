#!/usr/bin/env bash
# Per-connection KMS envelope encryption (enable_kms) end to end, against a
# real KMIP server (PyKMIP's pykmip-server) and checked from outside the
# extension with PyKMIP's own client and an Airflow-style reader in Python
# (test/kmip/airflow_kms_reader.py).
#
#   a  kms_encrypt/kms_decrypt round trips, cross-checked with PyKMIP (GCM, CBC)
#   b  KMS-encrypted connections written with plain SQL (single, multi-row,
#      INSERT ... SELECT, COPY, a restored row with its conn_key) read back as
#      Airflow would, and with connection_password/connection_extra
#   c  UPDATE: password keeps conn_key; new _kms_extra re-wraps under another
#      key (the old key can then be destroyed); clearing _kms_conn_id returns
#      the row to the server keyring; setting it again, or another KMS connection
#   d  rewrap_kms after the KMS connection's key_id changes
#   e  chains of KMS connections are refused, also between concurrent transactions
#   g  wrong client certificate, wrong CA, unknown key, inactive key
#   j  status/verify count KMS rows; rotate leaves them alone
#   h  a hung KMS: statement_timeout, pg_cancel_backend, conn_crypto.kms_timeout
#   i  the per-backend key cache (server stopped), kms_key_cache_ttl = 0
#   f  server stopped: writes fail promptly and leave nothing behind; rotate()
#      of the server keyring still works; recovery after the restart
#   k  no error message of the suite shows client key material
#
# Runs its own pykmip-server (port 25720), PostgreSQL cluster (25725) and a
# blackhole listener (25726) under /tmp/cc_kms_suite (CC_KMS_SUITE_DIR).
# The extension must be built and installed. Prints a FAIL line per failed
# check, exits non-zero when any failed; last line "kms: all checks passed".
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/cluster.sh
PY=/usr/bin/python3
BASE=${CC_KMS_SUITE_DIR:-/tmp/cc_kms_suite}
KDIR=$BASE/kmip
PGD=$BASE/pg
KPORT=25720
PORT=25725
HOLE_PORT=25726
ERRLOG=$BASE/stderr.log          # every psql/python stderr of the suite (check k)
UTIL=test/kmip/kms_suite_util.py
FAILS=0

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
die() { echo "FAIL: $*"; exit 1; }
pass() { echo "  ok: $*"; }
now_ms() { date +%s%3N; }
newkey() { $PY -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'; }

cleanup() {
    local rc=$?
    [ -f "$BASE/hole.pid" ] && kill "$(cat "$BASE/hole.pid")" 2>/dev/null
    test/kmip/stop_server.sh "$KDIR" >/dev/null 2>&1
    cluster_stop "$PGD" immediate >/dev/null 2>&1
    if [ "$rc" = 0 ]; then rm -rf "$BASE"; else echo "kms: logs kept in $BASE"; fi
    exit "$rc"
}

# Leftovers of an earlier run.
[ -f "$BASE/hole.pid" ] && kill "$(cat "$BASE/hole.pid")" 2>/dev/null
[ -d "$KDIR" ] && test/kmip/stop_server.sh "$KDIR" >/dev/null 2>&1
[ -d "$PGD" ] && cluster_stop "$PGD" immediate >/dev/null 2>&1
rm -rf "$BASE"
mkdir -p "$BASE"
: >"$ERRLOG"
trap cleanup EXIT

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
export CC_PGHOST=127.0.0.1 CC_PGPORT=$PORT CC_PGUSER=postgres CC_PGDATABASE=postgres
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@" 2>>"$ERRLOG"; }
# expect_error REGEX DESC PSQL-ARGS...: the psql command must fail with an
# error matching REGEX (extended, case-insensitive). Sets ERR and ELAPSED_MS.
expect_error() {
    local re=$1 desc=$2 t0
    shift 2
    t0=$(now_ms)
    if psql -X -q -At -v ON_ERROR_STOP=1 "$@" >"$BASE/last.out" 2>"$BASE/last.err"; then
        ELAPSED_MS=$(($(now_ms) - t0))
        cat "$BASE/last.err" >>"$ERRLOG"
        ERR=""
        fail "$desc: succeeded, expected an error matching /$re/"
        return 1
    fi
    ELAPSED_MS=$(($(now_ms) - t0))
    cat "$BASE/last.err" >>"$ERRLOG"
    ERR=$(cat "$BASE/last.err")
    if ! grep -Eiq -- "$re" <<<"$ERR"; then
        fail "$desc: error does not match /$re/: $ERR"
        return 1
    fi
    pass "$desc ($(grep -m1 'ERROR' <<<"$ERR" | cut -c1-160))"
}
eq() {  # eq ACTUAL EXPECTED DESC
    if [ "$1" == "$2" ]; then pass "$3"; else fail "$3: got '$1', expected '$2'"; fi
}
pykmip() { $PY test/kmip/pykmip_client.py "$1" "$KDIR" "$KPORT" "${@:2}" 2>>"$ERRLOG"; }
reader() { CC_FERNET_KEY=$K1 $PY test/kmip/airflow_kms_reader.py "$@" 2>>"$ERRLOG"; }
util() { CC_FERNET_KEY=$K1 $PY $UTIL "$@" 2>>"$ERRLOG"; }
# A fingerprint of the whole connection table (refused statements must not change it).
table_md5() { q -c "SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY id), '')) FROM connection c"; }
add_kms_connection() {  # CONN_ID PORT EXTRA
    q -v id="$1" -v port="$2" -v extra="$3" <<'SQL'
INSERT INTO connection (conn_id, conn_type, host, port, extra) VALUES (:'id', 'kmip', '127.0.0.1', :port, :'extra');
SQL
}

echo "-- setup: pykmip-server :$KPORT, PostgreSQL :$PORT"
test/kmip/start_server.sh "$KDIR" "$KPORT" >>"$BASE/kmip_start.log" 2>&1 || { cat "$BASE/kmip_start.log"; die "pykmip-server did not start"; }
K1=$(newkey)
K2=$(newkey)
cluster_start "$PGD" "$PORT" "conn_crypto.fernet_key = '$K1'" || die "PostgreSQL did not start"
q -c "CREATE EXTENSION conn_crypto" -f test/sql/airflow_schema.sql -c "SELECT conn_crypto.enable_kms()" >/dev/null \
    || die "extension setup failed"
# The values every test connection holds, also known to kms_suite_util.py.
q <<'SQL' || die "helper functions"
CREATE FUNCTION exp_pw(c text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'pw-' || c || '-ü€ "q"' $$;
CREATE FUNCTION exp_extra(c text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '{"id": "' || c || '", "u": "ü"}' $$;
SQL
KID1=$(pykmip create-key) || die "create-key"
KID2=$(pykmip create-key) || die "create-key"
KID_C1=$(pykmip create-key) || die "create-key"
KID_D=$(pykmip create-key) || die "create-key"
KID_INACTIVE=$(pykmip create-key --inactive) || die "create-key --inactive"
echo "   keys: KID1=$KID1 KID2=$KID2 KID_C1=$KID_C1 KID_D=$KID_D inactive=$KID_INACTIVE"
add_kms_connection kms "$KPORT" "$(util extra "$KDIR" client.crt client.key ca.crt "$KID1")" || die "kms connection"
add_kms_connection kms12 "$KPORT" "$(util extra "$KDIR" client.crt client.key ca.crt "$KID1" kmip_version=1.2)" || die "kms12"
add_kms_connection wrongcert "$KPORT" "$(util extra "$KDIR" other_client.crt other_client.key ca.crt "$KID1")" || die "wrongcert"
add_kms_connection wrongca "$KPORT" "$(util extra "$KDIR" client.crt client.key other_ca.crt "$KID1")" || die "wrongca"
add_kms_connection hole "$HOLE_PORT" "$(util extra "$KDIR" client.crt client.key ca.crt "$KID1")" || die "hole"
add_kms_connection badjson "$KPORT" "$(util bad-extra "$KDIR" client.key)" || die "badjson"
eq "$(q -c "SELECT count(*) FROM connection WHERE conn_type = 'kmip' AND is_extra_encrypted AND extra LIKE 'gAAAAA%' AND extra NOT LIKE '%PRIVATE%'")" 6 \
    "KMS connections' extras (their client keys) are Fernet-encrypted under the server keyring"

# ---------------------------------------------------------------------------
echo "-- a. kms_encrypt / kms_decrypt, cross-checked with PyKMIP's client"
for spec in "kms|{}|gcm" "kms12|{}|cbc" 'kms|{"kmip_version": "1.2"}|cbc'; do
    IFS='|' read -r conn x mode <<<"$spec"
    label="$conn $x"
    hex=$(openssl rand -hex 32)
    if w=$(q -v hex="$hex" -v conn="$conn" -v x="$x" <<<"SELECT conn_crypto.kms_encrypt(decode(:'hex', 'hex'), :'conn', :'x')"); then
        eq "$(util wrapped-info "$w")" "$mode $KID1" "kms_encrypt ($label) wraps with $mode under key $KID1"
        eq "$(q -v w="$w" -v conn="$conn" -v x="$x" <<<"SELECT encode(conn_crypto.kms_decrypt(:'w', :'conn', :'x'), 'hex')")" "$hex" \
            "kms_decrypt(kms_encrypt(k)) = k ($label)"
        eq "$(pykmip decrypt - "$w")" "$hex" "PyKMIP decrypts what kms_encrypt wrapped ($label)"
    else
        fail "kms_encrypt ($label): $(tail -n 3 "$ERRLOG" | grep -m1 ERROR)"
    fi
    hex2=$(openssl rand -hex 32)
    w2=$(pykmip encrypt "$KID1" "$hex2" "$mode") || { fail "PyKMIP encrypt ($mode)"; continue; }
    eq "$(q -v w="$w2" -v conn="$conn" -v x="$x" <<<"SELECT encode(conn_crypto.kms_decrypt(:'w', :'conn', :'x'), 'hex')")" "$hex2" \
        "kms_decrypt unwraps what PyKMIP wrapped ($label)"
    if [ "$mode" = gcm ]; then
        # One character of the ciphertext changed: the GCM tag must catch it.
        pos=$((${#w} - 8))
        c=${w:$pos:1}; [ "$c" = A ] && r=B || r=A
        expect_error 'KMS connection "kms".*unwrap failed' "a tampered GCM wrapped key is refused" \
            -v w="${w:0:$pos}$r${w:$((pos + 1))}" <<<"SELECT conn_crypto.kms_decrypt(:'w', 'kms')"
    fi
done

# ---------------------------------------------------------------------------
echo "-- b. KMS-encrypted connections written with plain SQL, read as Airflow would"
COPY_ROWS=""
for i in 1 2 3 4 5; do
    kc=kms; [ "$i" = 5 ] && kc=kms12
    COPY_ROWS+=$(printf 'b_copy%s\thttp\tpw-b_copy%s-ü€ "q"\t{"id": "b_copy%s", "u": "ü"}\t%s' "$i" "$i" "$i" "$kc")$'\n'
done
q <<SQL || fail "inserting KMS-encrypted connections"
INSERT INTO connection (conn_id, conn_type, password, extra, _kms_conn_id)
VALUES ('b_single', 'http', exp_pw('b_single'), exp_extra('b_single'), 'kms');
INSERT INTO connection (conn_id, conn_type, password, extra, _kms_conn_id)
VALUES ('b_cbc', 'http', exp_pw('b_cbc'), exp_extra('b_cbc'), 'kms12');
INSERT INTO connection (conn_id, conn_type, password, extra, _kms_conn_id, _kms_extra)
VALUES ('b_cbc_extra', 'http', exp_pw('b_cbc_extra'), exp_extra('b_cbc_extra'), 'kms', '{"kmip_version": "1.2"}');
INSERT INTO connection (conn_id, conn_type, password, extra, _kms_conn_id) VALUES
    ('b_multi1', 'http', exp_pw('b_multi1'), exp_extra('b_multi1'), 'kms'),
    ('b_multi2', 'http', exp_pw('b_multi2'), exp_extra('b_multi2'), 'kms12'),
    ('b_plain', 'http', exp_pw('b_plain'), exp_extra('b_plain'), NULL),
    ('b_multi3', 'http', exp_pw('b_multi3'), exp_extra('b_multi3'), 'kms');
INSERT INTO connection (conn_id, conn_type, password, extra, _kms_conn_id)
SELECT 'm' || i, 'http', exp_pw('m' || i), exp_extra('m' || i), 'kms' FROM generate_series(1, 20) i;
COPY connection (conn_id, conn_type, password, extra, _kms_conn_id) FROM STDIN;
$COPY_ROWS\.
INSERT INTO connection (conn_id, conn_type, password, extra, _kms_conn_id)
VALUES ('b_restored', 'http', exp_pw('b_restored'), exp_extra('b_restored'), 'kms');
SQL
# A restored row (pg_dump's COPY of every column): it arrives with its conn_key and tokens.
dump=$(q -c "COPY (SELECT * FROM connection WHERE conn_id = 'b_restored') TO STDOUT")
q -c "DELETE FROM connection WHERE conn_id = 'b_restored'" >/dev/null
printf '%s\n\\.\n' "$dump" | q -c "COPY connection FROM STDIN" || fail "COPY of a dumped KMS row"
B_IDS=(b_single b_cbc b_cbc_extra b_multi1 b_multi2 b_multi3 b_copy1 b_copy2 b_copy3 b_copy4 b_copy5 b_restored
       m1 m2 m3 m4 m5 m6 m7 m8 m9 m10 m11 m12 m13 m14 m15 m16 m17 m18 m19 m20)
eq "$(q -c "SELECT count(*) FROM connection WHERE _kms_conn_id IS NOT NULL")" "${#B_IDS[@]}" "${#B_IDS[@]} KMS-encrypted rows written"
eq "$(q -c "SELECT count(*) FROM connection WHERE _kms_conn_id IS NOT NULL AND is_encrypted AND is_extra_encrypted
                 AND conn_key LIKE 'kmip1:%' AND password LIKE 'gAAAAA%' AND extra LIKE 'gAAAAA%'")" "${#B_IDS[@]}" \
    "every KMS row has a kmip1: conn_key, Fernet tokens and both flags"
eq "$(q -c "SELECT count(DISTINCT conn_key) FROM connection WHERE _kms_conn_id IS NOT NULL")" \
    "${#B_IDS[@]}" "every KMS row has its own wrapped data key"
eq "$(q -c "SELECT count(*) FROM connection WHERE _kms_conn_id IS NOT NULL AND conn_crypto._key_position(password) <> -1")" 0 \
    "no KMS row's password is a token of the server keyring"
eq "$(q -c "COPY (SELECT * FROM connection WHERE conn_id = 'b_restored') TO STDOUT")" "$dump" \
    "a restored row (COPY with its conn_key) keeps its tokens byte for byte"
specs=()
for id in "${B_IDS[@]}"; do
    case $id in b_cbc | b_cbc_extra | b_multi2 | b_copy5) specs+=("$id:kms:cbc:$KID1") ;; *) specs+=("$id:kms:gcm:$KID1") ;; esac
done
specs+=("b_plain:server")
reader "${B_IDS[@]}" b_plain >"$BASE/b.json" || fail "airflow_kms_reader.py could not read every row (see $ERRLOG)"
if out=$(util check "$BASE/b.json" "${specs[@]}"); then
    pass "Airflow's reading (PyKMIP unwrap + Fernet) gives back every value written (${#specs[@]} rows)"
else
    fail "Airflow-style read differs: $out"
fi
eq "$(q -c "SELECT count(*) FILTER (WHERE conn_crypto.connection_password(conn_id) = exp_pw(conn_id)
                                     AND conn_crypto.connection_extra(conn_id) = exp_extra(conn_id))
            FROM connection WHERE conn_id LIKE 'b\_%' OR conn_id ~ '^m[0-9]+$'")" "$((${#B_IDS[@]} + 1))" \
    "connection_password/connection_extra give the same values"

# ---------------------------------------------------------------------------
echo "-- c. UPDATEs of KMS-encrypted connections"
q -v kid="$KID_C1" <<'SQL' || fail "insert c1, c2"
INSERT INTO connection (conn_id, conn_type, password, extra, _kms_conn_id, _kms_extra)
VALUES ('c1', 'http', 'first password', exp_extra('c1'), 'kms', json_build_object('key_id', :'kid')::text),
       ('c2', 'http', exp_pw('c2'), exp_extra('c2'), 'kms', NULL);
SQL
snap() { q -c "SELECT concat_ws(' ', coalesce(conn_key, '-'), password, extra) FROM connection WHERE conn_id = '$1'"; }
read -r ck0 pw0 ex0 <<<"$(snap c1)"
reader c1 >"$BASE/c0.json"
dk0=$(util get "$BASE/c0.json" c1 data_key)
eq "$(util get "$BASE/c0.json" c1 key_id)" "$KID_C1" "c1 is wrapped under its _kms_extra key_id"
q -c "UPDATE connection SET password = exp_pw('c1') WHERE conn_id = 'c1'" || fail "update password"
read -r ck1 pw1 ex1 <<<"$(snap c1)"
eq "$ck1" "$ck0" "UPDATE of password keeps conn_key"
eq "$ex1" "$ex0" "UPDATE of password leaves the extra token alone"
[ "$pw1" != "$pw0" ] && [ "${pw1:0:6}" = gAAAAA ] || fail "the new password is not a new token: $pw1"
reader c1 >"$BASE/c1.json"
out=$(util check "$BASE/c1.json" "c1:kms:gcm:$KID_C1") && pass "new password readable with the same data key" || fail "c1 after password update: $out"
eq "$(util get "$BASE/c1.json" c1 data_key)" "$dk0" "the data key is unchanged"

q -v kid="$KID2" <<<"UPDATE connection SET _kms_extra = json_build_object('key_id', :'kid')::text WHERE conn_id = 'c1'" \
    || fail "update _kms_extra"
read -r ck2 pw2 ex2 <<<"$(snap c1)"
[ "$ck2" != "$ck1" ] && pass "a new _kms_extra gives a new conn_key" || fail "conn_key unchanged after _kms_extra changed"
[ "$pw2" != "$pw1" ] && [ "$ex2" != "$ex1" ] && pass "password and extra moved under the new data key" \
    || fail "tokens unchanged after a new data key"
reader c1 >"$BASE/c2.json"
out=$(util check "$BASE/c2.json" "c1:kms:gcm:$KID2") && pass "values readable (Airflow path), wrapped under $KID2" || fail "c1 after re-wrap: $out"
pykmip revoke-destroy "$KID_C1" || fail "revoke-destroy $KID_C1"
if pykmip decrypt - "$ck1" >/dev/null; then fail "the old key $KID_C1 still unwraps"; else pass "old key $KID_C1 destroyed (PyKMIP can no longer unwrap the old conn_key)"; fi
reader c1 >"$BASE/c3.json"
out=$(util check "$BASE/c3.json" "c1:kms:gcm:$KID2") && pass "c1 readable without the old key (Airflow path)" || fail "c1 after destroying the old key: $out"
eq "$(q -c "SELECT conn_crypto.connection_password('c1') = exp_pw('c1') AND conn_crypto.connection_extra('c1') = exp_extra('c1')")" t \
    "c1 readable without the old key (SQL, new session)"

q -c "UPDATE connection SET _kms_conn_id = NULL WHERE conn_id = 'c1'" || fail "clear _kms_conn_id"
read -r ck3 pw3 ex3 <<<"$(snap c1)"
eq "$(q -c "SELECT conn_key IS NULL FROM connection WHERE conn_id = 'c1'")" t "clearing _kms_conn_id clears conn_key"
eq "$(util server-decrypt "$pw3")" "$(q -c "SELECT exp_pw('c1')")" "password is now a token of the server key (Python MultiFernet)"
eq "$(util server-decrypt "$ex3")" "$(q -c "SELECT exp_extra('c1')")" "extra is now a token of the server key (Python MultiFernet)"
reader c1 >"$BASE/c4.json"
out=$(util check "$BASE/c4.json" "c1:server") && pass "Airflow reads it through the server keyring" || fail "c1 after clearing: $out"
q -c "UPDATE connection SET _kms_conn_id = 'kms' WHERE conn_id = 'c1'" || fail "set _kms_conn_id again"
read -r ck5 pw5 ex5 <<<"$(snap c1)"
[ "${ck5:0:6}" = kmip1: ] && pass "setting _kms_conn_id again wraps a new data key" || fail "no conn_key after setting _kms_conn_id: $ck5"
if util server-decrypt "$pw5" >/dev/null; then fail "password still a server-keyring token"; else pass "password left the server keyring"; fi
reader c1 >"$BASE/c5.json"
out=$(util check "$BASE/c5.json" "c1:kms:gcm:$KID2") && pass "values readable under KMS again (Airflow path)" || fail "c1 back in KMS: $out"
# From one KMS connection to another: a new data key from the other KMS connection.
q -c "UPDATE connection SET _kms_conn_id = 'kms12' WHERE conn_id = 'c2'" || fail "move c2 to kms12"
reader c2 >"$BASE/c6.json"
out=$(util check "$BASE/c6.json" "c2:kms:cbc:$KID1") && pass "moving to another KMS connection re-wraps (CBC) and stays readable" \
    || fail "c2 moved to kms12: $out"

# ---------------------------------------------------------------------------
echo "-- d. rewrap_kms after the KMS connection's key_id changed"
rows_kms() { q -c "SELECT conn_id, conn_key, password, extra FROM connection WHERE _kms_conn_id = 'kms' ORDER BY conn_id"; }
rows_kms >"$BASE/d_before.txt"
q -c "SELECT conn_id, conn_key FROM connection WHERE _kms_conn_id = 'kms12' ORDER BY conn_id" >"$BASE/d_kms12_before.txt"
mapfile -t D_IDS < <(q -c "SELECT conn_id FROM connection WHERE _kms_conn_id = 'kms' ORDER BY conn_id")
reader "${D_IDS[@]}" >"$BASE/d_before.json" || fail "reader before rewrap"
sample_ck=$(q -c "SELECT conn_key FROM connection WHERE conn_id = 'm7'")
sample_dk=$(pykmip decrypt - "$sample_ck")
q -v extra="$(util extra "$KDIR" client.crt client.key ca.crt "$KID_D")" <<<"UPDATE connection SET extra = :'extra' WHERE conn_id = 'kms'" \
    || fail "changing the KMS connection's key_id"
q -c "CALL conn_crypto.rewrap_kms('kms', batch_size => 7)" || fail "rewrap_kms"
rows_kms >"$BASE/d_after.txt"
reader "${D_IDS[@]}" >"$BASE/d_after.json" || fail "reader after rewrap"
cut -d'|' -f1,3,4 "$BASE/d_before.txt" >"$BASE/d_tokens_before.txt"
cut -d'|' -f1,3,4 "$BASE/d_after.txt" >"$BASE/d_tokens_after.txt"
cmp -s "$BASE/d_tokens_before.txt" "$BASE/d_tokens_after.txt" && pass "password/extra tokens byte-identical (${#D_IDS[@]} rows)" \
    || fail "rewrap_kms changed tokens"
eq "$(paste -d'|' <(cut -d'|' -f2 "$BASE/d_before.txt") <(cut -d'|' -f2 "$BASE/d_after.txt") | awk -F'|' '$1 == $2' | wc -l)" 0 \
    "every conn_key of 'kms' was re-wrapped"
out=$(util rewrap-compare "$BASE/d_before.json" "$BASE/d_after.json" "$KID_D" "c1=$KID2") \
    && pass "each conn_key now under $KID_D (c1 under its own $KID2), same data key, same values (PyKMIP)" \
    || fail "rewrap_kms: $out"
eq "$(pykmip decrypt - "$(q -c "SELECT conn_key FROM connection WHERE conn_id = 'm7'")")" "$sample_dk" \
    "pykmip_client.py decrypt of m7's new conn_key gives the data key it had before"
eq "$(q -c "SELECT conn_id, conn_key FROM connection WHERE _kms_conn_id = 'kms12' ORDER BY conn_id" | md5sum)" \
    "$(md5sum <"$BASE/d_kms12_before.txt")" "rows of other KMS connections untouched"
eq "$(q -c "SELECT count(*) FILTER (WHERE conn_crypto.connection_password(conn_id) = exp_pw(conn_id)) FROM connection
            WHERE _kms_conn_id = 'kms'")" "${#D_IDS[@]}" "SQL reading after rewrap_kms"

# ---------------------------------------------------------------------------
echo "-- e. chains of KMS connections are refused"
before=$(table_md5)
expect_error "can't chain KMS encrypted connections" "a KMS-encrypted row used as KMS connection (INSERT)" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('e1', 'http', 'x', 'b_single')"
expect_error "can't chain KMS encrypted connections" "a KMS-encrypted row used as KMS connection (UPDATE)" \
    -c "UPDATE connection SET _kms_conn_id = 'b_single' WHERE conn_id = 'b_plain'"
expect_error "can't chain KMS encrypted connections" "a KMS-encrypted row used as KMS connection (kms_encrypt)" \
    -c "SELECT conn_crypto.kms_encrypt('\\x00112233', 'b_single')"
expect_error "can't chain KMS encrypted connections" "_kms_conn_id set on a KMS connection in use" \
    -c "UPDATE connection SET _kms_conn_id = 'kms12' WHERE conn_id = 'kms'"
expect_error "can't chain KMS encrypted connections" "a KMS connection encrypting itself (UPDATE)" \
    -c "UPDATE connection SET _kms_conn_id = 'kms' WHERE conn_id = 'kms'"
expect_error "can't chain KMS encrypted connections" "a new row naming its own conn_id (INSERT)" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('e_self', 'http', 'x', 'e_self')"
expect_error "can't chain KMS encrypted connections" "an existing row naming its own conn_id (UPDATE)" \
    -c "UPDATE connection SET _kms_conn_id = 'b_plain' WHERE conn_id = 'b_plain'"
eq "$(table_md5)" "$before" "refused statements changed nothing"
# Two concurrent transactions must not build a chain between them either:
# one makes a connection KMS-encrypted while the other picks it as its KMS connection.
chains() { q -c "SELECT count(*) FROM connection a JOIN connection k ON k.conn_id = a._kms_conn_id WHERE k._kms_conn_id IS NOT NULL"; }
for order in update-first insert-first; do
    x=e_race_$order
    add_kms_connection "$x" "$KPORT" "$(util extra "$KDIR" client.crt client.key ca.crt "$KID1")" || fail "add $x"
    if [ "$order" = update-first ]; then
        first="UPDATE connection SET _kms_conn_id = 'kms' WHERE conn_id = '$x'"
        second="INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('${x}_row', 'http', 'x', '$x')"
    else
        first="INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('${x}_row', 'http', 'x', '$x')"
        second="UPDATE connection SET _kms_conn_id = 'kms' WHERE conn_id = '$x'"
    fi
    psql -X -q -At -v ON_ERROR_STOP=1 -c "BEGIN" -c "$first" -c "SELECT pg_sleep(1.5)" -c "COMMIT" >/dev/null 2>>"$BASE/race.err" &
    racer=$!
    sleep 0.7
    psql -X -q -At -v ON_ERROR_STOP=1 -c "$second" >/dev/null 2>>"$BASE/race.err"
    wait "$racer"
    cat "$BASE/race.err" >>"$ERRLOG"
    : >"$BASE/race.err"
    eq "$(chains)" 0 "concurrent transactions ($order) leave no chain of KMS connections"
    # Undo whatever got in, so later checks start from a chain-free table.
    q -c "DELETE FROM connection WHERE conn_id IN ('$x', '${x}_row')" >/dev/null
done

# ---------------------------------------------------------------------------
echo "-- g. certificates and keys the KMS refuses"
before=$(table_md5)
expect_error '"wrongcert".*certificate' "client certificate from another CA" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('g1', 'http', 'x', 'wrongcert')"
expect_error '"wrongca".*certificate' "server certificate not from ca_cert" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('g2', 'http', 'x', 'wrongca')"
expect_error '"kms".*key not found' "unknown key id 424242" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id, _kms_extra) VALUES ('g3', 'http', 'x', 'kms', '{\"key_id\": \"424242\"}')"
expect_error '"kms".*not active' "key not active ($KID_INACTIVE)" \
    -v kid="$KID_INACTIVE" <<<"INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id, _kms_extra)
                                VALUES ('g4', 'http', 'x', 'kms', json_build_object('key_id', :'kid')::text)"
expect_error 'key not found' "kms_encrypt with an unknown key id" -c "SELECT conn_crypto.kms_encrypt('\\x0011', 'kms', '{\"key_id\": \"424242\"}')"
expect_error '"badjson".*not JSON' "a KMS connection whose extra is not JSON" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('g5', 'http', 'x', 'badjson')"
expect_error 'does not exist' "a KMS connection that does not exist" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('g6', 'http', 'x', 'nosuch')"
eq "$(table_md5)" "$before" "refused statements changed nothing"

# ---------------------------------------------------------------------------
echo "-- j. status, verify and rotate with KMS rows"
N_PW=$(q -c "SELECT count(*) FROM connection WHERE _kms_conn_id IS NOT NULL AND password <> ''")
N_EX=$(q -c "SELECT count(*) FROM connection WHERE _kms_conn_id IS NOT NULL AND extra <> ''")
eq "$(q -c "SELECT kms_encrypted || ' ' || undecryptable FROM conn_crypto.status WHERE table_name = 'connection'::regclass AND column_name = 'password'")" \
    "$N_PW 0" "status: password of $N_PW KMS rows counted as kms_encrypted, none undecryptable"
eq "$(q -c "SELECT kms_encrypted || ' ' || undecryptable FROM conn_crypto.status WHERE table_name = 'connection'::regclass AND column_name = 'extra'")" \
    "$N_EX 0" "status: extra of $N_EX KMS rows counted as kms_encrypted, none undecryptable"
eq "$(q -c "SELECT count(*) FROM conn_crypto.verify()")" 0 "verify() finds nothing wrong"
kms_snapshot() { q -c "SELECT conn_id, conn_key, password, extra, is_encrypted, is_extra_encrypted FROM connection WHERE _kms_conn_id IS NOT NULL ORDER BY conn_id" | md5sum; }
kms_before=$(kms_snapshot)
plain_before=$(q -c "SELECT password FROM connection WHERE conn_id = 'b_plain'")
q -c "SET conn_crypto.fernet_key = '$K2,$K1'" -c "CALL conn_crypto.rotate(batch_size => 10)" \
    -c "SELECT primary_key || ' ' || older_keys || ' ' || kms_encrypted FROM conn_crypto.status WHERE table_name = 'connection'::regclass AND column_name = 'password'" \
    >"$BASE/rotate.out" || fail "rotate to a new primary key"
plain_after=$(q -c "SELECT password FROM connection WHERE conn_id = 'b_plain'")
eq "$(CC_FERNET_KEY=$K2 $PY $UTIL server-decrypt "$plain_after" 2>>"$ERRLOG")" "$(q -c "SELECT exp_pw('b_plain')")" \
    "rotate moved server-keyring rows to the new key"
eq "$(tail -n1 "$BASE/rotate.out" | cut -d' ' -f2,3)" "0 $N_PW" "status after rotate: no older keys, KMS rows still kms_encrypted"
eq "$(kms_snapshot)" "$kms_before" "rotate left every KMS row's tokens and conn_key untouched"
q -c "SET conn_crypto.fernet_key = '$K1,$K2'" -c "CALL conn_crypto.rotate()" >/dev/null || fail "rotate back"
eq "$(util server-decrypt "$(q -c "SELECT password FROM connection WHERE conn_id = 'b_plain'")")" "$(q -c "SELECT exp_pw('b_plain')")" \
    "rotated back to the configured key"
eq "$(kms_snapshot)" "$kms_before" "rotating back left KMS rows untouched too"

# ---------------------------------------------------------------------------
echo "-- h. a KMS that accepts and never answers: cancels and timeouts"
$PY test/kmip/blackhole.py "$HOLE_PORT" "$BASE/hole.pid" 2>>"$ERRLOG" &
for _ in $(seq 50); do [ -s "$BASE/hole.pid" ] && break; sleep 0.1; done
[ -s "$BASE/hole.pid" ] || die "blackhole listener did not start"
before=$(table_md5)
eq "$(q -c "SHOW conn_crypto.kms_timeout")" 10s "kms_timeout is 10 s"
expect_error 'canceling statement due to statement timeout' "statement_timeout 700ms during a hung KMS call" \
    -c "SET statement_timeout = '700ms'" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('h1', 'http', 'x', 'hole')"
[ "$ELAPSED_MS" -lt 3000 ] && pass "statement timeout honoured after ${ELAPSED_MS} ms (< 3000)" || fail "statement timeout took ${ELAPSED_MS} ms"
t0=$(now_ms)
psql -X -q -At -v ON_ERROR_STOP=1 -c "SET application_name = 'cc_kms_hung'" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('h2', 'http', 'x', 'hole')" \
    >/dev/null 2>"$BASE/hung.err" &
hung=$!
for _ in $(seq 50); do
    [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cc_kms_hung' AND state = 'active' AND query LIKE 'INSERT%'")" = 1 ] && break
    sleep 0.1
done
sleep 0.3
eq "$(q -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'cc_kms_hung'")" t "pg_cancel_backend sent"
wait "$hung"
rc=$?
elapsed=$(($(now_ms) - t0))
cat "$BASE/hung.err" >>"$ERRLOG"
if [ "$rc" != 0 ] && grep -q 'canceling statement due to user request' "$BASE/hung.err" && [ "$elapsed" -lt 3000 ]; then
    pass "pg_cancel_backend ends the hung KMS call (${elapsed} ms in all)"
else
    fail "pg_cancel_backend: rc $rc after ${elapsed} ms: $(cat "$BASE/hung.err")"
fi
expect_error 'KMS connection "hole".*KMS timeout.*300 ms' "kms_timeout = 300 ms gives a KMS timeout error" \
    -c "SET conn_crypto.kms_timeout = 300" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('h3', 'http', 'x', 'hole')"
[ "$ELAPSED_MS" -lt 3000 ] && pass "KMS timeout after ${ELAPSED_MS} ms" || fail "KMS timeout took ${ELAPSED_MS} ms"
# The message names the peer once and ends in a complete phrase.
msg=$(grep -m1 'ERROR' <<<"$ERR")
if grep -Eq '(with|to|from)$' <<<"$msg"; then fail "KMS timeout message ends mid-sentence: '$msg'"; else pass "timeout message is complete"; fi
eq "$(table_md5)" "$before" "hung and timed-out statements wrote nothing"
eq "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cc_kms_hung'")" 0 "the cancelled session ended cleanly"

# ---------------------------------------------------------------------------
echo "-- i. the per-backend key cache, then the KMS server stopped"
cat >"$BASE/cache.sql" <<SQL
\set ON_ERROR_STOP 1
SELECT 'read1', count(*) FILTER (WHERE conn_crypto.connection_password(conn_id) = exp_pw(conn_id)) FROM connection WHERE conn_id ~ '^m[0-9]+\$';
SELECT 'read2', count(*) FILTER (WHERE conn_crypto.connection_password(conn_id) = exp_pw(conn_id)) FROM connection WHERE conn_id ~ '^m[0-9]+\$';
SELECT 'cached', conn_crypto._kms_cache_size() >= 20;
\! test/kmip/stop_server.sh $KDIR >/dev/null 2>&1
\! $PY -c 'import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(("127.0.0.1", $KPORT)) else 1)' && echo 'stopped|yes'
SELECT 'read3', count(*) FILTER (WHERE conn_crypto.connection_password(conn_id) = exp_pw(conn_id)) FROM connection WHERE conn_id ~ '^m[0-9]+\$';
SELECT 'cached', conn_crypto._kms_cache_size() >= 20;
\set ON_ERROR_STOP 0
BEGIN;
SET LOCAL conn_crypto.kms_key_cache_ttl = 0;
SELECT 'read4', conn_crypto.connection_password('m1');
ROLLBACK;
SET conn_crypto.kms_key_cache_ttl = 0;
SELECT 'read5', conn_crypto.connection_password('m2');
SELECT 'size_ttl0', conn_crypto._kms_cache_size();
SQL
psql -X -q -At -F'|' -f "$BASE/cache.sql" >"$BASE/cache.out" 2>"$BASE/cache.err"
cat "$BASE/cache.err" >>"$ERRLOG"
eq "$(grep -c '^read1|20$' "$BASE/cache.out")$(grep -c '^read2|20$' "$BASE/cache.out")" 11 "20 KMS rows read twice in one session"
eq "$(grep -c '^cached|t$' "$BASE/cache.out")" 2 "the session caches their keys (_kms_cache_size() >= 20)"
eq "$(grep -c '^stopped|yes$' "$BASE/cache.out")" 1 "pykmip-server stopped"
eq "$(grep -c '^read3|20$' "$BASE/cache.out")" 1 "reading again in the same session works from the cache"
grep -q '^read4' "$BASE/cache.out" && fail "read with SET LOCAL kms_key_cache_ttl = 0 succeeded (cache used)"
grep -q '^read5' "$BASE/cache.out" && fail "read with kms_key_cache_ttl = 0 succeeded (cache used)"
eq "$(grep -c 'ERROR:.*KMS connection "kms".*unreachable' "$BASE/cache.err")" 2 "with kms_key_cache_ttl = 0 reading fails: KMS unreachable"
eq "$(grep -c '^size_ttl0|0$' "$BASE/cache.out")" 1 "kms_key_cache_ttl = 0 empties the cache"
expect_error 'KMS connection "kms".*unreachable' "a new session has its own (empty) cache" \
    -c "SELECT conn_crypto.connection_password('m3')"
expect_error 'KMS connection "kms".*unreachable' "connection_extra fails the same way" -c "SELECT conn_crypto.connection_extra('m4')"

# ---------------------------------------------------------------------------
echo "-- f. KMS server stopped: KMS writes fail promptly, nothing is written"
before=$(table_md5)
count=$(q -c "SELECT count(*) FROM connection")
expect_error 'KMS connection "kms".*unreachable' "INSERT of a KMS row" \
    -c "INSERT INTO connection (conn_id, conn_type, password, extra, _kms_conn_id) VALUES ('f1', 'http', 'x', '{}', 'kms')"
[ "$ELAPSED_MS" -lt 2000 ] && pass "failed after ${ELAPSED_MS} ms" || fail "took ${ELAPSED_MS} ms to fail"
expect_error 'KMS connection "kms12".*unreachable' "multi-row INSERT with one KMS row among server-keyring rows" \
    -c "INSERT INTO connection (conn_id, conn_type, password, _kms_conn_id) VALUES ('f2', 'http', 'x', NULL), ('f3', 'http', 'y', 'kms12'), ('f4', 'http', 'z', NULL)"
expect_error 'KMS connection "kms".*unreachable' "UPDATE moving a row into KMS" \
    -c "UPDATE connection SET _kms_conn_id = 'kms' WHERE conn_id = 'b_plain'"
expect_error 'KMS connection "kms".*unreachable' "UPDATE of a KMS row's password (its key is not cached in a new session)" \
    -c "UPDATE connection SET password = 'new' WHERE conn_id = 'm5'"
eq "$(q -c "SELECT count(*) FROM connection")" "$count" "row count unchanged"
eq "$(table_md5)" "$before" "no row written or changed"
q -c "INSERT INTO connection (conn_id, conn_type, password) VALUES ('f_server', 'http', 'server keyring')" \
    && pass "server-keyring writes do not need the KMS" || fail "server-keyring INSERT failed while the KMS is down"
q -c "DELETE FROM connection WHERE conn_id = 'f_server'" >/dev/null
# rotate() leaves KMS rows alone, so rotating the server keyring must not need the KMS.
kms_before=$(kms_snapshot)
if q -c "SET conn_crypto.fernet_key = '$K2,$K1'" -c "CALL conn_crypto.rotate()" >/dev/null; then
    pass "rotate() of the server keyring works while the KMS is down"
    eq "$(CC_FERNET_KEY=$K2 $PY $UTIL server-decrypt "$(q -c "SELECT password FROM connection WHERE conn_id = 'b_plain'")" 2>>"$ERRLOG")" \
        "$(q -c "SELECT exp_pw('b_plain')")" "server-keyring rows rotated while the KMS is down"
else
    fail "CALL conn_crypto.rotate() fails while the KMS is down, although it leaves KMS rows alone: $(grep ERROR "$ERRLOG" | tail -n 1)"
fi
eq "$(kms_snapshot)" "$kms_before" "KMS rows untouched by rotate() while the KMS is down"

echo "-- KMS server back: KMS rows readable and writable again"
test/kmip/start_server.sh "$KDIR" "$KPORT" >>"$BASE/kmip_start.log" 2>&1 || die "pykmip-server did not restart"
q -c "SET conn_crypto.fernet_key = '$K1,$K2'" -c "CALL conn_crypto.rotate()" >/dev/null || fail "rotate back to the configured key"
eq "$(q -c "SELECT count(*) FILTER (WHERE conn_crypto.connection_password(conn_id) = exp_pw(conn_id)) FROM connection WHERE conn_id ~ '^m[0-9]+$'")" 20 \
    "KMS rows readable after the server restarted"
q -c "INSERT INTO connection (conn_id, conn_type, password, extra, _kms_conn_id) VALUES ('f5', 'http', exp_pw('f5'), exp_extra('f5'), 'kms')" \
    || fail "INSERT after the server restarted"
reader f5 >"$BASE/f5.json"
out=$(util check "$BASE/f5.json" "f5:kms:gcm:$KID_D") && pass "a new KMS row after the restart reads back (Airflow path)" || fail "f5: $out"

# ---------------------------------------------------------------------------
echo "-- k. no client key material in any error message"
cat "$PGD/server.log" >"$BASE/server_log_copy.txt" 2>/dev/null
k_fails=$FAILS
n_errors=$(grep -c 'ERROR' "$ERRLOG")
[ "$n_errors" -ge 25 ] && pass "$n_errors error messages collected from the suite" || fail "only $n_errors error messages collected"
for keyfile in client.key other_client.key; do
    # Lines of the base64 body (not the header, which all RSA keys share).
    for n in 5 12 20; do
        line=$(sed -n "${n}p" "$KDIR/$keyfile")
        [ ${#line} -ge 40 ] || { fail "$keyfile line $n is too short to search for"; continue; }
        if grep -qF -- "$line" "$ERRLOG"; then fail "line $n of $keyfile appears in an error message"; fi
        if grep -qF -- "$line" "$BASE/server_log_copy.txt"; then fail "line $n of $keyfile appears in the server log"; fi
        # The JSON-escaped form too.
        if grep -qF -- "${line:0:30}" "$ERRLOG" "$BASE/server_log_copy.txt"; then fail "part of $keyfile line $n appears in errors or the log"; fi
    done
done
grep -q 'PRIVATE KEY' "$ERRLOG" "$BASE/server_log_copy.txt" && fail "'PRIVATE KEY' appears in an error message or the log"
[ "$FAILS" = "$k_fails" ] && pass "no line of client.key or other_client.key in $n_errors error messages or the server log"

if [ "$FAILS" != 0 ]; then
    echo "kms: $FAILS check(s) FAILED"
    exit 1
fi
echo "kms: all checks passed"
