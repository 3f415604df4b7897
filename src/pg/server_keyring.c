/*
 * The server keyring and the GUCs that configure it.
 *
 * Precedence: conn_crypto.fernet_key when non-empty; otherwise the standard
 * output of conn_crypto.fernet_key_command (postgresql.conf only) when set;
 * otherwise the server process's AIRFLOW__CORE__FERNET_KEY (Airflow's own
 * variable). The parsed keyring is cached per backend and re-read only when
 * one of the settings changes (the assign hooks bump a generation counter);
 * the environment cannot change under a running backend.
 */
#include "server_keyring.h"

#include "report.h"

#include <stdlib.h>

#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "storage/fd.h"
#include "port.h"
#include "storage/ipc.h"
#include "utils/guc.h"

/* The GUCs' own values: the key's is only ever the mask (see check_fernet_key). */
static char *fernet_key_guc = NULL;
static char *fernet_key_command_guc = NULL;

/* A keyring of 1000 keys is about 45 kB; anything far larger is not a keyring. */
#define KEY_COMMAND_MAX_OUTPUT (1024 * 1024)

static uint64 guc_generation = 1;
static uint64 cached_generation = 0;
static cc_keyring *cached_ring = NULL;
static const char *cached_source = NULL;
static bool exit_hook_registered = false;

static const char *const ENV_KEY = "AIRFLOW__CORE__FERNET_KEY";

/* What SHOW, pg_settings and the reload log see instead of the keyring. */
#define KEY_MASK "********"

/* The real keyring text: the GUC's "extra", kept by the GUC machinery. */
static const char *fernet_key_text = NULL;

/* Replaces a malloc'd GUC string with a malloc'd copy of text, wiping the old one. */
static bool
replace_guc_string(char **value, const char *text)
{
	char	   *copy = strdup(text);

	if (copy == NULL)
		return false;
	cc_wipe(*value, strlen(*value));
	free(*value);
	*value = copy;
	return true;
}

/*
 * The keyring moves into the GUC's "extra" and the visible value is always a
 * mask, set or not: SHOW and current_setting never return it (not even to superusers),
 * and a reload of postgresql.conf that changes the key does not log
 * 'parameter changed to "<key>"', since the visible value stays the same.
 *
 * pg_db_role_setting and pg_proc.proconfig are readable by every user, so a
 * key stored by ALTER DATABASE/ROLE ... SET or CREATE FUNCTION ... SET would
 * be exposed to all of them: refused. PGC_S_TEST is how those commands validate.
 */
static bool
check_fernet_key(char **newval, void **extra, GucSource source)
{
	char	   *real;

	if (*newval == NULL)
		return true;
	/* Empty is masked too: a reload that sets or changes the key then compares equal. */
	if ((*newval)[0] == '\0')
		return replace_guc_string(newval, KEY_MASK);
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
		return replace_guc_string(newval, KEY_MASK);
	}
	real = strdup(*newval);		/* GUC frees extra with free() */
	if (real == NULL)
		return false;
	if (!replace_guc_string(newval, KEY_MASK))
	{
		cc_wipe(real, strlen(real));
		free(real);
		return false;
	}
	*extra = real;
	return true;
}

static void
assign_fernet_key(const char *newval, void *extra)
{
	fernet_key_text = (const char *) extra;	/* NULL when the setting is empty */
	guc_generation++;
}

static void
assign_key_command(const char *newval, void *extra)
{
	guc_generation++;
}

static void
release_keyring(int code, Datum arg)
{
	cc_keyring_free(cached_ring);	/* wipes the key schedules */
	cached_ring = NULL;
}

/*
 * Takes AIRFLOW__CORE__FERNET_KEY out of the process environment into private
 * memory, so that programs the server starts (archive_command, COPY ... PROGRAM,
 * the key command) do not inherit it. Preloaded, this runs once in the
 * postmaster and every backend inherits the copy.
 */
static char *env_keyring = NULL;

