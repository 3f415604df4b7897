#!/usr/bin/env bash
# A short demo on a throwaway local cluster: configure a Fernet key, let
# PostgreSQL encrypt Airflow connection secrets, and read them back with
# Python's cryptography exactly as Airflow would. Usage (as root): bash demo.sh
set -euo pipefail
cd "$(dirname "$0")"
source test/lib/deps.sh
source test/lib/cluster.sh
install_deps
echo "== building and installing conn_crypto"
make -j2 >/dev/null && make install >/dev/null

DIR=${CC_DEMO_DIR:-/tmp/conn_crypto_demo}
PORT=${CC_DEMO_PORT:-25450}
KEY=$(/usr/bin/python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
# The key goes in postgresql.conf (or the server's AIRFLOW__CORE__FERNET_KEY), never in SQL text.
cluster_start "$DIR" "$PORT" "conn_crypto.fernet_key = '$KEY'"
trap 'cluster_stop "$DIR"; rm -rf "$DIR"' EXIT
psql() { command psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 "$@"; }

echo "== a fresh cluster on port $PORT with a Fernet key in postgresql.conf"
psql -c "CREATE EXTENSION conn_crypto"
echo "== encrypting in SQL"
TOKEN=$(psql -At -c "SELECT conn_crypto.fernet_encrypt('s3cr3t-p@ssw0rd')")
echo "token: $TOKEN"
echo "== decrypting the same token with Python cryptography (as Airflow does)"
KEY="$KEY" TOKEN="$TOKEN" /usr/bin/python3 - <<'PY'
import os
from cryptography.fernet import Fernet, MultiFernet
f = MultiFernet([Fernet(k.strip()) for k in os.environ["KEY"].split(",")])
print("python decrypted:", f.decrypt(os.environ["TOKEN"].encode()).decode())
PY
if psql -At -c "SELECT 1 FROM pg_proc WHERE proname = 'enable_airflow_encryption'" | grep -q 1; then
    echo "== Airflow's connection table with transparent encryption"
    psql <<'SQL'
CREATE TABLE connection (id serial PRIMARY KEY, conn_id varchar(250) NOT NULL UNIQUE, conn_type varchar(500) NOT NULL,
    description text, host varchar(500), schema varchar(500), login text, password text, port integer,
    is_encrypted boolean, is_extra_encrypted boolean, extra text);
CREATE TABLE variable (id serial PRIMARY KEY, key varchar(250) UNIQUE, val text, description text, is_encrypted boolean);
SELECT conn_crypto.enable_airflow_encryption();
INSERT INTO connection (conn_id, conn_type, host, login, password, extra)
VALUES ('warehouse', 'postgres', 'db.example', 'etl', 'plain-password', '{"sslmode": "require"}');
SQL
    psql -c "SELECT conn_id, is_encrypted, left(password, 24) || '...' AS stored_password, is_extra_encrypted FROM connection"
    ROW=$(psql -At -F '|' -c "SELECT password, extra FROM connection WHERE conn_id = 'warehouse'")
    KEY="$KEY" ROW="$ROW" /usr/bin/python3 - <<'PY'
import os
from cryptography.fernet import Fernet, MultiFernet
f = MultiFernet([Fernet(k.strip()) for k in os.environ["KEY"].split(",")])
password, extra = os.environ["ROW"].split("|")
print("airflow reads password:", f.decrypt(password.encode()).decode())
print("airflow reads extra:   ", f.decrypt(extra.encode()).decode())
PY
fi
echo "== demo done; the cluster is stopped and removed on exit"
