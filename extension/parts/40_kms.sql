
-- ===================== Per-connection KMS envelope encryption =====================

-- Adds Airflow's KMS columns to a connection table and lets its protection
-- trigger manage them: a row whose _kms_conn_id is set gets its own data key,
-- wrapped by that KMS connection into conn_key.
CREATE FUNCTION @extschema@.enable_kms(schema_name text DEFAULT 'public') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    conn regclass := to_regclass(format('%I.connection', schema_name));
BEGIN
    IF conn IS NULL THEN
        RAISE EXCEPTION 'schema "%" has no Airflow connection table', schema_name USING ERRCODE = '42P01';
    END IF;
    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS conn_key varchar(200),'
                   ' ADD COLUMN IF NOT EXISTS _kms_conn_id varchar(250),'
                   ' ADD COLUMN IF NOT EXISTS _kms_extra varchar(5000)', conn);
    PERFORM @extschema@.enable_airflow_encryption(schema_name);
    -- The KMS marker triple is ('conn_key', '_kms_conn_id', 'kms').
    PERFORM @extschema@._install_trigger(conn, @extschema@._args_without(@extschema@._trigger_args(conn), 'conn_key')
                                               || ARRAY['conn_key', '_kms_conn_id', 'kms']);
END $$;

-- A KMS connection's settings: its conn_type, host and port, and its extra
-- (decrypted with the server keyring) merged with the protected row's
-- _kms_extra, flattened to names and values. Runs with its owner's rights:
-- C code calls it for writers who may not read the KMS connection.
CREATE FUNCTION @extschema@._kms_config(schema_name text, kms_conn_id text, kms_extra text)
RETURNS TABLE (conn_type text, host text, port integer, names text[], vals text[])
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    extra_text text;
    merged jsonb;
BEGIN
    EXECUTE format('SELECT conn_type, host, port, extra, is_extra_encrypted, _kms_conn_id'
                   ' FROM %I.connection WHERE conn_id = $1', schema_name)
        INTO r USING kms_conn_id;
    IF r IS NULL THEN
        RAISE EXCEPTION 'KMS connection "%" does not exist in %.connection', kms_conn_id, schema_name
            USING ERRCODE = '42704';
    END IF;
    IF r._kms_conn_id IS NOT NULL THEN
        RAISE EXCEPTION 'can''t chain KMS encrypted connections'
            USING ERRCODE = '22023', DETAIL = format('KMS connection "%s" is itself encrypted with a KMS.', kms_conn_id);
    END IF;
    extra_text := CASE WHEN r.extra IS NULL OR r.extra = '' THEN '{}'
                       WHEN r.is_extra_encrypted THEN @extschema@.fernet_decrypt(r.extra)
                       ELSE r.extra END;
    BEGIN
        merged := extra_text::jsonb || coalesce(nullif(kms_extra, '')::jsonb, '{}'::jsonb);
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'the extra of KMS connection "%" or the _kms_extra given is not JSON', kms_conn_id
            USING ERRCODE = '22P02';
    END;
    IF jsonb_typeof(merged) <> 'object' THEN
        RAISE EXCEPTION 'the extra of KMS connection "%" must be a JSON object', kms_conn_id USING ERRCODE = '22P02';
    END IF;
    conn_type := r.conn_type;
    host := r.host;
    port := r.port;
    SELECT array_agg(key ORDER BY key), array_agg(value ORDER BY key) INTO names, vals FROM jsonb_each_text(merged);
    RETURN NEXT;
END $$;
REVOKE EXECUTE ON FUNCTION @extschema@._kms_config(text, text, text) FROM PUBLIC;

-- Wraps / unwraps key material directly with a KMS connection.
CREATE FUNCTION @extschema@.kms_encrypt(plaintext bytea, kms_conn_id text, kms_extra jsonb DEFAULT '{}',
                                        schema_name text DEFAULT 'public') RETURNS text
    AS 'MODULE_PATHNAME', 'cc_kms_encrypt' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.kms_decrypt(ciphertext text, kms_conn_id text, kms_extra jsonb DEFAULT '{}',
                                        schema_name text DEFAULT 'public') RETURNS bytea
    AS 'MODULE_PATHNAME', 'cc_kms_decrypt' LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- Internals for the reading helpers and bulk operations.
