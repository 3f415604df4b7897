/*
 * SQL-callable Fernet functions. Each one gathers its arguments and output
 * buffer with PostgreSQL calls first, then makes a single bridge call (no
 * PostgreSQL call happens while C++ frames are live), then reports.
 */
#include "postgres.h"

#include "bridge.h"
#include "explicit_keyring.h"
#include "fernet_ops.h"
#include "report.h"
#include "server_keyring.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* ---- shared operations (also used by triggers and bulk operations) ---- */

text *
cc_encrypt_bytes(const cc_keyring *ring, const char *data, Size len)
{
	Size		token_len = cc_token_length(len);
	text	   *result;
	cc_error	err;

	if (token_len == 0 || token_len > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value of %zu bytes is too large to encrypt", (size_t) len),
				 errdetail("Its Fernet token would exceed the 1 GB limit of a PostgreSQL value.")));
	result = (text *) palloc(token_len + VARHDRSZ);
	SET_VARSIZE(result, token_len + VARHDRSZ);
	if (!cc_encrypt(ring, (const uint8_t *) data, len, VARDATA(result), &err))
	{
		pfree(result);
		cc_report(&err, NULL);
	}
	return result;
}

bytea *
cc_decrypt_bytes(const cc_keyring *ring, const char *token, Size len, bool has_ttl, int64 ttl,
				 int *key_index)
{
	Size		bound = cc_plaintext_bound(len);
	bytea	   *result = (bytea *) palloc(bound + VARHDRSZ);
	size_t		out_len = 0;
	cc_error	err;

	if (!cc_decrypt(ring, token, len, has_ttl, ttl, (uint8_t *) VARDATA(result), &out_len, key_index,
					NULL, &err))
	{
		pfree(result);
		cc_report(&err, NULL);
	}
	SET_VARSIZE(result, out_len + VARHDRSZ);
	return result;
}

text *
cc_bytes_to_text(bytea *plain)
{
	const char *data = VARDATA(plain);
	int			len = VARSIZE(plain) - VARHDRSZ;

	/* Text must be valid in the database encoding; never hand out corrupt text. */
	if (!pg_verify_mbstr(GetDatabaseEncoding(), data, len, true))
	{
		cc_wipe(VARDATA(plain), len);
		pfree(plain);
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("decrypted value is not valid %s text", GetDatabaseEncodingName()),
				 errhint("Use conn_crypto.fernet_decrypt_bytea() for binary payloads.")));
	}
	return (text *) plain;
}

text *
cc_rotate_token(const cc_keyring *ring, const char *token, Size len)
{
	Size		bound = cc_rotate_bound(len);
	text	   *result;
	size_t		out_len = 0;
	cc_error	err;

	if (bound == 0 || bound > MaxAllocSize - VARHDRSZ)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED), errmsg("token is too large to rotate")));
	result = (text *) palloc(bound + VARHDRSZ);
	if (!cc_rotate(ring, token, len, VARDATA(result), &out_len, &err))
	{
		pfree(result);
		cc_report(&err, NULL);
	}
	SET_VARSIZE(result, out_len + VARHDRSZ);
	return result;
}

/* ---- argument helpers ---- */

static const cc_keyring *
keyring_arg(FunctionCallInfo fcinfo, int argno)
{
	return argno < 0 ? cc_server_keyring() : cc_explicit_keyring(fcinfo, argno);
}

static Datum
encrypt_common(FunctionCallInfo fcinfo, int keys_arg)
{
	const cc_keyring *ring = keyring_arg(fcinfo, keys_arg);
	bytea	   *plain = PG_GETARG_BYTEA_PP(0);

	PG_RETURN_TEXT_P(cc_encrypt_bytes(ring, VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain)));
}

static bytea *
decrypt_common(FunctionCallInfo fcinfo, int keys_arg, int ttl_arg)
{
	const cc_keyring *ring = keyring_arg(fcinfo, keys_arg);
	text	   *token = PG_GETARG_TEXT_PP(0);
	bool		has_ttl = ttl_arg >= 0;
	int64		ttl = has_ttl ? PG_GETARG_INT32(ttl_arg) : 0;

	return cc_decrypt_bytes(ring, VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), has_ttl, ttl, NULL);
}

/* ---- SQL functions ---- */

