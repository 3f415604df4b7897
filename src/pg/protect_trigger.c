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
 *
 * A fourth kind of triple, ('conn_key', '_kms_conn_id', 'kms'), added by
 * enable_kms(), makes the table's rows with _kms_conn_id set use their own
 * data key (wrapped by that KMS connection into conn_key) instead of the
 * server keyring; see kms.c. Tokens of the key a row used before (the server
 * keyring, or its previous data key) are moved under the row's current key.
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
#include "kms.h"
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

/* Airflow's per-connection KMS columns, when enable_kms() marked the table. */
typedef struct KmsColumns
{
	bool		enabled;
	AttrNumber	conn_key;
	AttrNumber	kms_conn_id;
	AttrNumber	kms_extra;
	AttrNumber	conn_id;
} KmsColumns;

typedef struct TriggerConfig
{
	Oid			tgoid;
	KmsColumns	kms;
	int			ncolumns;
	ProtectedColumn columns[FLEXIBLE_ARRAY_MEMBER];
} TriggerConfig;

/* The keys one row is written with. */
typedef struct RowKeys
{
	const cc_keyring *ring;		/* encrypts; its tokens stay as they are */
	const cc_keyring *prev[2];	/* tokens of these are moved under ring */
	bool		ring_changed;	/* unchanged values must be moved too */
} RowKeys;

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
	for (int i = 0, k = 0; i < n; i++)
	{
		ProtectedColumn *c = &cfg->columns[k];
		const char *flag = tg->tgargs[3 * i + 1];
		const char *mode = tg->tgargs[3 * i + 2];
		Form_pg_attribute att;

		if (strcmp(mode, "kms") == 0)
		{
			cfg->kms.enabled = true;
			cfg->kms.conn_key = column_number(rel, "conn_key", TEXTOID, VARCHAROID, "KMS");
			cfg->kms.kms_conn_id = column_number(rel, "_kms_conn_id", TEXTOID, VARCHAROID, "KMS");
			cfg->kms.kms_extra = column_number(rel, "_kms_extra", TEXTOID, VARCHAROID, "KMS");
			cfg->kms.conn_id = column_number(rel, "conn_id", TEXTOID, VARCHAROID, "KMS");
			continue;
		}
		k++;

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
	cfg->ncolumns = n - (cfg->kms.enabled ? 1 : 0);
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

/* A text column of a tuple as a C string, or NULL when NULL or empty. */
static char *
tuple_cstring(HeapTuple tup, TupleDesc desc, AttrNumber attnum)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, attnum, desc, &isnull);
	char	   *s;

	if (isnull)
		return NULL;
	s = TextDatumGetCString(d);
	return s[0] ? s : NULL;
}

