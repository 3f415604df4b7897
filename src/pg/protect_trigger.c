/*
 * The trigger that keeps protected columns encrypted.
 *
 * Its configuration travels in the trigger's arguments, three per protected
 * column: column name, flag column name ('' for none), and 'skip_empty' or
 * 'encrypt_empty'. pg_dump carries the trigger with its arguments, and no
 * catalog lookup is needed per row. Per value, on INSERT and UPDATE:
 *   NULL, or empty under skip_empty      left alone
 *   a token the server keyring accepts   left as is, flag set true
 *   a token no key accepts               ERROR: re-encrypting would lose the secret
 *   anything else (plaintext)            encrypted under the primary key, flag true
 * An UPDATE that changes neither the value nor its flag costs nothing.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type_d.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "bridge.h"
#include "fernet_ops.h"
#include "protect_trigger.h"
#include "report.h"
#include "server_keyring.h"

bool		cc_allow_plaintext = false;

typedef struct ProtectedColumn
{
	AttrNumber	attnum;
	AttrNumber	flag_attnum;	/* InvalidAttrNumber when there is no flag */
	bool		encrypt_empty;
	int32		max_chars;		/* varchar(n) limit, or -1 */
	const char *name;
} ProtectedColumn;

typedef struct TriggerConfig
{
	Oid			tgoid;
	int			ncolumns;
	ProtectedColumn columns[FLEXIBLE_ARRAY_MEMBER];
} TriggerConfig;

void
cc_define_trigger_gucs(void)
{
	DefineCustomBoolVariable("conn_crypto.allow_plaintext",
							 "Store values in plaintext when no Fernet key is configured, as Airflow does.",
							 "When off (the default), protected writes fail without a key.",
							 &cc_allow_plaintext,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
}

static AttrNumber
column_number(Relation rel, const char *name, Oid want1, Oid want2, const char *what)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			attnum = SPI_fnumber(desc, name);
	Oid			type;

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s column \"%s\" of table \"%s\" does not exist", what, name,
						RelationGetRelationName(rel))));
	type = TupleDescAttr(desc, attnum - 1)->atttypid;
	if (type != want1 && type != want2)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s column \"%s\" of table \"%s\" has type %s", what, name,
						RelationGetRelationName(rel), format_type_be(type)),
				 errhint("Protected columns are text or varchar; flag columns are boolean.")));
	return (AttrNumber) attnum;
}

/* Parses the trigger arguments once per query (fn_extra lives as long as the query's trigger state). */
static TriggerConfig *
trigger_config(FunctionCallInfo fcinfo, TriggerData *td)
{
	Trigger    *tg = td->tg_trigger;
	TriggerConfig *cfg = (TriggerConfig *) fcinfo->flinfo->fn_extra;
	Relation	rel = td->tg_relation;
	int			n;

	if (cfg != NULL && cfg->tgoid == tg->tgoid)
		return cfg;
	if (tg->tgnargs == 0 || tg->tgnargs % 3 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on \"%s\" has malformed conn_crypto arguments", tg->tgname,
						RelationGetRelationName(rel)),
				 errhint("Create it with conn_crypto.protect_column().")));
	n = tg->tgnargs / 3;
	cfg = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt,
								 offsetof(TriggerConfig, columns) + n * sizeof(ProtectedColumn));
	for (int i = 0; i < n; i++)
	{
		ProtectedColumn *c = &cfg->columns[i];
		const char *flag = tg->tgargs[3 * i + 1];
		const char *mode = tg->tgargs[3 * i + 2];
		Form_pg_attribute att;

		c->name = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, tg->tgargs[3 * i]);
		c->attnum = column_number(rel, c->name, TEXTOID, VARCHAROID, "protected");
		c->flag_attnum = flag[0] ? column_number(rel, flag, BOOLOID, BOOLOID, "flag") : InvalidAttrNumber;
		if (strcmp(mode, "encrypt_empty") == 0)
			c->encrypt_empty = true;
		else if (strcmp(mode, "skip_empty") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("unknown conn_crypto mode \"%s\" for column \"%s\"", mode, c->name)));
		att = TupleDescAttr(RelationGetDescr(rel), c->attnum - 1);
		c->max_chars = (att->atttypid == VARCHAROID && att->atttypmod >= VARHDRSZ) ?
			att->atttypmod - VARHDRSZ : -1;
	}
	cfg->ncolumns = n;
	cfg->tgoid = tg->tgoid;
	fcinfo->flinfo->fn_extra = cfg;
	return cfg;
}

static bool
same_datum(Datum a, bool a_null, Datum b, bool b_null, bool byval, int len)
{
	if (a_null || b_null)
		return a_null == b_null;
	return datumIsEqual(a, b, byval, len);
}

static void
refuse_foreign_token(Relation rel, const ProtectedColumn *c)
{
	ereport(ERROR,
			(errcode(ERRCODE_CC_INVALID_TOKEN),
			 errmsg("value for column \"%s\" of table \"%s.%s\" is a Fernet token that no key of the server keyring decrypts",
					c->name, get_namespace_name(RelationGetNamespace(rel)), RelationGetRelationName(rel)),
			 errdetail("It was encrypted with a key that is not configured here, or the wrong key is configured. "
					   "Encrypting it again would make the secret unreadable, so nothing was written."),
			 errhint("Add the key that made it to conn_crypto.fernet_key (keys after the first only decrypt).")));
}

