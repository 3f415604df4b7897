"""Cost of conn_crypto's protection trigger on Airflow's connection table.

Two identical Airflow 2.x connection tables, bench_on.connection (protected by
conn_crypto.enable_airflow_encryption) and bench_off.connection (no trigger),
side by side in one run, median of several repetitions, the two sides
alternating (on/off, then off/on) so drift hits both alike:

  insert      INSERT ... SELECT of ROWS plaintext connections (32-character
              password, small JSON extra) from generate_series; with the
              trigger every password and extra is encrypted on the way in
  unrelated   UPDATE SET port = port + 1, description = ... over ROWS rows
              holding tokens (the trigger is UPDATE OF the protected
              columns and their flags, so it does not fire)
  full row    UPDATE SET every column = itself (an ORM's full-row UPDATE):
              the trigger fires and must find every value untouched

Informational rows: the same full-row UPDATE restricted to password =
password, and an UPDATE that gives every row a new plaintext password
(encrypts ROWS values). References printed below the table: the floor (the
same INSERT into the unprotected table with the tokens made by
fernet_encrypt() in the SELECT), and the per-value cost of fernet_encrypt()
and of _key_position() on a plaintext (the trigger's "is it a token?" test).

Before every repetition both tables are TRUNCATEd and refilled (for the
UPDATE cases from one staging table of tokens, so both hold byte-identical
rows), then VACUUM ANALYZEd and CHECKPOINTed. Times are wall time around
cursor.execute() in autocommit (statement + commit + one round trip).

Connection: CC_PGHOST (127.0.0.1), CC_PGPORT (25511), CC_PGUSER (postgres),
CC_PGDATABASE (postgres); the server must have a key (conn_crypto.fernet_key
in postgresql.conf, as bench/trigger_bench.sh does). Rows: CC_BENCH_ROWS
(100000); repetitions: CC_BENCH_REPS (5).

Exit status 0 when the measurements ran, targets met or not; 1 on errors.
"""
import os
import statistics
import sys
import time

import psycopg2

ROWS = int(os.environ.get("CC_BENCH_ROWS", "100000"))
REPS = int(os.environ.get("CC_BENCH_REPS", "5"))

DDL = """
CREATE TABLE {s}.connection (id serial PRIMARY KEY, conn_id varchar(250) NOT NULL UNIQUE,
    conn_type varchar(500) NOT NULL, description text, host varchar(500), schema varchar(500),
    login text, password text, port integer, is_encrypted boolean, is_extra_encrypted boolean,
    extra text)
"""

# ~32-byte password (32 hex characters) and a small JSON extra, per row.
INSERT_PLAIN = """
INSERT INTO {s}.connection (conn_id, conn_type, host, login, password, port, extra)
SELECT 'conn_' || i, 'postgres', 'db' || (i %% 97) || '.example.com', 'user' || i,
       md5(i::text || 'pw'), 5432,
       '{{"sslmode": "require", "connect_timeout": ' || (i %% 30) || ', "application_name": "airflow"}}'
FROM generate_series(1, %(rows)s) AS i
"""

# The same rows with the tokens made in the SELECT (no trigger): the floor of
# encrypting in the database and storing tokens instead of plaintext.
INSERT_ENCRYPTED = """
INSERT INTO {s}.connection (conn_id, conn_type, host, login, password, port, extra, is_encrypted, is_extra_encrypted)
SELECT 'conn_' || i, 'postgres', 'db' || (i %% 97) || '.example.com', 'user' || i,
       conn_crypto.fernet_encrypt(md5(i::text || 'pw')), 5432,
       conn_crypto.fernet_encrypt('{{"sslmode": "require", "connect_timeout": ' || (i %% 30) || ', "application_name": "airflow"}}'),
       true, true
FROM generate_series(1, %(rows)s) AS i
"""

COLUMNS = "conn_id, conn_type, description, host, schema, login, password, port, is_encrypted, is_extra_encrypted, extra"

CASES = [
    # name, statement, target ratio (None: for information)
    (f"INSERT of {ROWS // 1000}k plaintext connections", "insert", INSERT_PLAIN, 1.5),
    (f"UPDATE unrelated columns of {ROWS // 1000}k rows", "update",
     "UPDATE {s}.connection SET port = port + 1, description = 'touched'", 1.1),
    ("UPDATE full row (every column = itself)", "update",
     "UPDATE {s}.connection SET conn_type = conn_type, description = description, host = host, "
     "schema = schema, login = login, password = password, port = port, is_encrypted = is_encrypted, "
     "is_extra_encrypted = is_extra_encrypted, extra = extra", None),
    ("UPDATE password = password", "update", "UPDATE {s}.connection SET password = password", None),
    ("UPDATE password = new plaintext", "reencrypt",
     "UPDATE {s}.connection SET password = md5(id::text || 'new')", None),
]


