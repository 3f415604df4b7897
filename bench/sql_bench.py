"""Throughput of the conn_crypto SQL functions against a sha256 baseline and
against Python's cryptography Fernet (what Airflow uses).

Connection from CC_PGHOST (127.0.0.1), CC_PGPORT (25501), CC_PGUSER (postgres),
CC_PGDATABASE (postgres); the user must be a superuser. Rows: CC_BENCH_ROWS
(100000). Each measurement is repeated (after a warm-up run) and the median is
reported. SQL times are wall time around cursor.execute()+fetch of a query
returning one row, so they are server execution time plus one round trip.
Queries run serially (max_parallel_workers_per_gather = 0, jit = off) so
the ratios compare per-row cost.

Exit status: 0 when the measurements ran (even if targets are missed), 1 on errors.
"""
import io
import os
import statistics
import sys
import time

import psycopg2
from cryptography.fernet import Fernet

ROWS = int(os.environ.get("CC_BENCH_ROWS", "100000"))
SQL_REPS = int(os.environ.get("CC_BENCH_SQL_REPS", "7"))
PY_REPS = int(os.environ.get("CC_BENCH_PY_REPS", "3"))
# Fixed key: the tokens are reproducible in size and content.
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="   # bytes 0..31, url-safe base64


def connect():
    conn = psycopg2.connect(host=os.environ.get("CC_PGHOST", "127.0.0.1"),
                            port=int(os.environ.get("CC_PGPORT", "25501")),
                            user=os.environ.get("CC_PGUSER", "postgres"),
                            dbname=os.environ.get("CC_PGDATABASE", "postgres"),
                            application_name="conn_crypto_sql_bench")
    conn.autocommit = True
    return conn


def median_time(fn, reps, warmup=True):
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sql_timer(cur, query, params=None, expect=None):
    def run():
        cur.execute(query, params)
        rows = cur.fetchall()
        if expect is not None and rows != [(expect,)]:
            raise RuntimeError(f"{query!r} returned {rows!r}, expected {expect!r}")
    return median_time(run, SQL_REPS)


def setup(cur):
    cur.execute("CREATE EXTENSION IF NOT EXISTS conn_crypto")
    cur.execute("SET max_parallel_workers_per_gather = 0")
    cur.execute("SET jit = off")
    cur.execute("DROP TABLE IF EXISTS tokens, plaintexts, enc_out")
    # 32-byte passwords: 32 url-safe base64 characters from 24 random bytes
    cur.execute("""CREATE TABLE plaintexts AS
                   SELECT g AS id,
                          translate(encode(substr(sha256(random()::text::bytea), 1, 24), 'base64'), '+/', '-_') AS p
                   FROM generate_series(1, %s) g""", (ROWS,))
    cur.execute("CREATE TABLE tokens AS SELECT id, conn_crypto.fernet_encrypt(p, %s) AS t FROM plaintexts", (KEY,))
    cur.execute("CREATE TABLE enc_out (id integer, t text)")
    cur.execute("VACUUM ANALYZE plaintexts")
    cur.execute("VACUUM ANALYZE tokens")
    cur.execute("SELECT min(octet_length(p)), max(octet_length(p)), count(*) FROM plaintexts")
    lo, hi, n = cur.fetchone()
    if (lo, hi, n) != (32, 32, ROWS):
        raise RuntimeError(f"unexpected plaintexts: lengths {lo}..{hi}, {n} rows")
    # sanity: SQL tokens decrypt in Python to the plaintext
    cur.execute("SELECT p.p, t.t FROM plaintexts p JOIN tokens t USING (id) ORDER BY id LIMIT 100")
    f = Fernet(KEY)
    for p, t in cur.fetchall():
        if f.decrypt(t).decode() != p:
            raise RuntimeError("a SQL token does not decrypt in Python")
    cur.execute("SELECT pg_size_pretty(pg_total_relation_size('tokens'))")
    return cur.fetchone()[0]


