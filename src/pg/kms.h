/* Per-connection KMS envelope encryption: settings lookup, wrap/unwrap, keyrings. */
#ifndef CONN_CRYPTO_KMS_H
#define CONN_CRYPTO_KMS_H

#include "postgres.h"
#include "bridge.h"
#include "kms_bridge.h"

#define CC_DATA_KEY_BYTES 32

/* A KMS connection's settings, read from the connection table. */
typedef struct KmsSettings
{
	cc_kms_config config;
} KmsSettings;

extern void cc_define_kms_gucs(void);

/*
 * Reads the KMS connection kms_conn_id of schema's connection table (its
 * extra decrypted with the server keyring) merged with kms_extra (JSON, may
 * be NULL). ERROR when it does not exist or is itself KMS-encrypted (a chain).
 * Wipe with cc_kms_settings_wipe.
 */
extern void cc_kms_settings(const char *schema, const char *kms_conn_id, const char *kms_extra,
							KmsSettings *out);
extern void cc_kms_settings_wipe(KmsSettings *settings);

/* Serialises KMS setting changes for the rest of the transaction (chain checks). */
extern void cc_kms_lock_settings(void);

/* Whether conn_id is the KMS connection of another row (read with a fresh snapshot). */
extern bool cc_kms_is_used(const char *schema, const char *conn_id);

/* Wraps a key through the KMS; the wrapped form as text. ERROR on failure. */
extern text *cc_kms_wrap_key(const KmsSettings *settings, const uint8_t *key, size_t n);

/* Unwraps (cached per the TTL GUC) into out[CC_KMS_PLAINTEXT_MAX]; returns the length. */
extern size_t cc_kms_unwrap_key(const KmsSettings *settings, const char *wrapped, size_t len, uint8_t *out);

/*
 * The keyring of one row's data key: unwraps conn_key through the KMS
 * connection. Freed with the current memory context.
 */
extern const cc_keyring *cc_kms_row_keyring(const char *schema, const char *kms_conn_id,
											const char *kms_extra, const char *conn_key, size_t conn_key_len);

/* A fresh data key wrapped under the KMS connection; *ring gets its keyring. */
extern text *cc_kms_new_row_key(const char *schema, const char *kms_conn_id, const char *kms_extra,
								const cc_keyring **ring);

/* Frees ring (and wipes its keys) when the current memory context goes away. */
extern void cc_free_keyring_with_context(cc_keyring *ring);

#endif
