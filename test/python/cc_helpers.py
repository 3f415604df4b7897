"""Shared helpers for the conn_crypto <-> Python cryptography interop tests.

Everything random comes from a random.Random seeded per test (see conftest.py),
so a failing seed reproduces the keys, plaintexts, timestamps and mutations.
(Fernet IVs come from os.urandom inside cryptography and are not reproducible,
which does not matter for any assertion here.)
"""
import base64
import collections
import string

import psycopg2
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# SQLSTATEs of the extension (src/pg/report.h, report.c).
MALFORMED = "22P02"         # CC_ERR_MALFORMED: not url-safe base64 / bad structure
INVALID_TOKEN = "ZF001"     # CC_ERR_INVALID: no key authenticates (wrong key / tampered)
EXPIRED = "ZF002"           # CC_ERR_EXPIRED
FUTURE = "ZF003"            # CC_ERR_FUTURE
NOT_UTF8 = "22021"          # decrypted value is not valid text in the database encoding
OUT_OF_RANGE = "22008"      # token timestamp beyond timestamptz

MAX_CLOCK_SKEW = 60
URLSAFE = string.ascii_letters + string.digits + "-_"

# Number of random cases checked, per test (printed in the terminal summary).
CASES = collections.Counter()


def count(name, n=1):
    CASES[name] += n


# ---------------------------------------------------------------- keys

def new_key(rng):
    """A key in Fernet.generate_key() format (url-safe base64 of 32 bytes), seeded."""
    return base64.urlsafe_b64encode(rng.randbytes(32)).decode()


def new_keys(rng, n=None):
    return [new_key(rng) for _ in range(n if n is not None else rng.randint(1, 5))]


KEY_FORMS = ("urlsafe", "std", "nopad", "std_nopad")


def sql_key_form(key, form):
    """The same key as the SQL side may receive it: standard alphabet and/or unpadded."""
    if form in ("std", "std_nopad"):
        key = key.replace("-", "+").replace("_", "/")
    if form in ("nopad", "std_nopad"):
        key = key.rstrip("=")
    return key


def sql_keyring(keys, rng):
    """Comma-separated keyring text; each key in a random accepted form."""
    return ",".join(sql_key_form(k, rng.choice(KEY_FORMS)) for k in keys)


def multi(keys):
    return MultiFernet([Fernet(k) for k in keys])


# ---------------------------------------------------------------- payloads

EDGE_SIZES = (0, 1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 255, 256, 1023, 1024,
              4095, 4096, 65535, 65536)


def random_size(rng, cap=65536):
    """Mostly small sizes, block-boundary sizes, and a tail up to cap (64 KiB)."""
    r = rng.random()
    if r < 0.15:
        return min(rng.choice(EDGE_SIZES), cap)
    if r < 0.55:
        return rng.randint(0, 64)
    return min(int(2 ** rng.uniform(0, 16)), cap)


def random_bytes(rng, n):
    return rng.randbytes(n)


# Code point ranges by UTF-8 length (no NUL: PostgreSQL text cannot hold it;
# no surrogates: not encodable in UTF-8).
_RANGES = ((0x01, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF))
_WEIGHTS = (40, 15, 15, 5, 25)


def random_text(rng, nbytes):
    """Random UTF-8 text of about nbytes bytes (never more), with 1- to 4-byte characters."""
    out, size = [], 0
    while True:
        lo, hi = rng.choices(_RANGES, _WEIGHTS)[0]
        cp = rng.randint(lo, hi)
        w = 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
        if size + w > nbytes:
            # fill the rest with ASCII so the byte length is exactly nbytes
            out.append("".join(chr(rng.randint(0x20, 0x7E)) for _ in range(nbytes - size)))
            return "".join(out)
        out.append(chr(cp))
        size += w


# ---------------------------------------------------------------- Python side

def py_decrypt(f, token, ttl=None):
    """('ok', bytes) or ('InvalidToken', None)."""
    try:
        return "ok", f.decrypt(token, ttl=ttl)
    except InvalidToken:
        return "InvalidToken", None


def is_canonical_token_text(tok):
    """True when tok is exactly the url-safe, padded base64 encoding of its bytes
    (what every Fernet implementation emits). Python's decoder also accepts
    non-canonical spellings (other alphabet, ignored junk characters, data after
    the padding, non-zero unused bits); the extension deliberately does not."""
    try:
        raw = base64.urlsafe_b64decode(tok)
    except Exception:
        return False
    return base64.urlsafe_b64encode(raw).decode("ascii") == tok


