-- The server keyring: GUC, errors when absent, privileges and secrecy.
\i test/sql/regress_helpers.sql
CREATE FUNCTION pg_temp.explain_lines(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || q;
END $$;

-- No key configured (the test server has no AIRFLOW__CORE__FERNET_KEY): a clear error naming both ways.
RESET conn_crypto.fernet_key;
\set VERBOSITY default
SELECT conn_crypto.fernet_encrypt('x');
SELECT conn_crypto.fernet_decrypt('gAAAAA');

-- A malformed server key names its position and the setting, never the key.
SET conn_crypto.fernet_key = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=, not-a-key';
SELECT pg_temp.err($$SELECT conn_crypto.fernet_encrypt('x')$$) AS bad_server_key;

-- A keyring in the GUC: the first key encrypts, every key decrypts.
SET conn_crypto.fernet_key = 'YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=, cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=';
SELECT conn_crypto.fernet_decrypt('gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==') AS old_key_token;
SELECT conn_crypto.fernet_key_index('gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==') AS old_key_index;
SELECT conn_crypto.fernet_key_index(conn_crypto.fernet_encrypt('new')) AS new_key_index;
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('server'), ttl => 60) AS server_ttl;
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('srv'), 'YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=') AS explicit_reads_server_token;
SELECT conn_crypto.fernet_key_index(conn_crypto.fernet_rotate('gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==')) AS rotated_index;
SELECT conn_crypto.fernet_extract_timestamp(conn_crypto.fernet_rotate('gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==')) AT TIME ZONE 'UTC' AS rotated_time;
-- The cache follows the setting: after a change, the old primary no longer decrypts new tokens.
SET conn_crypto.fernet_key = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=';
SELECT conn_crypto.fernet_key_index(conn_crypto.fernet_encrypt('again'), 'YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=') IS NULL AS switched;
BEGIN;
SET LOCAL conn_crypto.fernet_key = 'YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=';
SELECT conn_crypto.fernet_key_index(conn_crypto.fernet_encrypt('local'), 'YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=') AS local_key;
ROLLBACK;
SELECT conn_crypto.fernet_key_index(conn_crypto.fernet_encrypt('after'), 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=') AS restored_key;

-- Keys cannot be stored where every user can read them.
SELECT pg_temp.err($$ALTER DATABASE contrib_regression SET conn_crypto.fernet_key = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4='$$) AS alter_database;
SELECT pg_temp.err($$ALTER ROLE CURRENT_USER SET conn_crypto.fernet_key = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4='$$) AS alter_role;
SELECT pg_temp.err($$SET conn_crypto.fernet_key_command = 'echo key'$$) AS set_key_command;
SELECT pg_temp.err($$CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql SET conn_crypto.fernet_key = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=' AS 'SELECT 1'$$) AS function_set;
SELECT count(*) AS stored_settings FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%fernet_key%';

-- An unprivileged role: cannot read the key, cannot decrypt with it, can use explicit keys.
CREATE ROLE cc_regress_user;
GRANT USAGE ON SCHEMA conn_crypto TO cc_regress_user;
SET ROLE cc_regress_user;
SELECT pg_temp.err('SHOW conn_crypto.fernet_key') AS show_key;
SELECT pg_temp.err($$SELECT current_setting('conn_crypto.fernet_key')$$) AS current_setting;
SELECT count(*) AS visible_in_pg_settings FROM pg_settings WHERE name LIKE 'conn_crypto.fernet_key%';
SELECT pg_temp.err('SHOW conn_crypto.fernet_key_command') AS show_key_command;
SELECT pg_temp.err('SELECT count(*) FROM pg_file_settings') AS file_settings;
SELECT count(*) > 0 AS explained, bool_and(l !~ '(cw_0x689|YWJjZGVm|\*\*\*\*)') AS no_key_in_explain
FROM pg_temp.explain_lines($$SELECT conn_crypto.fernet_encrypt('x'), conn_crypto.fernet_key_index('y', 'z')$$) l;
SELECT count(*) AS db_role_settings_with_key FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%conn_crypto%';
SELECT pg_temp.err($$SET conn_crypto.fernet_key = 'YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY='$$) AS set_key;
SELECT pg_temp.err($$SELECT conn_crypto.fernet_decrypt('x')$$) AS decrypt_server;
SELECT pg_temp.err($$SELECT conn_crypto.fernet_rotate('x')$$) AS rotate_server;
SELECT pg_temp.err($$SELECT conn_crypto.fernet_key_index('x')$$) AS key_index_server;
SELECT pg_temp.err($$SELECT conn_crypto.fernet_extract_timestamp('x')$$) AS timestamp_server;
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('mine', 'YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY='), 'YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=') AS explicit_ok;
SELECT conn_crypto.fernet_key_index(conn_crypto.fernet_encrypt('server-encrypted'), 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=') AS may_encrypt;
RESET ROLE;
-- Granting conn_crypto_reader allows decryption with the server keyring.
GRANT conn_crypto_reader TO cc_regress_user;
SET ROLE cc_regress_user;
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('granted')) AS reader_can_decrypt;
RESET ROLE;
REVOKE conn_crypto_reader FROM cc_regress_user;
REVOKE USAGE ON SCHEMA conn_crypto FROM cc_regress_user;
DROP ROLE cc_regress_user;
RESET conn_crypto.fernet_key;
-- The visible value is a mask, even for superusers; the keyring itself is kept privately.
SET conn_crypto.fernet_key = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=';
SHOW conn_crypto.fernet_key;
SELECT current_setting('conn_crypto.fernet_key') AS current_setting,
       (SELECT setting FROM pg_settings WHERE name = 'conn_crypto.fernet_key') AS pg_settings;
-- Parallel plans keep server-keyring functions in the leader, where the keyring is.
CREATE TABLE par AS SELECT conn_crypto.fernet_encrypt('row ' || i) AS t FROM generate_series(1, 5000) i;
ANALYZE par;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SELECT count(*) FILTER (WHERE conn_crypto.fernet_decrypt(t) LIKE 'row %') AS decrypted,
       count(*) FILTER (WHERE conn_crypto.fernet_decrypt(t, 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=') LIKE 'row %') AS explicit
FROM par;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
DROP TABLE par;
RESET conn_crypto.fernet_key;
