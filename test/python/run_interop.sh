#!/usr/bin/env bash
# Python cryptography <-> conn_crypto interop tests on a throwaway cluster.
# The extension must already be installed (make install).
# Env: CC_INTEROP_DIR (cluster directory, default /tmp/cc_interop),
#      CC_PGPORT (default 25500), CC_INTEROP_SEED (random seed, optional).
# Extra arguments go to pytest. Exit status: pytest's.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${CC_INTEROP_DIR:-/tmp/cc_interop}
port=${CC_PGPORT:-25500}

# shellcheck source=../lib/cluster.sh
source "$repo/test/lib/cluster.sh"
trap 'cluster_stop "$dir"' EXIT
cluster_start "$dir" "$port" || { echo "run_interop.sh: could not start a cluster in $dir on port $port" >&2; exit 2; }

cd "$repo"
CC_PGHOST=127.0.0.1 CC_PGPORT=$port CC_PGUSER=postgres CC_PGDATABASE=postgres PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider -rxXs test/python "$@"
status=$?
exit $status
