/*
 * Per-connection KMS envelope encryption, after Airflow's "Encrypting
 * Connections with a KMS" design: a connection whose _kms_conn_id is set has
 * its own Fernet data key, stored in conn_key wrapped by the KMS reached
 * through another, ordinary connection (the KMS connection). This file reads
 * KMS settings, talks to the KMS through the bridge, and provides the SQL
 * functions kms_encrypt/kms_decrypt and the helpers the trigger, the reading
 * functions and the bulk operations use.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "fernet_ops.h"
#include "kms.h"
#include "report.h"

static int	kms_timeout_ms = 10000;
static int	kms_key_cache_ttl_s = 300;

static bool
kms_interrupted(void)
{
	return QueryCancelPending || ProcDiePending;
}

/* Expired cached keys are wiped at the end of every transaction, and all at exit. */
static void
kms_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT)
		cc_kms_cache_expire(kms_key_cache_ttl_s);
}

static void
kms_exit(int code, Datum arg)
{
	cc_kms_cache_expire(-1);
}

void
cc_define_kms_gucs(void)
{
	DefineCustomIntVariable("conn_crypto.kms_timeout",
							"Timeout for connecting to a KMS and for each read, in milliseconds.",
							NULL, &kms_timeout_ms, 10000, 100, 600000, PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("conn_crypto.kms_key_cache_ttl",
							"How long an unwrapped per-connection key stays cached in a backend, in seconds (0: no cache).",
							NULL, &kms_key_cache_ttl_s, 300, 0, 86400, PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	RegisterXactCallback(kms_xact_callback, NULL);
	on_proc_exit(kms_exit, (Datum) 0);
}

/* The owner of conn_crypto._kms_config: the KMS connection's secrets are read with its rights. */
static Oid
kms_config_owner(void)
{
	Oid			fn = DatumGetObjectId(DirectFunctionCall1(to_regprocedure,
														  CStringGetTextDatum("conn_crypto._kms_config(text,text,text)")));
	HeapTuple	tup;
	Oid			owner;

	if (!OidIsValid(fn))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FUNCTION),
						errmsg("conn_crypto._kms_config is missing; is the extension installed?")));
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	return owner;
}

static char *
copy_text_array_item(ArrayType *arr, int i, MemoryContext cxt)
{
	Datum	   *items;
	bool	   *nulls;
	int			n;
	char	   *result;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &items, &nulls, &n);
	result = (i < n && !nulls[i]) ? MemoryContextStrdup(cxt, TextDatumGetCString(items[i])) : NULL;
	return result;
}

/*
 * Serialises changes of KMS settings (in this transaction, until it ends), so
 * that two concurrent writes cannot build a chain of KMS connections that
 * neither could see; the checks after it read with a fresh snapshot.
 */
void
cc_kms_lock_settings(void)
{
	DirectFunctionCall1(pg_advisory_xact_lock_int8, Int64GetDatum(INT64CONST(0x636f6e6e5f6b6d73)));	/* "conn_kms" */
}

bool
cc_kms_is_used(const char *schema, const char *conn_id)
{
	Oid			save_userid;
	int			save_sec;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	bool		used = false;

	args[0] = CStringGetTextDatum(schema);
	args[1] = CStringGetTextDatum(conn_id);
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(kms_config_owner(), save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		bool		isnull;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args("SELECT conn_crypto._kms_is_used($1, $2)", 2, argtypes, args, NULL, false, 1)
			!= SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "conn_crypto._kms_is_used failed");
		used = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_END_TRY();
	return used;
}