def main():
    conn = connect()
    cur = conn.cursor()
    t0 = time.perf_counter()
    size = setup(cur)
    print(f"setup: {ROWS} rows, tokens table {size}, {time.perf_counter() - t0:.1f} s; "
          f"SQL median of {SQL_REPS} (after a warm-up), Python median of {PY_REPS}")

    rows = []   # (operation, time, baseline name, baseline time, ratio kind, target)

    # --- SQL against the sha256 baseline (ratio = time / baseline, target <= 2x)
    base_dec = sql_timer(cur, "SELECT count(sha256(t::bytea)) FROM tokens", expect=ROWS)
    dec_key = sql_timer(cur, "SELECT count(conn_crypto.fernet_decrypt(t, %s)) FROM tokens", (KEY,), expect=ROWS)
    cur.execute("SET conn_crypto.fernet_key = %s", (KEY,))
    dec_srv = sql_timer(cur, "SELECT count(conn_crypto.fernet_decrypt(t)) FROM tokens", expect=ROWS)
    base_enc = sql_timer(cur, "SELECT count(sha256(p::bytea)) FROM plaintexts", expect=ROWS)
    enc_key = sql_timer(cur, "SELECT count(conn_crypto.fernet_encrypt(p, %s)) FROM plaintexts", (KEY,), expect=ROWS)
    enc_srv = sql_timer(cur, "SELECT count(conn_crypto.fernet_encrypt(p)) FROM plaintexts", expect=ROWS)
    # sanity: the decrypted values are the plaintexts
    cur.execute("SELECT count(*) FROM tokens JOIN plaintexts USING (id) WHERE conn_crypto.fernet_decrypt(t) <> p")
    if cur.fetchone()[0] != 0:
        raise RuntimeError("SQL decryption does not give back the plaintexts")

    rows += [
        ("SQL fernet_decrypt(t, key)", dec_key, "SQL sha256(t::bytea)", base_dec, "slower", 2.0),
        ("SQL fernet_decrypt(t) server keyring", dec_srv, "SQL sha256(t::bytea)", base_dec, "slower", 2.0),
        ("SQL fernet_encrypt(p, key)", enc_key, "SQL sha256(p::bytea)", base_enc, "slower", 2.0),
        ("SQL fernet_encrypt(p) server keyring", enc_srv, "SQL sha256(p::bytea)", base_enc, "slower", 2.0),
    ]

    # --- Python cryptography, one Fernet call per value, data already in memory
    cur.execute("SELECT t FROM tokens ORDER BY id")
    tokens = [t.encode() for (t,) in cur.fetchall()]
    cur.execute("SELECT p FROM plaintexts ORDER BY id")
    plains = [p.encode() for (p,) in cur.fetchall()]
    f = Fernet(KEY)

    def py_decrypt():
        dec = f.decrypt
        for t in tokens:
            dec(t)

    def py_encrypt():
        enc = f.encrypt
        for p in plains:
            enc(p)

    py_dec = median_time(py_decrypt, PY_REPS, warmup=False)
    py_enc = median_time(py_encrypt, PY_REPS, warmup=False)
    rows += [
        ("SQL fernet_decrypt(t, key)", dec_key, "Python Fernet.decrypt loop", py_dec, "faster", 20.0),
        ("SQL fernet_encrypt(p, key)", enc_key, "Python Fernet.encrypt loop", py_enc, "faster", 20.0),
    ]

    # --- Python including the database round trip: fetch + decrypt; read + encrypt + COPY back.
    # Compared with SQL doing the same work (decrypt all rows; encrypt and write all rows).
    def py_fetch_decrypt():
        cur.execute("SELECT t FROM tokens")
        dec = f.decrypt
        for (t,) in cur.fetchall():
            dec(t)

    def py_encrypt_write():
        cur.execute("TRUNCATE enc_out")
        cur.execute("SELECT id, p FROM plaintexts")
        enc = f.encrypt
        buf = io.StringIO()
        for i, p in cur.fetchall():
            buf.write(f"{i}\t{enc(p.encode()).decode()}\n")
        buf.seek(0)
        cur.copy_from(buf, "enc_out", columns=("id", "t"))

    def sql_encrypt_write():
        cur.execute("TRUNCATE enc_out")
        cur.execute("INSERT INTO enc_out SELECT id, conn_crypto.fernet_encrypt(p, %s) FROM plaintexts", (KEY,))

    py_fetch_dec = median_time(py_fetch_decrypt, PY_REPS, warmup=False)
    py_enc_write = median_time(py_encrypt_write, PY_REPS, warmup=False)
    sql_enc_write = median_time(sql_encrypt_write, SQL_REPS)
    cur.execute("SELECT count(*) FROM enc_out JOIN plaintexts USING (id) WHERE conn_crypto.fernet_decrypt(t, %s) <> p",
                (KEY,))
    if cur.fetchone()[0] != 0:
        raise RuntimeError("written tokens do not decrypt")
    rows += [
        ("SQL fernet_decrypt(t, key)", dec_key, "Python fetch + decrypt", py_fetch_dec, "faster", 20.0),
        ("SQL INSERT .. fernet_encrypt(p, key)", sql_enc_write, "Python read + encrypt + COPY", py_enc_write,
         "faster", 20.0),
    ]

    print_table(rows)
    cur.execute("DROP TABLE IF EXISTS tokens, plaintexts, enc_out")
    conn.close()
    return 0


def print_table(rows):
    head = ("operation (100k rows)", "time", "baseline", "base time", "ratio", "target", "result")
    lines = []
    for op, t, bname, b, kind, target in rows:
        if kind == "slower":            # SQL function vs sha256: time / baseline
            ratio = t / b
            ok = ratio <= target
            r, tg = f"{ratio:.2f}x", f"<= {target:g}x"
        else:                           # SQL vs Python: how many times faster SQL is
            ratio = b / t
            ok = ratio >= target
            r, tg = f"{ratio:.1f}x faster", f">= {target:g}x faster"
        lines.append((op, f"{t * 1000:.1f} ms", bname, f"{b * 1000:.1f} ms", r, tg, "OK" if ok else "MISS"))
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i in (0, 2) else '>'}{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*head))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print(fmt.format(*line))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:       # a benchmark error (not a missed target) fails the run
        print(f"sql_bench.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
