"""Apache Airflow's reads and writes of its connection and variable tables,
played in Python against tables protected by conn_crypto, with a model of what
every read must return.

How Airflow (2.x and 1.10) keeps its secrets, through SQLAlchemy properties:
  Connection.set_password(v)  nothing for '' or None; else _password = MultiFernet.encrypt(v),
                              is_encrypted = True
  Connection.set_extra(v)     non-empty: encrypted, is_extra_encrypted = True;
                              '' / None: stored as is, is_extra_encrypted = False
  Variable.set_val(v)         every value but None is encrypted ('' too), is_encrypted = True
  get_password / get_extra    decrypt when the stored value is non-empty and its flag true,
                              else return the stored value
  Variable.get_val            decrypt when the stored value is not None and its flag true
                              (InvalidToken: logged, None returned)
The flags have no server default; the model's Python default is False.
SQLAlchemy's unit of work sends an INSERT of every column for a new object and,
for a loaded object, an UPDATE of only the columns whose value changed: a new
password for a row whose is_encrypted is already true is UPDATE ... SET
password = <token> alone.

The Scenario class interleaves those writes with plain SQL writes (plaintext
INSERT with NULL flags, multi-row INSERT, ON CONFLICT DO UPDATE, UPDATE ...
FROM, COPY, flag-only and unrelated-column UPDATEs) and after every step reads
the touched rows both ways (Airflow's getters on the stored row, and
conn_crypto.connection_password/connection_extra/variable_value), comparing
with a model of the trigger's rules (src/pg/protect_trigger.c).
"""
import io
import json
import math
import string
from dataclasses import dataclass, replace

import psycopg2
import psycopg2.extras
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# SQLSTATEs expected from failing writes.
TOO_LONG = "22001"        # varchar(n) overflow, by PostgreSQL or by the trigger after encrypting
FOREIGN_TOKEN = "ZF001"   # a Fernet token that no key of the server keyring decrypts

# ---------------------------------------------------------------- DDL

DDL = {
    # Airflow 2.x on PostgreSQL.
    "2": """
CREATE TABLE {s}.connection (id serial PRIMARY KEY, conn_id varchar(250) NOT NULL UNIQUE,
    conn_type varchar(500) NOT NULL, description text, host varchar(500), schema varchar(500),
    login text, password text, port integer, is_encrypted boolean, is_extra_encrypted boolean,
    extra text);
CREATE TABLE {s}.variable (id serial PRIMARY KEY, key varchar(250) UNIQUE, val text,
    description text, is_encrypted boolean);
""",
    # Airflow 1.10: varchar(5000) secrets, no description, conn_id not unique.
    "1.10": """
CREATE TABLE {s}.connection (id serial PRIMARY KEY, conn_id varchar(250), conn_type varchar(500),
    host varchar(500), schema varchar(500), login varchar(500), password varchar(5000),
    port integer, extra varchar(5000), is_encrypted boolean, is_extra_encrypted boolean);
CREATE TABLE {s}.variable (id serial PRIMARY KEY, key varchar(250) UNIQUE, val text,
    is_encrypted boolean);
""",
}


@dataclass(frozen=True)
class Col:
    table: str          # 'connection' or 'variable'
    name: str
    flag: str
    encrypt_empty: bool
    max_chars: int      # varchar(n), or None


def columns(version):
    limit = 5000 if version == "1.10" else None
    return {
        "password": Col("connection", "password", "is_encrypted", False, limit),
        "extra": Col("connection", "extra", "is_extra_encrypted", False, limit),
        "val": Col("variable", "val", "is_encrypted", True, None),
    }


def multifernet(keys):
    """Airflow's get_fernet(): MultiFernet over the comma-separated key list."""
    if isinstance(keys, str):
        keys = keys.split(",")
    return MultiFernet([Fernet(k.strip().encode()) for k in keys if k.strip()])