static bool
same_cstring(const char *a, const char *b)
{
	return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* A KMS connection cannot itself be KMS-encrypted, nor encrypt itself. */
static void
check_kms_chain(Relation rel, const char *conn_id, const char *kms_conn_id)
{
	bool		self = conn_id != NULL && strcmp(conn_id, kms_conn_id) == 0;

	cc_kms_lock_settings();
	if (self || (conn_id != NULL && cc_kms_is_used(get_namespace_name(RelationGetNamespace(rel)), conn_id)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("can't chain KMS encrypted connections"),
				 errdetail("Connection \"%s\" is the KMS connection of %s.", conn_id,
						   self ? "itself" : "other connections")));
}

/*
 * Decides which keys a row is written with, and updates conn_key in the
 * replacement arrays: a KMS row keeps its data key while its KMS settings
 * stay the same, gets a new one wrapped by the new KMS settings when they
 * change, and returns to the server keyring when _kms_conn_id is cleared.
 */
static void
kms_row_keys(TriggerData *td, TriggerConfig *cfg, HeapTuple newtup, HeapTuple oldtup, RowKeys *rk,
			 int *repl_cols, Datum *repl_vals, bool *repl_nulls, int *nrepl)
{
	Relation	rel = td->tg_relation;
	TupleDesc	desc = RelationGetDescr(rel);
	const char *schema = get_namespace_name(RelationGetNamespace(rel));
	const KmsColumns *kc = &cfg->kms;
	char	   *k = tuple_cstring(newtup, desc, kc->kms_conn_id);
	char	   *e = tuple_cstring(newtup, desc, kc->kms_extra);
	char	   *ck = tuple_cstring(newtup, desc, kc->conn_key);
	char	   *k0 = oldtup ? tuple_cstring(oldtup, desc, kc->kms_conn_id) : NULL;
	char	   *e0 = oldtup ? tuple_cstring(oldtup, desc, kc->kms_extra) : NULL;
	char	   *ck0 = oldtup ? tuple_cstring(oldtup, desc, kc->conn_key) : NULL;
	const cc_keyring *server = cc_server_keyring_or_null();
	const cc_keyring *old_key = NULL;
	text	   *new_ck = NULL;
	bool		clear_ck = false;

	rk->ring = server;
	rk->prev[0] = rk->prev[1] = NULL;
	rk->ring_changed = false;

	if (k != NULL)
	{
		bool		same_kms = k0 != NULL && strcmp(k, k0) == 0 && same_cstring(e, e0);

		if (oldtup != NULL && same_kms && ck != NULL && same_cstring(ck, ck0))
		{
			rk->ring = cc_kms_row_keyring(schema, k, e, ck, strlen(ck));
			rk->prev[0] = server;
		}
		else if (oldtup != NULL && same_kms && ck != NULL)
		{
			/* conn_key re-wrapped (rewrap_kms) or replaced: tokens follow the key it holds. */
			rk->ring = cc_kms_row_keyring(schema, k, e, ck, strlen(ck));
			if (ck0 != NULL)
				rk->prev[0] = cc_kms_row_keyring(schema, k0, e0, ck0, strlen(ck0));
			rk->prev[1] = server;
			rk->ring_changed = true;
		}
		else if (oldtup == NULL && ck != NULL)
		{
			/* A row arriving with its wrapped key (COPY, restore): use that key. */
			check_kms_chain(rel, tuple_cstring(newtup, desc, kc->conn_id), k);
			rk->ring = cc_kms_row_keyring(schema, k, e, ck, strlen(ck));
			rk->prev[0] = server;
			rk->ring_changed = true;
		}
		else
		{
			/* New KMS row, or new KMS settings: a new data key wrapped by them. */
			check_kms_chain(rel, tuple_cstring(newtup, desc, kc->conn_id), k);
			if (k0 != NULL && ck0 != NULL)
				old_key = cc_kms_row_keyring(schema, k0, e0, ck0, strlen(ck0));
			new_ck = cc_kms_new_row_key(schema, k, e, &rk->ring);
			rk->prev[0] = old_key;
			rk->prev[1] = server;
			rk->ring_changed = true;
		}
	}
	else if (k0 != NULL)
	{
		/* Back to the server keyring: values leave the row's data key. */
		if (ck0 != NULL)
			rk->prev[0] = cc_kms_row_keyring(schema, k0, e0, ck0, strlen(ck0));
		rk->ring_changed = true;
		clear_ck = ck != NULL;
	}

	if (new_ck != NULL || clear_ck)
	{
		repl_cols[*nrepl] = kc->conn_key;
		repl_vals[*nrepl] = new_ck ? PointerGetDatum(new_ck) : (Datum) 0;
		repl_nulls[*nrepl] = new_ck == NULL;
		(*nrepl)++;
	}
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
	RowKeys		rk;
	bool		keys_known = false;
	TupleTableSlot *newslot;
	TupleTableSlot *oldslot;

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
	/* The same rows as slots: their columns are deformed once, not walked per read. */
	newslot = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newslot : td->tg_trigslot;
	oldslot = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_trigslot : NULL;

	repl_cols = palloc(sizeof(int) * (2 * cfg->ncolumns + 1));
	repl_vals = palloc(sizeof(Datum) * (2 * cfg->ncolumns + 1));
	repl_nulls = palloc0(sizeof(bool) * (2 * cfg->ncolumns + 1));

	memset(&rk, 0, sizeof rk);
	if (cfg->kms.enabled)
	{
		bool		kms_touched = oldtup == NULL;

		/* KMS settings or conn_key written: the row's keys must be decided now. */
		for (int i = 0; !kms_touched && i < 3; i++)
		{
			AttrNumber	att = i == 0 ? cfg->kms.conn_key : i == 1 ? cfg->kms.kms_conn_id : cfg->kms.kms_extra;
			bool		n1,
						n2;
			Datum		v1 = heap_getattr(newtup, att, desc, &n1);
			Datum		v2 = heap_getattr(oldtup, att, desc, &n2);

			kms_touched = !same_datum(v1, n1, v2, n2, false, -1);
		}
		if (kms_touched)
		{
			kms_row_keys(td, cfg, newtup, oldtup, &rk, repl_cols, repl_vals, repl_nulls, &nrepl);
			keys_known = true;
		}
	}

	for (int i = 0; i < cfg->ncolumns; i++)
	{
		const ProtectedColumn *c = &cfg->columns[i];
		bool		isnull,
					flag_null = true;
		Datum		value = slot_getattr(newslot, c->attnum, &isnull);
		Datum		flag = (Datum) 0;
		bool		flag_true;
		bool		want_flag;
		text	   *t;
		const char *data;
		Size		len;

		if (c->flag_attnum != InvalidAttrNumber)
			flag = slot_getattr(newslot, c->flag_attnum, &flag_null);
		flag_true = !flag_null && DatumGetBool(flag);

		if (oldslot != NULL && !rk.ring_changed)
		{
			bool		old_null,
						old_flag_null = true;
			Datum		old = slot_getattr(oldslot, c->attnum, &old_null);
			Datum		old_flag = (Datum) 0;

			if (c->flag_attnum != InvalidAttrNumber)
				old_flag = slot_getattr(oldslot, c->flag_attnum, &old_flag_null);
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

		if (!keys_known)
		{
			if (cfg->kms.enabled)
				kms_row_keys(td, cfg, newtup, oldtup, &rk, repl_cols, repl_vals, repl_nulls, &nrepl);
			else
				rk.ring = cc_server_keyring_or_null();
			keys_known = true;
		}

		if (rk.ring != NULL && cc_key_of(rk.ring, data, len) >= 0)
		{
			want_flag = true;
			goto set_flag;
		}
		/* A token of the key this row used before: decrypt, then encrypt below. */
		for (int p = 0; p < 2; p++)
		{
			if (rk.prev[p] != NULL && rk.prev[p] != rk.ring && cc_key_of(rk.prev[p], data, len) >= 0)
			{
				bytea	   *plain = cc_decrypt_bytes(rk.prev[p], data, len, false, 0, NULL);

				data = VARDATA(plain);
				len = VARSIZE(plain) - VARHDRSZ;
				goto encrypt;
			}
		}
		if (rk.ring == NULL)
		{
			if (!cc_allow_plaintext)
				refuse_without_key(rel, c);
			want_flag = false;	/* Airflow without a key: stored as is */
			goto set_flag;
		}
		if (cc_looks_like_token(data, len))
			refuse_foreign_token(rel, c);

encrypt:
		if (rk.ring == NULL)
			refuse_without_key(rel, c);
		{
			text	   *token = cc_encrypt_bytes(rk.ring, data, len);
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