# ---------------------------------------------------------------- SQL side

TryResult = collections.namedtuple("TryResult", "txt bin num state")

# PL/pgSQL wrapper that calls one extension function and returns its SQLSTATE
# instead of aborting, so thousands of cases (including failing ones) run in a
# single round trip. Lives in pg_temp: it disappears with the session.
TRY_FUNCTION = r"""
CREATE OR REPLACE FUNCTION pg_temp.cc_try(fn text, tok text, keys text, p_ttl integer,
    OUT txt text, OUT bin bytea, OUT num bigint, OUT state text)
LANGUAGE plpgsql AS $f$
BEGIN
    IF fn IS NULL OR fn NOT IN ('decrypt', 'decrypt_ttl', 'decrypt_srv', 'decrypt_srv_ttl',
            'bytea', 'bytea_ttl', 'bytea_srv', 'bytea_srv_ttl', 'rotate', 'rotate_srv',
            'ts', 'ts_srv', 'index', 'index_srv') THEN
        RAISE EXCEPTION 'cc_try: unknown function %', fn;
    END IF;
    BEGIN
        CASE fn
        WHEN 'decrypt' THEN txt := conn_crypto.fernet_decrypt(tok, keys);
        WHEN 'decrypt_ttl' THEN txt := conn_crypto.fernet_decrypt(tok, keys, ttl => p_ttl);
        WHEN 'decrypt_srv' THEN txt := conn_crypto.fernet_decrypt(tok);
        WHEN 'decrypt_srv_ttl' THEN txt := conn_crypto.fernet_decrypt(tok, ttl => p_ttl);
        WHEN 'bytea' THEN bin := conn_crypto.fernet_decrypt_bytea(tok, keys);
        WHEN 'bytea_ttl' THEN bin := conn_crypto.fernet_decrypt_bytea(tok, keys, ttl => p_ttl);
        WHEN 'bytea_srv' THEN bin := conn_crypto.fernet_decrypt_bytea(tok);
        WHEN 'bytea_srv_ttl' THEN bin := conn_crypto.fernet_decrypt_bytea(tok, ttl => p_ttl);
        WHEN 'rotate' THEN txt := conn_crypto.fernet_rotate(tok, keys);
        WHEN 'rotate_srv' THEN txt := conn_crypto.fernet_rotate(tok);
        WHEN 'ts' THEN num := extract(epoch FROM conn_crypto.fernet_extract_timestamp(tok, keys))::bigint;
        WHEN 'ts_srv' THEN num := extract(epoch FROM conn_crypto.fernet_extract_timestamp(tok))::bigint;
        WHEN 'index' THEN num := conn_crypto.fernet_key_index(tok, keys);
        WHEN 'index_srv' THEN num := conn_crypto.fernet_key_index(tok);
        END CASE;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
        txt := NULL; bin := NULL; num := NULL;
    END;
END
$f$
"""


def sql_try(conn, calls):
    """calls: list of (fn, token, keys, ttl). Returns a TryResult per call, in order."""
    if not calls:
        return []
    fns, toks, keys, ttls = (list(c) for c in zip(*calls))
    with conn.cursor() as cur:
        cur.execute(
            "SELECT r.txt, r.bin, r.num, r.state"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[]) WITH ORDINALITY AS u(fn, tok, keys, ttl, i)"
            " CROSS JOIN LATERAL pg_temp.cc_try(u.fn, u.tok, u.keys, u.ttl) AS r ORDER BY u.i",
            (fns, toks, keys, ttls))
        rows = cur.fetchall()
    assert len(rows) == len(calls)
    return [TryResult(t, bytes(b) if b is not None else None, n, s) for t, b, n, s in rows]


def sql_column(conn, query, *arrays):
    """Run query (which must unnest the given arrays WITH ORDINALITY and ORDER BY it)
    and return the rows."""
    with conn.cursor() as cur:
        cur.execute(query, arrays)
        return cur.fetchall()


def binary_list(values):
    return [psycopg2.Binary(v) for v in values]


def set_server_keyring(conn, keyring_text):
    with conn.cursor() as cur:
        cur.execute("SELECT set_config('conn_crypto.fernet_key', %s, false)", (keyring_text,))