PG_FUNCTION_INFO_V1(cc_fernet_generate_key);
Datum
cc_fernet_generate_key(PG_FUNCTION_ARGS)
{
	char		key[44];
	cc_error	err;
	text	   *result;

	if (!cc_generate_key(key, &err))
		cc_report(&err, NULL);
	result = cstring_to_text_with_len(key, sizeof key);
	cc_wipe(key, sizeof key);
	PG_RETURN_TEXT_P(result);
}

PG_FUNCTION_INFO_V1(cc_fernet_encrypt);
Datum
cc_fernet_encrypt(PG_FUNCTION_ARGS)
{
	return encrypt_common(fcinfo, -1);
}

PG_FUNCTION_INFO_V1(cc_fernet_encrypt_keys);
Datum
cc_fernet_encrypt_keys(PG_FUNCTION_ARGS)
{
	return encrypt_common(fcinfo, 1);
}

PG_FUNCTION_INFO_V1(cc_fernet_decrypt);
Datum
cc_fernet_decrypt(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cc_bytes_to_text(decrypt_common(fcinfo, -1, -1)));
}

PG_FUNCTION_INFO_V1(cc_fernet_decrypt_ttl);
Datum
cc_fernet_decrypt_ttl(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cc_bytes_to_text(decrypt_common(fcinfo, -1, 1)));
}

PG_FUNCTION_INFO_V1(cc_fernet_decrypt_keys);
Datum
cc_fernet_decrypt_keys(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cc_bytes_to_text(decrypt_common(fcinfo, 1, -1)));
}

PG_FUNCTION_INFO_V1(cc_fernet_decrypt_keys_ttl);
Datum
cc_fernet_decrypt_keys_ttl(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cc_bytes_to_text(decrypt_common(fcinfo, 1, 2)));
}

PG_FUNCTION_INFO_V1(cc_fernet_decrypt_bytea);
Datum
cc_fernet_decrypt_bytea(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(decrypt_common(fcinfo, -1, -1));
}

PG_FUNCTION_INFO_V1(cc_fernet_decrypt_bytea_ttl);
Datum
cc_fernet_decrypt_bytea_ttl(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(decrypt_common(fcinfo, -1, 1));
}

PG_FUNCTION_INFO_V1(cc_fernet_decrypt_bytea_keys);
Datum
cc_fernet_decrypt_bytea_keys(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(decrypt_common(fcinfo, 1, -1));
}

PG_FUNCTION_INFO_V1(cc_fernet_decrypt_bytea_keys_ttl);
Datum
cc_fernet_decrypt_bytea_keys_ttl(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(decrypt_common(fcinfo, 1, 2));
}

static Datum
rotate_common(FunctionCallInfo fcinfo, int keys_arg)
{
	const cc_keyring *ring = keyring_arg(fcinfo, keys_arg);
	text	   *token = PG_GETARG_TEXT_PP(0);

	PG_RETURN_TEXT_P(cc_rotate_token(ring, VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token)));
}

PG_FUNCTION_INFO_V1(cc_fernet_rotate);
Datum
cc_fernet_rotate(PG_FUNCTION_ARGS)
{
	return rotate_common(fcinfo, -1);
}

PG_FUNCTION_INFO_V1(cc_fernet_rotate_keys);
Datum
cc_fernet_rotate_keys(PG_FUNCTION_ARGS)
{
	return rotate_common(fcinfo, 1);
}

static Datum
extract_timestamp_common(FunctionCallInfo fcinfo, int keys_arg)
{
	const cc_keyring *ring = keyring_arg(fcinfo, keys_arg);
	text	   *token = PG_GETARG_TEXT_PP(0);
	uint64		seconds = 0;
	cc_error	err;
	TimestampTz result;

	if (!cc_extract_timestamp(ring, VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), &seconds, &err))
		cc_report(&err, NULL);
	/* Tokens carry any u64; timestamptz ends in the year 294276. */
	if (seconds > (uint64) (PG_INT64_MAX / USECS_PER_SEC) ||
		!IS_VALID_TIMESTAMP(result = time_t_to_timestamptz((pg_time_t) seconds)))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("token timestamp %llu is out of the range of timestamptz",
						(unsigned long long) seconds)));
	PG_RETURN_TIMESTAMPTZ(result);
}

PG_FUNCTION_INFO_V1(cc_fernet_extract_timestamp);
Datum
cc_fernet_extract_timestamp(PG_FUNCTION_ARGS)
{
	return extract_timestamp_common(fcinfo, -1);
}

