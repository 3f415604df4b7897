/* Fernet operations on PostgreSQL values, shared by functions, triggers and bulk operations. */
#ifndef CONN_CRYPTO_FERNET_OPS_H
#define CONN_CRYPTO_FERNET_OPS_H

#include "postgres.h"
#include "bridge.h"

/* A token (text) for len bytes of data; ERROR when it cannot fit a value. */
extern text *cc_encrypt_bytes(const cc_keyring *ring, const char *data, Size len);

/* The plaintext of a token; ERROR with the category's SQLSTATE. */
extern bytea *cc_decrypt_bytes(const cc_keyring *ring, const char *token, Size len,
							   bool has_ttl, int64 ttl, int *key_index);

/* Reinterprets decrypted bytes as text after checking the database encoding. */
extern text *cc_bytes_to_text(bytea *plain);

/* The token re-encrypted under the primary key, timestamp kept. */
extern text *cc_rotate_token(const cc_keyring *ring, const char *token, Size len);

/* Index (0-based) of the key of ring that authenticates a value, or -1 (also for a NULL ring). */
extern int	cc_key_of(const cc_keyring *ring, const char *data, Size len);

#endif
