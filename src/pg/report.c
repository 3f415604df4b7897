/*
 * Maps the core's error categories to SQLSTATEs, one per category, so
 * callers can tell a malformed value from a wrong key or an expired token.
 */
#include "report.h"

int
cc_sqlstate(cc_status status)
{
	switch (status)
	{
		case CC_ERR_MALFORMED:
			return ERRCODE_INVALID_TEXT_REPRESENTATION;
		case CC_ERR_INVALID:
			return ERRCODE_CC_INVALID_TOKEN;
		case CC_ERR_EXPIRED:
			return ERRCODE_CC_TOKEN_EXPIRED;
		case CC_ERR_FUTURE:
			return ERRCODE_CC_TOKEN_FUTURE;
		case CC_ERR_BAD_KEY:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case CC_ERR_NO_KEY:
			return ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
		case CC_ERR_TOO_LARGE:
			return ERRCODE_PROGRAM_LIMIT_EXCEEDED;
		case CC_ERR_NO_MEMORY:
			return ERRCODE_OUT_OF_MEMORY;
		case CC_ERR_KMS:
			return ERRCODE_CC_KMS_FAILURE;
		case CC_ERR_CRYPTO:
		case CC_ERR_INTERNAL:
		case CC_OK:
			break;
	}
	return ERRCODE_INTERNAL_ERROR;
}

void
cc_report(const cc_error *err, const char *context)
{
	const char *hint = NULL;

	switch (err->status)
	{
		case CC_ERR_INVALID:
			hint = "The token was made with a key that is not in the keyring, or it was altered.";
			break;
		case CC_ERR_BAD_KEY:
			hint = "A key is 32 random bytes in url-safe base64, as made by conn_crypto.fernet_generate_key().";
			break;
		default:
			break;
	}
	ereport(ERROR,
			(errcode(cc_sqlstate(err->status)),
			 context ? errmsg("%s: %s", context, err->message) : errmsg("%s", err->message),
			 hint ? errhint("%s", hint) : 0));
	pg_unreachable();
}
