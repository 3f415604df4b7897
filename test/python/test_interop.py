"""Interop between the conn_crypto SQL functions and Python's cryptography
Fernet/MultiFernet (the implementation Airflow uses).

Cases are random (seeded, see conftest.py) and batched: every test makes a
handful of SQL round trips, each unnesting arrays of hundreds of cases.
Failing calls are run through pg_temp.cc_try (cc_helpers.TRY_FUNCTION), which
returns the SQLSTATE instead of aborting the batch.
"""
import base64
import hashlib
import hmac
import math
import time

import pytest
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cc_helpers import (EXPIRED, FUTURE, INVALID_TOKEN, MALFORMED, MAX_CLOCK_SKEW, NOT_UTF8,
                        OUT_OF_RANGE, URLSAFE, binary_list, count, is_canonical_token_text, multi,
                        new_key, new_keys, py_decrypt, random_bytes, random_size, random_text,
                        set_server_keyring, sql_column, sql_keyring, sql_try)

ENCRYPT_TEXT = ("SELECT conn_crypto.fernet_encrypt(p, k) FROM unnest(%s::text[], %s::text[])"
                " WITH ORDINALITY AS u(p, k, i) ORDER BY i")
ENCRYPT_BYTEA = ("SELECT conn_crypto.fernet_encrypt(p, k) FROM unnest(%s::bytea[], %s::text[])"
                 " WITH ORDINALITY AS u(p, k, i) ORDER BY i")
ENCRYPT_TEXT_SRV = ("SELECT conn_crypto.fernet_encrypt(p) FROM unnest(%s::text[])"
                    " WITH ORDINALITY AS u(p, i) ORDER BY i")
ENCRYPT_BYTEA_SRV = ("SELECT conn_crypto.fernet_encrypt(p) FROM unnest(%s::bytea[])"
                     " WITH ORDINALITY AS u(p, i) ORDER BY i")

# Timestamps for encrypt_at_time: edges and random values up to 2**40 s
# (year ~36800, inside timestamptz).
TS_EDGES = (0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 253402300799)


def crafted_ts(rng):
    return rng.choice(TS_EDGES) if rng.random() < 0.2 else rng.randrange(2**40)


