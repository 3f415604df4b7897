#!/usr/bin/env bash
# Starts a PyKMIP test server on 127.0.0.1:PORT with certificates made for it.
#
#   test/kmip/start_server.sh DIR PORT
#
# DIR receives (made once, reused when present):
#   ca.crt ca.key                 test CA that signs the server and client certs
#   server.crt server.key         server cert, subjectAltName IP:127.0.0.1
#   client.crt client.key         client cert (CN=conn_crypto_test, clientAuth)
#   other_ca.crt other_ca.key     an unrelated CA
#   other_client.crt other_client.key  client cert from the unrelated CA
#   server.conf policies/ pykmip.db server.log server.out server.pid
# The server's pid is written to DIR/server.pid once the port accepts.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 DIR PORT" >&2
    exit 2
fi
DIR=$1
PORT=$2
PY=/usr/bin/python3

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
mkdir -p "$DIR/policies"

if [ -f "$DIR/server.pid" ] && kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null; then
    echo "a server is already running with pid $(cat "$DIR/server.pid")" >&2
    exit 1
fi

# --- certificates -----------------------------------------------------------
make_ca() {  # name CN
    local name=$1 cn=$2
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 \
        -keyout "$DIR/$name.key" -out "$DIR/$name.crt" -subj "/CN=$cn" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
make_leaf() {  # name CN ca extfile-text
    local name=$1 cn=$2 ca=$3 ext=$4
    openssl req -newkey rsa:2048 -nodes -sha256 \
        -keyout "$DIR/$name.key" -out "$DIR/$name.csr" -subj "/CN=$cn" 2>/dev/null
    printf '%s\n' "$ext" > "$DIR/$name.ext"
    openssl x509 -req -in "$DIR/$name.csr" -CA "$DIR/$ca.crt" -CAkey "$DIR/$ca.key" \
        -CAcreateserial -days 30 -sha256 -extfile "$DIR/$name.ext" \
        -out "$DIR/$name.crt" 2>/dev/null
    rm -f "$DIR/$name.csr" "$DIR/$name.ext"
}
if [ ! -f "$DIR/other_client.crt" ]; then
    make_ca ca "conn_crypto test CA"
    make_leaf server "127.0.0.1" ca \
"basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1"
    make_leaf client "conn_crypto_test" ca \
"basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    make_ca other_ca "unrelated test CA"
    make_leaf other_client "conn_crypto_test" other_ca \
"basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    chmod 600 "$DIR"/*.key
fi

# --- server configuration ---------------------------------------------------
cat > "$DIR/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$PORT
certificate_path=$DIR/server.crt
key_path=$DIR/server.key
ca_path=$DIR/ca.crt
auth_suite=TLS1.2
policy_path=$DIR/policies
enable_tls_client_auth=True
logging_level=INFO
database_path=$DIR/pykmip.db
CONF

# --- start and wait ---------------------------------------------------------
port_open() {
    "$PY" - "$PORT" <<'PYEOF'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PYEOF
}

if port_open; then
    echo "port $PORT on 127.0.0.1 is already in use" >&2
    exit 1
fi

"$PY" /usr/bin/pykmip-server -f "$DIR/server.conf" -l "$DIR/server.log" \
    >"$DIR/server.out" 2>&1 </dev/null &
pid=$!

for _ in $(seq 1 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "pykmip-server exited during start; see $DIR/server.out and $DIR/server.log" >&2
        tail -n 20 "$DIR/server.out" "$DIR/server.log" >&2 2>/dev/null || true
        exit 1
    fi
    if port_open; then
        echo "$pid" > "$DIR/server.pid"
        echo "pykmip-server pid $pid listening on 127.0.0.1:$PORT"
        exit 0
    fi
    sleep 0.2
done
echo "pykmip-server did not open port $PORT within 30 s" >&2
kill -INT "$pid" 2>/dev/null || true
exit 1
