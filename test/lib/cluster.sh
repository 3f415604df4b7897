# Throwaway PostgreSQL clusters for tests and demos. Source this file.
# initdb and postgres refuse to run as root, so the server runs as the
# unprivileged "postgres" system user (created by the server packages).
# Usage: cluster_start DIR PORT [KEY=VALUE ...]   (extra postgresql.conf lines)
#        cluster_stop DIR [MODE]
# Fixed test ports stay below 32768, outside Linux's ephemeral port range, so a
# client connection can never already hold the port a test server binds.
PGBIN=${PGBIN:-$(pg_config --bindir)}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster_start() {
    local dir=$1 port=$2; shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log"; return 1; }
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "shared_preload_libraries = 'conn_crypto'"
        echo "fsync = off"
        echo "max_connections = 50"
        echo "max_prepared_transactions = 10"
        for line in "$@"; do echo "$line"; done
    } >>"$dir/data/postgresql.conf"
    as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { cat "$dir/server.log"; return 1; }
}

cluster_stop() {
    local dir=$1 mode=${2:-fast}
    [ -f "$dir/data/postmaster.pid" ] || return 0
    as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -m "$mode" -w stop >/dev/null
}
