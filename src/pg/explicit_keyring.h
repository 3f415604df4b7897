/* Keyrings passed as an argument, parsed once per call site and reused per row. */
#ifndef CONN_CRYPTO_EXPLICIT_KEYRING_H
#define CONN_CRYPTO_EXPLICIT_KEYRING_H

#include "postgres.h"
#include "fmgr.h"
#include "bridge.h"

/* Keyring for the text argument argno of this call; ERROR when malformed. */
extern const cc_keyring *cc_explicit_keyring(FunctionCallInfo fcinfo, int argno);

#endif
