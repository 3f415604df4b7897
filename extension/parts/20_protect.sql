
-- ===================== Protected columns and Airflow's tables =====================

-- Which key of the server keyring authenticates a value: its 1-based
-- position, 0 for plaintext (no token structure), -1 for a token that no key
-- authenticates (or any token when no key is configured).
CREATE FUNCTION @extschema@._key_position(value text) RETURNS integer
    AS 'MODULE_PATHNAME', 'cc_key_position' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
REVOKE EXECUTE ON FUNCTION @extschema@._key_position(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._key_position(text) TO conn_crypto_reader;

CREATE FUNCTION @extschema@.protect_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'cc_protect_trigger' LANGUAGE C;

-- Trigger arguments are stored NUL-separated in pg_trigger.tgargs.
CREATE FUNCTION @extschema@._split_tgargs(args bytea) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result text[] := '{}';
    start integer := 0;
BEGIN
    FOR i IN 0 .. length(args) - 1 LOOP
        IF get_byte(args, i) = 0 THEN
            result := result || convert_from(substring(args FROM start + 1 FOR i - start), getdatabaseencoding());
            start := i + 1;
        END IF;
    END LOOP;
    RETURN result;
END $$;

-- One row per protected column: the configuration lives in the trigger's arguments.
CREATE VIEW @extschema@.protected_columns AS
SELECT c.oid::regclass AS table_name,
       n.nspname AS table_schema,
       c.relname AS table_relname,
       a.args[3 * i - 2]::name AS column_name,
       nullif(a.args[3 * i - 1], '')::name AS flag_column,
       a.args[3 * i] = 'encrypt_empty' AS encrypt_empty
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT @extschema@._split_tgargs(t.tgargs) AS args) a
CROSS JOIN LATERAL pg_catalog.generate_series(1, pg_catalog.cardinality(a.args) / 3) AS i
WHERE t.tgfoid = '@extschema@.protect_trigger()'::pg_catalog.regprocedure
  AND t.tgname = 'conn_crypto_protect'
  AND a.args[3 * i] <> 'kms';   -- the KMS marker is not a protected column
GRANT SELECT ON @extschema@.protected_columns TO PUBLIC;

-- Refuses to protect a column whose tokens are all undecryptable: the
-- configured keyring is not the one that made them (a restore into a
-- database with another key, a key mix-up), and that must fail loudly. A few
-- stray undecryptable values among good ones only warn (see verify()).
CREATE FUNCTION @extschema@._validate_protected(table_name regclass, args text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad bigint;
    good bigint;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(args), 0) / 3 LOOP
        CONTINUE WHEN args[3 * i] = 'kms';
        -- Rows with their own KMS data key are not under the server keyring.
        EXECUTE format('SELECT count(*) FILTER (WHERE p = -1), count(*) FILTER (WHERE p > 0)'
                       ' FROM (SELECT @extschema@._key_position(%I) AS p FROM %s WHERE %I <> %L %s) v',
                       args[3 * i - 2], table_name, args[3 * i - 2], '',
                       CASE WHEN EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = table_name
                                         AND attname = '_kms_conn_id' AND NOT attisdropped)
                            THEN 'AND _kms_conn_id IS NULL' ELSE '' END)
            INTO bad, good;
        IF bad > 0 AND good = 0 THEN
            RAISE EXCEPTION 'column "%" of table % holds % Fernet token(s) and no key of the server keyring decrypts any of them',
                args[3 * i - 2], table_name, bad
                USING ERRCODE = 'ZF001',
                      DETAIL = 'They were encrypted with a key that is not configured here (a restore into a database with another key?).',
                      HINT = 'Configure the key that made them in conn_crypto.fernet_key or AIRFLOW__CORE__FERNET_KEY (after the primary key), then retry.';
        ELSIF bad > 0 THEN
            RAISE WARNING 'column "%" of table % holds % Fernet token(s) that no key of the server keyring decrypts',
                args[3 * i - 2], table_name, bad
                USING HINT = 'SELECT * FROM conn_crypto.verify() lists them.';
        END IF;
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION @extschema@._validate_protected(regclass, text[]) FROM PUBLIC;

CREATE FUNCTION @extschema@._on_create_trigger() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    -- protect_column() validates the column it adds itself; re-creating the
    -- trigger for columns already protected needs no scan.
    IF current_setting('conn_crypto_internal.installing', true) = 'on' THEN
        RETURN;
    END IF;
    FOR r IN
        SELECT t.tgrelid::regclass AS tbl, t.tgargs
        FROM pg_event_trigger_ddl_commands() cmd
        JOIN pg_trigger t ON t.oid = cmd.objid
        WHERE cmd.classid = 'pg_trigger'::regclass
          AND t.tgfoid = '@extschema@.protect_trigger()'::regprocedure
    LOOP
        PERFORM @extschema@._validate_protected(r.tbl, @extschema@._split_tgargs(r.tgargs));
    END LOOP;