static void
refuse_without_key(Relation rel, const ProtectedColumn *c)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot write protected column \"%s\" of table \"%s.%s\": no Fernet key is configured",
					c->name, get_namespace_name(RelationGetNamespace(rel)), RelationGetRelationName(rel)),
			 errhint("Set conn_crypto.fernet_key in postgresql.conf or AIRFLOW__CORE__FERNET_KEY in the server's environment; "
					 "a superuser may SET conn_crypto.allow_plaintext = on to store plaintext as Airflow does without a key.")));
}

PG_FUNCTION_INFO_V1(cc_protect_trigger);
Datum
cc_protect_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerConfig *cfg;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	newtup;
	HeapTuple	oldtup;
	int		   *repl_cols;
	Datum	   *repl_vals;
	bool	   *repl_nulls;
	int			nrepl = 0;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("conn_crypto.protect_trigger() must be a BEFORE INSERT OR UPDATE row trigger")));

	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	cfg = trigger_config(fcinfo, td);
	newtup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	oldtup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_trigtuple : NULL;

	repl_cols = palloc(sizeof(int) * 2 * cfg->ncolumns);
	repl_vals = palloc(sizeof(Datum) * 2 * cfg->ncolumns);
	repl_nulls = palloc0(sizeof(bool) * 2 * cfg->ncolumns);

	for (int i = 0; i < cfg->ncolumns; i++)
	{
		const ProtectedColumn *c = &cfg->columns[i];
		bool		isnull,
					flag_null = true;
		Datum		value = heap_getattr(newtup, c->attnum, desc, &isnull);
		Datum		flag = (Datum) 0;
		bool		flag_true;
		bool		want_flag;
		text	   *t;
		const char *data;
		Size		len;
		const cc_keyring *ring;

		if (c->flag_attnum != InvalidAttrNumber)
			flag = heap_getattr(newtup, c->flag_attnum, desc, &flag_null);
		flag_true = !flag_null && DatumGetBool(flag);

		if (oldtup != NULL)
		{
			bool		old_null,
						old_flag_null = true;
			Datum		old = heap_getattr(oldtup, c->attnum, desc, &old_null);
			Datum		old_flag = (Datum) 0;

			if (c->flag_attnum != InvalidAttrNumber)
				old_flag = heap_getattr(oldtup, c->flag_attnum, desc, &old_flag_null);
			if (same_datum(value, isnull, old, old_null, false, -1) &&
				same_datum(flag, flag_null, old_flag, old_flag_null, true, 1))
				continue;		/* untouched: no decryption, no re-encryption */
		}
		if (isnull)
			continue;
		t = DatumGetTextPP(value);
		data = VARDATA_ANY(t);
		len = VARSIZE_ANY_EXHDR(t);
		if (len == 0 && !c->encrypt_empty)
			continue;

		ring = cc_server_keyring_or_null();
		if (ring != NULL)
		{
			cc_error	err;
			int			idx = cc_key_index(ring, data, len, &err);

			if (idx == -2)
				cc_report(&err, NULL);
			if (idx >= 0)
			{
				want_flag = true;
				goto set_flag;
			}
			if (cc_looks_like_token(data, len))
				refuse_foreign_token(rel, c);
		}
		else
		{
			if (!cc_allow_plaintext)
				refuse_without_key(rel, c);
			want_flag = false;	/* Airflow without a key: stored as is */
			goto set_flag;
		}

		/* Plaintext: encrypt under the primary key. */
		{
			text	   *token = cc_encrypt_bytes(ring, data, len);
			Size		token_len = VARSIZE(token) - VARHDRSZ;

			if (c->max_chars >= 0 && token_len > (Size) c->max_chars)
				ereport(ERROR,
						(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
						 errmsg("encrypted value for column \"%s\" of table \"%s\" is %zu characters, more than its varchar(%d)",
								c->name, RelationGetRelationName(rel), (size_t) token_len, c->max_chars),
						 errhint("A Fernet token is about 4/3 of the value's size plus 100 characters; widen the column or shorten the value.")));
			repl_cols[nrepl] = c->attnum;
			repl_vals[nrepl] = PointerGetDatum(token);
			repl_nulls[nrepl] = false;
			nrepl++;
			want_flag = true;
		}

set_flag:
		if (c->flag_attnum != InvalidAttrNumber && (flag_null || flag_true != want_flag))
		{
			repl_cols[nrepl] = c->flag_attnum;
			repl_vals[nrepl] = BoolGetDatum(want_flag);
			repl_nulls[nrepl] = false;
			nrepl++;
		}
	}

	if (nrepl > 0)
		newtup = heap_modify_tuple_by_cols(newtup, desc, nrepl, repl_cols, repl_vals, repl_nulls);
	return PointerGetDatum(newtup);
}
