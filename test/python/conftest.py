"""pytest fixtures for the conn_crypto interop suite.

Connection: CC_PGHOST (127.0.0.1), CC_PGPORT (25500), CC_PGUSER (postgres),
CC_PGDATABASE (postgres); the user must be a superuser (SET conn_crypto.fernet_key).
Randomness: seed from CC_INTEROP_SEED, else a fresh one; printed at the end.
"""
import os
import random

import psycopg2
import pytest

import cc_helpers

SEED = int(os.environ.get("CC_INTEROP_SEED") or random.SystemRandom().randrange(2**32))


def pytest_report_header(config):
    return f"conn_crypto interop seed: {SEED} (reproduce with CC_INTEROP_SEED={SEED})"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    tr.write_line(f"conn_crypto interop: seed {SEED} (reproduce with CC_INTEROP_SEED={SEED}); "
                  f"{sum(cc_helpers.CASES.values())} random cases checked")
    for name, n in sorted(cc_helpers.CASES.items()):
        tr.write_line(f"  {name}: {n}")


def _connect():
    conn = psycopg2.connect(
        host=os.environ.get("CC_PGHOST", "127.0.0.1"),
        port=int(os.environ.get("CC_PGPORT", "25500")),
        user=os.environ.get("CC_PGUSER", "postgres"),
        dbname=os.environ.get("CC_PGDATABASE", "postgres"),
        application_name="conn_crypto_interop",
    )
    conn.autocommit = True
    conn.set_client_encoding("UTF8")
    return conn


@pytest.fixture(scope="session")
def conn():
    conn = _connect()
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS conn_crypto")
        cur.execute("SHOW server_encoding")
        assert cur.fetchone()[0] == "UTF8", "the interop tests need a UTF8 database"
        cur.execute(cc_helpers.TRY_FUNCTION)
    yield conn
    conn.close()


@pytest.fixture
def db(conn):
    """The session connection, with the server keyring reset after the test."""
    yield conn
    if not conn.closed:
        with conn.cursor() as cur:
            cur.execute("RESET conn_crypto.fernet_key")


@pytest.fixture
def rng(request):
    """Per-test generator derived from the session seed and the test's name, so one
    test reproduces the same data whatever else runs."""
    return random.Random(f"{SEED}/{request.node.name}")