END $$;

CREATE EVENT TRIGGER conn_crypto_validate_protection ON ddl_command_end
    WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION @extschema@._on_create_trigger();

-- (Re)creates the one protection trigger of a table from its argument list.
CREATE FUNCTION @extschema@._install_trigger(table_name regclass, args text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    update_cols text;
    arg_list text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = table_name AND tgname = 'conn_crypto_protect') THEN
        EXECUTE format('DROP TRIGGER conn_crypto_protect ON %s', table_name);
    END IF;
    IF coalesce(cardinality(args), 0) = 0 THEN
        RETURN;
    END IF;
    -- UPDATE OF: an UPDATE that sets none of these columns does not fire the trigger at all.
    SELECT string_agg(DISTINCT quote_ident(a), ', ') INTO update_cols
    FROM (SELECT a FROM unnest(args) WITH ORDINALITY AS x(a, n) WHERE n % 3 <> 0 AND a <> ''
          UNION ALL
          SELECT '_kms_extra' WHERE 'kms' = ANY(args)) cols;
    SELECT string_agg(quote_literal(a), ', ' ORDER BY n) INTO arg_list
    FROM unnest(args) WITH ORDINALITY AS x(a, n);
    PERFORM set_config('conn_crypto_internal.installing', 'on', true);
    EXECUTE format('CREATE TRIGGER conn_crypto_protect BEFORE INSERT OR UPDATE OF %s ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION @extschema@.protect_trigger(%s)',
                   update_cols, table_name, arg_list);
    PERFORM set_config('conn_crypto_internal.installing', 'off', true);
END $$;

CREATE FUNCTION @extschema@._trigger_args(table_name regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT @extschema@._split_tgargs(tgargs) FROM pg_trigger
                     WHERE tgrelid = table_name AND tgname = 'conn_crypto_protect'), '{}');
$$;

-- A trigger argument list (triples) without the triple of one column.
CREATE FUNCTION @extschema@._args_without(args text[], column_name text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(args[i] ORDER BY i), '{}')
    FROM generate_series(1, cardinality(args)) AS i
    WHERE args[((i - 1) / 3) * 3 + 1] <> column_name;
$$;