void
cc_kms_settings(const char *schema, const char *kms_conn_id, const char *kms_extra, KmsSettings *out)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			save_userid;
	int			save_sec;
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};

	memset(out, 0, sizeof *out);
	args[0] = CStringGetTextDatum(schema);
	args[1] = CStringGetTextDatum(kms_conn_id);
	if (kms_extra != NULL && kms_extra[0] != '\0')
		args[2] = CStringGetTextDatum(kms_extra);
	else
		nulls[2] = 'n';

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(kms_config_owner(), save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		int			rc;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		rc = SPI_execute_with_args("SELECT conn_type, host, port, names, vals "
								   "FROM conn_crypto._kms_config($1, $2, $3)",
								   3, argtypes, args, nulls, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "conn_crypto._kms_config returned no row");
		{
			HeapTuple	row = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		d;
			ArrayType  *names = NULL,
					   *vals = NULL;
			int			n = 0;
			char	  **pn,
					  **pv;

			d = SPI_getbinval(row, desc, 1, &isnull);
			out->config.conn_type = isnull ? "" : MemoryContextStrdup(caller, TextDatumGetCString(d));
			d = SPI_getbinval(row, desc, 2, &isnull);
			out->config.host = isnull ? "" : MemoryContextStrdup(caller, TextDatumGetCString(d));
			d = SPI_getbinval(row, desc, 3, &isnull);
			out->config.port = isnull ? 0 : DatumGetInt32(d);
			d = SPI_getbinval(row, desc, 4, &isnull);
			if (!isnull)
			{
				names = DatumGetArrayTypeP(d);
				vals = DatumGetArrayTypeP(SPI_getbinval(row, desc, 5, &isnull));
				n = ArrayGetNItems(ARR_NDIM(names), ARR_DIMS(names));
			}
			pn = MemoryContextAllocZero(caller, sizeof(char *) * Max(n, 1));
			pv = MemoryContextAllocZero(caller, sizeof(char *) * Max(n, 1));
			for (int i = 0; i < n; i++)
			{
				pn[i] = copy_text_array_item(names, i, caller);
				pv[i] = copy_text_array_item(vals, i, caller);
				if (pn[i] == NULL)
					pn[i] = "";
			}
			out->config.nparams = n;
			out->config.param_names = (const char *const *) pn;
			out->config.param_values = (const char *const *) pv;
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_END_TRY();
	out->config.kms_conn_id = MemoryContextStrdup(caller, kms_conn_id);
	out->config.connect_timeout_ms = kms_timeout_ms;
	out->config.read_timeout_ms = kms_timeout_ms;
	out->config.interrupted = kms_interrupted;
}

void
cc_kms_settings_wipe(KmsSettings *settings)
{
	for (int i = 0; i < settings->config.nparams; i++)
		if (settings->config.param_values[i] != NULL)
			cc_wipe((char *) settings->config.param_values[i], strlen(settings->config.param_values[i]));
}

/* After a failed KMS call: a cancel or termination wins over the KMS error. */
static void
report_kms_failure(const cc_error *err)
{
	CHECK_FOR_INTERRUPTS();
	cc_report(err, NULL);
}

text *
cc_kms_wrap_key(const KmsSettings *settings, const uint8_t *key, size_t n)
{
	char		out[CC_KMS_WRAPPED_MAX];
	size_t		len = 0;
	cc_error	err;

	if (!cc_kms_wrap(&settings->config, key, n, out, &len, &err))
		report_kms_failure(&err);
	return cstring_to_text_with_len(out, (int) len);
}

size_t
cc_kms_unwrap_key(const KmsSettings *settings, const char *wrapped, size_t len, uint8_t *out)
{
	size_t		n = 0;
	cc_error	err;

	if (!cc_kms_unwrap(&settings->config, wrapped, len, kms_key_cache_ttl_s, out, &n, &err))
		report_kms_failure(&err);
	return n;
}

static void
free_keyring_callback(void *arg)
{
	cc_keyring_free((cc_keyring *) arg);
}

void
cc_free_keyring_with_context(cc_keyring *ring)
{
	MemoryContextCallback *cb = palloc(sizeof(MemoryContextCallback));

	cb->func = free_keyring_callback;
	cb->arg = ring;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
}

static const cc_keyring *
keyring_of_data_key(const uint8_t *key, size_t n, const char *kms_conn_id)
{
	cc_error	err;
	cc_keyring *ring;

	if (n != CC_DATA_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_CC_KMS_FAILURE),
				 errmsg("KMS connection \"%s\": the unwrapped key is %zu bytes, not a 32-byte Fernet key",
						kms_conn_id, n)));
	ring = cc_keyring_from_raw(key, &err);
	if (ring == NULL)
		cc_report(&err, NULL);
	cc_free_keyring_with_context(ring);
	return ring;
}

const cc_keyring *
cc_kms_row_keyring(const char *schema, const char *kms_conn_id, const char *kms_extra,
				   const char *conn_key, size_t conn_key_len)
{
	KmsSettings settings;
	uint8_t		key[CC_KMS_PLAINTEXT_MAX];
	size_t		n;
	const cc_keyring *ring;

	if (conn_key == NULL || conn_key_len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CC_KMS_FAILURE),
				 errmsg("connection encrypted with KMS connection \"%s\" has no conn_key", kms_conn_id)));
	cc_kms_settings(schema, kms_conn_id, kms_extra, &settings);
	n = cc_kms_unwrap_key(&settings, conn_key, conn_key_len, key);
	cc_kms_settings_wipe(&settings);
	ring = keyring_of_data_key(key, n, kms_conn_id);
	cc_wipe(key, sizeof key);
	return ring;
}

