/*
 * The server keyring and the GUCs that configure it.
 *
 * Precedence: conn_crypto.fernet_key when non-empty, otherwise the server
 * process's AIRFLOW__CORE__FERNET_KEY (Airflow's own variable). The parsed
 * keyring is cached per backend and re-parsed only when the GUC changes (the
 * assign hook bumps a generation counter); the environment cannot change
 * under a running backend, so it is read once.
 */
#include "server_keyring.h"

#include "report.h"

#include <stdlib.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

char	   *cc_fernet_key_guc = NULL;

static uint64 guc_generation = 1;
static uint64 cached_generation = 0;
static cc_keyring *cached_ring = NULL;
static const char *cached_source = NULL;
static bool exit_hook_registered = false;

static const char *const ENV_KEY = "AIRFLOW__CORE__FERNET_KEY";

/*
 * pg_db_role_setting and pg_proc.proconfig are readable by every user, so a
 * key stored by ALTER DATABASE/ROLE ... SET or CREATE FUNCTION ... SET would
 * be exposed to all of them. PGC_S_TEST is how those commands validate.
 */
static bool
check_key_source(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (source == PGC_S_TEST)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("conn_crypto keys cannot be stored with ALTER DATABASE, ALTER ROLE or a function's SET clause"),
				 errdetail("Those settings are readable by every database user."),
				 errhint("Put the key in postgresql.conf, in the server's environment (AIRFLOW__CORE__FERNET_KEY), or SET it in a superuser session."),
				 errhidestmt(true)));
	if (source == PGC_S_DATABASE || source == PGC_S_USER || source == PGC_S_DATABASE_USER)
	{
		/* Stored before the library was loaded: ignore it rather than use a leaked key. */
		ereport(WARNING,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("ignoring conn_crypto.fernet_key set by ALTER DATABASE or ALTER ROLE"),
				 errhint("Remove it with ALTER DATABASE/ROLE ... RESET conn_crypto.fernet_key; it is readable by every user.")));
		/* GUC strings are malloc'd: replace the value with an empty one. */
		{
			char	   *empty = malloc(1);

			if (empty == NULL)
				return false;
			empty[0] = '\0';
			free(*newval);
			*newval = empty;
		}
		return true;
	}
	return true;
}

static void
assign_key(const char *newval, void *extra)
{
	guc_generation++;
}

static void
release_keyring(int code, Datum arg)
{
	cc_keyring_free(cached_ring);	/* wipes the key schedules */
	cached_ring = NULL;
}

void
cc_define_key_gucs(void)
{
	DefineCustomStringVariable("conn_crypto.fernet_key",
							   "Comma-separated Fernet keyring; the first key encrypts.",
							   "When empty, the server's AIRFLOW__CORE__FERNET_KEY environment variable is used.",
							   &cc_fernet_key_guc,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   check_key_source, assign_key, NULL);
}

/* The configured keyring text and its source name, or NULL when none. */
static const char *
configured_text(const char **source)
{
	const char *env;

	if (cc_fernet_key_guc != NULL && cc_fernet_key_guc[0] != '\0')
	{
		*source = "conn_crypto.fernet_key";
		return cc_fernet_key_guc;
	}
	env = getenv(ENV_KEY);
	if (env != NULL && env[0] != '\0')
	{
		*source = ENV_KEY;
		return env;
	}
	return NULL;
}

const cc_keyring *
cc_server_keyring_or_null(void)
{
	const char *source = NULL;
	const char *text;
	cc_error	err;
	cc_keyring *ring;

	if (cached_generation == guc_generation)
		return cached_ring;

	if (!exit_hook_registered)
	{
		on_proc_exit(release_keyring, (Datum) 0);
		exit_hook_registered = true;
	}
	cc_keyring_free(cached_ring);
	cached_ring = NULL;
	cached_source = NULL;

	text = configured_text(&source);
	if (text == NULL)
	{
		cached_generation = guc_generation;
		return NULL;
	}
	ring = cc_keyring_parse(text, strlen(text), &err);
	if (ring == NULL)
	{
		if (err.status == CC_ERR_NO_KEY)
		{
			cached_generation = guc_generation;
			return NULL;
		}
		cc_report(&err, source);
	}
	cached_ring = ring;
	cached_source = source;
	cached_generation = guc_generation;
	return cached_ring;
}

const cc_keyring *
cc_server_keyring(void)
{
	const cc_keyring *ring = cc_server_keyring_or_null();

	if (ring == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no Fernet key is configured"),
				 errhint("Set conn_crypto.fernet_key in postgresql.conf, or start the server with the environment variable AIRFLOW__CORE__FERNET_KEY.")));
	return ring;
}

const char *
cc_server_keyring_source(void)
{
	return cached_source;
}
