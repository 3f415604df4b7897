"""Airflow's own reads and writes, emulated, against tables protected by
conn_crypto.enable_airflow_encryption(), interleaved at random with plain SQL.

Airflow writes through its model properties (tokens made in Python by
cryptography's MultiFernet, flags as SQLAlchemy sends them, including the
UPDATE that carries a new password token without touching is_encrypted) and
reads through its getters; plain SQL writes plaintext in every way rows
arrive (INSERT with NULL flags, multi-row INSERT, ON CONFLICT DO UPDATE,
UPDATE ... FROM, COPY, flag-only and unrelated UPDATEs) and reads through
conn_crypto.connection_password/connection_extra/variable_value. After every
step the touched rows (and every row, every 300 steps and after whole-table UPDATEs) are checked against a
model of the trigger's rules: both reads return what was last written, a
stored token decrypts to the plaintext (never to another token), Airflow's
own tokens are stored byte for byte, untouched rows keep their bytes, and the
flags are what the rules say. See airflow_emulation.py.

Seed: CC_AIRFLOW_SEED, else a fresh one, printed and quoted in every failure.
Steps per scenario: CC_AIRFLOW_STEPS (default 1500).
"""
import base64
import os
import random

import pytest

from airflow_emulation import (DDL, FOREIGN_TOKEN, KEEP, PENDING, SAME, TOO_LONG, Airflow, ColState, Scenario,
                               multifernet, random_text, token_len)

SEED = int(os.environ.get("CC_AIRFLOW_SEED") or random.SystemRandom().randrange(2**32))
STEPS = int(os.environ.get("CC_AIRFLOW_STEPS") or 1500)
NOTE = f"CC_AIRFLOW_SEED={SEED}"

try:
    from cc_helpers import count
except ImportError:     # the interop helpers are optional here
    def count(name, n=1):
        pass


@pytest.fixture(scope="module", autouse=True)
def announce_seed(request):
    """Prints the seed before the tests run (and it is quoted in every failure and
    in the terminal summary's case counts)."""
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if tr is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            tr.write_line(f"\nairflow emulation: seed {SEED} (reproduce with {NOTE})")
    yield


@pytest.fixture
def arng(request):
    return random.Random(f"{SEED}/{request.node.name}")


def make_key(rng):
    return base64.urlsafe_b64encode(rng.randbytes(32)).decode()


@pytest.fixture
def airflow_schema(db, arng, request):
    """A fresh schema; the test creates its tables (DDL[version]) in it. Dropped afterwards."""
    name = f"af_{request.node.name[5:25].lower()}_{arng.randrange(16**6):06x}"
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    with db.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        cur.execute(f'CREATE SCHEMA "{name}"')
    yield name
    with db.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def setup_tables(cur, schema, version, server_keys):
    cur.execute("SET conn_crypto.fernet_key = %s", (server_keys,))
    cur.execute(DDL[version].format(s=f'"{schema}"'))


def enable(cur, schema):
    cur.execute("SELECT conn_crypto.enable_airflow_encryption(%s)", (schema,))
    cur.execute("SELECT table_relname::text, column_name::text, flag_column::text, encrypt_empty "
                "FROM conn_crypto.protected_columns WHERE table_schema = %s ORDER BY 1, 2", (schema,))
    assert cur.fetchall() == [("connection", "extra", "is_extra_encrypted", False),
                              ("connection", "password", "is_encrypted", False),
                              ("variable", "val", "is_encrypted", True)]


def report(sc, name):
    count(f"airflow emulation ({NOTE}) {name}: steps", sc.steps)
    count(f"airflow emulation ({NOTE}) {name}: values checked", sc.checked)
    print(f"{name}: {sc.steps} steps, {len(sc.conns)} connections, {len(sc.vars)} variables, "
          f"{sc.checked} values checked, {sc.failed_writes} writes refused as expected; ops {sc.op_counts}")


# ---------------------------------------------------------------- random scenarios