text *
cc_kms_new_row_key(const char *schema, const char *kms_conn_id, const char *kms_extra, const cc_keyring **ring)
{
	KmsSettings settings;
	uint8_t		key[CC_DATA_KEY_BYTES];
	cc_error	err;
	text	   *wrapped;

	cc_kms_settings(schema, kms_conn_id, kms_extra, &settings);	/* refuses a chained KMS connection */
	if (!cc_random_bytes(key, sizeof key, &err))
		cc_report(&err, NULL);
	wrapped = cc_kms_wrap_key(&settings, key, sizeof key);
	cc_kms_settings_wipe(&settings);
	*ring = keyring_of_data_key(key, sizeof key, kms_conn_id);
	cc_wipe(key, sizeof key);
	return wrapped;
}

/* ---- SQL functions ---- */

static char *
optional_text_arg(FunctionCallInfo fcinfo, int argno)
{
	return (PG_NARGS() > argno && !PG_ARGISNULL(argno)) ? text_to_cstring(PG_GETARG_TEXT_PP(argno)) : NULL;
}

/* A jsonb argument as JSON text (its datum is jsonb's binary form, not text). */
static char *
optional_jsonb_arg(FunctionCallInfo fcinfo, int argno)
{
	return (PG_NARGS() > argno && !PG_ARGISNULL(argno)) ?
		DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(argno))) : NULL;
}

/* kms_encrypt(plaintext bytea, kms_conn_id text, kms_extra jsonb, schema_name text) -> text */
PG_FUNCTION_INFO_V1(cc_kms_encrypt);
Datum
cc_kms_encrypt(PG_FUNCTION_ARGS)
{
	bytea	   *plain;
	char	   *kms_conn_id;
	char	   *kms_extra;
	char	   *schema;
	KmsSettings settings;
	text	   *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	plain = PG_GETARG_BYTEA_PP(0);
	kms_conn_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	kms_extra = optional_jsonb_arg(fcinfo, 2);
	schema = optional_text_arg(fcinfo, 3);
	if (VARSIZE_ANY_EXHDR(plain) == 0 || VARSIZE_ANY_EXHDR(plain) > CC_KMS_PLAINTEXT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("kms_encrypt wraps keys of 1 to %d bytes, not %zu", CC_KMS_PLAINTEXT_MAX,
						(size_t) VARSIZE_ANY_EXHDR(plain))));
	cc_kms_settings(schema ? schema : "public", kms_conn_id, kms_extra, &settings);
	result = cc_kms_wrap_key(&settings, (const uint8_t *) VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain));
	cc_kms_settings_wipe(&settings);
	PG_RETURN_TEXT_P(result);
}

/* kms_decrypt(ciphertext text, kms_conn_id text, kms_extra jsonb, schema_name text) -> bytea */
PG_FUNCTION_INFO_V1(cc_kms_decrypt);
Datum
cc_kms_decrypt(PG_FUNCTION_ARGS)
{
	text	   *wrapped;
	char	   *kms_conn_id;
	char	   *kms_extra;
	char	   *schema;
	KmsSettings settings;
	uint8_t		key[CC_KMS_PLAINTEXT_MAX];
	size_t		n;
	bytea	   *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	wrapped = PG_GETARG_TEXT_PP(0);
	kms_conn_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	kms_extra = optional_jsonb_arg(fcinfo, 2);
	schema = optional_text_arg(fcinfo, 3);
	cc_kms_settings(schema ? schema : "public", kms_conn_id, kms_extra, &settings);
	n = cc_kms_unwrap_key(&settings, VARDATA_ANY(wrapped), VARSIZE_ANY_EXHDR(wrapped), key);
	cc_kms_settings_wipe(&settings);
	result = palloc(VARHDRSZ + n);
	SET_VARSIZE(result, VARHDRSZ + n);
	memcpy(VARDATA(result), key, n);
	cc_wipe(key, sizeof key);
	PG_RETURN_BYTEA_P(result);
}

