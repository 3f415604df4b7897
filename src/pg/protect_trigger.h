/* The row trigger that encrypts protected columns. */
#ifndef CONN_CRYPTO_PROTECT_TRIGGER_H
#define CONN_CRYPTO_PROTECT_TRIGGER_H

extern bool cc_allow_plaintext;

/* Registers conn_crypto.allow_plaintext; called from _PG_init. */
extern void cc_define_trigger_gucs(void);

#endif
