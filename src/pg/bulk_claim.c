/*
 * Row claiming for the bulk engine's one-statement batches.
 *
 * A batch is "UPDATE t SET ... WHERE key BETWEEN ... AND _bulk_claim(tableoid,
 * ctid, <values of the row that need work>)". _bulk_claim locks the row it
 * is shown, as SELECT ... FOR NO KEY UPDATE SKIP LOCKED would, and tells the
 * UPDATE whether to take it: a row another transaction holds, or changed
 * since the statement's snapshot, is left out instead of waited for. So a
 * batch never waits for a row lock (and cannot deadlock), without a locking
 * subquery joined back by ctid. It also counts the rows shown to need work
 * and the values of the rows it claimed, so the engine can tell when rows
 * were left out (claimed rows < rows needing work) and look for them again.
 *
 * Meant for the scan of an UPDATE of the same table, which holds the table
 * locked and rewrites every claimed row. Callable only by roles the
 * extension grants it to, and it checks what it is given like any SQL
 * function must: a heap table, UPDATE privilege (what FOR NO KEY UPDATE
 * takes), a tid of a real tuple.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/relation.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class_d.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/itemptr.h"
#include "utils/acl.h"
#include "utils/rel.h"

/* Since the last cc_bulk_claims() call. */
static int64 rows_needing_work = 0;
static int64 values_claimed = 0;

/* What one call site (one statement) has already checked. */
typedef struct ClaimCache
{
	Oid			relid;
	BlockNumber nblocks;
} ClaimCache;

static ClaimCache *
checked_relation(FunctionCallInfo fcinfo, Relation rel)
{
	ClaimCache *cache = (ClaimCache *) fcinfo->flinfo->fn_extra;

	if (cache != NULL && cache->relid == RelationGetRelid(rel))
		return cache;
	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relam != HEAP_TABLE_AM_OID)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("conn_crypto: \"%s\" is not a heap table", RelationGetRelationName(rel))));
	if (pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_UPDATE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", RelationGetRelationName(rel))));
	if (cache == NULL)
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ClaimCache));
	cache->relid = RelationGetRelid(rel);
	cache->nblocks = RelationGetNumberOfBlocks(rel);
	fcinfo->flinfo->fn_extra = cache;
	return cache;
}

/*
 * Pins the buffer of a tid that names a normal line pointer, else returns
 * InvalidBuffer. heap_lock_tuple trusts its tid; the pin, held until after
 * it, keeps the page from being pruned in between.
 */
static Buffer
pin_tuple(ClaimCache *cache, Relation rel, ItemPointer tid)
{
	BlockNumber block = ItemPointerGetBlockNumberNoCheck(tid);
	OffsetNumber offset = ItemPointerGetOffsetNumberNoCheck(tid);
	Buffer		buffer;
	Page		page;
	bool		normal;

	if (block >= cache->nblocks)
	{
		cache->nblocks = RelationGetNumberOfBlocks(rel);
		if (block >= cache->nblocks)
			return InvalidBuffer;
	}
	buffer = ReadBuffer(rel, block);
	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buffer);
	normal = offset >= FirstOffsetNumber && offset <= PageGetMaxOffsetNumber(page)
		&& ItemIdIsNormal(PageGetItemId(page, offset));
	LockBuffer(buffer, BUFFER_LOCK_UNLOCK);
	if (!normal)
	{
		ReleaseBuffer(buffer);
		return InvalidBuffer;
	}
	return buffer;
}

PG_FUNCTION_INFO_V1(cc_bulk_claim);
Datum
cc_bulk_claim(PG_FUNCTION_ARGS)
{
	int32		work;
	Relation	rel;
	ClaimCache *cache;
	HeapTupleData tuple;
	Buffer		pinned;
	Buffer		buffer = InvalidBuffer;
	TM_FailureData tmfd;
	TM_Result	result = TM_Invisible;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_BOOL(false);
	work = PG_GETARG_INT32(2);
	if (work <= 0)
		PG_RETURN_BOOL(false);
	rows_needing_work++;

	/* The UPDATE already holds the table in RowExclusiveLock. */
	rel = try_relation_open(PG_GETARG_OID(0), RowShareLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("conn_crypto: no relation with OID %u", PG_GETARG_OID(0))));
	cache = checked_relation(fcinfo, rel);
	tuple.t_self = *(ItemPointer) PG_GETARG_POINTER(1);
	pinned = pin_tuple(cache, rel, &tuple.t_self);
	if (BufferIsValid(pinned))
	{
		result = heap_lock_tuple(rel, &tuple, GetCurrentCommandId(true), LockTupleNoKeyExclusive,
								 LockWaitSkip, false, &buffer, &tmfd);
		if (BufferIsValid(buffer))
			ReleaseBuffer(buffer);
		ReleaseBuffer(pinned);
	}
	relation_close(rel, NoLock);
	/*
	 * TM_Ok: locked by us (or already ours). Anything else: held, updated or
	 * deleted by another transaction since the snapshot; the engine looks at
	 * the row again in a later statement.
	 */
	if (result != TM_Ok)
		PG_RETURN_BOOL(false);
	values_claimed += work;
	PG_RETURN_BOOL(true);
}

/* The counters since the last call, and starts them again. */
PG_FUNCTION_INFO_V1(cc_bulk_claims);
Datum
cc_bulk_claims(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "cc_bulk_claims: return type must be a row type");
	values[0] = Int64GetDatum(rows_needing_work);
	values[1] = Int64GetDatum(values_claimed);
	rows_needing_work = 0;
	values_claimed = 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
