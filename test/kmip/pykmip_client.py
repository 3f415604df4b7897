#!/usr/bin/python3
"""PyKMIP's own client, for cross-checking conn_crypto's KMIP provider.

Run with /usr/bin/python3 (Debian's python3-pykmip). DIR is the directory
start_server.sh filled (client.crt, client.key, ca.crt); the server listens on
127.0.0.1:PORT.

  create-key DIR PORT [--inactive]
      Creates an AES-256 symmetric key (usage mask Encrypt|Decrypt), activates
      it unless --inactive, prints its unique identifier.
  encrypt DIR PORT KEY_ID HEX_PLAINTEXT [gcm|cbc]
      Encrypts with PyKMIP and prints the result as a conn_crypto wrapped key
      ("kmip1:..."), so `unwrap` on the C++ side must give back the plaintext.
  decrypt DIR PORT KEY_ID WRAPPED
      Decrypts a conn_crypto wrapped key with PyKMIP and prints the plaintext
      as hex. The key id stored in WRAPPED wins; KEY_ID may be "-".
  revoke-destroy DIR PORT KEY_ID
      Destroys a key (revoking it first when active).

Wrapped format (independent re-implementation of src/core/kms/kmip_provider):
  "kmip1:" + unpadded url-safe base64 of
  mode (1 byte: 1 = AES-GCM, 2 = AES-CBC/PKCS5) | key_id length (1 byte) |
  key_id | IV (12 for GCM, 16 for CBC) | tag (16, GCM only) | ciphertext
GCM is sent with KMIP 1.4 (the tag fields exist from 1.4 on), CBC with 1.2.
"""

import base64
import binascii
import logging
import os
import sys

from kmip import enums
from kmip.core import primitives
from kmip.core.attributes import CryptographicParameters
from kmip.core.messages import messages, payloads
from kmip.core.primitives import Enumeration
from kmip.pie.client import ProxyKmipClient

# PyKMIP logs a warning when no client config file exists; settings come
# from the arguments here.
logging.disable(logging.WARNING)

PREFIX = "kmip1:"
MODE_GCM = 1
MODE_CBC = 2


def client_for(directory, port, version):
    return ProxyKmipClient(
        hostname="127.0.0.1",
        port=int(port),
        cert=os.path.join(directory, "client.crt"),
        key=os.path.join(directory, "client.key"),
        ca=os.path.join(directory, "ca.crt"),
        config_file=None,
        kmip_version=version,
    )


def encode_wrapped(mode, key_id, iv, tag, ciphertext):
    kid = key_id.encode()
    blob = bytes([mode, len(kid)]) + kid + iv + (tag or b"") + ciphertext
    return PREFIX + base64.urlsafe_b64encode(blob).decode().rstrip("=")


def decode_wrapped(text):
    if not text.startswith(PREFIX):
        raise SystemExit("not a kmip1: wrapped key")
    body = text[len(PREFIX):]
    blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    mode, n = blob[0], blob[1]
    key_id = blob[2:2 + n].decode()
    rest = blob[2 + n:]
    if mode == MODE_GCM:
        return mode, key_id, rest[:12], rest[12:28], rest[28:]
    if mode == MODE_CBC:
        return mode, key_id, rest[:16], None, rest[16:]
    raise SystemExit("unknown mode %d" % mode)


def params(mode):
    if mode == MODE_GCM:
        return CryptographicParameters(
            block_cipher_mode=enums.BlockCipherMode.GCM,
            cryptographic_algorithm=enums.CryptographicAlgorithm.AES,
            tag_length=16)
    return CryptographicParameters(
        block_cipher_mode=enums.BlockCipherMode.CBC,
        padding_method=enums.PaddingMethod.PKCS5,
        cryptographic_algorithm=enums.CryptographicAlgorithm.AES)


def run_batch(client, operation, payload):
    """Sends one batch item through PyKMIP's protocol layer and returns the
    response payload (ProxyKmipClient's encrypt/decrypt drop the GCM tag)."""
    proxy = client.proxy
    item = messages.RequestBatchItem(
        operation=primitives.Enumeration(
            enums.Operation, operation, tag=enums.Tags.OPERATION),
        request_payload=payload)
    request = proxy._build_request_message(None, [item])
    response = proxy._send_and_receive_message(request)
    result = response.batch_items[0]
    if result.result_status.value != enums.ResultStatus.SUCCESS:
        raise SystemExit("KMIP error: %s: %s" % (
            result.result_reason.value if result.result_reason else None,
            result.result_message.value if result.result_message else None))
    return result.response_payload


def version_for(mode):
    return enums.KMIPVersion.KMIP_1_4 if mode == MODE_GCM else enums.KMIPVersion.KMIP_1_2


def cmd_create_key(directory, port, *flags):
    with client_for(directory, port, enums.KMIPVersion.KMIP_1_2) as client:
        uid = client.create(
            enums.CryptographicAlgorithm.AES, 256,
            cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                      enums.CryptographicUsageMask.DECRYPT])
        if "--inactive" not in flags:
            client.activate(uid)
    print(uid)


def cmd_encrypt(directory, port, key_id, hex_plaintext, mode_name="gcm"):
    mode = MODE_GCM if mode_name == "gcm" else MODE_CBC
    plaintext = binascii.unhexlify(hex_plaintext)
    iv = os.urandom(12 if mode == MODE_GCM else 16)
    with client_for(directory, port, version_for(mode)) as client:
        payload = run_batch(client, enums.Operation.ENCRYPT,
                            payloads.EncryptRequestPayload(
                                unique_identifier=key_id,
                                cryptographic_parameters=params(mode),
                                data=plaintext,
                                iv_counter_nonce=iv))
    tag = payload.auth_tag if mode == MODE_GCM else None
    if mode == MODE_GCM and (tag is None or len(tag) != 16):
        raise SystemExit("server returned no 16-byte GCM tag")
    print(encode_wrapped(mode, key_id, payload.iv_counter_nonce or iv, tag, payload.data))


def cmd_decrypt(directory, port, _key_id, wrapped):
    mode, key_id, iv, tag, ciphertext = decode_wrapped(wrapped)
    with client_for(directory, port, version_for(mode)) as client:
        payload = run_batch(client, enums.Operation.DECRYPT,
                            payloads.DecryptRequestPayload(
                                unique_identifier=key_id,
                                cryptographic_parameters=params(mode),
                                data=ciphertext,
                                iv_counter_nonce=iv,
                                auth_tag=tag))
    print(binascii.hexlify(payload.data).decode())


def cmd_revoke_destroy(directory, port, key_id):
    with client_for(directory, port, enums.KMIPVersion.KMIP_1_2) as client:
        try:
            client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, key_id)
        except Exception:
            pass
        client.destroy(key_id)


COMMANDS = {
    "create-key": cmd_create_key,
    "encrypt": cmd_encrypt,
    "decrypt": cmd_decrypt,
    "revoke-destroy": cmd_revoke_destroy,
}


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        return 2
    COMMANDS[argv[1]](*argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