def connect():
    conn = psycopg2.connect(host=os.environ.get("CC_PGHOST", "127.0.0.1"),
                            port=int(os.environ.get("CC_PGPORT", "25511")),
                            user=os.environ.get("CC_PGUSER", "postgres"),
                            dbname=os.environ.get("CC_PGDATABASE", "postgres"),
                            application_name="conn_crypto_trigger_bench")
    conn.autocommit = True
    return conn


def setup(cur):
    cur.execute("CREATE EXTENSION IF NOT EXISTS conn_crypto")
    cur.execute("SET max_parallel_workers_per_gather = 0")
    cur.execute("SET jit = off")
    try:
        cur.execute("SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('probe'))")
    except psycopg2.Error as e:
        raise SystemExit(f"trigger_bench: the server has no usable key ({e.pgerror.strip()}); "
                         "set conn_crypto.fernet_key in postgresql.conf")
    for s in ("bench_on", "bench_off", "bench_src"):
        cur.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
        cur.execute(f"CREATE SCHEMA {s}")
        cur.execute(DDL.format(s=s))
    cur.execute("SELECT conn_crypto.enable_airflow_encryption('bench_on')")
    # Staging rows as the protected table holds them: tokens and true flags.
    cur.execute("SELECT conn_crypto.enable_airflow_encryption('bench_src')")
    cur.execute(INSERT_PLAIN.format(s="bench_src"), {"rows": ROWS})
    cur.execute("SELECT conn_crypto.disable_airflow_encryption('bench_src')")
    cur.execute("VACUUM ANALYZE bench_src.connection")
    cur.execute("SELECT count(*), min(length(password)), max(length(password)), min(length(extra)), "
                "bool_and(is_encrypted AND is_extra_encrypted) FROM bench_src.connection")
    n, pmin, pmax, emin, flags = cur.fetchone()
    if n != ROWS or not flags or pmin < 100:
        raise SystemExit(f"trigger_bench: staging rows not encrypted ({n} rows, password {pmin}..{pmax} chars)")
    return pmin, pmax, emin


def reset(cur, schema, kind):
    """Empty (insert) or refill from the staging tokens (update), then vacuum and checkpoint."""
    cur.execute(f"TRUNCATE {schema}.connection RESTART IDENTITY")
    if kind != "insert":
        cur.execute(f"INSERT INTO {schema}.connection (id, {COLUMNS}) SELECT id, {COLUMNS} "
                    f"FROM bench_src.connection ORDER BY id")
    cur.execute(f"VACUUM ANALYZE {schema}.connection")
    cur.execute("CHECKPOINT")


BACKEND_STAT = None     # /proc/<backend pid>/stat when the server is local
TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu():
    """User + system CPU seconds of the server backend, or None."""
    if BACKEND_STAT is None:
        return None
    with open(BACKEND_STAT) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def timed(cur, sql, params=None):
    """(cpu seconds or None, wall seconds, rowcount)"""
    c = backend_cpu()
    t = time.perf_counter()
    cur.execute(sql, params)
    wall = time.perf_counter() - t
    return (None if c is None else backend_cpu() - c), wall, cur.rowcount


def verify(cur, kind, stmt):
    """Both tables end up with the same rows, the protected one with tokens."""
    cur.execute("SELECT count(*) FILTER (WHERE NOT is_encrypted OR NOT is_extra_encrypted), "
                "count(*) FILTER (WHERE conn_crypto._key_position(password) <> 1) FROM bench_on.connection")
    bad_flags, bad_tokens = cur.fetchone()
    if bad_flags or bad_tokens:
        raise SystemExit(f"trigger_bench: protected table has {bad_flags} wrong flags, {bad_tokens} non-tokens")
    if kind in ("insert", "reencrypt"):
        cur.execute("SELECT count(*) FROM bench_on.connection n JOIN bench_off.connection f USING (id) "
                    "WHERE conn_crypto.fernet_decrypt(n.password) IS DISTINCT FROM f.password LIMIT 1")
    else:
        cur.execute("SELECT count(*) FROM bench_on.connection n JOIN bench_off.connection f USING (id) "
                    "WHERE (n.password, n.extra, n.port) IS DISTINCT FROM (f.password, f.extra, f.port)")
    diff = cur.fetchone()[0]
    if diff:
        raise SystemExit(f"trigger_bench: {diff} rows differ between the two tables after {stmt[:60]!r}")


def measure(cur, kind, stmt):
    """Medians: ((cpu on, cpu off) or None, (wall on, wall off))."""
    on, off, won, woff = [], [], [], []
    for rep in range(REPS + 1):         # the first repetition warms up and is dropped
        order = ("bench_on", "bench_off") if rep % 2 == 0 else ("bench_off", "bench_on")
        for s in order:
            reset(cur, s, kind)
        for s in order:
            cpu, wall, n = timed(cur, stmt.format(s=s), {"rows": ROWS})
            if n != ROWS:
                raise SystemExit(f"trigger_bench: {stmt[:50]!r} on {s} touched {n} rows, expected {ROWS}")
            if rep:
                (on if s == "bench_on" else off).append(cpu)
                (won if s == "bench_on" else woff).append(wall)
        if rep == 0:
            verify(cur, kind, stmt)
    cpu = None if on[0] is None else (statistics.median(on), statistics.median(off))
    return cpu, (statistics.median(won), statistics.median(woff))


