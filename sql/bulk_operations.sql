-- DBA bulk operations on mixed data: rotate, encrypt_plaintext, status, verify.
\i test/sql/regress_helpers.sql
\set k1 '''cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4='''
\set k2 '''YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY='''
\set k3 '''MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY='''
\set ring12 '''cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=,YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY='''
\set ring21 '''YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=,cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4='''
\i test/sql/airflow_schema.sql
CREATE TABLE trigger (id serial PRIMARY KEY, classpath varchar(1000), kwargs text, created_date timestamptz);
CREATE TABLE app_secrets (name text, secret text);  -- no primary key: walked by ctid

-- Mixed data, written before protection: primary-key tokens (k2 will be primary), old-key
-- tokens (k1), plaintext with false and NULL flags, NULL, empty, undecryptable (k3).
INSERT INTO connection (conn_id, conn_type, password, extra, is_encrypted, is_extra_encrypted)
SELECT 'c' || i, 'http',
       CASE i % 6 WHEN 0 THEN conn_crypto.fernet_encrypt('p' || i, :k2)
                  WHEN 1 THEN conn_crypto.fernet_encrypt('p' || i, :k1)
                  WHEN 2 THEN 'p' || i
                  WHEN 3 THEN NULL
                  WHEN 4 THEN ''
                  ELSE conn_crypto.fernet_encrypt('lost' || i, :k3) END,
       CASE WHEN i % 2 = 0 THEN conn_crypto.fernet_encrypt('{"i": ' || i || '}', :k1) ELSE '{"plain": ' || i || '}' END,
       CASE WHEN i % 6 IN (0, 1, 5) THEN true WHEN i % 12 = 2 THEN NULL ELSE false END,
       i % 2 = 0
FROM generate_series(1, 60) i;
INSERT INTO variable (key, val, is_encrypted) VALUES
    ('old', conn_crypto.fernet_encrypt('old value', :k1), true),
    ('plain', 'plain value', false), ('empty', '', false), ('null', NULL, NULL);
INSERT INTO trigger (classpath, kwargs) VALUES ('a', '{"x": 1}'), ('b', conn_crypto.fernet_encrypt('{"y": 2}', :k1));
INSERT INTO app_secrets SELECT 's' || i, conn_crypto.fernet_encrypt('secret' || i, :k1) FROM generate_series(1, 25) i;

-- The new primary key is k2; k1 stays in the keyring to decrypt until rotation is done.
SET conn_crypto.fernet_key = :ring21;
SELECT conn_crypto.enable_airflow_encryption();
SELECT conn_crypto.protect_column('app_secrets', 'secret');
-- Remember timestamps and plaintexts of the old-key tokens.
CREATE TEMP TABLE before AS
SELECT conn_id, password, conn_crypto.fernet_extract_timestamp(password) AS ts, conn_crypto.fernet_decrypt(password) AS plain
FROM connection WHERE conn_crypto.fernet_key_index(password) IS NOT NULL;

SELECT table_name, column_name, total, primary_key, older_keys, by_key, plaintext, empty, undecryptable
FROM conn_crypto.status ORDER BY table_name::text, column_name;
SELECT table_name, column_name, row_key, reason FROM conn_crypto.verify() ORDER BY table_name::text, column_name, row_key;

-- Rotation: warnings for undecryptable values, quiet notices.
SET client_min_messages = warning;
CALL conn_crypto.rotate(7);
SELECT table_name, column_name, total, primary_key, older_keys, by_key, plaintext, empty, undecryptable
FROM conn_crypto.status ORDER BY table_name::text, column_name;
-- Timestamps kept, plaintexts unchanged, tokens under the primary key untouched.
SELECT count(*) AS rotated_rows,
       count(*) FILTER (WHERE conn_crypto.fernet_extract_timestamp(c.password) = b.ts) AS same_timestamp,
       count(*) FILTER (WHERE conn_crypto.fernet_decrypt(c.password) = b.plain) AS same_plaintext,
       count(*) FILTER (WHERE conn_crypto.fernet_key_index(b.password) = 1 AND c.password = b.password) AS primary_untouched,
       count(*) FILTER (WHERE conn_crypto.fernet_key_index(b.password) = 1) AS primary_before
FROM connection c JOIN before b USING (conn_id);
-- Undecryptable values were not modified.
SELECT count(*) AS undecryptable_kept FROM connection
WHERE CASE WHEN conn_crypto.fernet_key_index(password, :k3) = 1 THEN conn_crypto.fernet_decrypt(password, :k3) LIKE 'lost%' END;
-- A second call has nothing to do: no row is rewritten (no new tuple versions).
CREATE TEMP TABLE versions AS SELECT conn_id, ctid AS tid, xmin::text AS row_xmin FROM connection;
CALL conn_crypto.rotate();
SELECT count(*) AS rewritten FROM connection c JOIN versions v USING (conn_id) WHERE c.ctid <> v.tid OR c.xmin::text <> v.row_xmin;