static void
capture_environment_key(void)
{
	const char *value = getenv(ENV_KEY);

	if (value == NULL || env_keyring != NULL)
		return;
	env_keyring = strdup(value);
	if (env_keyring != NULL)
		unsetenv(ENV_KEY);
}

void
cc_define_key_gucs(void)
{
	capture_environment_key();
	DefineCustomStringVariable("conn_crypto.fernet_key",
							   "Comma-separated Fernet keyring; the first key encrypts.",
							   "When empty, the server's AIRFLOW__CORE__FERNET_KEY environment variable is used.",
							   &fernet_key_guc,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   check_fernet_key, assign_fernet_key, NULL);
	DefineCustomStringVariable("conn_crypto.fernet_key_command",
							   "Shell command whose standard output is the Fernet keyring.",
							   "Used when conn_crypto.fernet_key is empty; settable only in postgresql.conf.",
							   &fernet_key_command_guc,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   NULL, assign_key_command, NULL);
}

/*
 * Runs the key command and returns its output (palloc'd, NUL-terminated).
 * Any failure is an ERROR: a partial or empty keyring is never used.
 */
static char *
run_key_command(const char *command, Size *len)
{
	FILE	   *pipe;
	StringInfoData out;
	char		buf[4096];
	size_t		n;
	int			status;

	fflush(NULL);
	pipe = OpenPipeStream(command, "r");
	if (pipe == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not run conn_crypto.fernet_key_command: %m")));
	initStringInfo(&out);
	while ((n = fread(buf, 1, sizeof buf, pipe)) > 0)
	{
		if (out.len + n > KEY_COMMAND_MAX_OUTPUT)
		{
			ClosePipeStream(pipe);
			cc_wipe(out.data, out.len);
			cc_wipe(buf, sizeof buf);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("conn_crypto.fernet_key_command printed more than %d bytes", KEY_COMMAND_MAX_OUTPUT)));
		}
		appendBinaryStringInfo(&out, buf, n);
	}
	cc_wipe(buf, sizeof buf);
	status = ClosePipeStream(pipe);
	if (status != 0)
	{
		cc_wipe(out.data, out.len);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("conn_crypto.fernet_key_command failed: %s", wait_result_to_str(status)),
				 errhint("No key was taken from it; fix the command in postgresql.conf and reload.")));
	}
	*len = out.len;
	return out.data;
}

/*
 * The configured keyring text and its source name, or NULL when none.
 * *owned is set when the text is a palloc'd copy the caller must wipe.
 */
static const char *
configured_text(const char **source, Size *len, bool *owned)
{
	const char *env;

	*owned = false;
	if (fernet_key_text != NULL && fernet_key_text[0] != '\0')
	{
		*source = "conn_crypto.fernet_key";
		*len = strlen(fernet_key_text);
		return fernet_key_text;
	}
	if (fernet_key_command_guc != NULL && fernet_key_command_guc[0] != '\0')
	{
		*source = "conn_crypto.fernet_key_command";
		*owned = true;
		return run_key_command(fernet_key_command_guc, len);
	}
	env = env_keyring;
	if (env != NULL && env[0] != '\0')
	{
		*source = ENV_KEY;
		*len = strlen(env);
		return env;
	}
	return NULL;
}

const cc_keyring *
cc_server_keyring_or_null(void)
{
	const char *source = NULL;
	const char *text;
	Size		len = 0;
	bool		owned;
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

	text = configured_text(&source, &len, &owned);
	if (text == NULL)
	{
		cached_generation = guc_generation;
		return NULL;
	}
	ring = cc_keyring_parse(text, len, &err);
	if (owned)
	{
		cc_wipe((char *) text, len);
		pfree((char *) text);
	}
	if (ring == NULL)
	{
		/* A command must print a keyring; an empty setting or variable means "none". */
		if (err.status == CC_ERR_NO_KEY && !owned)
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
				 errhint("Set conn_crypto.fernet_key or conn_crypto.fernet_key_command in postgresql.conf, or start the server with the environment variable AIRFLOW__CORE__FERNET_KEY.")));
	return ring;
}

const char *
cc_server_keyring_source(void)
{
	return cached_source;
}
