#!/usr/bin/env bash
# Stops the server started by start_server.sh DIR: SIGINT, then SIGKILL after 10 s.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
PIDFILE=$1/server.pid
[ -f "$PIDFILE" ] || { echo "no $PIDFILE: nothing to stop"; exit 0; }
pid=$(cat "$PIDFILE")
if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "pykmip-server $pid ignored SIGINT; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
fi
rm -f "$PIDFILE"
