
-- ===================== DBA bulk operations: rotate, encrypt_plaintext, status, verify =====================

-- How a stored value stands: -2 empty (NULL, or '' when empty values are not
-- encrypted), 0 plaintext, -1 a token that no key authenticates, k >= 1 a
-- token of key k. json_plaintext: '{...' is plaintext JSON (trigger.kwargs).
CREATE FUNCTION @extschema@._value_state(value text, encrypt_empty boolean, json_plaintext boolean) RETURNS integer
    AS 'MODULE_PATHNAME', 'cc_value_state' LANGUAGE C STABLE PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION @extschema@._value_state(text, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._value_state(text, boolean, boolean) TO conn_crypto_reader;

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
                                      OUT state text, OUT need_work text,
                                      OUT work_from_state text, OUT new_value text)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    flag text := CASE WHEN flag_column IS NULL THEN 'NULL::boolean' ELSE quote_ident(flag_column) END;
BEGIN
    state := format('@extschema@._value_state(%I, %L, %L)', column_name, encrypt_empty, json_plaintext);
    IF kms THEN
        -- Only verify() asks the KMS; rotate, encrypt_plaintext and status keep
        -- working while a KMS is down (a KMS row's token counts as its own).
        state := format('CASE WHEN _kms_conn_id IS NULL THEN %s'
                        ' ELSE @extschema@._kms_value_state(%I, conn_key, _kms_conn_id, _kms_extra, %L, %L) END',
                        state, column_name, schema_name, mode = 'verify');
    END IF;
    -- work_from_state: the same test on an already computed state "s" and flag "f".
    IF mode = 'rotate' THEN
        work_from_state := 's > 1';
        new_value := format('@extschema@.fernet_rotate(%I)', column_name);
    ELSE
        -- Airflow's read rules: a non-empty value whose flag is not true is read as
        -- plaintext. A token of the keyring with a false flag only needs its flag set.
        work_from_state := format('(f IS NOT TRUE AND (s = 0 OR ((s > 0 OR s = -3) AND %L)))', flag_column IS NOT NULL);
        -- A KMS row's plaintext is encrypted here under the server key; its
        -- trigger then moves it under the row's own data key.
        new_value := format('CASE WHEN (%s) IN (0) THEN @extschema@.fernet_encrypt(%I) ELSE %I END',
                            state, column_name, column_name);
    END IF;
    need_work := format('(SELECT %s FROM (SELECT %s AS s, %s AS f) x)', work_from_state, state, flag);
    IF flag_column IS NOT NULL THEN
        new_value := new_value || format(', %I = true', flag_column);
    END IF;
END $$;

-- Rewrites the given rows that (still) need work; returns how many.
CREATE FUNCTION @extschema@._bulk_rewrite(t record, need_work text, new_value text, keys text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF coalesce(cardinality(keys), 0) = 0 THEN
        RETURN 0;
    END IF;
    EXECUTE format('UPDATE %s SET %I = %s WHERE %I = ANY($1::%s[]) AND %s',
                   t.table_name, t.column_name, new_value, t.row_key, t.row_key_type, need_work)
        USING keys;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Locks the given rows that are free now; returns the keys it locked.
CREATE FUNCTION @extschema@._bulk_lock(t record, keys text[], wait boolean) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    locked text[];
BEGIN
    EXECUTE format('SELECT coalesce(array_agg(k), ''{}'') FROM'
                   ' (SELECT %I::text AS k FROM %s WHERE %I = ANY($1::%s[]) FOR UPDATE %s) l',
                   t.row_key, t.table_name, t.row_key, t.row_key_type, CASE WHEN wait THEN '' ELSE 'SKIP LOCKED' END)
        INTO locked USING keys;
    RETURN locked;
END $$;

-- The engine shared by rotate and encrypt_plaintext. For each target, walks
-- the table in key order batch by batch: reads a batch without locks, locks
-- only the rows that need work (SKIP LOCKED), rewrites them, commits. Rows a
-- concurrent writer held are retried in later passes; the last pass waits
-- for each one alone, holding no other lock, so it cannot take part in a deadlock.
CREATE PROCEDURE @extschema@._bulk_run(mode text, batch_size integer)
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    q record;
    batch record;
    label text;
    last_key text;
    locked text[];
    pending text[];
    done bigint;
    changed bigint;
    total bigint;
    started timestamptz;
    rate numeric;
    total_changed bigint := 0;
    total_undecryptable bigint := 0;
    total_left bigint := 0;
    pass integer;
BEGIN
    -- Transaction control rules out a SET clause: pin the path here and again
    -- after every COMMIT (a transaction-local setting ends with it).
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer' USING ERRCODE = '22023';
    END IF;
    PERFORM @extschema@.fernet_encrypt('');   -- fails early and clearly when no key is configured
    FOR t IN SELECT * FROM @extschema@._bulk_targets() LOOP
        q := @extschema@._bulk_sql(mode, t.column_name, t.flag_column, t.encrypt_empty, t.json_plaintext,
                                   t.kms, t.schema_name);
        label := format('%s.%I', t.table_name, t.column_name);
        SELECT greatest(reltuples, 0)::bigint INTO total FROM pg_class WHERE oid = t.table_name;
        done := 0; changed := 0; started := clock_timestamp(); last_key := NULL; pending := '{}';
        LOOP
            EXECUTE format(
                'SELECT count(*) AS seen, max(k)::text AS last_key,'
                '       coalesce(array_agg(k::text) FILTER (WHERE work), ''{}'') AS todo,'
                '       coalesce(array_agg(coalesce(lbl, k::text)) FILTER (WHERE state = -1), ''{}'') AS bad'
                ' FROM (SELECT k, lbl, s AS state, %3$s AS work FROM'
                '       (SELECT %1$I AS k, %2$s::text AS lbl, %4$s AS s, %7$s AS f FROM %5$s'
                '        WHERE ($1::text IS NULL OR %1$I > $1::%6$s) ORDER BY %1$I LIMIT $2) r) s',
                t.row_key, coalesce(quote_ident(t.label_column), 'NULL'), q.work_from_state, q.state,
                t.table_name, t.row_key_type,
                CASE WHEN t.flag_column IS NULL THEN 'NULL::boolean' ELSE quote_ident(t.flag_column) END)
            INTO batch USING last_key, batch_size;
            EXIT WHEN batch.seen = 0;
            last_key := batch.last_key;
            done := done + batch.seen;
            IF cardinality(batch.bad) > 0 THEN
                total_undecryptable := total_undecryptable + cardinality(batch.bad);
                RAISE WARNING 'conn_crypto %: % value(s) of % are tokens that no key of the keyring decrypts, left untouched: %',
                    mode, cardinality(batch.bad), label, array_to_string(batch.bad[1:50], ', ');
            END IF;
            IF cardinality(batch.todo) > 0 THEN
                locked := @extschema@._bulk_lock(t, batch.todo, false);
                pending := pending || ARRAY(SELECT unnest(batch.todo) EXCEPT SELECT unnest(locked));
                changed := changed + @extschema@._bulk_rewrite(t, q.need_work, q.new_value, locked);
            END IF;
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            rate := done / greatest(extract(epoch FROM clock_timestamp() - started), 0.001);
            RAISE NOTICE 'conn_crypto %: % % / % rows scanned, % changed, % rows/s, about % s left',
                mode, label, done, greatest(total, done), changed, round(rate),
                round(greatest(total - done, 0) / greatest(rate, 1));
        END LOOP;
        -- Retry passes for the rows concurrent writers held (and, for tables
        -- without a primary key, rows whose ctid moved under an update: the
        -- scan finds them again). Every sixth pass waits for each remaining
        -- row's lock alone, holding no other lock; the number of passes is bounded.
        pass := 0;
        LOOP
            IF t.row_key = 'ctid' THEN
                EXECUTE format('SELECT coalesce(array_agg(ctid::text), ''{}'') FROM %s WHERE %s', t.table_name, q.need_work)
                    INTO pending;
            END IF;
            EXIT WHEN cardinality(pending) = 0 OR pass >= 24;
            pass := pass + 1;
            IF pass % 6 <> 0 THEN
                PERFORM pg_sleep(0.02 * (pass % 6));
                locked := @extschema@._bulk_lock(t, pending, false);
                changed := changed + @extschema@._bulk_rewrite(t, q.need_work, q.new_value, locked);
                pending := ARRAY(SELECT unnest(pending) EXCEPT SELECT unnest(locked));
                COMMIT;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            ELSE
                FOR i IN 1 .. cardinality(pending) LOOP
                    locked := @extschema@._bulk_lock(t, pending[i:i], true);
                    changed := changed + @extschema@._bulk_rewrite(t, q.need_work, q.new_value, locked);
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
        RAISE NOTICE 'conn_crypto %: % done: % rows scanned, % changed', mode, label, done, changed;
    END LOOP;
    RAISE NOTICE 'conn_crypto %: finished: % value(s) changed, % undecryptable value(s) left untouched%',
        mode, total_changed, total_undecryptable,
        CASE WHEN total_left > 0 THEN format(', %s row(s) still to do', total_left) ELSE '' END;
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
REVOKE EXECUTE ON FUNCTION @extschema@._bulk_rewrite(record, text, text, text[]),
    @extschema@._bulk_lock(record, text[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._status(), @extschema@.verify() TO conn_crypto_reader;
GRANT SELECT ON @extschema@.status TO conn_crypto_reader;
