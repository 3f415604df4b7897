"""Key rotation of Airflow's connection table: CALL conn_crypto.rotate()
against a no-op rewrite of the same rows, against a Python client doing what
`airflow rotate-fernet-key` does, and a second (idle) rotate() against
SELECT count(*).

Connection from CC_PGHOST (127.0.0.1), CC_PGPORT (25523), CC_PGUSER
(postgres), CC_PGDATABASE (postgres); a superuser. The server's keyring must
be "NEW,OLD" with the keys below (bench/rotate_bench.sh configures it).
CC_RBENCH_ROWS (100000) connections, each with a 32-character password and a
small JSON extra, both Fernet tokens of OLD. Every measurement starts from
the same data (reloaded from a saved copy, then VACUUM ANALYZE and
CHECKPOINT) and is repeated; the median is reported. rotate() and the two
no-op UPDATEs run round-robin, CC_RBENCH_FAST_REPS (5) rounds, so a burst of
load on the shared machine hits all three alike; the Python loop and the idle
measurements run CC_RBENCH_REPS (3) times.
Times are wall-clock around the client call, so they include one round trip.

Exit status: 0 when the measurements ran (even if targets are missed), 1 on errors.
"""
import os
import statistics
import sys
import time

import psycopg2
from cryptography.fernet import Fernet, MultiFernet

ROWS = int(os.environ.get("CC_RBENCH_ROWS", "100000"))
REPS = int(os.environ.get("CC_RBENCH_REPS", "3"))
# rotate() and the no-op UPDATEs take about a second each: more rounds make their medians steadier.
FAST_REPS = int(os.environ.get("CC_RBENCH_FAST_REPS", "5"))
NEW = "6VEsHaOYfDtfszX38bcXaRtrojG4qZoqt5iU6HDyHmM="
OLD = "JDRrh-YpUn8y1zOcJYoz0Yfa-TJFroQVNM_4k-B98iQ="
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def connect(autocommit=True):
    conn = psycopg2.connect(host=os.environ.get("CC_PGHOST", "127.0.0.1"),
                            port=int(os.environ.get("CC_PGPORT", "25523")),
                            user=os.environ.get("CC_PGUSER", "postgres"),
                            dbname=os.environ.get("CC_PGDATABASE", "postgres"),
                            application_name="conn_crypto_rotate_bench")
    conn.autocommit = autocommit
    return conn


def one(cur, query, params=None):
    cur.execute(query, params)
    return cur.fetchone()[0]


def setup(cur):
    cur.execute("CREATE EXTENSION IF NOT EXISTS conn_crypto")
    cur.execute("DROP TABLE IF EXISTS connection, variable, conn_orig, conn_noop")
    with open(os.path.join(ROOT, "test/sql/airflow_schema.sql")) as f:
        cur.execute(f.read())
    # Passwords: 32 url-safe base64 characters (24 random bytes); extra: small JSON.
    cur.execute("""
        CREATE TABLE conn_orig AS
        SELECT i AS id, 'conn_' || i AS conn_id, 'postgres' AS conn_type, 'db-' || i || '.example.com' AS host,
               'airflow' AS schema, 'user_' || i AS login, 5432 AS port, p AS plain_password, e AS plain_extra,
               conn_crypto.fernet_encrypt(p, %(old)s) AS password, conn_crypto.fernet_encrypt(e, %(old)s) AS extra
        FROM (SELECT i,
                     translate(encode(substr(sha256(random()::text::bytea), 1, 24), 'base64'), '+/', '-_') AS p,
                     format('{"sslmode": "require", "connect_timeout": %%s, "application_name": "dag_%%s"}',
                            10 + i %% 50, i) AS e
              FROM generate_series(1, %(rows)s) i) g""", {"old": OLD, "rows": ROWS})
    cur.execute("ALTER TABLE conn_orig ADD PRIMARY KEY (id)")
    cur.execute("SELECT conn_crypto.enable_airflow_encryption()")
    # The same table without the protection trigger, for the no-op rewrite baseline.
    cur.execute("CREATE TABLE conn_noop (LIKE connection INCLUDING ALL)")
    cur.execute("VACUUM ANALYZE conn_orig")
    cur.execute("SELECT min(octet_length(plain_password)), max(octet_length(plain_password)),"
                "       min(octet_length(plain_extra)), max(octet_length(plain_extra)) FROM conn_orig")
    lo, hi, elo, ehi = cur.fetchone()
    if (lo, hi) != (32, 32):
        raise RuntimeError(f"unexpected password lengths {lo}..{hi}")
    # Sanity: the SQL tokens are OLD tokens Python's MultiFernet reads.
    cur.execute("SELECT plain_password, password, plain_extra, extra FROM conn_orig ORDER BY id LIMIT 50")
    old = Fernet(OLD)
    for p, t, e, te in cur.fetchall():
        if old.decrypt(t.encode()).decode() != p or old.decrypt(te.encode()).decode() != e:
            raise RuntimeError("SQL tokens do not decrypt in Python")
    return (elo, ehi)


