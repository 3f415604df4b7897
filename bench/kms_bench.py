"""Cost per row of per-connection KMS encryption (enable_kms) against a real
KMIP server, next to the server keyring, on Airflow's connection table.

  INSERT   INSERT ... SELECT of ROWS connections (password + small extra)
           from generate_series: with _kms_conn_id set every row gets its
           own data key, wrapped by one KMIP Encrypt round trip (TLS
           connection included); without it the values are encrypted under
           the server keyring.
  read     SELECT conn_crypto.connection_password(conn_id) over ROWS
           connections in one statement: KMS rows with the backend's key
           cache warm (every key unwrapped before), KMS rows with
           conn_crypto.kms_key_cache_ttl = 0 (one KMIP Decrypt round trip per
           row), and server-keyring rows.

Median of REPS repetitions, the cases alternating in order from one
repetition to the next. Times are wall time around cursor.execute() in
autocommit, divided by ROWS.

Environment: CC_PGHOST (127.0.0.1), CC_PGPORT, CC_PGUSER (postgres),
CC_PGDATABASE (postgres); CC_KMIP_DIR (client.crt, client.key, ca.crt of
test/kmip/start_server.sh), CC_KMIP_PORT, CC_KMIP_KEY_ID; CC_BENCH_ROWS
(100), CC_BENCH_REPS (5). The server needs conn_crypto.fernet_key.

Exit status 0 when the measurements ran, 1 on errors.
"""
import json
import os
import statistics
import sys
import time

import psycopg2

ROWS = int(os.environ.get("CC_BENCH_ROWS", "100"))
REPS = int(os.environ.get("CC_BENCH_REPS", "5"))

INSERT = """
INSERT INTO connection (conn_id, conn_type, host, login, password, port, extra, _kms_conn_id)
SELECT %(prefix)s || i, 'postgres', 'db.example.com', 'user' || i, md5(i::text || 'pw'), 5432,
       '{"sslmode": "require", "application_name": "airflow"}', %(kms)s
FROM generate_series(1, %(rows)s) AS i
"""
READ = """
SELECT count(*) FILTER (WHERE conn_crypto.connection_password(conn_id) = md5(substr(conn_id, %(n)s)::text || 'pw'))
FROM connection WHERE conn_id LIKE %(like)s
"""


def connect():
    c = psycopg2.connect(host=os.environ.get("CC_PGHOST", "127.0.0.1"), port=int(os.environ["CC_PGPORT"]),
                         user=os.environ.get("CC_PGUSER", "postgres"),
                         dbname=os.environ.get("CC_PGDATABASE", "postgres"))
    c.autocommit = True
    return c


def timed(cur, sql, params=None):
    t0 = time.perf_counter()
    cur.execute(sql, params)
    elapsed = time.perf_counter() - t0
    return elapsed, (cur.fetchall() if cur.description else None)


def setup(cur):
    d = os.environ["CC_KMIP_DIR"]

    def pem(name):
        with open(os.path.join(d, name)) as f:
            return f.read()
    extra = json.dumps({"client_cert": pem("client.crt"), "client_key": pem("client.key"),
                        "ca_cert": pem("ca.crt"), "key_id": os.environ["CC_KMIP_KEY_ID"]})
    cur.execute("DELETE FROM connection")
    cur.execute("INSERT INTO connection (conn_id, conn_type, host, port, extra) VALUES ('kms', 'kmip', '127.0.0.1', %s, %s)",
                (int(os.environ["CC_KMIP_PORT"]), extra))


def bench_insert(cur, kms):
    prefix = "ik_" if kms else "is_"
    cur.execute("DELETE FROM connection WHERE conn_id LIKE %s", (prefix + "%",))
    cur.execute("VACUUM connection")
    elapsed, _ = timed(cur, INSERT, {"prefix": prefix, "kms": "kms" if kms else None, "rows": ROWS})
    n = cur.rowcount
    if n != ROWS:
        raise RuntimeError("inserted %d rows, expected %d" % (n, ROWS))
    return elapsed / ROWS


def bench_read(cur, prefix):
    elapsed, rows = timed(cur, READ, {"n": len(prefix) + 1, "like": prefix + "%"})
    if rows[0][0] != ROWS:
        raise RuntimeError("read %d correct passwords of %s*, expected %d" % (rows[0][0], prefix, ROWS))
    return elapsed / ROWS


def main():
    conn = connect()
    cur = conn.cursor()
    setup(cur)
    # Rows to read: ROWS KMS-encrypted, ROWS under the server keyring.
    cur.execute(INSERT, {"prefix": "rk_", "kms": "kms", "rows": ROWS})
    cur.execute(INSERT, {"prefix": "rs_", "kms": None, "rows": ROWS})
    cur.execute("VACUUM ANALYZE connection")

    results = {k: [] for k in ("ins_server", "ins_kms", "read_server", "read_warm", "read_nocache")}
    for rep in range(REPS):
        order = [False, True] if rep % 2 == 0 else [True, False]
        for kms in order:
            results["ins_kms" if kms else "ins_server"].append(bench_insert(cur, kms))

        # Reads: a fresh session per repetition, its cache warmed by one untimed read.
        reader = connect()
        rc = reader.cursor()
        rc.execute("SET conn_crypto.kms_key_cache_ttl = 300")
        bench_read(rc, "rk_")
        rc.execute("SELECT conn_crypto._kms_cache_size()")
        if rc.fetchone()[0] < ROWS:
            raise RuntimeError("the key cache did not fill")
        cases = [("read_warm", "rk_", 300), ("read_server", "rs_", 300), ("read_nocache", "rk_", 0)]
        if rep % 2:
            cases = cases[1:2] + cases[0:1] + cases[2:]
        for name, prefix, ttl in cases:
            rc.execute("SET conn_crypto.kms_key_cache_ttl = %s", (ttl,))
            results[name].append(bench_read(rc, prefix))
        rc.execute("SELECT conn_crypto._kms_cache_size()")
        if rc.fetchone()[0] != 0:
            raise RuntimeError("kms_key_cache_ttl = 0 left keys in the cache")
        reader.close()
        print("repetition %d/%d done" % (rep + 1, REPS), flush=True)

    med = {k: statistics.median(v) * 1000 for k, v in results.items()}
    print()
    print("conn_crypto KMS benchmark: %d rows per statement, median of %d repetitions (ms per row)" % (ROWS, REPS))
    print()
    print("%-52s %12s %12s" % ("operation", "ms/row", "vs server"))
    print("-" * 78)
    rows = [
        ("INSERT, server keyring", "ins_server", "ins_server"),
        ("INSERT, KMS-encrypted (one KMIP wrap per row)", "ins_kms", "ins_server"),
        ("read connection_password, server keyring", "read_server", "read_server"),
        ("read connection_password, KMS, key cache warm", "read_warm", "read_server"),
        ("read connection_password, KMS, no cache (ttl = 0)", "read_nocache", "read_server"),
    ]
    for label, key, base in rows:
        print("%-52s %12.4f %11.1fx" % (label, med[key], med[key] / med[base]))
    print("-" * 78)
    print("no cache / warm cache read: %.1fx; KMS INSERT / KMS uncached read: %.2fx"
          % (med["read_nocache"] / med["read_warm"], med["ins_kms"] / med["read_nocache"]))
    print("spread (min..max ms/row): " + ", ".join(
        "%s %.4f..%.4f" % (k, min(v) * 1000, max(v) * 1000) for k, v in results.items()))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001
        print("kms_bench.py: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