@pytest.mark.parametrize("version", ["2", "1.10"])
def test_random_airflow_and_sql(db, arng, airflow_schema, version):
    key = make_key(arng)
    with db.cursor() as cur:
        setup_tables(cur, airflow_schema, version, key)
        af = Airflow(cur, airflow_schema, multifernet(key), version)
        sc = Scenario(cur, airflow_schema, arng, version, key, af, NOTE)
        sc.add_legacy_rows(40, 20)          # Airflow without a key, before protection
        enable(cur, airflow_schema)
        sc.check(full=True)
        sc.run_steps(STEPS if version == "2" else STEPS // 2)
        report(sc, f"DDL {version}")
        assert len(sc.conns) > (STEPS * 2 // 3 if version == "2" else STEPS // 4), NOTE   # thousands, by default


def test_keyring_rows_of_old_key(db, arng, airflow_schema):
    """Rows written by Airflow under the old key stay readable once a new key
    is put first; an Airflow worker still on the old key may keep writing;
    `airflow rotate-fernet-key` then moves every token to the new key."""
    k_old, k_new, k_foreign = make_key(arng), make_key(arng), make_key(arng)
    with db.cursor() as cur:
        setup_tables(cur, airflow_schema, "2", k_old)
        old_airflow = Airflow(cur, airflow_schema, multifernet(k_old))
        sc = Scenario(cur, airflow_schema, arng, "2", k_old, old_airflow, NOTE)
        enable(cur, airflow_schema)
        sc.run_steps(STEPS // 5)            # everything under k_old
        before = {cid: dict(m) for cid, m in sc.conns.items()}

        ring = f"{k_new},{k_old}"
        sc.use_server_keys(ring)
        sc.airflow = Airflow(cur, airflow_schema, multifernet(ring))
        sc.check(full=True)                 # old tokens read both ways, bytes unchanged
        positions = key_positions(cur, airflow_schema)
        for cid, m in before.items():
            if m["password"].raw:
                assert positions[cid][0] in (2, 0), (cid, positions[cid], NOTE)
        assert any(p[0] == 2 for p in positions.values()), NOTE

        # Mixed fleet: the upgraded Airflow (new key first) and a worker still on k_old.
        upgraded = sc.airflow
        sc.reader = upgraded
        for i in range(STEPS // 6):
            sc.airflow = old_airflow if i % 4 == 0 else upgraded
            sc.step()
        sc.airflow, sc.reader = upgraded, None
        sc.check(full=True)

        # A worker with a key the server does not have is refused; nothing changes.
        stranger = Airflow(cur, airflow_schema, multifernet(k_foreign))
        for cid in arng.sample(list(sc.conns), 10):
            obj = dict(stranger.load_connection(cid))
            loaded = dict(obj)
            stranger.set_password(obj, "from a stranger")
            assert not sc.run(FOREIGN_TOKEN, lambda: stranger._flush_update("connection", loaded, obj))
            sc.check([cid])

        # airflow rotate-fernet-key: UPDATE password = <rotated token>, flags untouched.
        sent = upgraded.rotate_fernet_key()
        for (table, ident), cols in sent.items():
            if table == "connection":
                m = sc.conns[ident]
                for name, flag in (("password", "is_encrypted"), ("extra", "is_extra_encrypted")):
                    assert flag not in cols, (ident, cols)   # flags were already true
                    m[name] = sc.transition(sc.cols[name], m[name], cols.get(name, SAME), KEEP, False)
            else:
                m = sc.vars[ident]
                m["val"] = sc.transition(sc.cols["val"], m["val"], cols.get("val", SAME), KEEP, False)
        sc.check(full=True)
        positions = key_positions(cur, airflow_schema)
        assert all(p in (0, 1) for ps in positions.values() for p in ps), NOTE

        # With the old key dropped, everything still reads both ways.
        sc.use_server_keys(k_new)
        sc.airflow = Airflow(cur, airflow_schema, multifernet(k_new))
        sc.check(full=True)
        sc.run_steps(STEPS // 10)
        report(sc, "two-key keyring")


def key_positions(cur, schema):
    cur.execute(f'SELECT conn_id, conn_crypto._key_position(coalesce(password, \'\')), '
                f'conn_crypto._key_position(coalesce(extra, \'\')) FROM "{schema}".connection')
    return {r[0]: (r[1], r[2]) for r in cur.fetchall()}


# ---------------------------------------------------------------- pinned cases

def test_airflow_password_update_without_flag(db, arng, airflow_schema):
    """SQLAlchemy's UPDATE of the password alone (is_encrypted already true):
    the new token is stored byte for byte and both reads see the new value."""
    key = make_key(arng)
    with db.cursor() as cur:
        setup_tables(cur, airflow_schema, "2", key)
        enable(cur, airflow_schema)
        af = Airflow(cur, airflow_schema, multifernet(key))
        af.add("connection", af.new_connection("c", "postgres", "first", '{"a": "ü"}'))
        loaded = af.load_connection("c")
        obj = dict(loaded)
        af.set_password(obj, "sécond 🔑")
        sent = af._flush_update("connection", loaded, obj)
        assert set(sent) == {"password"}
        row = af.load_connection("c")
        assert row["password"] == sent["password"] and row["is_encrypted"] is True
        assert af.get_password(row) == "sécond 🔑"
        cur.execute("SELECT conn_crypto.connection_password('c', %s), conn_crypto.connection_extra('c', %s)",
                    (airflow_schema, airflow_schema))
        assert cur.fetchone() == ("sécond 🔑", '{"a": "ü"}')


def test_airflow110_varchar_limit(db, arng, airflow_schema):
    """varchar(5000): a token of up to 3679 bytes of plaintext fits, on both paths;
    one byte more fails with 22001 and leaves the row as it was."""
    key = make_key(arng)
    assert token_len(3679) == 4984 and token_len(3680) == 5004
    with db.cursor() as cur:
        setup_tables(cur, airflow_schema, "1.10", key)
        enable(cur, airflow_schema)
        af = Airflow(cur, airflow_schema, multifernet(key), "1.10")
        sc = Scenario(cur, airflow_schema, arng, "1.10", key, af, NOTE)
        sc.json_extras = False
        for n in (3678, 3679, 3680, 3700):
            fits = n <= 3679
            for path in ("airflow", "sql"):
                cid = f"{path}_{n}"
                value = random_text(arng, n)
                if path == "airflow":
                    obj = af.new_connection(cid, "http", value, value)
                    ok = sc.run(None if fits else TOO_LONG, lambda: af.add("connection", obj))
                else:
                    ok = sc.run(None if fits else TOO_LONG, lambda: cur.execute(
                        f'INSERT INTO "{airflow_schema}".connection (conn_id, conn_type, password, extra) '
                        f"VALUES (%s, 'http', %s, %s)", (cid, value, value)))
                assert ok == fits
                if fits:
                    sc.conns[cid] = {"password": ColState(value, PENDING, True),
                                     "extra": ColState(value, PENDING, True)}
                    if path == "airflow":
                        sc.conns[cid] = {"password": ColState(value, obj["password"], True),
                                         "extra": ColState(value, obj["extra"], True)}
                sc.check([cid])
        # An UPDATE that would overflow leaves the old token in place.
        for path in ("airflow", "sql"):
            cid = f"{path}_3679"
            value = random_text(arng, 3680)
            if path == "airflow":
                loaded = af.load_connection(cid)
                obj = dict(loaded)
                af.set_password(obj, value)
                assert not sc.run(TOO_LONG, lambda: af._flush_update("connection", loaded, obj))
            else:
                assert not sc.run(TOO_LONG, lambda: cur.execute(
                    f'UPDATE "{airflow_schema}".connection SET password = %s WHERE conn_id = %s', (value, cid)))
            sc.check([cid])