-- encrypt_plaintext: Airflow's read rules decide what is plaintext.
CALL conn_crypto.encrypt_plaintext(5);
SELECT table_name, column_name, total, primary_key, older_keys, by_key, plaintext, empty, undecryptable
FROM conn_crypto.status ORDER BY table_name::text, column_name;
SELECT conn_id, is_encrypted, conn_crypto.connection_password(conn_id) AS password
FROM connection WHERE conn_id IN ('c2', 'c8', 'c14', 'c3', 'c4', 'c6', 'c7') ORDER BY conn_id;
SELECT conn_id, is_extra_encrypted, conn_crypto.connection_extra(conn_id) AS extra
FROM connection WHERE conn_id IN ('c1', 'c2') ORDER BY conn_id;
SELECT key, is_encrypted, conn_crypto.variable_value(key) AS value FROM variable ORDER BY key;
SELECT classpath, conn_crypto.fernet_decrypt(kwargs) AS kwargs FROM trigger ORDER BY classpath;
-- What is left for Airflow to trip over: only the undecryptable values.
SELECT table_name, column_name, row_key, reason FROM conn_crypto.verify() ORDER BY table_name::text, column_name, row_key;
-- Flags that disagree with values are reported (c2 is plaintext Airflow reads fine).
ALTER TABLE connection DISABLE TRIGGER conn_crypto_protect;
UPDATE connection SET is_encrypted = false WHERE conn_id = 'c1';
UPDATE connection SET password = 'typed in', is_encrypted = true WHERE conn_id = 'c8';
UPDATE connection SET password = 'typed in', is_encrypted = false WHERE conn_id = 'c2';
ALTER TABLE connection ENABLE TRIGGER conn_crypto_protect;
SELECT table_name, column_name, row_key, reason FROM conn_crypto.verify() WHERE reason NOT LIKE 'token that%' ORDER BY 3;

-- Bad input and privileges.
SELECT pg_temp.err('CALL conn_crypto.rotate(0)') AS zero_batch;
SELECT pg_temp.err('CALL conn_crypto.rotate(NULL)') AS null_batch;
SET conn_crypto.fernet_key = '';
SELECT pg_temp.err('CALL conn_crypto.rotate()') AS no_key;
-- The batches' row claim checks what it is given: tids that name no tuple,
-- relations that are not heap tables, NULLs and rows needing no work.
CREATE TABLE claim_t (id integer);
INSERT INTO claim_t VALUES (1), (2);
UPDATE claim_t SET id = 3 WHERE id = 2;   -- (0,2) is now an old version, (0,3) the live one
SELECT conn_crypto._bulk_claims();
BEGIN;
SELECT conn_crypto._bulk_claim('claim_t'::regclass, '(0,1)', 2) AS live_row,
       conn_crypto._bulk_claim('claim_t'::regclass, '(0,1)', 1) AS again_ours,
       conn_crypto._bulk_claim('claim_t'::regclass, '(0,2)', 1) AS old_version,
       conn_crypto._bulk_claim('claim_t'::regclass, '(0,3)', 0) AS no_work,
       conn_crypto._bulk_claim('claim_t'::regclass, '(0,0)', 1) AS offset_zero,
       conn_crypto._bulk_claim('claim_t'::regclass, '(0,9999)', 1) AS past_page_end,
       conn_crypto._bulk_claim('claim_t'::regclass, '(999999,1)', 1) AS past_table_end,
       conn_crypto._bulk_claim(NULL, '(0,1)', 1) AS null_table,
       conn_crypto._bulk_claim('claim_t'::regclass, NULL, 1) AS null_tid,
       conn_crypto._bulk_claim('claim_t'::regclass, '(0,1)', NULL) AS null_work;
