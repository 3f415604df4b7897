#!/usr/bin/python3
"""Reads Airflow connections the way Airflow's KMS design says Airflow would,
without any help from conn_crypto: an independent check of what the
extension stores.

  airflow_kms_reader.py [--schema S] [--all | CONN_ID ...]

Connection to PostgreSQL: CC_PGHOST (127.0.0.1), CC_PGPORT (5432), CC_PGUSER
(postgres), CC_PGDATABASE (postgres). The server keyring: CC_FERNET_KEY
(comma-separated, the first key encrypts; like AIRFLOW__CORE__FERNET_KEY).

For each connection (--all: every connection with _kms_conn_id set):
  1. fetch password, extra, their flags, conn_key, _kms_conn_id, _kms_extra;
  2. no _kms_conn_id: decrypt flagged values with MultiFernet(server keyring);
  3. _kms_conn_id set: read the KMS connection's row (conn_type, host, port,
     extra), decrypt its extra with the server keyring when flagged, merge
     the row's _kms_extra over it, write client_cert/client_key/ca_cert to a
     private temporary directory, and unwrap conn_key with PyKMIP's
     ProxyKmipClient (KMIP Decrypt; the "kmip1:" format is decoded here);
     the 32-byte data key, url-safe base64-encoded, is the row's Fernet key;
  4. decrypt password and extra (when flagged) with that Fernet key.

Prints one JSON object: {conn_id: {"password", "extra", "keyring" ("kms" |
"server"), "kms_conn_id", "conn_key", "data_key" (hex or null), "key_id",
"mode" ("gcm" | "cbc" | null)}}. Exit status 1 (with the reason on stderr) when
a connection is missing or a value cannot be read.
"""
import base64
import json
import logging
import os
import shutil
import sys
import tempfile

import psycopg2
from cryptography.fernet import Fernet, MultiFernet
from kmip import enums
from kmip.core import primitives
from kmip.core.attributes import CryptographicParameters
from kmip.core.messages import messages, payloads
from kmip.pie.client import ProxyKmipClient

logging.disable(logging.WARNING)

PREFIX = "kmip1:"
MODES = {1: "gcm", 2: "cbc"}


class ReadError(Exception):
    pass


def decode_wrapped(text):
    """kmip1: + unpadded url-safe base64 of mode | len | key_id | IV | [tag] | ciphertext."""
    if not text.startswith(PREFIX):
        raise ReadError("conn_key is not a kmip1: wrapped key: %r" % text[:12])
    body = text[len(PREFIX):]
    blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    if len(blob) < 2 or blob[0] not in MODES:
        raise ReadError("conn_key has an unknown mode")
    mode, n = MODES[blob[0]], blob[1]
    key_id = blob[2:2 + n].decode()
    rest = blob[2 + n:]
    if mode == "gcm":
        return mode, key_id, rest[:12], rest[12:28], rest[28:]
    return mode, key_id, rest[:16], None, rest[16:]


def crypto_params(mode):
    if mode == "gcm":
        return CryptographicParameters(block_cipher_mode=enums.BlockCipherMode.GCM,
                                       cryptographic_algorithm=enums.CryptographicAlgorithm.AES,
                                       tag_length=16)
    return CryptographicParameters(block_cipher_mode=enums.BlockCipherMode.CBC,
                                   padding_method=enums.PaddingMethod.PKCS5,
                                   cryptographic_algorithm=enums.CryptographicAlgorithm.AES)


