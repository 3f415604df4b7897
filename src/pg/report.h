/* Turning a cc_error from the C++ core into a PostgreSQL error. */
#ifndef CONN_CRYPTO_REPORT_H
#define CONN_CRYPTO_REPORT_H

#include "postgres.h"
#include "bridge.h"

/* Custom SQLSTATEs for outcomes with no fitting standard code (class ZF). */
#define ERRCODE_CC_INVALID_TOKEN	MAKE_SQLSTATE('Z','F','0','0','1')
#define ERRCODE_CC_TOKEN_EXPIRED	MAKE_SQLSTATE('Z','F','0','0','2')
#define ERRCODE_CC_TOKEN_FUTURE		MAKE_SQLSTATE('Z','F','0','0','3')
#define ERRCODE_CC_KMS_FAILURE		MAKE_SQLSTATE('Z','F','0','1','0')

extern int	cc_sqlstate(cc_status status);

/* Raises ERROR for err; context (may be NULL) is prefixed to the message. */
extern void cc_report(const cc_error *err, const char *context) pg_attribute_noreturn();

#endif