SELECT * FROM conn_crypto._bulk_claims();
-- The claimed row carries this transaction's row lock; the other does not.
SELECT id, xmax = pg_current_xact_id()::xid AS locked_by_us FROM claim_t ORDER BY id;
ROLLBACK;
SELECT pg_temp.err($$SELECT conn_crypto._bulk_claim('connection_pkey'::regclass, '(0,1)', 1)$$) AS index_claim;
SELECT pg_temp.err($$SELECT conn_crypto._bulk_claim('conn_crypto.status'::regclass, '(0,1)', 1)$$) AS view_claim;
SELECT pg_temp.err($$SELECT conn_crypto._bulk_claim(0, '(0,1)', 1)$$) AS no_table_claim;
DROP TABLE claim_t;
SET conn_crypto.fernet_key = :ring21;
CREATE ROLE cc_bulk_user;
GRANT USAGE ON SCHEMA conn_crypto TO cc_bulk_user;
SET ROLE cc_bulk_user;
SELECT pg_temp.err('CALL conn_crypto.rotate()') AS user_rotate;
SELECT pg_temp.err('CALL conn_crypto.encrypt_plaintext()') AS user_encrypt_plaintext;
SELECT pg_temp.err('SELECT * FROM conn_crypto.status') AS user_status;
SELECT pg_temp.err('SELECT * FROM conn_crypto.verify()') AS user_verify;
SELECT pg_temp.err($$SELECT conn_crypto._bulk_claim('connection'::regclass, '(0,1)', 1)$$) AS user_claim;
RESET ROLE;
-- A reader with a hostile search_path: objects named like built-ins earlier in the path change nothing.
GRANT conn_crypto_reader TO cc_bulk_user;
CREATE SCHEMA evil;
CREATE FUNCTION evil.count(anyelement) RETURNS bigint LANGUAGE sql AS 'SELECT 42::bigint';
CREATE FUNCTION evil.array_agg(anyelement) RETURNS anyarray LANGUAGE sql AS 'SELECT NULL';
CREATE FUNCTION evil.coalesce(text[], text[]) RETURNS text[] LANGUAGE sql AS 'SELECT ARRAY[''x'']';
CREATE FUNCTION evil.fernet_encrypt(text) RETURNS text LANGUAGE sql AS 'SELECT ''stolen''';
CREATE TABLE evil.connection (LIKE public.connection);
GRANT USAGE ON SCHEMA evil TO cc_bulk_user;
SET ROLE cc_bulk_user;
SET search_path = evil, public, pg_catalog;
SELECT table_name, column_name, total, primary_key, undecryptable FROM conn_crypto.status ORDER BY table_name::text, column_name;
SELECT count(*) AS verify_rows FROM conn_crypto.verify();
-- A reader may run the bulk procedures on tables it may update, and only those.
SELECT pg_temp.err('CALL conn_crypto.encrypt_plaintext()') AS reader_without_update;
SELECT pg_temp.err($$SELECT conn_crypto._bulk_claim('public.connection'::regclass, '(0,1)', 1)$$) AS reader_claim_without_update;
RESET ROLE;
GRANT SELECT, UPDATE ON public.connection, public.variable, public.trigger, public.app_secrets TO cc_bulk_user;
SET ROLE cc_bulk_user;
CALL conn_crypto.encrypt_plaintext();
RESET ROLE;
RESET search_path;
REVOKE SELECT, UPDATE ON public.connection, public.variable, public.trigger, public.app_secrets FROM cc_bulk_user;
SELECT is_encrypted, conn_crypto.fernet_decrypt(password) AS c2 FROM connection WHERE conn_id = 'c2';
DROP SCHEMA evil CASCADE;
REVOKE conn_crypto_reader FROM cc_bulk_user;
REVOKE USAGE ON SCHEMA conn_crypto FROM cc_bulk_user;
DROP ROLE cc_bulk_user;
RESET client_min_messages;
DROP TABLE connection, variable, trigger, app_secrets;
RESET conn_crypto.fernet_key;

-- Primary keys of types without min()/max() (uuid) and of varchar: the batches
-- find their key ranges all the same.
SET client_min_messages = warning;
SET conn_crypto.fernet_key = :ring21;
CREATE TABLE uuid_secrets (id uuid PRIMARY KEY, secret text);
CREATE TABLE varchar_secrets (name varchar(20) PRIMARY KEY, secret text);
INSERT INTO uuid_secrets
SELECT md5(i::text)::uuid, CASE WHEN i % 3 = 0 THEN 'plain-' || i ELSE conn_crypto.fernet_encrypt('u-' || i, :k1) END
FROM generate_series(1, 25) i;
INSERT INTO varchar_secrets SELECT 'n' || i, conn_crypto.fernet_encrypt('v-' || i, :k1) FROM generate_series(1, 25) i;
SELECT conn_crypto.protect_column('uuid_secrets', 'secret'), conn_crypto.protect_column('varchar_secrets', 'secret');
CALL conn_crypto.rotate(4);
CALL conn_crypto.encrypt_plaintext(4);
SELECT table_name, total, primary_key, older_keys, plaintext FROM conn_crypto.status ORDER BY table_name::text;
SELECT count(*) FILTER (WHERE conn_crypto.fernet_decrypt(secret) IN ('u-' || i, 'plain-' || i)) AS uuid_ok
FROM uuid_secrets JOIN generate_series(1, 25) i ON id = md5(i::text)::uuid;
SELECT count(*) FILTER (WHERE conn_crypto.fernet_decrypt(secret) = 'v-' || substr(name, 2)) AS varchar_ok FROM varchar_secrets;
DROP TABLE uuid_secrets, varchar_secrets;
RESET conn_crypto.fernet_key;
RESET client_min_messages;