class KmsConnection:
    """A KMS connection's settings and an open PyKMIP client for them."""

    def __init__(self, row_type, host, port, params):
        if row_type != "kmip":
            raise ReadError("KMS connection type %r is not kmip" % row_type)
        self.params = params
        version = params.get("kmip_version", "1.4")
        if version not in ("1.4", "1.2"):
            raise ReadError("kmip_version %r" % version)
        self.tmp = tempfile.mkdtemp(prefix="cc_airflow_reader.")
        os.chmod(self.tmp, 0o700)
        paths = {}
        for name in ("client_cert", "client_key", "ca_cert"):
            if not params.get(name):
                raise ReadError("KMS connection has no %s" % name)
            paths[name] = os.path.join(self.tmp, name + ".pem")
            fd = os.open(paths[name], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(params[name])
        self.client = ProxyKmipClient(
            hostname=host, port=int(port or 5696),
            cert=paths["client_cert"], key=paths["client_key"], ca=paths["ca_cert"],
            config_file=None,
            kmip_version=enums.KMIPVersion.KMIP_1_4 if version == "1.4" else enums.KMIPVersion.KMIP_1_2)
        self.client.open()

    def unwrap(self, wrapped):
        mode, key_id, iv, tag, ciphertext = decode_wrapped(wrapped)
        # ProxyKmipClient.decrypt() has no way to pass the GCM tag, so the
        # Decrypt batch item goes through its protocol layer directly.
        proxy = self.client.proxy
        item = messages.RequestBatchItem(
            operation=primitives.Enumeration(enums.Operation, enums.Operation.DECRYPT, tag=enums.Tags.OPERATION),
            request_payload=payloads.DecryptRequestPayload(
                unique_identifier=key_id, cryptographic_parameters=crypto_params(mode),
                data=ciphertext, iv_counter_nonce=iv, auth_tag=tag))
        response = proxy._send_and_receive_message(proxy._build_request_message(None, [item]))
        result = response.batch_items[0]
        if result.result_status.value != enums.ResultStatus.SUCCESS:
            raise ReadError("KMIP Decrypt failed: %s: %s" % (
                result.result_reason.value if result.result_reason else None,
                result.result_message.value if result.result_message else None))
        return mode, key_id, result.response_payload.data

    def close(self):
        try:
            self.client.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv):
    schema = "public"
    args = argv[1:]
    if len(args) >= 2 and args[0] == "--schema":
        schema, args = args[1], args[2:]
    if not args:
        sys.stderr.write(__doc__)
        return 2
    keys = [k.strip() for k in os.environ.get("CC_FERNET_KEY", "").split(",") if k.strip()]
    if not keys:
        sys.stderr.write("airflow_kms_reader: CC_FERNET_KEY is not set\n")
        return 2
    server = MultiFernet([Fernet(k) for k in keys])
    db = psycopg2.connect(host=os.environ.get("CC_PGHOST", "127.0.0.1"),
                          port=int(os.environ.get("CC_PGPORT", "5432")),
                          user=os.environ.get("CC_PGUSER", "postgres"),
                          dbname=os.environ.get("CC_PGDATABASE", "postgres"))
    db.autocommit = True
    cur = db.cursor()
    table = '"%s".connection' % schema.replace('"', '""')
    cols = "conn_id, password, is_encrypted, extra, is_extra_encrypted, conn_key, _kms_conn_id, _kms_extra"
    if args == ["--all"]:
        cur.execute("SELECT %s FROM %s WHERE _kms_conn_id IS NOT NULL ORDER BY conn_id" % (cols, table))
        rows = cur.fetchall()
    else:
        cur.execute("SELECT %s FROM %s WHERE conn_id = ANY(%%s) ORDER BY conn_id" % (cols, table), (args,))
        rows = cur.fetchall()
        missing = set(args) - {r[0] for r in rows}
        if missing:
            sys.stderr.write("airflow_kms_reader: no connection %s\n" % ", ".join(sorted(missing)))
            return 1

    kms_clients = {}
    out = {}
    status = 0
    try:
        for conn_id, pw, pw_enc, extra, extra_enc, conn_key, kms_conn_id, kms_extra in rows:
            rec = {"kms_conn_id": kms_conn_id, "conn_key": conn_key, "data_key": None, "key_id": None,
                   "mode": None, "keyring": "kms" if kms_conn_id else "server"}
            try:
                if kms_conn_id:
                    if not conn_key:
                        raise ReadError("KMS-encrypted but conn_key is empty")
                    ident = (kms_conn_id, kms_extra or "")
                    if ident not in kms_clients:
                        cur.execute("SELECT conn_type, host, port, extra, is_extra_encrypted, _kms_conn_id"
                                    " FROM %s WHERE conn_id = %%s" % table, (kms_conn_id,))
                        k = cur.fetchone()
                        if k is None:
                            raise ReadError("KMS connection %r does not exist" % kms_conn_id)
                        if k[5] is not None:
                            raise ReadError("KMS connection %r is itself KMS-encrypted" % kms_conn_id)
                        kext = k[3] or "{}"
                        if k[4]:
                            kext = server.decrypt(kext.encode()).decode()
                        params = json.loads(kext)
                        params.update(json.loads(kms_extra) if kms_extra else {})
                        kms_clients[ident] = KmsConnection(k[0], k[1], k[2], params)
                    mode, key_id, data_key = kms_clients[ident].unwrap(conn_key)
                    if len(data_key) != 32:
                        raise ReadError("the unwrapped data key is %d bytes" % len(data_key))
                    rec.update(mode=mode, key_id=key_id, data_key=data_key.hex())
                    fernet = Fernet(base64.urlsafe_b64encode(data_key))
                else:
                    fernet = server
                rec["password"] = fernet.decrypt(pw.encode()).decode() if pw and pw_enc else pw
                rec["extra"] = fernet.decrypt(extra.encode()).decode() if extra and extra_enc else extra
            except Exception as e:  # noqa: BLE001 - report every unreadable row
                sys.stderr.write("airflow_kms_reader: %s: %s: %s\n" % (conn_id, type(e).__name__, e))
                rec["error"] = "%s: %s" % (type(e).__name__, e)
                status = 1
            out[conn_id] = rec
    finally:
        for c in kms_clients.values():
            c.close()
        db.close()
    json.dump(out, sys.stdout, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