/*
 * _kms_fernet_decrypt(token, conn_key, kms_conn_id, kms_extra, schema) -> text:
 * a value of a KMS-encrypted row, for the reading helpers.
 */
PG_FUNCTION_INFO_V1(cc_kms_fernet_decrypt);
Datum
cc_kms_fernet_decrypt(PG_FUNCTION_ARGS)
{
	text	   *token;
	text	   *conn_key;
	const cc_keyring *ring;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("a KMS-encrypted value needs its conn_key and KMS connection")));
	token = PG_GETARG_TEXT_PP(0);
	conn_key = PG_GETARG_TEXT_PP(1);
	ring = cc_kms_row_keyring(optional_text_arg(fcinfo, 4) ? optional_text_arg(fcinfo, 4) : "public",
							  text_to_cstring(PG_GETARG_TEXT_PP(2)), optional_text_arg(fcinfo, 3),
							  VARDATA_ANY(conn_key), VARSIZE_ANY_EXHDR(conn_key));
	PG_RETURN_TEXT_P(cc_bytes_to_text(cc_decrypt_bytes(ring, VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token),
													   false, 0, NULL)));
}

/*
 * _kms_value_state(value, conn_key, kms_conn_id, kms_extra, schema, verify) -> integer:
 * -3 a token of the row's own data key, 0 plaintext, -1 undecryptable, -2 empty.
 * Without verify, any token counts as the row's own (no KMS call): enough for
 * rotate and status, which must keep working while a KMS is down.
 */
PG_FUNCTION_INFO_V1(cc_kms_value_state);
Datum
cc_kms_value_state(PG_FUNCTION_ARGS)
{
	text	   *value;
	text	   *conn_key;
	const cc_keyring *ring;
	int			index;

	if (PG_ARGISNULL(0) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)) == 0)
		PG_RETURN_INT32(-2);
	value = PG_GETARG_TEXT_PP(0);
	if (!cc_looks_like_token(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value)))
		PG_RETURN_INT32(0);
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_INT32(-1);
	if (PG_NARGS() > 5 && !PG_ARGISNULL(5) && !PG_GETARG_BOOL(5))
		PG_RETURN_INT32(-3);
	conn_key = PG_GETARG_TEXT_PP(1);
	ring = cc_kms_row_keyring(optional_text_arg(fcinfo, 4) ? optional_text_arg(fcinfo, 4) : "public",
							  text_to_cstring(PG_GETARG_TEXT_PP(2)), optional_text_arg(fcinfo, 3),
							  VARDATA_ANY(conn_key), VARSIZE_ANY_EXHDR(conn_key));
	index = cc_key_of(ring, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
	PG_RETURN_INT32(index >= 0 ? -3 : -1);
}

/* _kms_rewrap(conn_key, kms_conn_id, kms_extra, schema) -> text: the same data key wrapped anew. */
PG_FUNCTION_INFO_V1(cc_kms_rewrap);
Datum
cc_kms_rewrap(PG_FUNCTION_ARGS)
{
	text	   *conn_key;
	char	   *kms_conn_id;
	KmsSettings settings;
	uint8_t		key[CC_KMS_PLAINTEXT_MAX];
	size_t		n;
	text	   *result;
	cc_error	err;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	conn_key = PG_GETARG_TEXT_PP(0);
	kms_conn_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	cc_kms_settings(optional_text_arg(fcinfo, 3) ? optional_text_arg(fcinfo, 3) : "public", kms_conn_id,
					optional_text_arg(fcinfo, 2), &settings);
	/* Unwrap from the KMS itself, not the cache: a rewrap must prove the KMS still knows the key. */
	if (!cc_kms_unwrap(&settings.config, VARDATA_ANY(conn_key), VARSIZE_ANY_EXHDR(conn_key), 0, key, &n, &err))
		report_kms_failure(&err);
	result = cc_kms_wrap_key(&settings, key, n);
	cc_kms_settings_wipe(&settings);
	cc_wipe(key, sizeof key);
	PG_RETURN_TEXT_P(result);
}

/* _kms_cache_size() -> integer: unwrapped keys cached in this backend. */
PG_FUNCTION_INFO_V1(cc_kms_cache_size_sql);
Datum
cc_kms_cache_size_sql(PG_FUNCTION_ARGS)
{
	cc_kms_cache_expire(kms_key_cache_ttl_s);
	PG_RETURN_INT32(cc_kms_cache_size());
}
