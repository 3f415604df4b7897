#!/usr/bin/python3
"""Small helpers for test/suites/kms.sh and bench/kms_bench.sh (run with /usr/bin/python3).

  extra DIR CERT KEY CA KEY_ID [NAME=VALUE ...]
      A KMS connection's extra as JSON: client_cert, client_key, ca_cert read
      from the PEM files DIR/CERT, DIR/KEY, DIR/CA, key_id, and any NAME=VALUE.
  bad-extra DIR KEY
      Malformed JSON (truncated) that holds the PEM text of DIR/KEY.
  wrapped-info WRAPPED
      Prints "MODE KEY_ID" (gcm|cbc) of a kmip1: wrapped key.
  server-decrypt TOKEN
      Decrypts TOKEN with MultiFernet(CC_FERNET_KEY) and prints it; exit 1 if
      no key of the keyring decrypts it.
  get FILE CONN_ID FIELD
      One field of an airflow_kms_reader.py result ("<null>" for null).
  check FILE SPEC ...
      SPEC is CONN_ID:KEYRING[:MODE[:KEY_ID]] (KEYRING kms|server, MODE gcm|cbc
      or "", KEY_ID or ""). Checks that the reader result FILE read the
      connection without error, with that keyring, mode and key id, and that
      password and extra are exp_pw(CONN_ID) and exp_extra(CONN_ID) (the test
      values the suite writes). Prints each mismatch; exit 1 on any.
  rewrap-compare BEFORE AFTER NEW_KEY_ID
      Reader results before and after rewrap_kms: the same connections, each
      with the same data key, password and extra; each conn_key different; the
      key id NEW_KEY_ID unless the row's own _kms_extra names one (given as
      CONN_ID=KEY_ID arguments after NEW_KEY_ID). Exit 1 on any difference.
"""
import base64
import json
import os
import sys

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def exp_pw(conn_id):
    return 'pw-%s-ü€ "q"' % conn_id


def exp_extra(conn_id):
    return '{"id": "%s", "u": "ü"}' % conn_id


def read(directory, name):
    with open(os.path.join(directory, name)) as f:
        return f.read()


def cmd_extra(directory, cert, key, ca, key_id, *pairs):
    d = {"client_cert": read(directory, cert), "client_key": read(directory, key),
         "ca_cert": read(directory, ca), "key_id": key_id}
    for p in pairs:
        name, _, value = p.partition("=")
        d[name] = value
    print(json.dumps(d))
    return 0


def cmd_bad_extra(directory, key):
    print('{"key_id": "1", "client_key": %s, "ca_cert": ' % json.dumps(read(directory, key)))
    return 0


def wrapped_info(text):
    body = text[len("kmip1:"):]
    blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return {1: "gcm", 2: "cbc"}.get(blob[0], "?%d" % blob[0]), blob[2:2 + blob[1]].decode()


def cmd_wrapped_info(wrapped):
    print("%s %s" % wrapped_info(wrapped))
    return 0


def cmd_server_decrypt(token):
    keys = [k for k in os.environ["CC_FERNET_KEY"].split(",") if k]
    try:
        print(MultiFernet([Fernet(k) for k in keys]).decrypt(token.encode()).decode())
    except InvalidToken:
        print("<not a token of the server keyring>")
        return 1
    return 0


def load(path):
    with open(path) as f:
        return json.load(f)


def cmd_get(path, conn_id, field):
    v = load(path).get(conn_id, {}).get(field)
    print("<null>" if v is None else v)
    return 0


def cmd_check(path, *specs):
    result = load(path)
    bad = 0
    for spec in specs:
        parts = spec.split(":")
        conn_id, keyring = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else ""
        key_id = parts[3] if len(parts) > 3 else ""
        r = result.get(conn_id)
        problems = []
        if r is None:
            problems.append("not read")
        elif "error" in r:
            problems.append("unreadable: " + r["error"])
        else:
            if r["keyring"] != keyring:
                problems.append("keyring %s, expected %s" % (r["keyring"], keyring))
            if mode and r["mode"] != mode:
                problems.append("mode %s, expected %s" % (r["mode"], mode))
            if key_id and r["key_id"] != key_id:
                problems.append("key id %s, expected %s" % (r["key_id"], key_id))
            if r["password"] != exp_pw(conn_id):
                problems.append("password %r, expected %r" % (r["password"], exp_pw(conn_id)))
            if r["extra"] != exp_extra(conn_id):
                problems.append("extra %r, expected %r" % (r["extra"], exp_extra(conn_id)))
        if problems:
            bad += 1
            print("%s: %s" % (conn_id, "; ".join(problems)))
    return 1 if bad else 0


def cmd_rewrap_compare(before_path, after_path, new_key_id, *own):
    before, after = load(before_path), load(after_path)
    own_keys = dict(o.split("=", 1) for o in own)
    bad = 0
    if set(before) != set(after):
        print("connections differ: %s" % sorted(set(before) ^ set(after)))
        bad += 1
    for conn_id in sorted(set(before) & set(after)):
        b, a = before[conn_id], after[conn_id]
        problems = []
        if "error" in b or "error" in a:
            problems.append("unreadable: %s / %s" % (b.get("error"), a.get("error")))
        else:
            if a["data_key"] != b["data_key"]:
                problems.append("data key changed")
            if a["conn_key"] == b["conn_key"]:
                problems.append("conn_key not re-wrapped")
            if (a["password"], a["extra"]) != (b["password"], b["extra"]):
                problems.append("values changed")
            want = own_keys.get(conn_id, new_key_id)
            if a["key_id"] != want:
                problems.append("wrapped with key %s, expected %s" % (a["key_id"], want))
            if a["mode"] != b["mode"]:
                problems.append("mode %s -> %s" % (b["mode"], a["mode"]))
        if problems:
            bad += 1
            print("%s: %s" % (conn_id, "; ".join(problems)))
    return 1 if bad else 0


COMMANDS = {
    "extra": cmd_extra,
    "bad-extra": cmd_bad_extra,
    "wrapped-info": cmd_wrapped_info,
    "server-decrypt": cmd_server_decrypt,
    "get": cmd_get,
    "check": cmd_check,
    "rewrap-compare": cmd_rewrap_compare,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
