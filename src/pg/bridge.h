/*
 * The one boundary between PostgreSQL (C, errors by longjmp) and the C++ core
 * (errors by exception). Every function here is implemented in bridge.cpp,
 * catches every exception and reports it as a cc_error; none calls into
 * PostgreSQL. The C glue turns a cc_error into ereport() only after the C++
 * frames are gone, so no longjmp ever crosses a C++ frame.
 */
#ifndef CONN_CRYPTO_BRIDGE_H
#define CONN_CRYPTO_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cc_status
{
	CC_OK = 0,
	CC_ERR_MALFORMED,		/* not a Fernet token */
	CC_ERR_INVALID,			/* no key authenticates it: wrong key or tampered */
	CC_ERR_EXPIRED,			/* older than the ttl */
	CC_ERR_FUTURE,			/* timestamp beyond the allowed clock skew */
	CC_ERR_BAD_KEY,			/* a key of the keyring is malformed */
	CC_ERR_NO_KEY,			/* empty keyring */
	CC_ERR_TOO_LARGE,		/* result exceeds a size limit */
	CC_ERR_CRYPTO,			/* OpenSSL failure */
	CC_ERR_NO_MEMORY,
	CC_ERR_KMS,				/* the Key Management Service failed or refused */
	CC_ERR_INTERNAL
} cc_status;

typedef struct cc_error
{
	cc_status	status;
	char		message[256];	/* never holds key material or plaintext */
} cc_error;

typedef struct cc_keyring cc_keyring;

/* Parse a comma-separated keyring; NULL and err set on failure. */
extern cc_keyring *cc_keyring_parse(const char *text, size_t len, cc_error *err);
/* Free and wipe; NULL is fine. */
extern void cc_keyring_free(cc_keyring *ring);
extern int	cc_keyring_size(const cc_keyring *ring);

/* Sizes: 0 from cc_token_length means overflow. */
extern size_t cc_token_length(size_t plaintext_len);
extern size_t cc_plaintext_bound(size_t token_len);
extern size_t cc_rotate_bound(size_t token_len);

/* Writes cc_token_length(n) characters to out. */
extern bool cc_encrypt(const cc_keyring *ring, const uint8_t *pt, size_t n, char *out, cc_error *err);

/* Encrypt with an explicit timestamp (rotation keeps the original one). */
extern bool cc_encrypt_at(const cc_keyring *ring, const uint8_t *pt, size_t n, uint64_t timestamp,
						  char *out, cc_error *err);

/*
 * Decrypts into out (capacity cc_plaintext_bound(len)). ttl applies only when
 * has_ttl. key_index (0-based) and timestamp may be NULL.
 */
extern bool cc_decrypt(const cc_keyring *ring, const char *token, size_t len,
					   bool has_ttl, int64_t ttl,
					   uint8_t *out, size_t *out_len, int *key_index, uint64_t *timestamp,
					   cc_error *err);

/* 0-based index of the authenticating key; -1 when none or malformed; -2 on error. */
extern int	cc_key_index(const cc_keyring *ring, const char *token, size_t len, cc_error *err);

/* Re-encrypts under the primary key keeping the timestamp; out: cc_rotate_bound(len). */
extern bool cc_rotate(const cc_keyring *ring, const char *token, size_t len,
					  char *out, size_t *out_len, cc_error *err);

extern bool cc_extract_timestamp(const cc_keyring *ring, const char *token, size_t len,
								 uint64_t *timestamp, cc_error *err);

/* Structure only (base64, length, version, block multiple); no key needed. */
extern bool cc_looks_like_token(const char *token, size_t len);

/* n bytes from the CSPRNG. */
extern bool cc_random_bytes(uint8_t *out, size_t n, cc_error *err);

/* 44 characters, no terminator. */
extern bool cc_generate_key(char *out44, cc_error *err);

/* A keyring of one raw 32-byte key (a per-connection data key). */
extern cc_keyring *cc_keyring_from_raw(const uint8_t *key32, cc_error *err);

/* Wipe memory that held secrets (OPENSSL_cleanse; not optimised away). */
extern void cc_wipe(void *p, size_t n);

#ifdef __cplusplus
}
#endif

#endif