def reload(cur, table):
    """Puts the original OLD tokens back (triggers off while reloading), VACUUM ANALYZE, CHECKPOINT."""
    cur.execute(f"TRUNCATE {table}")
    cur.execute("SET session_replication_role = replica")
    cur.execute(f"""INSERT INTO {table} (id, conn_id, conn_type, host, schema, login, port, password, extra,
                                         is_encrypted, is_extra_encrypted)
                    SELECT id, conn_id, conn_type, host, schema, login, port, password, extra, true, true
                    FROM conn_orig""")
    cur.execute("RESET session_replication_role")
    cur.execute(f"VACUUM ANALYZE {table}")
    cur.execute("CHECKPOINT")


def check_rotated(cur):
    """Everything under NEW, decrypting to the original plaintexts."""
    bad = one(cur, "SELECT count(*) FROM conn_crypto.status WHERE older_keys <> 0 OR undecryptable <> 0 OR plaintext <> 0")
    if bad:
        raise RuntimeError("values left under the old key after rotation")
    wrong = one(cur, """SELECT count(*) FROM connection c JOIN conn_orig o USING (id)
                        WHERE conn_crypto.fernet_decrypt(c.password, %s) IS DISTINCT FROM o.plain_password
                           OR conn_crypto.fernet_decrypt(c.extra, %s) IS DISTINCT FROM o.plain_extra
                           OR conn_crypto.fernet_extract_timestamp(c.password, %s)
                              IS DISTINCT FROM conn_crypto.fernet_extract_timestamp(o.password, %s)""",
                (NEW, NEW, NEW, OLD))
    if wrong or one(cur, "SELECT count(*) FROM connection") != ROWS:
        raise RuntimeError(f"{wrong} rows do not decrypt with NEW to the original plaintext")


class BackendCpu:
    """CPU seconds (user + system) of one server backend, from /proc: robust
    against other load on the machine, unlike wall time. None when the server
    is not local."""

    def __init__(self, cur):
        self.pid = one(cur, "SELECT pg_backend_pid()")
        self.tick = os.sysconf("SC_CLK_TCK")

    def __call__(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self.tick
        except OSError:
            return None


MINIMUMS = {}   # label -> fastest run: noise on a shared machine only ever adds time
RUNS = {}       # label -> wall times in run order


def timed_rounds(measurements, reps=REPS, cpu=None):
    """Runs the measurements (label, prepare, run, check) round-robin, reps
    rounds, so a burst of load on the shared machine hits all of them rather
    than every run of one. Returns {label: (median wall, median server CPU)}."""
    times = {m[0]: [] for m in measurements}
    cpus = {m[0]: [] for m in measurements}
    for _ in range(reps):
        for label, prepare, run, check in measurements:
            prepare()
            c0 = cpu() if cpu else None
            t = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - t)
            c1 = cpu() if cpu else None
            if c0 is not None and c1 is not None:
                cpus[label].append(c1 - c0)
            if check:
                check()
    result = {}
    for label, _, _, _ in measurements:
        med = statistics.median(times[label])
        med_cpu = statistics.median(cpus[label]) if cpus[label] else None
        cpu_text = f"; server CPU median {med_cpu:.2f} s" if med_cpu is not None else ""
        print(f"  {label}: median {med:.3f} s of {', '.join(f'{x:.3f}' for x in times[label])}{cpu_text}", flush=True)
        MINIMUMS[label] = min(times[label])
        RUNS[label] = times[label]
        result[label] = (med, med_cpu)
    return result


def timed(label, prepare, run, check=None, cpu=None, reps=REPS):
    """Median wall time and median server CPU time (when cpu is given) of reps runs."""
    return timed_rounds([(label, prepare, run, check)], reps, cpu)[label]


def python_rotate_fernet_key():
    """What `airflow rotate-fernet-key` does for connections: one transaction,
    read every row, MultiFernet.rotate() each encrypted value, write each row
    back with its own UPDATE (cursor.executemany: one statement per row, as
    SQLAlchemy's ORM flush does with psycopg2), commit."""
    mf = MultiFernet([Fernet(NEW), Fernet(OLD)])
    conn = connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("SELECT id, password, extra, is_encrypted, is_extra_encrypted FROM connection")
        updates = []
        for cid, password, extra, is_encrypted, is_extra_encrypted in cur.fetchall():
            if password and is_encrypted:
                password = mf.rotate(password.encode("utf-8")).decode()
            if extra and is_extra_encrypted:
                extra = mf.rotate(extra.encode("utf-8")).decode()
            updates.append((password, extra, cid))
        cur.executemany("UPDATE connection SET password = %s, extra = %s WHERE id = %s", updates)
        conn.commit()
    finally:
        conn.close()