-- Protects a text/varchar column: values are kept as Fernet tokens of the
-- server keyring, with an optional boolean flag column kept in agreement.
-- encrypt_empty: whether '' is encrypted (Airflow's variable.val) or left alone.
CREATE FUNCTION @extschema@.protect_column(table_name regclass, column_name name,
                                           flag_column name DEFAULT NULL,
                                           encrypt_empty boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_args text[] := @extschema@._trigger_args(table_name);
    new_args text[];
    col_type regtype;
    flag_type regtype;
BEGIN
    SELECT atttypid::regtype INTO col_type FROM pg_attribute
    WHERE attrelid = table_name AND attname = column_name AND attnum > 0 AND NOT attisdropped;
    IF col_type IS NULL THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', column_name, table_name USING ERRCODE = '42703';
    ELSIF col_type NOT IN ('text'::regtype, 'character varying'::regtype) THEN
        RAISE EXCEPTION 'column "%" of relation % has type %, not text or varchar', column_name, table_name, col_type
            USING ERRCODE = '42804';
    END IF;
    IF flag_column IS NOT NULL THEN
        SELECT atttypid::regtype INTO flag_type FROM pg_attribute
        WHERE attrelid = table_name AND attname = flag_column AND attnum > 0 AND NOT attisdropped;
        IF flag_type IS DISTINCT FROM 'boolean'::regtype THEN
            RAISE EXCEPTION 'flag column "%" of relation % must exist and be boolean', flag_column, table_name
                USING ERRCODE = '42804';
        END IF;
    END IF;
    new_args := @extschema@._args_without(old_args, column_name) || ARRAY[column_name::text, coalesce(flag_column::text, ''),
                                  CASE WHEN encrypt_empty THEN 'encrypt_empty' ELSE 'skip_empty' END];
    PERFORM @extschema@._validate_protected(table_name, new_args[cardinality(new_args) - 2 :]);
    PERFORM @extschema@._install_trigger(table_name, new_args);
END $$;

CREATE FUNCTION @extschema@.unprotect_column(table_name regclass, column_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_args text[] := @extschema@._trigger_args(table_name);
    new_args text[] := @extschema@._args_without(old_args, column_name);
BEGIN
    IF new_args IS DISTINCT FROM old_args THEN
        PERFORM @extschema@._install_trigger(table_name, new_args);
    END IF;
END $$;

-- Airflow's metadata tables: connection.password and .extra, variable.val.
CREATE FUNCTION @extschema@.enable_airflow_encryption(schema_name text DEFAULT 'public') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    conn regclass := to_regclass(format('%I.connection', schema_name));
    var regclass := to_regclass(format('%I.variable', schema_name));
BEGIN
    IF conn IS NULL AND var IS NULL THEN
        RAISE EXCEPTION 'schema "%" has no Airflow connection or variable table', schema_name USING ERRCODE = '42P01';
    END IF;
    IF conn IS NOT NULL THEN
        PERFORM @extschema@.protect_column(conn, 'password', 'is_encrypted', false);
        PERFORM @extschema@.protect_column(conn, 'extra', 'is_extra_encrypted', false);
    END IF;
    IF var IS NOT NULL THEN
        PERFORM @extschema@.protect_column(var, 'val', 'is_encrypted', true);
    END IF;
END $$;

CREATE FUNCTION @extschema@.disable_airflow_encryption(schema_name text DEFAULT 'public') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    conn regclass := to_regclass(format('%I.connection', schema_name));
    var regclass := to_regclass(format('%I.variable', schema_name));
BEGIN
    IF conn IS NOT NULL THEN
        PERFORM @extschema@.unprotect_column(conn, 'password');
        PERFORM @extschema@.unprotect_column(conn, 'extra');
    END IF;
    IF var IS NOT NULL THEN
        PERFORM @extschema@.unprotect_column(var, 'val');
    END IF;
END $$;

-- Reading helpers that follow Airflow's read rules: decrypt when the value
-- is non-empty and its flag is true, otherwise return the stored value.
CREATE FUNCTION @extschema@._airflow_read(schema_name text, table_name text, value_column text, flag_column text,
                                          key_column text, key_value text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text;
    encrypted boolean;
    found_row boolean;
    kms record;
    has_kms boolean;
BEGIN
    EXECUTE format('SELECT %I, %I, true FROM %I.%I WHERE %I = $1', value_column, flag_column, schema_name,
                   table_name, key_column)
        INTO v, encrypted, found_row USING key_value;
    IF found_row IS NULL THEN
        RAISE EXCEPTION '% "%" does not exist in %.%', key_column, key_value, schema_name, table_name
            USING ERRCODE = '42704';
    END IF;
    IF v IS NULL OR v = '' OR encrypted IS NOT TRUE THEN
        RETURN v;
    END IF;
    -- A row with its own KMS-wrapped data key (see enable_kms).
    has_kms := EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = format('%I.%I', schema_name, table_name)::regclass
                       AND attname = '_kms_conn_id' AND NOT attisdropped);
    IF has_kms THEN
        EXECUTE format('SELECT conn_key, _kms_conn_id, _kms_extra FROM %I.%I WHERE %I = $1', schema_name, table_name,
                       key_column)
            INTO kms USING key_value;
        IF kms._kms_conn_id IS NOT NULL THEN
            RETURN @extschema@._kms_fernet_decrypt(v, kms.conn_key, kms._kms_conn_id, kms._kms_extra, schema_name);
        END IF;
    END IF;
    RETURN @extschema@.fernet_decrypt(v);
END $$;

CREATE FUNCTION @extschema@.connection_password(conn_id text, schema_name text DEFAULT 'public') RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._airflow_read(schema_name, 'connection', 'password', 'is_encrypted', 'conn_id', conn_id);
$$;
CREATE FUNCTION @extschema@.connection_extra(conn_id text, schema_name text DEFAULT 'public') RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._airflow_read(schema_name, 'connection', 'extra', 'is_extra_encrypted', 'conn_id', conn_id);
$$;
CREATE FUNCTION @extschema@.variable_value(key text, schema_name text DEFAULT 'public') RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@._airflow_read(schema_name, 'variable', 'val', 'is_encrypted', 'key', key);
$$;

REVOKE EXECUTE ON FUNCTION
    @extschema@._airflow_read(text, text, text, text, text, text),
    @extschema@.connection_password(text, text),
    @extschema@.connection_extra(text, text),
    @extschema@.variable_value(text, text),
    @extschema@.protect_column(regclass, name, name, boolean),
    @extschema@.unprotect_column(regclass, name),
    @extschema@._install_trigger(regclass, text[]),
    @extschema@.enable_airflow_encryption(text),
    @extschema@.disable_airflow_encryption(text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    @extschema@._airflow_read(text, text, text, text, text, text),
    @extschema@.connection_password(text, text),
    @extschema@.connection_extra(text, text),
    @extschema@.variable_value(text, text)
    TO conn_crypto_reader;