CREATE FUNCTION @extschema@._kms_fernet_decrypt(token text, conn_key text, kms_conn_id text, kms_extra text,
                                                schema_name text) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_kms_fernet_decrypt' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@._kms_value_state(value text, conn_key text, kms_conn_id text, kms_extra text,
                                             schema_name text, verify boolean DEFAULT true) RETURNS integer
    AS 'MODULE_PATHNAME', 'cc_kms_value_state' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@._kms_rewrap(conn_key text, kms_conn_id text, kms_extra text, schema_name text) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_kms_rewrap' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@._kms_cache_size() RETURNS integer
    AS 'MODULE_PATHNAME', 'cc_kms_cache_size_sql' LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- Re-wraps every conn_key of one KMS connection under its current settings
-- (after a KMS key rotation, or a new key_id in its extra). The data keys and
-- so the password and extra tokens stay exactly as they are.
CREATE PROCEDURE @extschema@.rewrap_kms(kms_conn_id text, schema_name text DEFAULT 'public',
                                        batch_size integer DEFAULT 100)
LANGUAGE plpgsql AS $$
DECLARE
    conn regclass;
    ids integer[];
    done bigint := 0;
    n bigint;
    last_id integer := 0;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    conn := to_regclass(format('%I.connection', schema_name));
    IF conn IS NULL THEN
        RAISE EXCEPTION 'schema "%" has no Airflow connection table', schema_name USING ERRCODE = '42P01';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer' USING ERRCODE = '22023';
    END IF;
    LOOP
        EXECUTE format('SELECT array_agg(id ORDER BY id) FROM (SELECT id FROM %s WHERE _kms_conn_id = $1 AND id > $2'
                       ' AND conn_key IS NOT NULL ORDER BY id LIMIT $3 FOR UPDATE) s', conn)
            INTO ids USING kms_conn_id, last_id, batch_size;
        EXIT WHEN ids IS NULL;
        EXECUTE format('UPDATE %s SET conn_key = @extschema@._kms_rewrap(conn_key, _kms_conn_id, _kms_extra, $2)'
                       ' WHERE id = ANY($1)', conn)
            USING ids, schema_name;
        GET DIAGNOSTICS n = ROW_COUNT;
        done := done + n;
        last_id := ids[cardinality(ids)];
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        RAISE NOTICE 'conn_crypto rewrap_kms: % conn_key(s) of KMS connection "%" re-wrapped', done, kms_conn_id;
    END LOOP;
    RAISE NOTICE 'conn_crypto rewrap_kms: finished: % conn_key(s) re-wrapped', done;
END $$;

REVOKE EXECUTE ON FUNCTION
    @extschema@.kms_encrypt(bytea, text, jsonb, text),
    @extschema@.kms_decrypt(text, text, jsonb, text),
    @extschema@._kms_fernet_decrypt(text, text, text, text, text),
    @extschema@._kms_value_state(text, text, text, text, text, boolean),
    @extschema@._kms_rewrap(text, text, text, text),
    @extschema@.enable_kms(text)
    FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE @extschema@.rewrap_kms(text, text, integer) FROM PUBLIC;
-- kms_encrypt too: it uses the KMS connection's credentials (an oracle for its key).
GRANT EXECUTE ON FUNCTION
    @extschema@.kms_encrypt(bytea, text, jsonb, text),
    @extschema@.kms_decrypt(text, text, jsonb, text),
    @extschema@._kms_fernet_decrypt(text, text, text, text, text),
    @extschema@._kms_value_state(text, text, text, text, text, boolean)
    TO conn_crypto_reader;

-- Whether a connection is the KMS connection of another one (chains are refused).
CREATE FUNCTION @extschema@._kms_is_used(schema_name text, conn_id text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    used boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.connection WHERE _kms_conn_id = $1)', schema_name)
        INTO used USING conn_id;
    RETURN used;
END $$;
REVOKE EXECUTE ON FUNCTION @extschema@._kms_is_used(text, text) FROM PUBLIC;
