
-- ===================== DBA bulk operations: rotate, encrypt_plaintext, status, verify =====================

-- How a stored value stands: -2 empty (NULL, or '' when empty values are not
-- encrypted), 0 plaintext, -1 a token that no key authenticates, k >= 1 a
-- token of key k. json_plaintext: '{...' is plaintext JSON (trigger.kwargs).
CREATE FUNCTION @extschema@._value_state(value text, encrypt_empty boolean, json_plaintext boolean) RETURNS integer
    AS 'MODULE_PATHNAME', 'cc_value_state' LANGUAGE C STABLE PARALLEL RESTRICTED COST 10;
REVOKE EXECUTE ON FUNCTION @extschema@._value_state(text, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._value_state(text, boolean, boolean) TO conn_crypto_reader;

-- rotate's new value for a server-keyring column: CASE WHEN _value_state(v)
-- > 1 THEN fernet_rotate(v) ELSE v END in one call.
CREATE FUNCTION @extschema@._bulk_rotated(value text, json_plaintext boolean) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_bulk_rotated' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION @extschema@._bulk_rotated(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._bulk_rotated(text, boolean) TO conn_crypto_reader;

-- How many undecryptable tokens _value_state met since the last call (and
-- starts counting again): tells the engine's one-statement batches when to
-- go back and report them.
CREATE FUNCTION @extschema@._bulk_undecryptable_seen() RETURNS bigint
    AS 'MODULE_PATHNAME', 'cc_bulk_undecryptable_seen' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION @extschema@._bulk_undecryptable_seen() FROM PUBLIC;

-- A one-statement batch's row claim (src/pg/bulk_claim.c): in the WHERE of
-- an UPDATE of the table, locks the row when some of its values need work
-- (work > 0), skipping rows others hold; _bulk_claims() then says how many
-- rows needed work and how many values the claimed rows hold.
CREATE FUNCTION @extschema@._bulk_claim(table_oid oid, row_tid tid, work integer) RETURNS boolean
    AS 'MODULE_PATHNAME', 'cc_bulk_claim' LANGUAGE C VOLATILE PARALLEL UNSAFE COST 100;
CREATE FUNCTION @extschema@._bulk_claims(OUT rows_needing_work bigint, OUT values_claimed bigint)
    AS 'MODULE_PATHNAME', 'cc_bulk_claims' LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE EXECUTE ON FUNCTION @extschema@._bulk_claim(oid, tid, integer), @extschema@._bulk_claims() FROM PUBLIC;

-- Every value the bulk operations look after: each protected column, plus
-- Airflow 2.9+'s trigger.kwargs (a Fernet token of JSON, no flag; a value
-- starting with '{' is plaintext JSON) in every schema whose Airflow tables
-- are protected. row_key is the single-column primary key, else ctid;
-- label_column names rows in reports (conn_id, key).
CREATE FUNCTION @extschema@._bulk_targets()
RETURNS TABLE (table_name regclass, column_name name, flag_column name, encrypt_empty boolean,
               json_plaintext boolean, row_key name, row_key_type text, label_column name,
               kms boolean, schema_name text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH targets AS (
        SELECT p.table_name, p.column_name, p.flag_column, p.encrypt_empty, false AS json_plaintext
        FROM @extschema@.protected_columns p
        UNION
        SELECT t.oid::regclass, 'kwargs'::name, NULL::name, false, true
        FROM @extschema@.protected_columns p
        JOIN pg_class t ON t.relname = 'trigger' AND t.relkind IN ('r', 'p')
                       AND t.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = p.table_name)
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = 'kwargs' AND NOT a.attisdropped
        WHERE p.table_relname IN ('connection', 'variable')
    )
    SELECT tg.table_name, tg.column_name, tg.flag_column, tg.encrypt_empty, tg.json_plaintext,
           coalesce(pk.attname, 'ctid'), coalesce(format_type(pk.atttypid, NULL), 'tid'),
           (SELECT attname FROM pg_attribute
            WHERE attrelid = tg.table_name AND attname IN ('conn_id', 'key') AND NOT attisdropped LIMIT 1),
           -- Airflow connections with per-connection KMS keys (enable_kms).
           tg.column_name IN ('password', 'extra') AND tg.flag_column IS NOT NULL
               AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = tg.table_name
                           AND attname = '_kms_conn_id' AND NOT attisdropped),
           (SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.oid = tg.table_name)
    FROM targets tg
    LEFT JOIN LATERAL (
        SELECT a.attname, a.atttypid FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = tg.table_name AND i.indisprimary AND i.indnatts = 1
    ) pk ON true
    ORDER BY tg.table_name::text, tg.column_name;
