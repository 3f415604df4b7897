/*
 * The KMS side of the boundary: wrap and unwrap per-connection data keys
 * through a KMS provider of the core, with a per-backend cache of unwrapped
 * keys. Same rules as bridge.h: every exception becomes a cc_error; nothing
 * here calls PostgreSQL; the network wait polls the interrupted callback.
 */
#ifndef CONN_CRYPTO_KMS_BRIDGE_H
#define CONN_CRYPTO_KMS_BRIDGE_H

#include "bridge.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CC_KMS_WRAPPED_MAX 200	/* conn_key is varchar(200) */
#define CC_KMS_PLAINTEXT_MAX 64

typedef struct cc_kms_config
{
	const char *kms_conn_id;	/* for messages */
	const char *conn_type;
	const char *host;
	int			port;
	int			nparams;
	const char *const *param_names;
	const char *const *param_values;
	int			connect_timeout_ms;
	int			read_timeout_ms;
	bool		(*interrupted) (void);	/* must not longjmp */
} cc_kms_config;

/* Wraps n bytes; writes at most CC_KMS_WRAPPED_MAX characters. */
extern bool cc_kms_wrap(const cc_kms_config *config, const uint8_t *plaintext, size_t n,
						char *out, size_t *out_len, cc_error *err);

/*
 * Unwraps into out (CC_KMS_PLAINTEXT_MAX bytes). With cache_ttl_s > 0 a key
 * unwrapped in the last cache_ttl_s seconds is served from the cache.
 */
extern bool cc_kms_unwrap(const cc_kms_config *config, const char *wrapped, size_t len,
						  int cache_ttl_s, uint8_t *out, size_t *out_len, cc_error *err);

/* Wipes cached keys older than max_age_s (all of them when max_age_s < 0). */
extern void cc_kms_cache_expire(int max_age_s);

/* Number of keys in the cache (for tests and status). */
extern int	cc_kms_cache_size(void);

#ifdef __cplusplus
}
#endif

#endif
