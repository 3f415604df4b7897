/*
 * A query like SELECT fernet_decrypt(t, 'k1,k2') FROM big_table passes the
 * same keyring on every row. Parsing it prepares OpenSSL contexts, so the
 * parsed keyring is kept in the call site's fn_extra and reused while the
 * argument stays the same. A memory-context callback frees (and wipes) it
 * together with the copy of the key text when the call site goes away.
 */
#include "explicit_keyring.h"

#include "report.h"
#include "utils/memutils.h"

typedef struct ExplicitKeyringCache
{
	char	   *text;			/* copy of the key argument, wiped on release */
	Size		len;
	cc_keyring *ring;
	MemoryContextCallback release;
} ExplicitKeyringCache;

static void
release_cache(void *arg)
{
	ExplicitKeyringCache *cache = (ExplicitKeyringCache *) arg;

	cc_keyring_free(cache->ring);
	cache->ring = NULL;
	if (cache->text)
	{
		cc_wipe(cache->text, cache->len);
		pfree(cache->text);
		cache->text = NULL;
	}
}

const cc_keyring *
cc_explicit_keyring(FunctionCallInfo fcinfo, int argno)
{
	text	   *arg = PG_GETARG_TEXT_PP(argno);
	const char *data = VARDATA_ANY(arg);
	Size		len = VARSIZE_ANY_EXHDR(arg);
	ExplicitKeyringCache *cache = (ExplicitKeyringCache *) fcinfo->flinfo->fn_extra;
	cc_error	err;
	cc_keyring *ring;

	if (cache != NULL && cache->ring != NULL && cache->len == len && memcmp(cache->text, data, len) == 0)
		return cache->ring;

	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ExplicitKeyringCache));
		cache->release.func = release_cache;
		cache->release.arg = cache;
		MemoryContextRegisterResetCallback(fcinfo->flinfo->fn_mcxt, &cache->release);
		fcinfo->flinfo->fn_extra = cache;
	}
	release_cache(cache);

	/* Copy first: if parsing fails the copy is still released and wiped. */
	cache->text = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, len + 1);
	memcpy(cache->text, data, len);
	cache->len = len;

	ring = cc_keyring_parse(data, len, &err);
	if (ring == NULL)
	{
		if (err.status == CC_ERR_NO_KEY)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the keys argument is empty"),
					 errhint("Pass one key or a comma-separated keyring, or use the variant without keys to use the server keyring.")));
		cc_report(&err, NULL);
	}
	cache->ring = ring;
	return ring;
}