def per_value_cost(cur, expr, n):
    """CPU (or wall) seconds of expr over n 32-character plaintexts p in one SELECT, above md5() alone."""
    sql = f"SELECT count({expr}) FROM (SELECT md5(i::text || 'pw') AS p FROM generate_series(1, %(n)s) i) s"
    base = "SELECT count(p) FROM (SELECT md5(i::text || 'pw') AS p FROM generate_series(1, %(n)s) i) s"
    t_x, t_base = [], []
    for rep in range(REPS + 1):
        a, wa, _ = timed(cur, sql, {"n": n})
        b, wb, _ = timed(cur, base, {"n": n})
        if rep:
            t_x.append(wa if a is None else a)
            t_base.append(wb if b is None else b)
    return (statistics.median(t_x) - statistics.median(t_base)) / n


def measure_floor(cur):
    """INSERT with fernet_encrypt() in the SELECT vs the plaintext INSERT, both into the unprotected table."""
    enc, plain = [], []
    for rep in range(REPS + 1):
        for stmt, out in ((INSERT_ENCRYPTED, enc), (INSERT_PLAIN, plain))[::1 if rep % 2 else -1]:
            reset(cur, "bench_off", "insert")
            cpu, wall, _ = timed(cur, stmt.format(s="bench_off"), {"rows": ROWS})
            if rep:
                out.append(wall if cpu is None else cpu)
    return statistics.median(enc), statistics.median(plain)


def main():
    global BACKEND_STAT
    conn = connect()
    cur = conn.cursor()
    pmin, pmax, emin = setup(cur)
    cur.execute("SELECT pg_backend_pid(), version()")
    pid, version = cur.fetchone()
    if os.access(f"/proc/{pid}/stat", os.R_OK) and conn.info.host in ("127.0.0.1", "localhost", "::1") \
            or conn.info.host.startswith("/"):
        BACKEND_STAT = f"/proc/{pid}/stat"
    clock = "backend CPU time" if BACKEND_STAT else "wall time"
    print(f"conn_crypto trigger benchmark: {ROWS} rows, median of {REPS} repetitions (after 1 warm-up), "
          f"tokens of {pmin}-{pmax} characters per password; {version.split(' on ')[0]}")
    print(f"OK/MISS on the ratio of {clock}" + ("; wall-time ratio beside it" if BACKEND_STAT else ""))
    print()
    w = max(len(c[0]) for c in CASES) + 2
    head = f"{'case':<{w}}{'with trigger':>14}{'without':>12}{'ratio':>8}{'target':>9}  result"
    if BACKEND_STAT:
        head += f"{'wall: with':>14}{'without':>12}{'ratio':>8}"
    print(head)
    print("-" * len(head))
    results = []
    for name, kind, stmt, target in CASES:
        cpu, wall = measure(cur, kind, stmt)
        t_on, t_off = cpu or wall
        results.append((name, t_on, t_off, target))
        ratio = t_on / t_off
        verdict = "info" if target is None else ("OK" if ratio <= target else "MISS")
        tgt = "-" if target is None else f"<={target:.2f}x"
        line = f"{name:<{w}}{t_on * 1000:>11.1f} ms{t_off * 1000:>9.1f} ms{ratio:>7.2f}x{tgt:>9}  {verdict:<6}"
        if cpu:
            line += f"{wall[0] * 1000:>11.1f} ms{wall[1] * 1000:>9.1f} ms{wall[0] / wall[1]:>7.2f}x"
        print(line, flush=True)
    print()
    floor_enc, floor_plain = measure_floor(cur)
    enc = per_value_cost(cur, "conn_crypto.fernet_encrypt(p)", ROWS)
    classify = per_value_cost(cur, "conn_crypto._key_position(p)", ROWS)
    ins = results[0]
    print(f"reference ({clock}, medians):")
    print(f"  floor: the same INSERT into the table without trigger, tokens made by fernet_encrypt() in the SELECT: "
          f"{floor_enc * 1000:.1f} ms vs {floor_plain * 1000:.1f} ms plaintext = {floor_enc / floor_plain:.2f}x")
    print(f"  the trigger's INSERT costs {(ins[1] - ins[2]) / (2 * ROWS) * 1e6:.2f} us per protected value more than "
          f"plaintext; fernet_encrypt() alone {enc * 1e6:.2f} us; "
          f"_key_position() of a plaintext (is it a token?) {classify * 1e6:.2f} us")
    for s in ("bench_on", "bench_off", "bench_src"):
        cur.execute(f"DROP SCHEMA {s} CASCADE")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except psycopg2.Error as e:
        print(f"trigger_bench: {e.pgcode}: {e.pgerror}", file=sys.stderr)
        sys.exit(1)