def token_len(nbytes):
    """Characters of the Fernet token of an nbytes-byte plaintext."""
    return 4 * math.ceil((1 + 8 + 16 + 16 * (nbytes // 16 + 1) + 32) / 3)


_DECRYPTED = {}     # (id(fernet), token) -> plaintext or None: a token always decrypts the same way


def try_decrypt(fernet, token):
    """The plaintext of token under fernet, or None when it is not one of its tokens."""
    if not token:
        return None
    k = (id(fernet), token)
    if k not in _DECRYPTED:
        if len(_DECRYPTED) > 200000:
            _DECRYPTED.clear()
        try:
            _DECRYPTED[k] = fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeDecodeError, ValueError, TypeError):
            _DECRYPTED[k] = None
    return _DECRYPTED[k]


def decrypt(fernet, token):
    """fernet.decrypt(token).decode(), raising InvalidToken like it (memoized)."""
    plain = try_decrypt(fernet, token)
    if plain is None:
        raise InvalidToken
    return plain


# ---------------------------------------------------------------- Airflow's ORM

class Airflow:
    """One Airflow process: its fernet (key list) and its ORM behaviour."""

    def __init__(self, cur, schema, fernet, version="2"):
        self.cur, self.schema, self.fernet, self.version = cur, schema, fernet, version
        self.conn_cols = (["id", "conn_id", "conn_type", "host", "schema", "login", "password", "port",
                           "is_encrypted", "is_extra_encrypted", "extra"]
                          + (["description"] if version == "2" else []))
        self.var_cols = ["id", "key", "val", "is_encrypted"] + (["description"] if version == "2" else [])

    def t(self, table):
        return f'"{self.schema}".{table}'

    # -- model properties
    def set_password(self, obj, value):
        if value:
            obj["password"] = self.fernet.encrypt(value.encode()).decode()
            obj["is_encrypted"] = True

    def set_extra(self, obj, value):
        if value:
            obj["extra"] = self.fernet.encrypt(value.encode()).decode()
            obj["is_extra_encrypted"] = True
        else:
            obj["extra"] = value
            obj["is_extra_encrypted"] = False

    def set_val(self, obj, value):
        if value is not None:
            obj["val"] = self.fernet.encrypt(value.encode()).decode()
            obj["is_encrypted"] = True

    def get_password(self, row):
        if row["password"] and row["is_encrypted"]:
            return decrypt(self.fernet, row["password"])
        return row["password"]

    def get_extra(self, row):
        if row["extra"] and row["is_extra_encrypted"]:
            return decrypt(self.fernet, row["extra"])
        return row["extra"]

    def get_val(self, row):
        if row["val"] is not None and row["is_encrypted"]:
            try:
                return decrypt(self.fernet, row["val"])
            except InvalidToken:
                return None     # Airflow logs "Can't decrypt _val for key=..." and returns None
        return row["val"]

    # -- session operations
    def _insert(self, table, obj):
        cols = list(obj)
        self.cur.execute(f"INSERT INTO {self.t(table)} ({', '.join(cols)}) VALUES "
                         f"({', '.join(['%s'] * len(cols))}) RETURNING id", [obj[c] for c in cols])
        return self.cur.fetchone()[0]

    def _load(self, table, cols, where, value):
        self.cur.execute(f"SELECT {', '.join(cols)} FROM {self.t(table)} WHERE {where} = %s", (value,))
        row = self.cur.fetchone()
        return dict(zip(cols, row)) if row else None

    def _flush_update(self, table, loaded, obj):
        """SQLAlchemy: UPDATE of the changed attributes only; the sent values."""
        dirty = {c: v for c, v in obj.items() if c != "id" and (v != loaded[c] or type(v) is not type(loaded[c]))}
        if dirty:
            self.cur.execute(f"UPDATE {self.t(table)} SET {', '.join(c + ' = %s' for c in dirty)} WHERE id = %s",
                             list(dirty.values()) + [loaded["id"]])
        return dirty

    def new_connection(self, conn_id, conn_type, password=None, extra=None, **attrs):
        """Connection(...): the column values its INSERT will send."""
        obj = {"conn_id": conn_id, "conn_type": conn_type, "password": None, "extra": None,
               "is_encrypted": False, "is_extra_encrypted": False}
        obj.update(attrs)
        self.set_password(obj, password)
        self.set_extra(obj, extra)
        return obj

    def add(self, table, obj):
        """session.add(obj); session.commit()."""
        return self._insert(table, obj)

    def load_connection(self, conn_id):
        return self._load("connection", self.conn_cols, "conn_id", conn_id)

    def update_connection(self, conn_id, **changes):
        """Load, set attributes through the properties, flush: the columns sent."""
        loaded = self.load_connection(conn_id)
        obj = dict(loaded)
        for name, value in changes.items():
            if name == "password":
                self.set_password(obj, value)
            elif name == "extra":
                self.set_extra(obj, value)
            else:
                obj[name] = value
        return self._flush_update("connection", loaded, obj)

    def delete_connection(self, conn_id):
        row = self.load_connection(conn_id)
        self.cur.execute(f"DELETE FROM {self.t('connection')} WHERE id = %s", (row["id"],))

    def load_variable(self, key):
        return self._load("variable", self.var_cols, "key", key)

    def set_variable(self, key, value, description=None):
        """Variable.set(): delete the old row, add a new one; the values sent."""
        self.cur.execute(f"DELETE FROM {self.t('variable')} WHERE key = %s", (key,))
        obj = {"key": key, "val": None, "is_encrypted": False}
        if self.version == "2":
            obj["description"] = description
        self.set_val(obj, value)
        self._insert("variable", obj)
        return obj

    def update_variable(self, key, value):
        loaded = self.load_variable(key)
        obj = dict(loaded)
        self.set_val(obj, value)
        return self._flush_update("variable", loaded, obj)

    def rotate_fernet_key(self):
        """`airflow rotate-fernet-key`: re-encrypt every encrypted value under the first key."""
        self.cur.execute(f"SELECT conn_id FROM {self.t('connection')} ORDER BY id")
        sent = {}
        for (conn_id,) in self.cur.fetchall():
            loaded = self.load_connection(conn_id)
            obj = dict(loaded)
            if obj["password"] and obj["is_encrypted"]:
                obj["password"] = self.fernet.rotate(obj["password"].encode()).decode()
            if obj["extra"] and obj["is_extra_encrypted"]:
                obj["extra"] = self.fernet.rotate(obj["extra"].encode()).decode()
            sent[("connection", conn_id)] = self._flush_update("connection", loaded, obj)
        self.cur.execute(f"SELECT key FROM {self.t('variable')} ORDER BY id")
        for (key,) in self.cur.fetchall():
            loaded = self.load_variable(key)
            obj = dict(loaded)
            if obj["val"] and obj["is_encrypted"]:
                obj["val"] = self.fernet.rotate(obj["val"].encode()).decode()
            sent[("variable", key)] = self._flush_update("variable", loaded, obj)
        return sent


# ---------------------------------------------------------------- random values

# Code points by UTF-8 length; no NUL (text cannot hold it), no surrogates.
_RANGES = ((0x01, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF))
_WEIGHTS = (45, 15, 15, 5, 20)


def random_text(rng, nbytes):
    """UTF-8 text of exactly nbytes bytes mixing 1- to 4-byte characters."""
    out, size = [], 0
    rand = rng.random
    ranges = rng.choices(_RANGES, _WEIGHTS, k=nbytes)
    i = 0
    while size < nbytes:
        lo, hi = ranges[i]
        i += 1
        cp = lo + int(rand() * (hi - lo + 1))
        w = 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
        if size + w > nbytes:
            cp, w = 0x20 + int(rand() * 95), 1
        out.append(chr(cp))
        size += w
    return "".join(out)


def random_ascii(rng, n):
    return "".join(rng.choice(string.ascii_letters + string.digits + string.punctuation + " ") for _ in range(n))


def random_secret(rng, big=6000):
    r = rng.random()
    if r < 0.08:
        return None
    if r < 0.16:
        return ""
    if r < 0.30:
        return random_ascii(rng, 32)
    if r < 0.45:
        return random_ascii(rng, rng.randint(1, 64))
    if r < 0.90:
        return random_text(rng, rng.randint(1, 200))
    if r < 0.97:
        return random_text(rng, rng.randint(200, 2000))
    return random_text(rng, rng.randint(2000, big))


def _json_value(rng, depth):
    r = rng.random()
    if depth < 2 and r < 0.15:
        return {random_text(rng, rng.randint(1, 12)): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 2 and r < 0.25:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if r < 0.40:
        return rng.randint(-2**40, 2**40)
    if r < 0.45:
        return rng.random() * 1e6
    if r < 0.50:
        return rng.choice([True, False, None])
    return random_text(rng, rng.randint(0, 40))


def random_extra(rng, big=6000):
    r = rng.random()
    if r < 0.08:
        return None
    if r < 0.16:
        return ""
    if r < 0.95:
        d = {random_text(rng, rng.randint(1, 16)): _json_value(rng, 0) for _ in range(rng.randint(0, 6))}
    else:
        d = {"private_key": random_text(rng, rng.randint(1000, big)), "n": rng.randint(0, 9)}
    return json.dumps(d, ensure_ascii=rng.random() < 0.3)


def random_flag(rng):
    return rng.choice([None, True, False])


# ---------------------------------------------------------------- the model

PENDING = object()  # a token the server made: its text is learnt from the next read
SAME = object()     # "SET col = col"
KEEP = object()     # flag column not in the statement
NOT_READ = object() # the SQL helper was not asked for this row


@dataclass(frozen=True)
class ColState:
    value: object   # what Airflow's getter and the SQL reading helper must return
    raw: object     # the stored text, None, or PENDING
    flag: object    # True / False / None


class ModelError(AssertionError):
    pass


class Scenario:
    """Random Airflow and SQL writes on one schema's tables, checked after every step."""

    def __init__(self, cur, schema, rng, version, server_keys, airflow, seed_note):
        self.cur, self.schema, self.rng, self.version = cur, schema, rng, version
        self.cols = columns(version)
        self.server = multifernet(server_keys)
        self.airflow = airflow
        self.reader = None     # the Airflow whose getters read; None: self.airflow
        self.json_extras = True
        self.note = seed_note
        self.conns = {}   # conn_id -> {"password": ColState, "extra": ColState}
        self.vars = {}    # key -> {"val": ColState}
        self.serial = 0
        self.steps = 0
        self.checked = 0
        self.failed_writes = 0
        self.op_counts = {}
        self.big = 3800 if version == "1.10" else 6000

    # -- helpers
    def t(self, table):
        return f'"{self.schema}".{table}'

    def fail(self, msg):
        raise ModelError(f"{msg}\n[{self.note}; step {self.steps}; schema {self.schema}]")

    def new_conn_id(self):
        self.serial += 1
        tail = self.rng.choice(["", "", "", "_ü", "_🔑", "-x.y"])
        return f"conn_{self.serial}{tail}"

    def new_var_key(self):
        self.serial += 1
        tail = self.rng.choice(["", "", "_é", "_𝄞"])
        return f"var_{self.serial}{tail}"

    def pick(self, d, k=1):
        keys = list(d)
        if not keys:
            return []
        return self.rng.sample(keys, min(k, len(keys)))

    def use_server_keys(self, server_keys):
        self.cur.execute("SET conn_crypto.fernet_key = %s", (server_keys,))
        self.server = multifernet(server_keys)

    # -- trigger rules (protect_trigger.c), applied to the model
    def transition(self, col, old, sent, flag, insert):
        """The column's state after a write of raw text `sent` (or SAME) with flag `flag` (or KEEP)."""
        if insert:
            flag_in = None if flag is KEEP else flag
        else:
            flag_in = old.flag if flag is KEEP else flag
        raw = old.raw if sent is SAME else sent
        if not insert and raw == old.raw and flag_in == old.flag and type(flag_in) is type(old.flag):
            return old      # untouched: the trigger leaves it alone
        if raw is None or (raw == "" and not col.encrypt_empty):
            return ColState(raw, raw, flag_in)
        plain = try_decrypt(self.server, raw)
        if plain is not None:
            return ColState(plain, raw, True)   # a token of the keyring: kept as is
        return ColState(raw, PENDING, True)     # plaintext: encrypted under the primary key

    def would_fail(self, col, old, sent, insert, from_airflow):
        """SQLSTATE the write must fail with (varchar limit of 1.10), or None."""
        if col.max_chars is None or sent is SAME or sent is None or sent == "":
            return None
        if from_airflow or try_decrypt(self.server, sent) is not None:
            return TOO_LONG if len(sent) > col.max_chars else None
        if len(sent) > col.max_chars:
            return TOO_LONG     # the plaintext itself does not fit
        if not insert and old is not None and sent == old.raw:
            return None         # untouched legacy plaintext
        return TOO_LONG if token_len(len(sent.encode())) > col.max_chars else None

    # -- statement execution with expected failure
    def run(self, expected_error, fn):
        """Run fn(); it must fail with expected_error when that is set, and succeed otherwise."""
        try:
            fn()
        except psycopg2.Error as e:
            if expected_error is None or e.pgcode != expected_error:
                self.fail(f"unexpected error {e.pgcode}: {e.pgerror}"
                          f"{' (expected ' + expected_error + ')' if expected_error else ''}")
            self.failed_writes += 1
            return False
        if expected_error is not None:
            self.fail(f"write succeeded, expected SQLSTATE {expected_error}")
        return True

    # -- checking
    def conn_rows(self, ids=None, sql_ids=None):
        """Rows (all, or those of ids) with the SQL helpers' reads (of every row, or of sql_ids only)."""
        desc = ", description" if self.version == "2" else ""
        sql_if = "" if sql_ids is None else "CASE WHEN conn_id = ANY(%(sql_ids)s) THEN "
        end = "" if sql_ids is None else " END"
        q = (f"SELECT id, conn_id, conn_type, host, schema, login, port{desc}, password, is_encrypted, "
             f"extra, is_extra_encrypted, conn_id = ANY(%(sql_ids)s) OR %(all)s AS sql_read, "
             f"{sql_if}conn_crypto.connection_password(conn_id, %(s)s){end} AS sql_password, "
             f"{sql_if}conn_crypto.connection_extra(conn_id, %(s)s){end} AS sql_extra FROM {self.t('connection')}")
        if ids is not None:
            q += " WHERE conn_id = ANY(%(ids)s)"
        with self.cur.connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as c:
            c.execute(q, {"s": self.schema, "ids": list(ids or ()), "sql_ids": list(sql_ids or ()),
                          "all": sql_ids is None})
            return c.fetchall()

    def var_rows(self, keys=None, sql_keys=None):
        sql_if = "" if sql_keys is None else "CASE WHEN key = ANY(%(sql_keys)s) THEN "
        end = "" if sql_keys is None else " END"
        q = (f"SELECT id, key, val, is_encrypted, key = ANY(%(sql_keys)s) OR %(all)s AS sql_read, "
             f"{sql_if}conn_crypto.variable_value(key, %(s)s){end} AS sql_val FROM {self.t('variable')}")
        if keys is not None:
            q += " WHERE key = ANY(%(keys)s)"
        with self.cur.connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as c:
            c.execute(q, {"s": self.schema, "keys": list(keys or ()), "sql_keys": list(sql_keys or ()),
                          "all": sql_keys is None})
            return c.fetchall()

    def check_col(self, where, col, st, stored, flag, airflow_read, sql_read):
        """One stored value against the model; returns the state with the raw text learnt."""
        ctx = f"{where}.{col.name}"
        if flag != st.flag or type(flag) is not type(st.flag):
            self.fail(f"{ctx}: flag {col.flag} is {flag!r}, expected {st.flag!r} (stored {stored!r:.80})")
        if st.raw is PENDING:
            if not stored or try_decrypt(self.server, stored) is None:
                self.fail(f"{ctx}: expected a token of the server keyring, stored {stored!r:.120}")
        elif stored != st.raw:
            self.fail(f"{ctx}: stored value changed: {stored!r:.120}, expected {st.raw!r:.120}")
        if stored:
            plain = try_decrypt(self.server, stored)
            if plain is not None:
                if not flag:
                    self.fail(f"{ctx}: a token with flag {flag!r}")
                if plain != st.value:
                    inner = try_decrypt(self.server, plain)
                    self.fail(f"{ctx}: stored token decrypts to {plain!r:.120}, expected {st.value!r:.120}"
                              + (" -- DOUBLE ENCRYPTED" if inner is not None else ""))
            elif flag:
                self.fail(f"{ctx}: non-token {stored!r:.80} with flag true")
        if stored == "" and col.encrypt_empty and flag:
            self.fail(f"{ctx}: empty value left with flag true")
        if airflow_read != st.value:
            self.fail(f"{ctx}: Airflow reads {airflow_read!r:.120}, expected {st.value!r:.120}")
        if sql_read is not NOT_READ and sql_read != st.value:
            self.fail(f"{ctx}: SQL helper reads {sql_read!r:.120}, expected {st.value!r:.120}")
        self.checked += 1
        return replace(st, raw=stored)

    def check(self, conn_ids=(), var_keys=(), full=False, sql_sample=None):
        """Check the rows of conn_ids and var_keys, or every row when full. The SQL
        helpers read every checked row, or (sql_sample=n) only n random ones of them."""
        reader = self.reader or self.airflow
        conn_ids, var_keys = set(conn_ids), set(var_keys)
        sql_ids = sql_keys = None
        if sql_sample is not None:
            sql_ids = self.pick(self.conns, sql_sample)
            sql_keys = self.pick(self.vars, sql_sample)
        rows = self.conn_rows(None if full else conn_ids, sql_ids) if full or conn_ids else []
        seen = set()
        for r in rows:
            cid = r["conn_id"]
            if cid in seen:
                self.fail(f"connection {cid!r} twice")
            seen.add(cid)
            if cid not in self.conns:
                self.fail(f"connection {cid!r} exists, expected none")
            m = self.conns[cid]
            sql_pw, sql_extra = (r["sql_password"], r["sql_extra"]) if r["sql_read"] else (NOT_READ, NOT_READ)
            m["password"] = self.check_col(f"connection[{cid}]", self.cols["password"], m["password"], r["password"],
                                           r["is_encrypted"], reader.get_password(r), sql_pw)
            m["extra"] = self.check_col(f"connection[{cid}]", self.cols["extra"], m["extra"], r["extra"],
                                        r["is_extra_encrypted"], reader.get_extra(r), sql_extra)
            if self.json_extras and r["extra"] and r["is_extra_encrypted"]:
                json.loads(m["extra"].value)    # extras are JSON documents, and still are
        expect = set(self.conns) if full else {c for c in conn_ids if c in self.conns}
        if seen != expect:
            self.fail(f"connections missing: {sorted(expect - seen)[:5]}")
        rows = self.var_rows(None if full else var_keys, sql_keys) if full or var_keys else []
        seen = set()
        for r in rows:
            k = r["key"]
            seen.add(k)
            if k not in self.vars:
                self.fail(f"variable {k!r} exists, expected none")
            m = self.vars[k]
            m["val"] = self.check_col(f"variable[{k}]", self.cols["val"], m["val"], r["val"], r["is_encrypted"],
                                      reader.get_val(r), r["sql_val"] if r["sql_read"] else NOT_READ)
        expect = set(self.vars) if full else {k for k in var_keys if k in self.vars}
        if seen != expect:
            self.fail(f"variables missing: {sorted(expect - seen)[:5]}")

    # -- legacy rows: written by Airflow without a key before protection was enabled
    def add_legacy_rows(self, n_conn, n_var):
        for _ in range(n_conn):
            cid = self.new_conn_id()
            pw, extra = self.rng.choice([None, random_ascii(self.rng, 12)]), self.rng.choice(["", None, '{"a": 1}'])
            # NullFernet: set_password stores the value as is, is_encrypted = False
            self.cur.execute(f"INSERT INTO {self.t('connection')} (conn_id, conn_type, password, extra, "
                             f"is_encrypted, is_extra_encrypted) VALUES (%s, 'http', %s, %s, false, false)",
                             (cid, pw, extra))
            self.conns[cid] = {"password": ColState(pw, pw, False), "extra": ColState(extra, extra, False)}
        for _ in range(n_var):
            k = self.new_var_key()
            v = self.rng.choice(["", random_ascii(self.rng, 10)])
            self.cur.execute(f"INSERT INTO {self.t('variable')} (key, val, is_encrypted) VALUES (%s, %s, false)",
                             (k, v))
            self.vars[k] = {"val": ColState(v, v, False)}

    # ================================================================ operations
    # Each returns (conn_ids, var_keys, full) to check.

    # -- Airflow's path
    def op_af_add_connection(self):
        cid = self.new_conn_id()
        pw, extra = random_secret(self.rng, self.big), random_extra(self.rng, self.big)
        attrs = {"host": random_ascii(self.rng, 10), "port": self.rng.choice([None, 5432, 443])}
        if self.version == "2":
            attrs["description"] = self.rng.choice([None, random_text(self.rng, 30)])
        obj = self.airflow.new_connection(cid, "postgres", pw, extra, **attrs)
        err = (self.would_fail(self.cols["password"], None, obj["password"], True, True)
               or self.would_fail(self.cols["extra"], None, obj["extra"], True, True))
        if self.run(err, lambda: self.airflow.add("connection", obj)):
            self.conns[cid] = {
                "password": self.transition(self.cols["password"], None, obj["password"], obj["is_encrypted"], True),
                "extra": self.transition(self.cols["extra"], None, obj["extra"], obj["is_extra_encrypted"], True)}
        return [cid], [], False

    def _af_update(self, changes):
        cid = self.pick(self.conns)
        if not cid:
            return self.op_af_add_connection()
        cid = cid[0]
        loaded = self.airflow.load_connection(cid)
        obj = dict(loaded)
        for name, value in changes.items():
            {"password": self.airflow.set_password, "extra": self.airflow.set_extra}.get(
                name, lambda o, v, n=name: o.__setitem__(n, v))(obj, value)
        # what SQLAlchemy will send (its tokens are new: fresh IV and time)
        err = None
        for name in ("password", "extra"):
            if obj[name] != loaded[name]:
                err = err or self.would_fail(self.cols[name], self.conns[cid][name], obj[name], False, True)
        sent = {}
        if self.run(err, lambda: sent.update(self.airflow._flush_update("connection", loaded, obj))):
            m = self.conns[cid]
            fired = any(c in sent for c in ("password", "extra", "is_encrypted", "is_extra_encrypted"))
            if fired:       # UPDATE OF: the trigger sees every protected column of the row
                for name, flagcol in (("password", "is_encrypted"), ("extra", "is_extra_encrypted")):
                    m[name] = self.transition(self.cols[name], m[name], sent.get(name, SAME),
                                              sent.get(flagcol, KEEP), False)
        return [cid], [], False

    def op_af_set_password(self):
        return self._af_update({"password": random_secret(self.rng, self.big)})

    def op_af_set_extra(self):
        return self._af_update({"extra": random_extra(self.rng, self.big)})

    def op_af_edit(self):
        ch = {"password": random_secret(self.rng, self.big), "extra": random_extra(self.rng, self.big),
              "host": random_ascii(self.rng, 8), "port": self.rng.randint(1, 65535)}
        if self.version == "2":
            ch["description"] = random_text(self.rng, 20)
        return self._af_update(ch)

    def op_af_unrelated(self):
        ch = {"port": self.rng.randint(1, 65535), "login": random_text(self.rng, 10)}
        if self.version == "2":
            ch["description"] = self.rng.choice([None, random_text(self.rng, 20)])
        return self._af_update(ch)

    def op_af_delete(self):
        cid = self.pick(self.conns)
        if cid:
            self.airflow.delete_connection(cid[0])
            del self.conns[cid[0]]
        return cid, [], False

    def op_af_set_variable(self):
        key = self.pick(self.vars)[0] if self.vars and self.rng.random() < 0.4 else self.new_var_key()
        v = self.rng.choice([random_secret(self.rng, self.big), random_extra(self.rng, self.big), ""])
        v = "" if v is None else v      # Variable.set() stores str(value)
        sent = self.airflow.set_variable(key, v, description=self.rng.choice([None, "d"]))
        self.vars[key] = {"val": self.transition(self.cols["val"], None, sent["val"], sent["is_encrypted"], True)}
        return [], [key], False

    def op_af_new_variable_none(self):
        key = self.new_var_key()
        sent = self.airflow.set_variable(key, None)   # Variable(key=k) with no value
        self.vars[key] = {"val": self.transition(self.cols["val"], None, sent["val"], sent["is_encrypted"], True)}
        return [], [key], False

    def op_af_update_variable(self):
        key = self.pick(self.vars)
        if not key:
            return self.op_af_set_variable()
        key = key[0]
        v = self.rng.choice([random_secret(self.rng, self.big) or "", random_extra(self.rng, self.big) or ""])
        sent = self.airflow.update_variable(key, v)
        if sent:
            self.vars[key]["val"] = self.transition(self.cols["val"], self.vars[key]["val"], sent.get("val", SAME),
                                                    sent.get("is_encrypted", KEEP), False)
        return [], [key], False

    # -- plain SQL path
    def _sql_conn_rows(self, n, with_flags):
        rows = []
        for _ in range(n):
            rows.append({"conn_id": self.new_conn_id(), "pw": random_secret(self.rng, self.big),
                         "extra": random_extra(self.rng, self.big),
                         "f1": random_flag(self.rng) if with_flags else KEEP,
                         "f2": random_flag(self.rng) if with_flags else KEEP})
        return rows

    def _insert_err(self, rows):
        for r in rows:
            e = (self.would_fail(self.cols["password"], None, r["pw"], True, False)
                 or self.would_fail(self.cols["extra"], None, r["extra"], True, False))
            if e:
                return e
        return None

    def _apply_conn_inserts(self, rows):
        for r in rows:
            self.conns[r["conn_id"]] = {
                "password": self.transition(self.cols["password"], None, r["pw"], r["f1"], True),
                "extra": self.transition(self.cols["extra"], None, r["extra"], r["f2"], True)}

    def op_sql_insert(self):
        """INSERT with plaintext, flags omitted (NULL) or random; one row or many."""
        n = 1 if self.rng.random() < 0.5 else self.rng.randint(2, 25)
        with_flags = self.rng.random() < 0.3
        rows = self._sql_conn_rows(n, with_flags)
        cols = "conn_id, conn_type, password, extra" + (", is_encrypted, is_extra_encrypted" if with_flags else "")
        vals = [(r["conn_id"], "http", r["pw"], r["extra"]) + ((r["f1"], r["f2"]) if with_flags else ())
                for r in rows]
        q = f"INSERT INTO {self.t('connection')} ({cols}) VALUES %s"
        if self.run(self._insert_err(rows),
                    lambda: psycopg2.extras.execute_values(self.cur, q, vals, page_size=len(vals))):
            self._apply_conn_inserts(rows)
        return [r["conn_id"] for r in rows], [], False

    def op_sql_copy(self):
        n = self.rng.randint(1, 30)
        with_flags = self.rng.random() < 0.3
        rows = self._sql_conn_rows(n, with_flags)
        cols = "conn_id, conn_type, password, extra" + (", is_encrypted, is_extra_encrypted" if with_flags else "")
        buf = io.StringIO()
        for r in rows:
            fields = [r["conn_id"], "http", r["pw"], r["extra"]] + ([r["f1"], r["f2"]] if with_flags else [])
            buf.write("\t".join(copy_field(f) for f in fields) + "\n")
        buf.seek(0)
        if self.run(self._insert_err(rows),
                    lambda: self.cur.copy_expert(f"COPY {self.t('connection')} ({cols}) FROM STDIN", buf)):
            self._apply_conn_inserts(rows)
        return [r["conn_id"] for r in rows], [], False

    def op_sql_upsert(self):
        """INSERT ... ON CONFLICT (conn_id) DO UPDATE, on a mix of new and existing ids (2.x: conn_id unique)."""
        if self.version != "2":
            return self.op_sql_insert()
        existing = self.pick(self.conns, self.rng.randint(0, 6))
        rows = self._sql_conn_rows(self.rng.randint(0, 6), False)
        for cid in existing:
            rows.append({"conn_id": cid, "pw": random_secret(self.rng, self.big),
                         "extra": random_extra(self.rng, self.big), "f1": KEEP, "f2": KEEP})
        if not rows:
            return [], [], False
        self.rng.shuffle(rows)
        with_flags = self.rng.random() < 0.4
        set_extra = self.rng.random() < 0.6
        if with_flags:
            for r in rows:
                r["f1"], r["f2"] = random_flag(self.rng), random_flag(self.rng)
        sets = ["password = excluded.password"] + (["extra = excluded.extra"] if set_extra else [])
        if with_flags and self.rng.random() < 0.5:
            sets.append("is_encrypted = excluded.is_encrypted")
        cols = "conn_id, conn_type, password, extra" + (", is_encrypted, is_extra_encrypted" if with_flags else "")
        vals = [(r["conn_id"], "http", r["pw"], r["extra"]) + ((r["f1"], r["f2"]) if with_flags else ())
                for r in rows]
        q = (f"INSERT INTO {self.t('connection')} ({cols}) VALUES %s ON CONFLICT (conn_id) DO UPDATE SET "
             + ", ".join(sets))
        if self.run(None, lambda: psycopg2.extras.execute_values(self.cur, q, vals, page_size=len(vals))):
            for r in rows:
                if r["conn_id"] not in self.conns:
                    self._apply_conn_inserts([r])
                    continue
                m = self.conns[r["conn_id"]]
                # excluded.* is the proposed row after the BEFORE INSERT trigger
                ex_pw = self.transition(self.cols["password"], None, r["pw"], r["f1"], True)
                ex_extra = self.transition(self.cols["extra"], None, r["extra"], r["f2"], True)
                flag = ex_pw.flag if "is_encrypted = excluded.is_encrypted" in sets else KEEP
                m["password"] = self._via_token(self.cols["password"], m["password"], ex_pw, flag)
                m["extra"] = (self._via_token(self.cols["extra"], m["extra"], ex_extra, KEEP) if set_extra
                              else self.transition(self.cols["extra"], m["extra"], SAME, KEEP, False))
        return [r["conn_id"] for r in rows], [], False

    def _via_token(self, col, old, excluded, flag):
        """UPDATE SET col = <value the BEFORE INSERT trigger produced>."""
        if excluded.raw is PENDING:     # a fresh token of the server's primary key
            return ColState(excluded.value, PENDING, True)
        return self.transition(col, old, excluded.raw, flag, False)

    def op_sql_update_password(self):
        """UPDATE password = 'plain' (and maybe the flag) on one or a few rows."""
        ids = self.pick(self.conns, 1 if self.rng.random() < 0.7 else self.rng.randint(2, 10))
        name = self.rng.choice(["password", "extra"])
        col = self.cols[name]
        val = random_secret(self.rng, self.big) if name == "password" else random_extra(self.rng, self.big)
        flag = random_flag(self.rng) if self.rng.random() < 0.3 else KEEP
        sets = f"{name} = %s" + (f", {col.flag} = %s" if flag is not KEEP else "")
        args = [val] + ([flag] if flag is not KEEP else []) + [list(ids)]
        err = None
        for cid in ids:
            err = err or self.would_fail(col, self.conns[cid][name], val, False, False)
        if self.run(err, lambda: self.cur.execute(
                f"UPDATE {self.t('connection')} SET {sets} WHERE conn_id = ANY(%s)", args)):
            for cid in ids:
                m = self.conns[cid]
                m[name] = self.transition(col, m[name], val, flag, False)
                other = "extra" if name == "password" else "password"
                m[other] = self.transition(self.cols[other], m[other], SAME, KEEP, False)
        return ids, [], False

    def op_sql_update_from(self):
        """UPDATE ... FROM (VALUES ...) with a password per row."""
        ids = self.pick(self.conns, self.rng.randint(1, 12))
        vals = [(cid, random_secret(self.rng, self.big)) for cid in ids]
        err = None
        for cid, pw in vals:
            err = err or self.would_fail(self.cols["password"], self.conns[cid]["password"], pw, False, False)
        q = (f"UPDATE {self.t('connection')} c SET password = v.pw FROM (VALUES %s) AS v(conn_id, pw) "
             f"WHERE c.conn_id = v.conn_id")
        if ids and self.run(err, lambda: psycopg2.extras.execute_values(self.cur, q, vals, page_size=len(vals))):
            for cid, pw in vals:
                m = self.conns[cid]
                m["password"] = self.transition(self.cols["password"], m["password"], pw, KEEP, False)
        return ids, [], False

    def op_sql_orm_full_row(self):
        """UPDATE password = password, extra = extra, ... (an ORM's full-row update)."""
        whole = self.rng.random() < 0.1
        ids = list(self.conns) if whole else self.pick(self.conns, self.rng.randint(1, 20))
        flags = self.rng.random() < 0.5
        sets = "password = password, extra = extra, port = coalesce(port, 0) + 1" + (
            ", is_encrypted = is_encrypted, is_extra_encrypted = is_extra_encrypted" if flags else "")
        self.cur.execute(f"UPDATE {self.t('connection')} SET {sets}"
                         + ("" if whole else " WHERE conn_id = ANY(%s)"), None if whole else (list(ids),))
        for cid in ids:
            m = self.conns[cid]
            for name in ("password", "extra"):
                m[name] = self.transition(self.cols[name], m[name], SAME, KEEP, False)
        return ids, [], whole

    def op_sql_unrelated(self):
        """UPDATE of columns the trigger does not watch: the tokens stay byte-identical."""
        whole = self.rng.random() < 0.1
        ids = list(self.conns) if whole else self.pick(self.conns, self.rng.randint(1, 20))
        sets = self.rng.choice(["port = coalesce(port, 0) + 1", "host = %s", "login = %s, port = 1"]
                               + (["description = %s"] if self.version == "2" else []))
        args = [random_text(self.rng, 12)] * sets.count("%s")
        self.cur.execute(f"UPDATE {self.t('connection')} SET {sets}" + ("" if whole else " WHERE conn_id = ANY(%s)"),
                         args + ([] if whole else [list(ids)]))
        return ids, [], whole

    def op_sql_flag_only(self):
        """UPDATE is_encrypted = false / NULL / true: the trigger corrects it for tokens."""
        ids = self.pick(self.conns, self.rng.randint(1, 8))
        name = self.rng.choice(["password", "extra"])
        col = self.cols[name]
        flag = random_flag(self.rng)
        self.cur.execute(f"UPDATE {self.t('connection')} SET {col.flag} = %s WHERE conn_id = ANY(%s)",
                         (flag, list(ids)))
        for cid in ids:
            m = self.conns[cid]
            m[name] = self.transition(col, m[name], SAME, flag, False)
            other = "extra" if name == "password" else "password"
            m[other] = self.transition(self.cols[other], m[other], SAME, KEEP, False)
        return ids, [], False

    def op_sql_delete(self):
        ids = self.pick(self.conns, self.rng.randint(1, 3))
        self.cur.execute(f"DELETE FROM {self.t('connection')} WHERE conn_id = ANY(%s)", (list(ids),))
        for cid in ids:
            del self.conns[cid]
        return ids, [], False

    # -- plain SQL on variables
    def _sql_var_rows(self, n, with_flags):
        return [{"key": self.new_var_key(), "val": random_secret(self.rng, self.big),
                 "f": random_flag(self.rng) if with_flags else KEEP} for _ in range(n)]

    def op_sql_var_insert(self):
        rows = self._sql_var_rows(self.rng.randint(1, 20), self.rng.random() < 0.3)
        with_flags = rows[0]["f"] is not KEEP
        vals = [(r["key"], r["val"]) + ((r["f"],) if with_flags else ()) for r in rows]
        cols = "key, val" + (", is_encrypted" if with_flags else "")
        if self.rng.random() < 0.5:
            psycopg2.extras.execute_values(self.cur, f"INSERT INTO {self.t('variable')} ({cols}) VALUES %s",
                                           vals, page_size=len(vals))
        else:
            buf = io.StringIO("".join("\t".join(copy_field(f) for f in v) + "\n" for v in vals))
            self.cur.copy_expert(f"COPY {self.t('variable')} ({cols}) FROM STDIN", buf)
        for r in rows:
            self.vars[r["key"]] = {"val": self.transition(self.cols["val"], None, r["val"], r["f"], True)}
        return [], [r["key"] for r in rows], False

    def op_sql_var_upsert(self):
        existing = self.pick(self.vars, self.rng.randint(1, 6))
        rows = self._sql_var_rows(self.rng.randint(0, 4), False)
        rows += [{"key": k, "val": random_secret(self.rng, self.big), "f": KEEP} for k in existing]
        if not rows:
            return [], [], False
        q = (f"INSERT INTO {self.t('variable')} (key, val) VALUES %s "
             f"ON CONFLICT (key) DO UPDATE SET val = excluded.val")
        psycopg2.extras.execute_values(self.cur, q, [(r["key"], r["val"]) for r in rows], page_size=len(rows))
        col = self.cols["val"]
        for r in rows:
            ex = self.transition(col, None, r["val"], KEEP, True)
            if r["key"] not in self.vars:
                self.vars[r["key"]] = {"val": ex}
            else:
                self.vars[r["key"]]["val"] = self._via_token(col, self.vars[r["key"]]["val"], ex, KEEP)
        return [], [r["key"] for r in rows], False

    def op_sql_var_update(self):
        keys = self.pick(self.vars, self.rng.randint(1, 5))
        col = self.cols["val"]
        kind = self.rng.random()
        if kind < 0.5:
            v = random_secret(self.rng, self.big)
            self.cur.execute(f"UPDATE {self.t('variable')} SET val = %s WHERE key = ANY(%s)", (v, list(keys)))
            change = (v, KEEP)
        elif kind < 0.7:
            f = random_flag(self.rng)
            self.cur.execute(f"UPDATE {self.t('variable')} SET is_encrypted = %s WHERE key = ANY(%s)", (f, list(keys)))
            change = (SAME, f)
        elif kind < 0.85:
            self.cur.execute(f"UPDATE {self.t('variable')} SET val = val, is_encrypted = is_encrypted "
                             f"WHERE key = ANY(%s)", (list(keys),))
            change = (SAME, KEEP)
        else:
            col_set = "description = %s" if self.version == "2" else "key = key"
            self.cur.execute(f"UPDATE {self.t('variable')} SET {col_set} WHERE key = ANY(%s)",
                             ([random_text(self.rng, 9)] if self.version == "2" else []) + [list(keys)])
            change = (SAME, KEEP)
        for k in keys:
            self.vars[k]["val"] = self.transition(col, self.vars[k]["val"], change[0], change[1], False)
        return [], keys, False

    def op_sql_var_delete(self):
        keys = self.pick(self.vars, 1)
        self.cur.execute(f"DELETE FROM {self.t('variable')} WHERE key = ANY(%s)", (list(keys),))
        for k in keys:
            del self.vars[k]
        return [], keys, False

    OPS = {
        "af_add_connection": 12, "af_set_password": 10, "af_set_extra": 6, "af_edit": 5,
        "af_unrelated": 4, "af_delete": 1, "af_set_variable": 6, "af_new_variable_none": 1,
        "af_update_variable": 5, "sql_insert": 10, "sql_copy": 4, "sql_upsert": 5,
        "sql_update_password": 8, "sql_update_from": 3, "sql_orm_full_row": 3, "sql_unrelated": 3,
        "sql_flag_only": 3, "sql_delete": 1, "sql_var_insert": 4, "sql_var_upsert": 3,
        "sql_var_update": 5, "sql_var_delete": 1,
    }

    def step(self, full_every=300):
        """One random operation, then a check of what it touched: every row after a
        whole-table UPDATE (SQL helpers on a sample), every row and both reads every
        full_every steps."""
        names = list(self.OPS)
        name = self.rng.choices(names, [self.OPS[n] for n in names])[0]
        self.steps += 1
        self.op_counts[name] = self.op_counts.get(name, 0) + 1
        conn_ids, var_keys, whole = getattr(self, "op_" + name)()
        if self.steps % full_every == 0:
            self.check(full=True)
        elif whole:
            self.check(full=True, sql_sample=100)
        else:
            self.check(conn_ids, var_keys)

    def run_steps(self, n, full_every=300):
        for _ in range(n):
            self.step(full_every)
        self.check(full=True)


def copy_field(v):
    """A value in COPY's text format."""
    if v is None:
        return r"\N"
    if v is True:
        return "t"
    if v is False:
        return "f"
    return (str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r"))
