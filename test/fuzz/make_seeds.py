#!/usr/bin/python3
"""Writes seed corpora for the fuzz targets, derived from the Fernet spec vectors.

usage: make_seeds.py SPEC_DIR OUT_DIR   (creates OUT_DIR/<target>/seed-NNN)

Seeds are generated at run time instead of being committed: they follow the
vectors, and the targets' input formats are documented in each *_fuzz.cpp.
"""
import base64
import datetime
import json
import os
import struct
import sys


def load(spec_dir, name):
    path = os.path.join(spec_dir, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def epoch(rfc3339):
    return int(datetime.datetime.fromisoformat(rfc3339).timestamp())


def write(out_dir, target, seeds):
    d = os.path.join(out_dir, target)
    os.makedirs(d, exist_ok=True)
    unique = sorted(set(seeds))
    for i, s in enumerate(unique):
        with open(os.path.join(d, "seed-%03d" % i), "wb") as f:
            f.write(s)
    return len(unique)


def ttlv(tag, typ, value):
    """One TTLV item: 3-byte tag, type, 4-byte length, value padded to 8."""
    return struct.pack(">I", tag)[1:] + bytes([typ]) + struct.pack(">I", len(value)) + value + b"\0" * (-len(value) % 8)


def kmip_response_seeds():
    """A successful Encrypt and Decrypt response and a failed one (KMIP 1.4 layout)."""
    struct_, integer, enum, text, blob, date = 0x01, 0x02, 0x05, 0x07, 0x08, 0x09
    header = ttlv(0x42007A, struct_,
                  ttlv(0x420069, struct_, ttlv(0x42006A, integer, struct.pack(">i", 1)) +
                       ttlv(0x42006B, integer, struct.pack(">i", 4))) +
                  ttlv(0x420092, date, struct.pack(">q", 1700000000)) +
                  ttlv(0x42000D, integer, struct.pack(">i", 1)))

    def message(operation, status, payload):
        item = ttlv(0x42005C, enum, struct.pack(">I", operation)) + ttlv(0x42007F, enum, struct.pack(">I", status))
        return ttlv(0x42007B, struct_, header + ttlv(0x42000F, struct_, item + payload))

    uid = ttlv(0x420094, text, b"key-1")
    encrypt = message(0x1F, 0, ttlv(0x42007C, struct_, uid + ttlv(0x4200C2, blob, bytes(32)) +
                                     ttlv(0x4200FF, blob, bytes(range(16)))))
    decrypt = message(0x20, 0, ttlv(0x42007C, struct_, uid + ttlv(0x4200C2, blob, bytes(range(32)))))
    failed = message(0x20, 1, ttlv(0x42007E, enum, struct.pack(">I", 1)) + ttlv(0x42007D, text, b"Item Not Found"))
    return [encrypt, decrypt, failed, encrypt[:40], b""]


def main():
    spec_dir, out_dir = sys.argv[1], sys.argv[2]
    vectors = []
    for name in ("generate.json", "verify.json", "invalid.json", "invalid_pr11_strict_b64.json"):
        vectors += load(spec_dir, name)
    if not vectors:
        sys.exit("no spec vectors found in %s" % spec_dir)

    tokens, secrets, token_seeds, diff_seeds = [], [], [], []
    for v in vectors:
        tok = v["token"].encode()
        secret = v["secret"].encode()
        tokens.append(tok)
        secrets.append(secret)
        token_seeds += [tok, tok.rstrip(b"="), b" \n" + tok + b"\t"]
        # token_fuzz's optional suffix: '\0' + ttl (i64 BE) + now (i64 BE).
        ttl = v.get("ttl_sec", 60)
        token_seeds.append(tok + b"\0" + struct.pack(">qq", ttl, epoch(v["now"])))
        if "iv" in v and "src" in v:
            # differential_fuzz: key | timestamp (u64 BE) | IV | plaintext.
            key = base64.urlsafe_b64decode(secret)
            diff_seeds.append(key + struct.pack(">Q", epoch(v["now"])) + bytes(v["iv"]) + v["src"].encode())

    keyring_seeds = []
    for s in set(secrets):
        std = s.replace(b"-", b"+").replace(b"_", b"/")
        keyring_seeds += [s, std, s.rstrip(b"="), b" " + s + b" \n", s + b"," + std, std + b",," + s]
    keyring_seeds.append(b",".join(sorted(set(secrets))))

    base64_seeds = tokens + secrets + [b"", b"Zg==", b"Zm8=", b"Zm9v", b"-_-_", b"+/+/", b" Zg\n"]

    counts = {
        "token_fuzz": write(out_dir, "token_fuzz", token_seeds),
        "keyring_fuzz": write(out_dir, "keyring_fuzz", keyring_seeds),
        "base64_fuzz": write(out_dir, "base64_fuzz", base64_seeds),
        "differential_fuzz": write(out_dir, "differential_fuzz", diff_seeds + [b""]),
        "ttlv_fuzz": write(out_dir, "ttlv_fuzz", kmip_response_seeds()),
    }
    print("seeds: " + ", ".join("%s=%d" % kv for kv in counts.items()))


if __name__ == "__main__":
    main()