def main():
    conn = connect()
    cur = conn.cursor()
    t0 = time.perf_counter()
    elo, ehi = setup(cur)
    cur.execute("SHOW shared_buffers")
    sb = cur.fetchone()[0]
    print(f"setup: {ROWS} connections, password 32 chars, extra JSON {elo}..{ehi} chars, both OLD tokens "
          f"({time.perf_counter() - t0:.1f} s); shared_buffers {sb}; median of {FAST_REPS} round-robin rounds (rotate, no-op UPDATEs), "
          f"{REPS} runs (the others)", flush=True)
    cur.execute("SET client_min_messages = warning")

    def call_rotate():
        cur.execute("CALL conn_crypto.rotate()")

    cpu = BackendCpu(cur)
    print("measuring:", flush=True)
    L_ROT, L_NOOP, L_TRG = "CALL conn_crypto.rotate()", "no-op UPDATE, copy without trigger", "no-op UPDATE, with trigger"
    r = timed_rounds([
        (L_ROT, lambda: reload(cur, "connection"), call_rotate, lambda: check_rotated(cur)),
        (L_NOOP, lambda: reload(cur, "conn_noop"),
         lambda: cur.execute("UPDATE conn_noop SET password = password, extra = extra"), None),
        (L_TRG, lambda: reload(cur, "connection"),
         lambda: cur.execute("UPDATE connection SET password = password, extra = extra"), None),
    ], FAST_REPS, cpu)
    (t_rotate, c_rotate), (t_noop, c_noop), (t_noop_trg, c_noop_trg) = r[L_ROT], r[L_NOOP], r[L_TRG]
    t_python, _ = timed("Python rotate-fernet-key (executemany)", lambda: reload(cur, "connection"),
                        python_rotate_fernet_key, lambda: check_rotated(cur))
    # Nothing left to do: the table as the first rotate() leaves it.
    reload(cur, "connection")
    call_rotate()
    cur.execute("VACUUM ANALYZE connection")
    t_idle, c_idle = timed("second CALL conn_crypto.rotate() (nothing to do)", lambda: None, call_rotate, cpu=cpu)
    t_count, c_count = timed("SELECT count(*) FROM connection", lambda: None,
                             lambda: one(cur, "SELECT count(*) FROM connection"), cpu=cpu)

    def cpu_ratio(a, b):   # CPU times come in clock ticks (10 ms): too coarse below 0.2 s
        return f"{a / b:>8.1f}x" if a is not None and b is not None and b >= 0.2 else f"{'-':>9}"

    def min_ratio(a, b):
        return f"{MINIMUMS[a] / MINIMUMS[b]:>7.1f}x" if a in MINIMUMS and b in MINIMUMS else f"{'-':>8}"

    L_PY, L_IDLE, L_CNT = ("Python rotate-fernet-key (executemany)", "second CALL conn_crypto.rotate() (nothing to do)",
                           "SELECT count(*) FROM connection")
    rows = [
        ("rotate() vs no-op UPDATE (no trigger)", t_rotate, t_noop, cpu_ratio(c_rotate, c_noop),
         min_ratio(L_ROT, L_NOOP), "<= 2x", "OK" if t_rotate / t_noop <= 2 else "MISS"),
        ("  (info) rotate() vs no-op UPDATE with trigger", t_rotate, t_noop_trg, cpu_ratio(c_rotate, c_noop_trg),
         min_ratio(L_ROT, L_TRG), "-", ""),
        ("Python executemany vs rotate()", t_python, t_rotate, cpu_ratio(None, None), min_ratio(L_PY, L_ROT),
         ">= 20x", "OK" if t_python / t_rotate >= 20 else "MISS"),
        ("idle rotate() vs SELECT count(*)", t_idle, t_count, cpu_ratio(c_idle, c_count), min_ratio(L_IDLE, L_CNT),
         "-", ""),
    ]
    print()
    print(f"{ROWS} connections (password + extra under OLD), keyring NEW,OLD; wall times, medians")
    print(f"{'comparison (A vs B)':<48} {'A (s)':>8} {'B (s)':>8} {'A/B':>8} {'A/B cpu':>9} {'A/B min':>8} {'target':>7}  result")
    for name, a, b, rc, rm, target, res in rows:
        print(f"{name:<48} {a:>8.3f} {b:>8.3f} {a / b:>7.1f}x {rc} {rm} {target:>7}  {res}")
    print(f"rotate(): {2 * ROWS / t_rotate:.0f} values/s; A/B cpu: ratio of server backend CPU time "
          f"(insensitive to other load on the machine); A/B min: ratio of the fastest runs; "
          f"targets are judged on the medians of wall time")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001 - report and fail
        print(f"rotate_bench: {exc}", file=sys.stderr)
        sys.exit(1)