PG_FUNCTION_INFO_V1(cc_fernet_extract_timestamp_keys);
Datum
cc_fernet_extract_timestamp_keys(PG_FUNCTION_ARGS)
{
	return extract_timestamp_common(fcinfo, 1);
}

static Datum
key_index_common(FunctionCallInfo fcinfo, int keys_arg)
{
	const cc_keyring *ring = keyring_arg(fcinfo, keys_arg);
	text	   *token = PG_GETARG_TEXT_PP(0);
	cc_error	err;
	int			index = cc_key_index(ring, VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), &err);

	if (index == -2)
		cc_report(&err, NULL);
	if (index < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(index + 1);
}

PG_FUNCTION_INFO_V1(cc_fernet_key_index);
Datum
cc_fernet_key_index(PG_FUNCTION_ARGS)
{
	return key_index_common(fcinfo, -1);
}

PG_FUNCTION_INFO_V1(cc_fernet_key_index_keys);
Datum
cc_fernet_key_index_keys(PG_FUNCTION_ARGS)
{
	return key_index_common(fcinfo, 1);
}

int
cc_key_of(const cc_keyring *ring, const char *data, Size len)
{
	cc_error	err;
	int			index;

	if (ring == NULL)
		return -1;
	index = cc_key_index(ring, data, len, &err);
	if (index == -2)
		cc_report(&err, NULL);
	return index;
}

/* 1-based position of the server key that authenticates a value, 0 plaintext, -1 undecryptable token. */
static int
server_key_position(const char *data, Size len)
{
	int			index = cc_key_of(cc_server_keyring_or_null(), data, len);

	if (index >= 0)
		return index + 1;
	return cc_looks_like_token(data, len) ? -1 : 0;
}

PG_FUNCTION_INFO_V1(cc_key_position);
Datum
cc_key_position(PG_FUNCTION_ARGS)
{
	text	   *value = PG_GETARG_TEXT_PP(0);

	PG_RETURN_INT32(server_key_position(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value)));
}

/*
 * Undecryptable tokens met by cc_value_state since the last
 * cc_bulk_undecryptable_seen() call: the bulk engine's fast path rewrites a
 * batch in one UPDATE, which cannot list the values it leaves alone; a non-zero
 * count sends it back over the batch to report them.
 */
static int64 undecryptable_seen = 0;

PG_FUNCTION_INFO_V1(cc_bulk_undecryptable_seen);
Datum
cc_bulk_undecryptable_seen(PG_FUNCTION_ARGS)
{
	int64		n = undecryptable_seen;

	undecryptable_seen = 0;
	PG_RETURN_INT64(n);
}

/*
 * How a stored value stands, for the bulk operations and status:
 * -2 empty (NULL, or '' when empty values are not encrypted), 0 plaintext,
 * -1 a token no key authenticates, k >= 1 a token of key k. json_plaintext:
 * a value starting with '{' is plaintext JSON (Airflow's trigger.kwargs).
 */
static int
value_state(const text *value, bool encrypt_empty, bool json_plaintext)
{
	Size		len;

	if (value == NULL)
		return -2;
	len = VARSIZE_ANY_EXHDR(value);
	if (len == 0)
		return encrypt_empty ? 0 : -2;
	if (json_plaintext && VARDATA_ANY(value)[0] == '{')
		return 0;
	return server_key_position(VARDATA_ANY(value), len);
}

PG_FUNCTION_INFO_V1(cc_value_state);
Datum
cc_value_state(PG_FUNCTION_ARGS)
{
	int			state = value_state(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
									!PG_ARGISNULL(1) && PG_GETARG_BOOL(1),
									!PG_ARGISNULL(2) && PG_GETARG_BOOL(2));

	if (state == -1)
		undecryptable_seen++;
	PG_RETURN_INT32(state);
}

/*
 * rotate's new value for a server-keyring column: the value re-encrypted
 * under the primary key when it is a token of an older key (state > 1 above),
 * else the value itself. One call where "CASE WHEN state > 1 THEN
 * fernet_rotate(v) ELSE v END" costs two.
 */
PG_FUNCTION_INFO_V1(cc_bulk_rotated);
Datum
cc_bulk_rotated(PG_FUNCTION_ARGS)
{
	text	   *value;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	value = PG_GETARG_TEXT_PP(0);
	if (value_state(value, false, !PG_ARGISNULL(1) && PG_GETARG_BOOL(1)) <= 1)
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	PG_RETURN_TEXT_P(cc_rotate_token(cc_server_keyring_or_null(), VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value)));
}
