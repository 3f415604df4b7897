/* The server keyring: GUC conn_crypto.fernet_key, else AIRFLOW__CORE__FERNET_KEY. */
#ifndef CONN_CRYPTO_SERVER_KEYRING_H
#define CONN_CRYPTO_SERVER_KEYRING_H

#include "postgres.h"
#include "bridge.h"

/* Registers the GUCs; called from _PG_init. */
extern void cc_define_key_gucs(void);

/* The parsed server keyring, cached per backend; ERROR when none is configured. */
extern const cc_keyring *cc_server_keyring(void);

/* Same, but NULL when no key is configured (a malformed key is still an ERROR). */
extern const cc_keyring *cc_server_keyring_or_null(void);

/* Where the current keyring came from, for messages ("conn_crypto.fernet_key", ...). */
extern const char *cc_server_keyring_source(void);

#endif