$$;

-- SQL for one target: the state of its value, whether a row needs work in
-- a mode, and the new value. Built once per target, evaluated on the row
-- itself (never on a copy) so a locked row is judged by its latest version.
-- State -3: a token of the row's own KMS-wrapped data key (not the server keyring's business).
CREATE FUNCTION @extschema@._bulk_sql(mode text, column_name name, flag_column name, encrypt_empty boolean,
                                      json_plaintext boolean, kms boolean, schema_name text,
                                      OUT state text, OUT work_from_state text, OUT new_value text,
                                      OUT new_value_direct text)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    state := format('@extschema@._value_state(%I, %L, %L)', column_name, encrypt_empty, json_plaintext);
    IF kms THEN
        -- Only verify() asks the KMS; rotate, encrypt_plaintext and status keep
        -- working while a KMS is down (a KMS row's token counts as its own).
        state := format('CASE WHEN _kms_conn_id IS NULL THEN %s'
                        ' ELSE @extschema@._kms_value_state(%I, conn_key, _kms_conn_id, _kms_extra, %L, %L) END',
                        state, column_name, schema_name, mode = 'verify');
    END IF;
    -- work_from_state: whether a row needs work, from its state {s} and flag {f}.
    -- new_value: the new value from the value {v} and its state {s}.
    IF mode = 'rotate' THEN
        work_from_state := '{s} > 1';
        new_value := '@extschema@.fernet_rotate({v})';
        -- The same without the state (for the SET list, where the value is
        -- not known to need work): a KMS row's state is not the keyring's.
        IF NOT kms THEN
            new_value_direct := format('@extschema@._bulk_rotated({v}, %L)', json_plaintext);
        END IF;
    ELSE
        -- Airflow's read rules: a non-empty value whose flag is not true is read as
        -- plaintext. A token of the keyring with a false flag only needs its flag set.
        -- The state comes first: evaluated for every row, it counts undecryptable values.
        work_from_state := format('(({s} = 0 OR (({s} > 0 OR {s} = -3) AND %s)) AND {f} IS NOT TRUE)',
                                  CASE WHEN flag_column IS NOT NULL THEN 'true' ELSE 'false' END);
        -- A KMS row's plaintext is encrypted here under the server key; its
        -- trigger then moves it under the row's own data key.
        new_value := 'CASE WHEN {s} = 0 THEN @extschema@.fernet_encrypt({v}) ELSE {v} END';
    END IF;
END $$;

-- The statements the engine runs for one table, all its protected columns at once:
--   scan:    one batch in key order, without locks: rows seen, last key, keys needing work,
--            undecryptable values (count and labels)
--   rewrite: locks the given keys that are free ({lock} = SKIP LOCKED, or '' to wait), judges each
--            locked row on its latest version, rewrites the columns that need it; returns the locked
--            keys and the number of values changed
--   pending: (tables without a primary key) the ctids that still need work
--   bound:   (with fast) the first key of the table
--   fast:    (heap tables with a primary key) one batch in one statement: claims (locks, SKIP
--            LOCKED) the rows of a key range that need work and rewrites them; returns the number
--            of rows rewritten (_bulk_claims() tells how many needed work, and the values changed)
--   missed:  (with fast) the keys of a key range that still need work
-- Rows are judged by the state of each column (s<i>), its flag (f<i>) and the work test (w<i>).
CREATE FUNCTION @extschema@._bulk_table_sql(mode text, table_name regclass, row_key name, row_key_type text,
                                            label_column name, schema_name text,
                                            OUT scan text, OUT rewrite text, OUT pending text,
                                            OUT bound text, OUT fast text, OUT missed text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    q record;
    i integer := 0;
    states text := '';
    works text := '';
    any_work text := 'false';
    n_any_work text := 'false';
    bad_count text := '0';
    bad_labels text := 'NULL::text';
    sets text := '';
    changed text := '0';
    flag text;
    fast_sets text := '';
    fast_work text := '0';
    work text;
    first_of text;
    last_of text;
BEGIN
    FOR c IN SELECT * FROM @extschema@._bulk_targets() t WHERE t.table_name = _bulk_table_sql.table_name LOOP
        i := i + 1;
        q := @extschema@._bulk_sql(mode, c.column_name, c.flag_column, c.encrypt_empty, c.json_plaintext,
                                   c.kms, c.schema_name);
        flag := CASE WHEN c.flag_column IS NULL THEN 'NULL::boolean' ELSE quote_ident(c.flag_column) END;
        states := states || format(', %s AS s%s, %s AS f%s', q.state, i, flag, i);
        works := works || format(', %s AS w%s', replace(replace(q.work_from_state, '{s}', 's' || i), '{f}', 'f' || i), i);
        any_work := any_work || format(' OR w%s', i);
        n_any_work := n_any_work || format(' OR n.w%s', i);
        bad_count := bad_count || format(' + (s%s = -1)::int', i);
        bad_labels := format('nullif(concat_ws(%L, %s, CASE WHEN s%s = -1 THEN coalesce(cc_lbl, cc_k::text) || %L END), %L)',
                             ', ', bad_labels, i, format(' (%s)', c.column_name), '');
        -- SET list and changed-values count of the rewrite (judged row n; t is the updated row).
        sets := sets || format(', %I = CASE WHEN n.w%s THEN %s ELSE t.%I END', c.column_name, i,
                               replace(replace(q.new_value, '{v}', format('t.%I', c.column_name)), '{s}', 'n.s' || i),
                               c.column_name);
        IF c.flag_column IS NOT NULL THEN
            sets := sets || format(', %I = CASE WHEN n.w%s THEN true ELSE t.%I END', c.flag_column, i, c.flag_column);
        END IF;
        changed := changed || format(' + n.w%s::int', i);
        -- The same for the fast statement, which judges the updated row t itself.
        work := format('(%s)', replace(replace(q.work_from_state, '{s}', format('(%s)', q.state)), '{f}', flag));
        IF q.new_value_direct IS NOT NULL THEN
            fast_sets := fast_sets || format(', %I = %s', c.column_name,
                                             replace(q.new_value_direct, '{v}', format('t.%I', c.column_name)));
        ELSE
            fast_sets := fast_sets || format(', %I = CASE WHEN %s THEN %s ELSE t.%I END', c.column_name, work,
                                             replace(replace(q.new_value, '{v}', format('t.%I', c.column_name)),
                                                     '{s}', format('(%s)', q.state)),
                                             c.column_name);
        END IF;
        IF c.flag_column IS NOT NULL THEN
            -- (work is never NULL; OR skips it when the flag is already set)
            fast_sets := fast_sets || format(', %I = t.%I OR %s', c.flag_column, c.flag_column, work);
        END IF;
        fast_work := fast_work || format(' + %s::int', work);
    END LOOP;
    -- The first and last key of a batch: min and max where the key type has
    -- them (uuid, for one, has not in PostgreSQL 15).
    IF pg_catalog.to_regprocedure(format('pg_catalog.min(%s)', row_key_type)) IS NOT NULL
       AND pg_catalog.to_regprocedure(format('pg_catalog.max(%s)', row_key_type)) IS NOT NULL THEN
        first_of := 'min(cc_k)';
        last_of := 'max(cc_k)';
    ELSE
        first_of := '(array_agg(cc_k ORDER BY cc_k))[1]';
        last_of := '(array_agg(cc_k ORDER BY cc_k DESC))[1]';
    END IF;
    scan := format(
        'SELECT count(*) AS seen, %13$s::text AS last_key,'
        '       coalesce(array_agg(cc_k::text) FILTER (WHERE cc_any), %10$L) AS todo,'
        '       coalesce(sum(cc_bad), 0) AS bad, string_agg(cc_labels, %11$L) AS bad_labels'
        ' FROM (SELECT cc_k, (%1$s) AS cc_any, %2$s AS cc_bad, nullif(%3$s, %12$L) AS cc_labels FROM'
        '        (SELECT r1.*%4$s FROM'
        '         (SELECT r0.*%5$s FROM (SELECT %6$I AS cc_k, %7$s::text AS cc_lbl, * FROM %8$s'
        '          WHERE ($1::text IS NULL OR %6$I > $1::%9$s) ORDER BY %6$I LIMIT $2) r0) r1) r2) x',
        any_work, bad_count, bad_labels, works, states, row_key, coalesce(quote_ident(label_column), 'NULL'),
        table_name, row_key_type, '{}', ', ', '', last_of);
    rewrite := format(
        'WITH locked AS (SELECT %1$I AS cc_k, * FROM %2$s WHERE %1$I = ANY($1::%3$s[]) FOR NO KEY UPDATE {lock}),'
        '     n AS MATERIALIZED (SELECT l.*%4$s FROM (SELECT locked.*%5$s FROM locked) l),'
        '     changed AS (UPDATE %2$s AS t SET %6$s FROM n WHERE t.%1$I = n.cc_k AND (%7$s) RETURNING %8$s AS c)'
        ' SELECT (SELECT coalesce(array_agg(cc_k::text), %9$L) FROM locked), (SELECT coalesce(sum(c), 0) FROM changed)',
        row_key, table_name, row_key_type, works, states, substr(sets, 3), n_any_work, changed, '{}');
    -- pending: rows that still need work among those that others wrote since
    -- the run began ($1: the age of its first transaction, $2: its own
    -- transactions), or (tables without a primary key) among all rows.
    pending := format('SELECT coalesce(array_agg(cc_k::text), %5$L) FROM'
                      ' (SELECT r1.*%1$s FROM (SELECT r0.*%2$s FROM (SELECT %6$s AS cc_k, * FROM %3$s'
                      '  WHERE %7$s) r0) r1) r2'
                      ' WHERE %4$s',
                      works, states, table_name, any_work, '{}',
                      CASE WHEN row_key = 'ctid' THEN 'ctid' ELSE quote_ident(row_key) END,
                      CASE WHEN row_key = 'ctid' THEN '$1 IS NOT NULL OR $2 IS NOT NULL OR true'
                           ELSE 'pg_catalog.age(xmin) <= $1 AND NOT (xmin = ANY(pg_catalog.array_remove($2::xid[], NULL)))' END);
    -- The fast statement's row claim works on plain heap tables.
    IF row_key <> 'ctid' AND EXISTS (SELECT 1 FROM pg_class r JOIN pg_am a ON a.oid = r.relam
                                     WHERE r.oid = table_name AND r.relkind = 'r' AND a.amname = 'heap') THEN
        bound := format('SELECT %1$I::text FROM %2$s ORDER BY %1$I LIMIT 1', row_key, table_name);
        -- One statement per batch ($1: the batch starts after this key, or at
        -- it when $2; $3: the batch size). r: the key range of the batch, from
        -- the index alone. u: the UPDATE reads the range, judges each row and
        -- claims (locks, SKIP LOCKED) the rows that need work, so it never
        -- waits for a row lock and cannot deadlock. Locking first also spares
        -- the protect trigger the row lock PostgreSQL takes before a BEFORE
        -- UPDATE trigger. The SET list judges the claimed row again (the
        -- keyring's memo answers at once for a token it just judged).
        fast := format('WITH r AS MATERIALIZED (SELECT count(*) AS seen, %6$s AS first_key, %7$s AS last_key'
                       '           FROM (SELECT %2$I AS cc_k FROM %1$s WHERE %2$I >= $1::%3$s AND (%2$I > $1::%3$s OR $2)'
                       '                 ORDER BY %2$I LIMIT $3) x),'
                       '     u AS (UPDATE %1$s AS t SET %4$s'
                       '           WHERE t.%2$I BETWEEN (SELECT first_key FROM r) AND (SELECT last_key FROM r)'
                       '             AND @extschema@._bulk_claim(t.tableoid, t.ctid, %5$s) RETURNING 1)'
                       ' SELECT seen, first_key::text, last_key::text, (SELECT count(*) FROM u) AS updated FROM r',
                       table_name, row_key, row_key_type, substr(fast_sets, 3), fast_work, first_of, last_of);
        -- The rows of a key range that still need work: after a batch that
        -- left some out, for the retry passes.
        missed := format('SELECT coalesce(array_agg(cc_k::text), %5$L) FROM'
                         ' (SELECT r1.*%1$s FROM (SELECT r0.*%2$s FROM (SELECT %6$I AS cc_k, * FROM %3$s'
                         '  WHERE %6$I BETWEEN $1::%7$s AND $2::%7$s) r0) r1) r2'
                         ' WHERE %4$s',
                         works, states, table_name, any_work, '{}', row_key, row_key_type);
    END IF;
END $$;

-- The engine shared by rotate and encrypt_plaintext. Walks each table once,
-- in key order, batch by batch, for all its protected columns, committing
-- after each batch. A batch of a table with a primary key is one statement
-- (_bulk_table_sql's fast): it locks the rows of its key range that need
-- work, SKIP LOCKED, and rewrites them. Tables without one are read without
-- locks first, then the rows that need work are locked (SKIP LOCKED) and
-- rewritten. Either way the engine never waits for a lock while holding
-- another. Rows a concurrent writer held are retried in later passes; every
-- sixth pass waits for each remaining row alone, holding no other lock, so
-- it cannot take part in a deadlock.
CREATE PROCEDURE @extschema@._bulk_run(mode text, batch_size integer)
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    q record;
    batch record;
    range record;
    missed_keys text[];
    from_key text;
    inclusive boolean;
    label text;
    last_key text;
    locked text[];
    pending text[];
    n bigint;
    done bigint;
    changed bigint;
    total bigint;
    started timestamptz;
    rate numeric;
    total_changed bigint := 0;
    total_undecryptable bigint := 0;
    total_left bigint := 0;
    pass integer;
    sweeps integer;
    first_xid xid;
    own_xids xid[] := '{}';
    bad bigint;
    claims record;
    -- The session's plan cache mode, put back after each fast statement
    -- (COMMIT would reset it only at the end of the batch's transaction).
    saved_plan_mode text := pg_catalog.current_setting('plan_cache_mode');
    statement_name text;
    prepared boolean;
BEGIN
    -- Transaction control rules out a SET clause: pin the path here and again
    -- after every COMMIT (a transaction-local setting ends with it).
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer' USING ERRCODE = '22023';
    END IF;
    PERFORM @extschema@.fernet_encrypt('');   -- fails early and clearly when no key is configured
    -- Rows written by others during the run are swept again at the end of
    -- each table: a writer may store an old-key token behind the scan. That
    -- is any transaction not yet finished when the run began, so from the
    -- oldest one then running.
    first_xid := pg_snapshot_xmin(pg_current_snapshot())::text::xid;
    FOR t IN SELECT b.table_name, b.row_key, b.row_key_type, b.label_column, b.schema_name,
                    string_agg(quote_ident(b.column_name), ', ' ORDER BY b.column_name) AS columns
             FROM @extschema@._bulk_targets() b
             GROUP BY b.table_name, b.row_key, b.row_key_type, b.label_column, b.schema_name
             ORDER BY b.table_name::text LOOP
        q := @extschema@._bulk_table_sql(mode, t.table_name, t.row_key, t.row_key_type, t.label_column, t.schema_name);
        label := format('%s (%s)', t.table_name, t.columns);
        SELECT greatest(reltuples, 0)::bigint INTO total FROM pg_class WHERE oid = t.table_name;
        done := 0; changed := 0; started := clock_timestamp(); last_key := NULL; pending := '{}';
        statement_name := format('conn_crypto_%s_%s', mode, t.table_name::oid);
        prepared := false;
        LOOP
            IF q.fast IS NOT NULL THEN
                IF NOT prepared THEN
                    -- Planned once per table: a plan per batch costs more than
                    -- the batch's reads.
                    IF EXISTS (SELECT 1 FROM pg_prepared_statements WHERE name = statement_name) THEN
                        EXECUTE format('DEALLOCATE %I', statement_name);
                    END IF;
                    EXECUTE format('PREPARE %I(text, boolean, integer) AS %s', statement_name, q.fast);
                    prepared := true;
                    EXECUTE q.bound INTO from_key;
                    inclusive := true;
                END IF;
                PERFORM @extschema@._bulk_undecryptable_seen(), @extschema@._bulk_claims();
                PERFORM pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true);
                EXECUTE format('EXECUTE %I(%L, %L, %s)', statement_name, from_key, inclusive, batch_size) INTO range;
                PERFORM pg_catalog.set_config('plan_cache_mode', saved_plan_mode, true);
                claims := @extschema@._bulk_claims();
                EXIT WHEN range.seen = 0;
                from_key := range.last_key;
                inclusive := false;
                changed := changed + claims.values_claimed;
                -- Rows that needed work but were held by others (or changed
                -- since the statement began) were left out: find the range's
                -- rows that still need work, for the retry passes.
                IF range.updated < claims.rows_needing_work THEN
                    EXECUTE q.missed INTO missed_keys USING range.first_key, range.last_key;
                    pending := pending || missed_keys;
                END IF;
                done := done + range.seen;
                bad := 0;
                -- Undecryptable values were met: read the batch again to name them.
                IF @extschema@._bulk_undecryptable_seen() > 0 THEN
                    EXECUTE q.scan INTO batch USING last_key, batch_size;
                    bad := batch.bad;
                END IF;
                last_key := range.last_key;
            ELSE
                EXECUTE q.scan INTO batch USING last_key, batch_size;
                EXIT WHEN batch.seen = 0;
                last_key := batch.last_key;
                done := done + batch.seen;
                bad := batch.bad;
                IF cardinality(batch.todo) > 0 THEN
                    EXECUTE replace(q.rewrite, '{lock}', 'SKIP LOCKED') INTO locked, n USING batch.todo;
                    changed := changed + n;
                    pending := pending || ARRAY(SELECT unnest(batch.todo) EXCEPT SELECT unnest(locked));
                END IF;
            END IF;
            IF bad > 0 THEN
                total_undecryptable := total_undecryptable + bad;
                RAISE WARNING 'conn_crypto %: % value(s) of % are tokens that no key of the keyring decrypts, left untouched: %',
                    mode, bad, t.table_name, left(batch.bad_labels, 2000);
            END IF;
            own_xids := own_xids || pg_current_xact_id_if_assigned()::text::xid;
            -- A batch's commit need not wait for its WAL to reach disk: a crash
            -- can only undo whole batches, which the next call redoes. The
            -- run's last commit waits for all of it (see the end).
            PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            rate := done / greatest(extract(epoch FROM clock_timestamp() - started), 0.001);
            RAISE NOTICE 'conn_crypto %: % % / % rows scanned, % value(s) changed, % rows/s, about % s left',
                mode, label, done, greatest(total, done), changed, round(rate),
                round(greatest(total - done, 0) / greatest(rate, 1));
        END LOOP;
        IF prepared THEN
            EXECUTE format('DEALLOCATE %I', statement_name);
        END IF;
        -- Retry passes for the rows concurrent writers held (and, for tables
        -- without a primary key, rows whose ctid moved under an update: the
        -- pending query finds them again). The number of passes is bounded.
        pass := 0;
        sweeps := 0;
        LOOP
            IF t.row_key = 'ctid' OR (cardinality(pending) = 0 AND sweeps < 2) THEN
                sweeps := sweeps + (t.row_key <> 'ctid')::int;
                EXECUTE q.pending INTO pending USING age(first_xid), own_xids;
            END IF;
            EXIT WHEN cardinality(pending) = 0 OR pass >= 24;
            pass := pass + 1;
            IF pass % 6 <> 0 THEN
                PERFORM pg_sleep(0.02 * (pass % 6));
                EXECUTE replace(q.rewrite, '{lock}', 'SKIP LOCKED') INTO locked, n USING pending;
                changed := changed + n;
                pending := ARRAY(SELECT unnest(pending) EXCEPT SELECT unnest(locked));
                own_xids := own_xids || pg_current_xact_id_if_assigned()::text::xid;
                COMMIT;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            ELSE
                FOR i IN 1 .. cardinality(pending) LOOP
                    EXECUTE replace(q.rewrite, '{lock}', '') INTO locked, n USING pending[i:i];
                    changed := changed + n;
                    own_xids := own_xids || pg_current_xact_id_if_assigned()::text::xid;
                    COMMIT;
                    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                END LOOP;
                pending := '{}';
            END IF;
        END LOOP;
        IF cardinality(pending) > 0 THEN
            total_left := total_left + cardinality(pending);
            RAISE WARNING 'conn_crypto %: % row(s) of % kept changing under concurrent writers; call again to finish them',
                mode, cardinality(pending), label;
        END IF;
        total_changed := total_changed + changed;
        RAISE NOTICE 'conn_crypto %: % done: % rows scanned, % value(s) changed', mode, label, done, changed;
    END LOOP;
    RAISE NOTICE 'conn_crypto %: finished: % value(s) changed, % undecryptable value(s) left untouched%',
        mode, total_changed, total_undecryptable,
        CASE WHEN total_left > 0 THEN format(', %s row(s) still to do', total_left) ELSE '' END;
    -- Gives the last transaction an xid, so its commit is logged and waits
    -- (with the session's synchronous_commit) for the WAL of every batch:
    -- once CALL returns, the run's work is durable.
    PERFORM pg_catalog.pg_current_xact_id();
END $$;

-- Re-encrypts every protected value not under the primary key, keeping each
-- token's timestamp (MultiFernet.rotate). Idempotent and resumable.
CREATE PROCEDURE @extschema@.rotate(batch_size integer DEFAULT 1000)
LANGUAGE plpgsql AS $$
BEGIN
    CALL @extschema@._bulk_run('rotate', batch_size);
END $$;

-- Encrypts every plaintext value (Airflow's read rules) under the primary
-- key and sets the flags: "re-type every password" in one command.
CREATE PROCEDURE @extschema@.encrypt_plaintext(batch_size integer DEFAULT 1000)
LANGUAGE plpgsql AS $$
BEGIN
    CALL @extschema@._bulk_run('encrypt_plaintext', batch_size);
END $$;

-- Counts per protected table and column: under the primary key, under each
-- older key (by position), plaintext, empty/NULL, undecryptable.
CREATE FUNCTION @extschema@._status()
RETURNS TABLE (table_name regclass, column_name name, total bigint, primary_key bigint, older_keys bigint,
               by_key bigint[], plaintext bigint, empty bigint, undecryptable bigint, kms_encrypted bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    q record;
    counts bigint[];
BEGIN
    FOR t IN SELECT * FROM @extschema@._bulk_targets() LOOP
        q := @extschema@._bulk_sql('status', t.column_name, t.flag_column, t.encrypt_empty, t.json_plaintext,
                                   t.kms, t.schema_name);
        table_name := t.table_name;
        column_name := t.column_name;
        EXECUTE format(
            'SELECT count(*), count(*) FILTER (WHERE s = 1), count(*) FILTER (WHERE s > 1),'
            '       count(*) FILTER (WHERE s = 0), count(*) FILTER (WHERE s = -2),'
            '       count(*) FILTER (WHERE s = -1), count(*) FILTER (WHERE s = -3),'
            '       (SELECT array_agg(coalesce(c, 0) ORDER BY k) FROM generate_series(1, greatest(max(s), 0)) k'
            '        LEFT JOIN (SELECT s AS k2, count(*) AS c FROM unnest(array_agg(s)) s GROUP BY s) g ON g.k2 = k)'
            ' FROM (SELECT %s AS s FROM %s) v',
            q.state, t.table_name)
            INTO total, primary_key, older_keys, plaintext, empty, undecryptable, kms_encrypted, by_key;
        RETURN NEXT;
    END LOOP;
END $$;

CREATE VIEW @extschema@.status AS SELECT * FROM @extschema@._status();

-- The rows that would fail for Airflow: tokens no key decrypts, and flags
-- that disagree with their value.
CREATE FUNCTION @extschema@.verify()
RETURNS TABLE (table_name regclass, column_name name, row_key text, reason text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM @extschema@._bulk_targets() LOOP
        RETURN QUERY EXECUTE format(
            'SELECT %1$L::regclass, %2$L::name, coalesce(%3$s::text, %4$I::text),'
            '       CASE WHEN s = -1 THEN ''token that no key of the keyring decrypts'''
            '            WHEN s = 0 AND f THEN ''flag is true but the value is plaintext: Airflow cannot decrypt it'''
            '            ELSE ''flag is not true but the value is a token: Airflow hands out the token as the secret'' END'
            ' FROM (SELECT %4$I, %3$s, %5$s AS s, %6$s AS f FROM %1$s) v'
            ' WHERE s = -1 OR (s = 0 AND f) OR ((s > 0 OR s = -3) AND %7$L AND f IS NOT TRUE)'
            ' ORDER BY 3',
            t.table_name, t.column_name, coalesce(quote_ident(t.label_column), 'NULL'), t.row_key,
            (@extschema@._bulk_sql('verify', t.column_name, t.flag_column, t.encrypt_empty, t.json_plaintext,
                                   t.kms, t.schema_name)).state,
            CASE WHEN t.flag_column IS NULL THEN 'NULL::boolean' ELSE quote_ident(t.flag_column) END,
            t.flag_column IS NOT NULL);
    END LOOP;
END $$;

REVOKE EXECUTE ON FUNCTION @extschema@._status(), @extschema@.verify() FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE @extschema@.rotate(integer), @extschema@.encrypt_plaintext(integer),
    @extschema@._bulk_run(text, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@._bulk_table_sql(text, regclass, name, text, name, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._status(), @extschema@.verify() TO conn_crypto_reader;
GRANT SELECT ON @extschema@.status TO conn_crypto_reader;
-- rotate and encrypt_plaintext run as the caller, who also needs SELECT and
-- UPDATE on the tables (_bulk_claim checks UPDATE itself).
GRANT EXECUTE ON PROCEDURE @extschema@.rotate(integer), @extschema@.encrypt_plaintext(integer),
    @extschema@._bulk_run(text, integer) TO conn_crypto_reader;
GRANT EXECUTE ON FUNCTION @extschema@._bulk_table_sql(text, regclass, name, text, name, text),
    @extschema@._bulk_undecryptable_seen(), @extschema@._bulk_claim(oid, tid, integer),
    @extschema@._bulk_claims() TO conn_crypto_reader;