def token_len(n):
    """Length of a Fernet token for an n-byte plaintext."""
    raw = 1 + 8 + 16 + 16 * (n // 16 + 1) + 32
    return 4 * math.ceil(raw / 3)


def random_payload(rng, is_text, cap=65536):
    size = random_size(rng, cap)
    return random_text(rng, size) if is_text else random_bytes(rng, size)


def as_bytes(p):
    return p.encode("utf-8") if isinstance(p, str) else p


def check_sql_token(tok, keys, plain, t0, t1):
    """A token made by SQL under keyring keys decrypts in Python to plain."""
    expected = as_bytes(plain)
    assert tok.startswith("gAAAAA") and is_canonical_token_text(tok), tok[:40]
    assert len(tok) == token_len(len(expected))
    assert multi(keys).decrypt(tok) == expected
    primary = Fernet(keys[0])
    assert primary.decrypt(tok) == expected          # the first key encrypts
    assert t0 <= primary.extract_timestamp(tok) <= t1
    if len(keys) > 1:
        with pytest.raises(InvalidToken):
            Fernet(keys[-1]).decrypt(tok)


# ---------------------------------------------------------------- SQL -> Python

def test_sql_encrypt_explicit_keys_decrypts_in_python(db, rng):
    texts, bins = [], []
    for i in range(700):
        keys = new_keys(rng)
        (texts if i % 2 == 0 else bins).append((keys, sql_keyring(keys, rng), random_payload(rng, i % 2 == 0)))
    t0 = int(time.time())
    tok_t = sql_column(db, ENCRYPT_TEXT, [c[2] for c in texts], [c[1] for c in texts])
    tok_b = sql_column(db, ENCRYPT_BYTEA, binary_list([c[2] for c in bins]), [c[1] for c in bins])
    t1 = int(time.time())
    four_byte = 0
    for (keys, _, plain), (tok,) in zip(texts + bins, tok_t + tok_b):
        check_sql_token(tok, keys, plain, t0, t1)
        four_byte += isinstance(plain, str) and any(ord(ch) > 0xFFFF for ch in plain)
    assert four_byte > 50, "text generator should produce 4-byte UTF-8 characters"
    count("sql_encrypt_explicit", len(texts) + len(bins))


def test_sql_encrypt_server_keyring_decrypts_in_python(db, rng):
    n = 0
    for _ in range(12):
        keys = new_keys(rng)
        set_server_keyring(db, sql_keyring(keys, rng))
        texts = [random_payload(rng, True, 8192) for _ in range(25)]
        bins = [random_payload(rng, False, 8192) for _ in range(25)]
        t0 = int(time.time())
        tok_t = sql_column(db, ENCRYPT_TEXT_SRV, texts)
        tok_b = sql_column(db, ENCRYPT_BYTEA_SRV, binary_list(bins))
        t1 = int(time.time())
        for plain, (tok,) in zip(texts + bins, tok_t + tok_b):
            check_sql_token(tok, keys, plain, t0, t1)
        n += len(texts) + len(bins)
    count("sql_encrypt_server_keyring", n)


# ---------------------------------------------------------------- Python -> SQL

def python_token(rng, keys, plain):
    """A token made by Python by one of the ways Airflow can; returns
    (token, expected 1-based key index, expected timestamp or None for 'now', how)."""
    data = as_bytes(plain)
    how = rng.choice(("fernet", "multi", "at_time", "multi_at_time", "rotate"))
    j = rng.randrange(len(keys))
    if how == "fernet":
        return Fernet(keys[j]).encrypt(data).decode(), j + 1, None, how
    if how == "multi":
        return multi(keys).encrypt(data).decode(), 1, None, how
    ts = crafted_ts(rng)
    if how == "at_time":
        return Fernet(keys[j]).encrypt_at_time(data, ts).decode(), j + 1, ts, how
    if how == "multi_at_time":
        return multi(keys).encrypt_at_time(data, ts).decode(), 1, ts, how
    old = Fernet(keys[j]).encrypt_at_time(data, ts)
    return multi(keys).rotate(old).decode(), 1, ts, how


def check_python_tokens_in_sql(db, cases, srv, t0):
    """cases: (keys, ring text, plain, token, index, ts). Decrypts in SQL with the
    text and bytea functions and checks key index and timestamp."""
    sfx = "_srv" if srv else ""
    calls = []
    for _, ring, plain, tok, _, _ in cases:
        k = None if srv else ring
        calls += [("decrypt" + sfx if isinstance(plain, str) else "bytea" + sfx, tok, k, None),
                  ("bytea" + sfx, tok, k, None), ("index" + sfx, tok, k, None), ("ts" + sfx, tok, k, None)]
    res = sql_try(db, calls)
    t1 = int(time.time())
    for n, (keys, _, plain, tok, index, ts) in enumerate(cases):
        dec, dec_b, idx, sts = res[4 * n: 4 * n + 4]
        ctx = (tok[:40], len(keys), index, ts)
        assert [r.state for r in (dec, dec_b, idx, sts)] == [None] * 4, ctx
        if isinstance(plain, str):
            assert dec.txt == plain, ctx
        else:
            assert dec.bin == plain, ctx
        assert dec_b.bin == as_bytes(plain), ctx
        assert idx.num == index, ctx
        py_ts = Fernet(keys[index - 1]).extract_timestamp(tok)
        assert sts.num == py_ts, ctx
        if ts is None:
            assert t0 - 1 <= py_ts <= t1, ctx
        else:
            assert py_ts == ts, ctx


def test_python_tokens_decrypt_in_sql_explicit_keys(db, rng):
    t0 = int(time.time())
    cases = []
    for i in range(700):
        keys = new_keys(rng)
        plain = random_payload(rng, i % 2 == 0)
        tok, index, ts, _ = python_token(rng, keys, plain)
        cases.append((keys, sql_keyring(keys, rng), plain, tok, index, ts))
    check_python_tokens_in_sql(db, cases, False, t0)
    count("python_encrypt_sql_decrypt_explicit", len(cases))


def test_python_tokens_decrypt_in_sql_server_keyring(db, rng):
    n = 0
    t0 = int(time.time())
    for _ in range(12):
        keys = new_keys(rng)
        ring = sql_keyring(keys, rng)
        set_server_keyring(db, ring)
        cases = []
        for i in range(40):
            plain = random_payload(rng, i % 2 == 0, 8192)
            tok, index, ts, _ = python_token(rng, keys, plain)
            cases.append((keys, ring, plain, tok, index, ts))
        check_python_tokens_in_sql(db, cases, True, t0)
        n += len(cases)
    count("python_encrypt_sql_decrypt_server_keyring", n)


# ---------------------------------------------------------------- MultiFernet rotation

def test_sql_rotate_decrypts_in_python(db, rng):
    """fernet_rotate(token, keys) == MultiFernet.rotate: re-encrypted under the
    first key, same plaintext, same timestamp."""
    explicit = []
    for i in range(400):
        keys = new_keys(rng, rng.randint(2, 5))
        j = rng.randrange(len(keys))
        plain = random_payload(rng, False, 4096)
        ts = crafted_ts(rng)
        old = Fernet(keys[j]).encrypt_at_time(plain, ts).decode()
        explicit.append((keys, sql_keyring(keys, rng), j, plain, ts, old))
    res = sql_try(db, [("rotate", c[5], c[1], None) for c in explicit])
    # server keyring: a few keyrings, several tokens each
    srv_res = []
    for g in range(10):
        group = explicit[g * 20:(g + 1) * 20]  # reuse plaintexts, new keyring per group
        keys = new_keys(rng, rng.randint(2, 5))
        set_server_keyring(db, sql_keyring(keys, rng))
        cases = []
        for _, _, _, plain, ts, _ in group:
            j = rng.randrange(len(keys))
            cases.append((keys, None, j, plain, ts, Fernet(keys[j]).encrypt_at_time(plain, ts).decode()))
        srv_res += list(zip(cases, sql_try(db, [("rotate_srv", c[5], None, None) for c in cases])))
    for (keys, _, j, plain, ts, old), r in list(zip(explicit, res)) + srv_res:
        assert r.state is None, (old[:40], r.state)
        new = r.txt
        assert new != old and is_canonical_token_text(new)
        primary = Fernet(keys[0])
        assert primary.decrypt(new) == plain
        assert primary.extract_timestamp(new) == ts == Fernet(keys[j]).extract_timestamp(old)
        if j != 0:
            with pytest.raises(InvalidToken):
                Fernet(keys[j]).decrypt(new)
        # and rotating again in Python keeps the timestamp too
        assert primary.extract_timestamp(multi(keys).rotate(new)) == ts
    count("sql_rotate_python_decrypt", len(explicit) + len(srv_res))


def test_python_rotate_of_sql_tokens_decrypts_in_sql(db, rng):
    cases = []
    for i in range(300):
        old_keys = new_keys(rng)
        cases.append((old_keys, sql_keyring(old_keys, rng), random_payload(rng, i % 2 == 0, 4096)))
    texts = [c for c in cases if isinstance(c[2], str)]
    bins = [c for c in cases if not isinstance(c[2], str)]
    toks = [t for (t,) in sql_column(db, ENCRYPT_TEXT, [c[2] for c in texts], [c[1] for c in texts])]
    toks += [t for (t,) in sql_column(db, ENCRYPT_BYTEA, binary_list([c[2] for c in bins]), [c[1] for c in bins])]
    calls, expect = [], []
    for (old_keys, old_ring, plain), tok in zip(texts + bins, toks):
        new_keys_ = [new_key(rng)] + old_keys
        rotated = multi(new_keys_).rotate(tok).decode()
        new_ring = sql_keyring(new_keys_, rng)
        primary_only = sql_keyring(new_keys_[:1], rng)
        calls += [("bytea", rotated, primary_only, None), ("index", rotated, new_ring, None),
                  ("ts", rotated, primary_only, None), ("ts", tok, old_ring, None),
                  ("bytea", rotated, old_ring, None)]
        expect.append(plain)
    res = sql_try(db, calls)
    for n, plain in enumerate(expect):
        dec, idx, ts_new, ts_old, with_old = res[5 * n:5 * n + 5]
        assert (dec.state, idx.state, ts_new.state, ts_old.state) == (None,) * 4
        assert dec.bin == as_bytes(plain)
        assert idx.num == 1
        assert ts_new.num == ts_old.num
        assert with_old.state == INVALID_TOKEN        # the old keys no longer open it
    count("python_rotate_sql_decrypt", len(expect))


# ---------------------------------------------------------------- wrong key

def test_wrong_key_rejected(db, rng):
    calls, toks = [], []
    for i in range(200):
        keys = new_keys(rng)
        others = new_keys(rng)
        plain = random_payload(rng, True, 1024)
        tok = (Fernet(keys[0]).encrypt(plain.encode()) if i % 2 else
               sql_column(db, ENCRYPT_TEXT, [plain], [sql_keyring(keys, rng)])[0][0])
        tok = tok.decode() if isinstance(tok, bytes) else tok
        with pytest.raises(InvalidToken):
            multi(others).decrypt(tok)
        with pytest.raises(InvalidToken):
            multi(others).rotate(tok)
        ring = sql_keyring(others, rng)
        calls += [(fn, tok, ring, 3600) for fn in ("decrypt", "bytea", "decrypt_ttl", "bytea_ttl", "rotate", "ts", "index")]
        toks.append(tok)
    res = sql_try(db, calls)
    for n in range(len(toks)):
        r = res[7 * n:7 * n + 7]
        assert [x.state for x in r] == [INVALID_TOKEN] * 6 + [None], toks[n][:40]
        assert r[6].num is None                       # fernet_key_index: NULL when no key matches
    # the same through the server keyring
    keys, others = new_keys(rng), new_keys(rng)
    set_server_keyring(db, sql_keyring(others, rng))
    toks = [Fernet(keys[0]).encrypt(random_bytes(rng, rng.randint(0, 100))).decode() for _ in range(50)]
    res = sql_try(db, [(fn, t, None, 3600) for t in toks for fn in
                       ("decrypt_srv", "bytea_srv", "decrypt_srv_ttl", "bytea_srv_ttl", "rotate_srv", "ts_srv", "index_srv")])
    for n in range(len(toks)):
        r = res[7 * n:7 * n + 7]
        assert [x.state for x in r] == [INVALID_TOKEN] * 6 + [None]
        assert r[6].num is None
    count("wrong_key", 250)


# ---------------------------------------------------------------- TTL

TTL_FUNCS = ("decrypt_ttl", "decrypt_srv_ttl", "bytea_ttl", "bytea_srv_ttl")


def test_ttl_boundaries_agree_with_python(db, rng):
    """Fernet.decrypt(tok, ttl=N) and fernet_decrypt(tok, [keys,] ttl => N) agree.
    Python and PostgreSQL read the same clock; the edges (ts == now - ttl,
    now + 60) are only determined when the whole round runs within one clock
    second, so a round that crosses a second boundary is redone."""
    keys = new_keys(rng, 3)
    ring = sql_keyring(keys, rng)
    mf = multi(keys)
    wrong = sql_keyring(new_keys(rng, 2), rng)
    set_server_keyring(db, ring)
    ttls = [0, 1, 2, 59, 60, 61, 3600, 86400, 2**31 - 1, -1, -60] + \
           [rng.randint(-100, 10**7) for _ in range(30)]
    for attempt in range(10):
        # start just after a second boundary to leave the round the whole second
        time.sleep(1.02 - (time.time() % 1.0) if time.time() % 1.0 > 0.5 else 0)
        now = int(time.time())
        cases = []
        for ttl in ttls:
            offsets = [("expired", now - ttl - 1), ("edge", now - ttl), ("fresh", now - ttl + 1),
                       ("now", now), ("future59", now + 59), ("future60", now + MAX_CLOCK_SKEW),
                       ("future61", now + MAX_CLOCK_SKEW + 1), ("far", now + rng.randint(62, 10**7))]
            for kind, ts in offsets:
                if ts < 0:
                    continue
                plain = random_text(rng, rng.randint(0, 40))
                tok = Fernet(keys[rng.randrange(3)]).encrypt_at_time(plain.encode(), ts).decode()
                want = EXPIRED if ts + ttl < now else FUTURE if now + MAX_CLOCK_SKEW < ts else None
                cases.append((ttl, kind, ts, plain, tok, want))
        calls = []
        for ttl, _, _, _, tok, _ in cases:
            calls += [(fn, tok, None if "srv" in fn else ring, ttl) for fn in TTL_FUNCS]
            calls.append(("decrypt_ttl", tok, wrong, ttl))
        res = sql_try(db, calls)
        py = [py_decrypt(mf, c[4], ttl=c[0]) for c in cases]
        if int(time.time()) != now:
            continue                                  # crossed a second: edges undetermined, redo
        for n, (ttl, kind, ts, plain, tok, want) in enumerate(cases):
            ctx = (ttl, kind, ts - now)
            assert py[n][0] == ("ok" if want is None else "InvalidToken"), ctx
            r = res[5 * n:5 * n + 5]
            assert [x.state for x in r[:4]] == [want] * 4, ctx
            if want is None:
                assert r[0].txt == r[1].txt == plain and r[2].bin == r[3].bin == plain.encode(), ctx
                assert py[n][1] == plain.encode()
            # time is checked before the signature (spec, and cryptography's order)
            assert r[4].state == (want or INVALID_TOKEN), ctx
        count("ttl", len(cases))
        break
    else:
        pytest.fail("could not complete a TTL round within one clock second in 10 attempts")


def test_far_timestamps(db, rng):
    """u64 timestamps beyond timestamptz: decryption works in both; SQL cannot
    represent the timestamp (22008); rotation keeps it; with a ttl it is 'future'."""
    keys = new_keys(rng, 2)
    ring = sql_keyring(keys, rng)
    cases = []
    for ts in (2**62, 2**63 - 1, 2**63, 2**64 - 1, 10**13):
        tok = Fernet(keys[1]).encrypt_at_time(b"far", ts).decode()
        assert Fernet(keys[1]).extract_timestamp(tok) == ts
        assert py_decrypt(Fernet(keys[1]), tok, ttl=10**6)[0] == "InvalidToken"
        cases.append((ts, tok))
    res = sql_try(db, [(fn, tok, ring, 10**6) for _, tok in cases for fn in ("bytea", "ts", "rotate", "bytea_ttl", "index")])
    for n, (ts, tok) in enumerate(cases):
        dec, sts, rot, dttl, idx = res[5 * n:5 * n + 5]
        assert dec.state is None and dec.bin == b"far"
        assert sts.state == OUT_OF_RANGE
        assert rot.state is None and Fernet(keys[0]).extract_timestamp(rot.txt) == ts
        assert dttl.state == FUTURE
        assert idx.num == 2
    count("far_timestamps", len(cases))


# ---------------------------------------------------------------- tampering

JUNK = URLSAFE + "=+/ .!~*\t\n"


def mutate(tok, rng):
    """One random corruption of tok; returns (kind, mutated) or None when the
    draw produced tok itself or a token whose padding alone was stripped
    (a known divergence, tested by test_token_without_padding_rejected)."""
    kind = rng.choice(("replace", "bitflip", "truncate", "append", "delete", "insert",
                       "raw_bitflip", "raw_byte", "raw_truncate", "raw_append", "whitespace"))
    pos = rng.randrange(len(tok))
    if kind.startswith("raw_"):
        # change the decoded bytes and re-encode canonically: the MAC must catch it
        raw = bytearray(base64.urlsafe_b64decode(tok))
        at = rng.randrange(len(raw))
        if kind == "raw_bitflip":
            raw[at] ^= 1 << rng.randrange(8)
        elif kind == "raw_byte":
            raw[at] = rng.randrange(256)
        elif kind == "raw_truncate":
            del raw[at:]
        else:
            raw += rng.randbytes(rng.choice((1, 15, 16, 17, 32, rng.randint(1, 64))))
        m = base64.urlsafe_b64encode(bytes(raw)).decode()
    elif kind == "whitespace":
        m = rng.choice((" ", "\n", "\t", "\r\n")) + tok + rng.choice(("", " ", "\n"))
    elif kind == "replace":
        m = tok[:pos] + rng.choice(JUNK) + tok[pos + 1:]
    elif kind == "bitflip":
        c = chr(ord(tok[pos]) ^ (1 << rng.randrange(7)))   # stays ASCII: valid PostgreSQL text
        if c == "\0":
            return None
        m = tok[:pos] + c + tok[pos + 1:]
    elif kind == "truncate":
        m = tok[:pos]
        if tok.endswith("=") and m == tok.rstrip("="):
            return None
    elif kind == "append":
        m = tok + "".join(rng.choice(URLSAFE + "=") for _ in range(rng.randint(1, 12)))
    elif kind == "delete":
        m = tok[:pos] + tok[pos + 1:]
        if tok.endswith("=") and m == tok.rstrip("="):
            return None
    else:
        m = tok[:pos] + rng.choice(JUNK) + tok[pos:]
    return None if m == tok else (kind, m)


def raw_structure_state(m):
    """SQLSTATE the extension gives a canonical-base64 token that no key
    authenticates: 22P02 when the structure is broken, else ZF001."""
    raw = base64.urlsafe_b64decode(m)
    ct = len(raw) - 57
    if len(raw) < 73 or raw[0] != 0x80 or ct <= 0 or ct % 16:
        return MALFORMED
    return INVALID_TOKEN


def test_tampered_tokens_rejected(db, rng):
    """Every corruption Python rejects, SQL rejects with 22P02 or ZF001. Python's
    base64 decoder is lenient (ignores junk characters and anything after the
    padding, accepts '+' '/' and non-zero unused bits): a corrupted token that
    Python still accepts must be accepted by SQL with the same plaintext, unless
    its text is not the canonical url-safe padded base64 of its bytes; the
    extension rejects those on purpose (22P02); no Fernet implementation emits them."""
    keys = new_keys(rng, 3)
    ring = sql_keyring(keys, rng)
    mf = multi(keys)
    originals = []
    plains = [random_bytes(rng, random_size(rng, 2048)) for _ in range(250)]
    sql_toks = [t for (t,) in sql_column(db, ENCRYPT_BYTEA, binary_list(plains[:125]), [ring] * 125)]
    py_idx = [rng.randrange(3) for _ in plains[125:]]
    py_toks = [Fernet(keys[j]).encrypt(p).decode() for j, p in zip(py_idx, plains[125:])]
    for plain, tok, index in zip(plains, sql_toks + py_toks, [1] * 125 + [j + 1 for j in py_idx]):
        assert mf.decrypt(tok) == plain
        originals.append((plain, tok, index))
    cases = []
    for plain, tok, index in originals:
        made = 0
        while made < 16:
            m = mutate(tok, rng)
            if m is None:
                continue
            cases.append((plain, tok, index) + m)
            made += 1
    calls = []
    for n, (_, _, _, _, m) in enumerate(cases):
        calls += [("bytea", m, ring, None), ("index", m, ring, None)]
        if n % 4 == 0:
            calls += [("ts", m, ring, None), ("rotate", m, ring, None)]
    res = iter(sql_try(db, calls))
    lenient = {"both_reject": 0, "both_accept": 0, "python_only_noncanonical": 0}
    kinds = set()
    for n, (plain, tok, index, kind, m) in enumerate(cases):
        dec, idx = next(res), next(res)
        extra = [next(res), next(res)] if n % 4 == 0 else []
        py_state, py_plain = py_decrypt(mf, m)
        ctx = (kind, tok, m)
        kinds.add(kind)
        if py_state == "ok":
            assert py_plain == plain, ctx
            if dec.state is None:
                lenient["both_accept"] += 1
                assert dec.bin == plain and idx.num == index, ctx
            else:
                lenient["python_only_noncanonical"] += 1
                assert not is_canonical_token_text(m), ctx
                assert dec.state == MALFORMED, ctx
                assert idx.state is None and idx.num is None, ctx
        else:
            lenient["both_reject"] += 1
            assert dec.state in (MALFORMED, INVALID_TOKEN), ("SQL accepted a token Python rejects",) + ctx + (dec,)
            if kind.startswith("raw_"):
                assert is_canonical_token_text(m)
                assert dec.state == raw_structure_state(m), ctx + (dec,)
            assert idx.state is None and idx.num is None, ctx
            for e in extra:
                assert e.state in (MALFORMED, INVALID_TOKEN), ctx + (e,)
    print("tampering outcomes:", lenient)
    assert lenient["both_reject"] > 0.75 * len(cases) and lenient["both_accept"] > 0
    assert len(kinds) == 11
    count("tampering", len(cases))


def test_token_without_padding_tolerated(db, rng):
    """Python rejects a token whose '=' padding was removed (binascii: Incorrect
    padding); the extension tolerates missing padding by design (the issue asks
    for it, like surrounding whitespace), so it must decrypt such a token to the
    same plaintext, and never accept a token that lost a data character."""
    keys = new_keys(rng, 1)
    toks, plains = [], []
    for n in (0, 1, 15, 16, 17, 31, 32, 100, 1000):
        plain = bytes(rng.getrandbits(8) for _ in range(n))
        tok = Fernet(keys[0]).encrypt(plain).decode()
        if tok.endswith("="):
            toks.append(tok.rstrip("="))
            plains.append(plain)
            assert py_decrypt(Fernet(keys[0]), toks[-1])[0] == "InvalidToken"
    assert toks
    res = sql_try(db, [("bytea", t, keys[0], None) for t in toks])
    for t, p, r in zip(toks, plains, res):
        assert r.state is None and r.bin == p, (t[-6:], r)
    # One data character fewer is a truncation, not missing padding: rejected.
    res = sql_try(db, [("bytea", t[:-1], keys[0], None) for t in toks])
    assert all(r.state in (MALFORMED, INVALID_TOKEN) for r in res), res


def craft(key, ciphertext, ts=1_700_000_000, version=0x80, iv=b"\x01" * 16):
    """A token with a valid HMAC over arbitrary content."""
    raw = bytes([version]) + ts.to_bytes(8, "big") + iv + ciphertext
    signing = base64.urlsafe_b64decode(key)[:16]
    return base64.urlsafe_b64encode(raw + hmac.new(signing, raw, hashlib.sha256).digest()).decode()


def aes_raw(key, iv, padded):
    enc = Cipher(algorithms.AES(base64.urlsafe_b64decode(key)[16:]), modes.CBC(iv)).encryptor()
    return enc.update(padded) + enc.finalize()


def test_authenticated_but_invalid_tokens(db, rng):
    """Tokens a key holder could forge: correct HMAC, broken content."""
    key = new_key(rng)
    iv = b"\x01" * 16
    cases = [
        ("good_empty", craft(key, aes_raw(key, iv, b"\x10" * 16)), None),
        ("good_15", craft(key, aes_raw(key, iv, b"a" * 15 + b"\x01")), None),
        ("pad_0", craft(key, aes_raw(key, iv, b"a" * 15 + b"\x00")), INVALID_TOKEN),
        ("pad_17", craft(key, aes_raw(key, iv, b"a" * 15 + b"\x11")), INVALID_TOKEN),
        ("pad_inconsistent", craft(key, aes_raw(key, iv, b"a" * 13 + b"\x01\x02\x03")), INVALID_TOKEN),
        ("pad_16_mixed", craft(key, aes_raw(key, iv, b"\x0f" + b"\x10" * 15)), INVALID_TOKEN),
        ("pad_2_blocks_bad", craft(key, aes_raw(key, iv, b"b" * 16 + b"a" * 15 + b"\x00")), INVALID_TOKEN),
        ("ct_15_bytes", craft(key, b"\x00" * 15), MALFORMED),
        ("ct_empty", craft(key, b""), MALFORMED),
        ("version_0x81", craft(key, aes_raw(key, iv, b"\x10" * 16), version=0x81), MALFORMED),
        ("version_0x00", craft(key, aes_raw(key, iv, b"\x10" * 16), version=0x00), MALFORMED),
    ]
    res = sql_try(db, [("bytea", tok, key, None) for _, tok, _ in cases])
    for (name, tok, want), r in zip(cases, res):
        py_state, py_plain = py_decrypt(Fernet(key), tok)
        assert py_state == ("ok" if want is None else "InvalidToken"), name
        assert r.state == want, (name, r)
        if want is None:
            assert r.bin == py_plain, name
    count("authenticated_invalid", len(cases))


# ---------------------------------------------------------------- text vs bytea

BAD_UTF8 = (b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf",
            b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
            b"\xf0\x80\x80\xaf", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3", b"\xc3\x28", b"\xe2\x28\xa1")


def test_invalid_utf8_plaintext(db, rng):
    """Invalid UTF-8 (and NUL, which PostgreSQL text cannot hold) made in Python:
    the text functions raise 22021, the bytea functions return the bytes."""
    keys = new_keys(rng, 2)
    ring = sql_keyring(keys, rng)
    set_server_keyring(db, ring)
    cases = []
    for i in range(400):
        kind = ("inject", "nul", "random", "valid")[i % 4]
        if kind == "random":
            data = random_bytes(rng, rng.randint(1, 64))
        else:
            base = random_text(rng, random_size(rng, 4096)).encode()
            pos = rng.randint(0, len(base))
            # insert on a character boundary for 'nul' so the result stays valid UTF-8
            while kind == "nul" and pos < len(base) and (base[pos] & 0xC0) == 0x80:
                pos += 1
            ins = {"inject": rng.choice(BAD_UTF8), "nul": b"\x00", "valid": b""}[kind]
            data = base[:pos] + ins + base[pos:]
        try:
            ok_text = b"\x00" not in data and data.decode("utf-8") is not None
        except UnicodeDecodeError:
            ok_text = False
        if kind == "nul":
            data.decode("utf-8")                     # valid UTF-8 for Python ...
            assert not ok_text                       # ... but not PostgreSQL text
        if kind == "inject":
            assert not ok_text
        tok = Fernet(keys[rng.randrange(2)]).encrypt(data).decode()
        assert multi(keys).decrypt(tok) == data
        cases.append((data, ok_text, tok))
    calls = [(fn, tok, None if "srv" in fn else ring, 3600) for _, _, tok in cases
             for fn in ("decrypt", "decrypt_ttl", "decrypt_srv", "decrypt_srv_ttl",
                        "bytea", "bytea_ttl", "bytea_srv", "bytea_srv_ttl")]
    res = sql_try(db, calls)
    for n, (data, ok_text, tok) in enumerate(cases):
        r = res[8 * n:8 * n + 8]
        if ok_text:
            assert [x.state for x in r[:4]] == [None] * 4 and all(x.txt == data.decode() for x in r[:4])
        else:
            assert [x.state for x in r[:4]] == [NOT_UTF8] * 4, data[:40]
        assert [x.state for x in r[4:]] == [None] * 4 and all(x.bin == data for x in r[4:])
    assert sum(not c[1] for c in cases) >= 250
    count("utf8_validation", len(cases))


# ---------------------------------------------------------------- keys

def test_generated_keys_interoperate(db, rng):
    with db.cursor() as cur:
        cur.execute("SELECT conn_crypto.fernet_generate_key() FROM generate_series(1, 50)")
        sql_keys = [k for (k,) in cur.fetchall()]
    assert len(set(sql_keys)) == 50
    py_keys = [Fernet.generate_key().decode() for _ in range(50)]
    for k in sql_keys:
        assert len(k) == 44 and len(base64.urlsafe_b64decode(k)) == 32 and is_canonical_token_text(k)
    plains = [random_text(rng, rng.randint(0, 200)) for _ in range(100)]
    # SQL keys: Python encrypts, SQL decrypts; Python keys: SQL encrypts, Python decrypts
    py_toks = [Fernet(k).encrypt(p.encode()).decode() for k, p in zip(sql_keys, plains)]
    res = sql_try(db, [("decrypt", t, k, None) for t, k in zip(py_toks, sql_keys)])
    assert [r.txt for r in res] == plains[:50]
    sql_toks = sql_column(db, ENCRYPT_TEXT, plains[50:], py_keys)
    assert [Fernet(k).decrypt(t).decode() for k, (t,) in zip(py_keys, sql_toks)] == plains[50:]
    count("generated_keys", 100)


# ---------------------------------------------------------------- NULLs

def test_null_in_null_out(db, rng):
    """Every overload of the Fernet API (conn_crypto.fernet_*) with arguments
    returns NULL when any argument is NULL (with or without a server keyring),
    and a value for valid arguments. Overloads are read from pg_proc, so new ones
    are covered (or fail loudly on an unknown argument name)."""
    keys = new_keys(rng, 2)
    tok = Fernet(keys[0]).encrypt(b"secret").decode()
    valid = {"token": (tok, "text"), "keys": (",".join(keys), "text"), "ttl": (3600, "integer")}
    with db.cursor() as cur:
        cur.execute("""
            SELECT p.proname, p.oid::regprocedure::text, p.proargnames,
                   array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'conn_crypto' AND p.proname LIKE 'fernet\\_%%' AND p.pronargs > 0
            ORDER BY 2""")
        procs = cur.fetchall()
    names = {p[0] for p in procs}
    assert names >= {"fernet_encrypt", "fernet_decrypt", "fernet_decrypt_bytea", "fernet_rotate",
                     "fernet_extract_timestamp", "fernet_key_index"}
    assert len(procs) >= 18
    checked = 0
    for with_ring in (False, True):
        if with_ring:
            set_server_keyring(db, ",".join(keys))
        else:
            with db.cursor() as cur:
                cur.execute("RESET conn_crypto.fernet_key")
        for proname, sig, argnames, argtypes in procs:
            args = []
            for name, typ in zip(argnames, argtypes):
                if name == "plaintext":
                    args.append((b"secret" if typ == "bytea" else "secret", typ))
                else:
                    assert name in valid, f"{sig}: unknown argument {name}: extend this test"
                    args.append(valid[name])
            variants = [[i] for i in range(len(args))] + [list(range(len(args)))]
            for nulls in variants:
                vals = [None if i in nulls else (v if t != "bytea" else bytes(v)) for i, (v, t) in enumerate(args)]
                sql = f"SELECT conn_crypto.{proname}({', '.join('%s::' + t for _, t in args)})"
                with db.cursor() as cur:
                    cur.execute(sql, vals)
                    assert cur.fetchone()[0] is None, (sig, nulls, with_ring)
                checked += 1
            uses_server_ring = "keys" not in argnames
            if with_ring or not uses_server_ring:
                with db.cursor() as cur:
                    cur.execute(sql, [bytes(v) if t == "bytea" else v for v, t in args])
                    assert cur.fetchone()[0] is not None, sig
    count("null_calls", checked)
