-- Transparent encryption of Airflow's connection and variable tables.
\i test/sql/regress_helpers.sql
\set k1 '''cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4='''
\set k2 '''YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY='''
\set k3 '''MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY='''
\set ring12 '''cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=,YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY='''
SET conn_crypto.fernet_key = :k1;

-- Airflow 2.x DDL, and 1.10's varchar(5000) columns in another schema.
CREATE TABLE connection (id serial PRIMARY KEY, conn_id varchar(250) NOT NULL UNIQUE, conn_type varchar(500) NOT NULL,
    description text, host varchar(500), schema varchar(500), login text, password text, port integer,
    is_encrypted boolean, is_extra_encrypted boolean, extra text);
CREATE TABLE variable (id serial PRIMARY KEY, key varchar(250) UNIQUE, val text, description text, is_encrypted boolean);
CREATE SCHEMA af110;
CREATE TABLE af110.connection (id serial PRIMARY KEY, conn_id varchar(250), conn_type varchar(500), host varchar(500),
    schema varchar(500), login varchar(500), password varchar(5000), port integer, extra varchar(5000),
    is_encrypted boolean, is_extra_encrypted boolean);
CREATE TABLE af110.variable (id serial PRIMARY KEY, key varchar(250) UNIQUE, val text, is_encrypted boolean);

-- A row written before protection, in plaintext with the flag false, as Airflow without a key does.
INSERT INTO connection (conn_id, conn_type, password, extra, is_encrypted, is_extra_encrypted)
VALUES ('legacy', 'http', 'old-plain', '{"a": 1}', false, false);

SELECT conn_crypto.enable_airflow_encryption();
SELECT conn_crypto.enable_airflow_encryption();  -- idempotent
SELECT conn_crypto.enable_airflow_encryption('af110');
SELECT table_name, column_name, flag_column, encrypt_empty FROM conn_crypto.protected_columns ORDER BY table_name::text, column_name;
SELECT tgrelid::regclass, count(*) FROM pg_trigger WHERE tgname = 'conn_crypto_protect' GROUP BY 1 ORDER BY tgrelid::regclass::text;

-- Plain SQL inserts: plaintext is encrypted under the primary key, flags set, NULL/empty left alone.
INSERT INTO connection (conn_id, conn_type, password, extra) VALUES
    ('pg', 'postgres', 'pässwörd🔑', '{"sslmode": "require"}'),
    ('nullpw', 'http', NULL, NULL),
    ('emptypw', 'http', '', '');
SELECT conn_id, is_encrypted, is_extra_encrypted,
       conn_crypto.fernet_key_index(password, :k1) AS pw_key, conn_crypto.fernet_decrypt(password, :k1) AS pw,
       conn_crypto.fernet_key_index(extra, :k1) AS extra_key, conn_crypto.fernet_decrypt(extra, :k1) AS extra
FROM connection WHERE conn_id = 'pg';
SELECT conn_id, password IS NULL AS pw_null, password = '' AS pw_empty, extra, is_encrypted, is_extra_encrypted
FROM connection WHERE conn_id IN ('nullpw', 'emptypw') ORDER BY conn_id;
-- Variables: every non-NULL value is encrypted, the empty string included.
INSERT INTO variable (key, val) VALUES ('v1', 'value one'), ('v_empty', ''), ('v_null', NULL);
SELECT key, is_encrypted, val IS NULL AS is_null,
       CASE WHEN val IS NOT NULL THEN conn_crypto.fernet_decrypt(val, :k1) END AS decrypted
FROM variable ORDER BY key;

-- A token of the keyring is stored untouched, and its flag is set true even if written false.
INSERT INTO connection (conn_id, conn_type, password, is_encrypted)
SELECT 'pretok', 'http', conn_crypto.fernet_encrypt('made elsewhere', :k1), false;
SELECT is_encrypted, conn_crypto.fernet_decrypt(password, :k1) FROM connection WHERE conn_id = 'pretok';
-- An old key still in the keyring: its token is accepted as is (rotation moves it later).
SET conn_crypto.fernet_key = :ring12;
CREATE TEMP TABLE tok AS SELECT conn_crypto.fernet_encrypt('old key secret', :k2) AS t;
INSERT INTO connection (conn_id, conn_type, password) SELECT 'oldkey', 'http', t FROM tok;
SELECT c.password = tok.t AS byte_identical, c.is_encrypted FROM connection c, tok WHERE conn_id = 'oldkey';

-- A token that no key decrypts is refused; nothing is written.
SELECT pg_temp.err(format($$INSERT INTO connection (conn_id, conn_type, password) VALUES ('foreign', 'http', %L)$$,
                          conn_crypto.fernet_encrypt('x', :k3))) AS foreign_token;
SELECT count(*) AS foreign_rows FROM connection WHERE conn_id = 'foreign';
SELECT pg_temp.err(format($$UPDATE connection SET extra = %L WHERE conn_id = 'pg'$$,
                          conn_crypto.fernet_encrypt('x', :k3))) AS foreign_update;
SELECT conn_crypto.fernet_decrypt(extra, :k1) AS extra_unchanged FROM connection WHERE conn_id = 'pg';

-- UPDATE of an unrelated column: the tokens stay byte-identical.
CREATE TEMP TABLE before AS SELECT conn_id, password, extra FROM connection;
UPDATE connection SET description = 'touched', port = 5432;
SELECT count(*) AS changed_tokens FROM connection c JOIN before b USING (conn_id)
WHERE c.password IS DISTINCT FROM b.password OR c.extra IS DISTINCT FROM b.extra;
-- Setting the same token again (as an ORM does) keeps it byte-identical too.
UPDATE connection SET password = password, extra = extra;
SELECT count(*) AS changed_tokens FROM connection c JOIN before b USING (conn_id)
WHERE c.password IS DISTINCT FROM b.password OR c.extra IS DISTINCT FROM b.extra;
-- A flag set false or NULL on a token is corrected.
UPDATE connection SET is_encrypted = false WHERE conn_id = 'pg';
UPDATE connection SET is_extra_encrypted = NULL WHERE conn_id = 'pg';
SELECT is_encrypted, is_extra_encrypted FROM connection WHERE conn_id = 'pg';
-- A new password, as plaintext or as Airflow's new token without touching the flag.
UPDATE connection SET password = 'new-plain' WHERE conn_id = 'pg';
SELECT is_encrypted, conn_crypto.fernet_decrypt(password, :k1) FROM connection WHERE conn_id = 'pg';
UPDATE connection SET password = conn_crypto.fernet_encrypt('from airflow', :k1) WHERE conn_id = 'emptypw';
SELECT is_encrypted, conn_crypto.fernet_decrypt(password, :k1) FROM connection WHERE conn_id = 'emptypw';
-- The legacy plaintext row is not touched by unrelated updates; writing its password encrypts it.
SELECT password, is_encrypted FROM connection WHERE conn_id = 'legacy';
UPDATE connection SET password = password WHERE conn_id = 'legacy';
SELECT password, is_encrypted FROM connection WHERE conn_id = 'legacy';
UPDATE connection SET password = 'old-plain', is_encrypted = true WHERE conn_id = 'legacy';
SELECT is_encrypted, conn_crypto.fernet_decrypt(password, :k1) FROM connection WHERE conn_id = 'legacy';

-- Every way rows arrive: multi-row INSERT, ON CONFLICT DO UPDATE, UPDATE ... FROM, COPY.
INSERT INTO connection (conn_id, conn_type, password) VALUES ('m1', 'http', 'a'), ('m2', 'http', 'b')
ON CONFLICT (conn_id) DO UPDATE SET password = excluded.password;
INSERT INTO connection (conn_id, conn_type, password) VALUES ('m1', 'http', 'a2'), ('m3', 'http', 'c')
ON CONFLICT (conn_id) DO UPDATE SET password = excluded.password, is_encrypted = excluded.is_encrypted;
SELECT conn_id, is_encrypted, conn_crypto.fernet_decrypt(password, :k1) FROM connection WHERE conn_id LIKE 'm_' ORDER BY 1;
CREATE TEMP TABLE newpw (conn_id text, pw text);
INSERT INTO newpw VALUES ('m2', 'b-from'), ('m3', 'c-from');
UPDATE connection c SET password = n.pw FROM newpw n WHERE c.conn_id = n.conn_id;
SELECT conn_id, is_encrypted, conn_crypto.fernet_decrypt(password, :k1) FROM connection WHERE conn_id IN ('m2', 'm3') ORDER BY 1;
COPY connection (conn_id, conn_type, password, extra) FROM stdin;
copy1	http	copied secret	{"k": "v"}
copy2	http	\N	
\.
SELECT conn_id, is_encrypted, is_extra_encrypted, conn_crypto.fernet_decrypt(password, :k1) AS pw,
       CASE WHEN extra <> '' THEN conn_crypto.fernet_decrypt(extra, :k1) ELSE extra END AS extra
FROM connection WHERE conn_id LIKE 'copy%' ORDER BY 1;

-- Reading helpers follow Airflow's read rules.
SELECT conn_crypto.connection_password('pg') AS pw, conn_crypto.connection_extra('copy1') AS extra,
       conn_crypto.connection_password('nullpw') IS NULL AS null_pw, conn_crypto.connection_password('emptypw') AS airflow_token,
       conn_crypto.variable_value('v1') AS var, conn_crypto.variable_value('v_empty') = '' AS empty_var;
SELECT pg_temp.err($$SELECT conn_crypto.connection_password('nope')$$) AS missing;

-- The 1.10 schema: varchar(5000) holds a token of up to ~3.6 kB of plaintext; beyond, a clear error.
INSERT INTO af110.connection (conn_id, conn_type, password) VALUES ('short', 'http', repeat('x', 3000));
SELECT length(password), is_encrypted FROM af110.connection;
SELECT pg_temp.err($$INSERT INTO af110.connection (conn_id, conn_type, password) VALUES ('long', 'http', repeat('x', 4000))$$) AS too_long;

-- Without a key, writes are refused; a superuser can opt into Airflow's plaintext behaviour.
SET conn_crypto.fernet_key = '';
SELECT pg_temp.err($$INSERT INTO connection (conn_id, conn_type, password) VALUES ('nokey', 'http', 'p')$$) AS no_key;
SET conn_crypto.allow_plaintext = on;
INSERT INTO connection (conn_id, conn_type, password, is_encrypted) VALUES ('nokey', 'http', 'p', true);
SELECT password, is_encrypted FROM connection WHERE conn_id = 'nokey';
RESET conn_crypto.allow_plaintext;
CREATE ROLE cc_trigger_user;
GRANT ALL ON connection TO cc_trigger_user;
GRANT USAGE ON SEQUENCE connection_id_seq TO cc_trigger_user;
SET ROLE cc_trigger_user;
SELECT pg_temp.err('SET conn_crypto.allow_plaintext = on') AS user_allow_plaintext;
RESET ROLE;
SET conn_crypto.fernet_key = :ring12;
-- An unprivileged writer gets encryption too, without any decryption rights.
SET ROLE cc_trigger_user;
INSERT INTO connection (conn_id, conn_type, password) VALUES ('by_user', 'http', 'user secret');
SELECT pg_temp.err($$SELECT conn_crypto.connection_password('by_user')$$) AS user_cannot_read;
RESET ROLE;
SELECT conn_crypto.connection_password('by_user') AS superuser_reads;
DROP OWNED BY cc_trigger_user;
DROP ROLE cc_trigger_user;

-- Protecting a table that holds tokens of an unknown key fails loudly (a restore with the wrong key).
CREATE TABLE app_secrets (id int PRIMARY KEY, secret text);
INSERT INTO app_secrets VALUES (1, conn_crypto.fernet_encrypt('s', :k3)), (2, 'plain');
SELECT pg_temp.err($$SELECT conn_crypto.protect_column('app_secrets', 'secret')$$) AS protect_foreign;
UPDATE app_secrets SET secret = conn_crypto.fernet_encrypt('s', :k2) WHERE id = 1;
SELECT conn_crypto.protect_column('app_secrets', 'secret');
SELECT table_name, column_name, flag_column, encrypt_empty FROM conn_crypto.protected_columns WHERE table_name = 'app_secrets'::regclass;
INSERT INTO app_secrets VALUES (3, 'generic');
SELECT id, conn_crypto._key_position(secret) AS key_position,
       CASE WHEN conn_crypto._key_position(secret) > 0 THEN conn_crypto.fernet_decrypt(secret, :ring12) ELSE secret END AS value
FROM app_secrets ORDER BY id;
-- Bad configuration is refused with the right SQLSTATE.
SELECT pg_temp.err($$SELECT conn_crypto.protect_column('app_secrets', 'nope')$$) AS missing_column;
SELECT pg_temp.err($$SELECT conn_crypto.protect_column('app_secrets', 'id')$$) AS wrong_type;
SELECT pg_temp.err($$SELECT conn_crypto.protect_column('app_secrets', 'secret', 'id')$$) AS bad_flag;
SELECT pg_temp.err($$SELECT conn_crypto.enable_airflow_encryption('no_such_schema')$$) AS no_tables;

-- Disabling removes the triggers; writes are stored as given again.
SELECT conn_crypto.disable_airflow_encryption();
SELECT conn_crypto.disable_airflow_encryption('af110');
SELECT conn_crypto.unprotect_column('app_secrets', 'secret');
SELECT count(*) AS remaining_triggers FROM pg_trigger WHERE tgname = 'conn_crypto_protect';
INSERT INTO connection (conn_id, conn_type, password) VALUES ('after_disable', 'http', 'visible');
SELECT password FROM connection WHERE conn_id = 'after_disable';
DROP TABLE connection, variable, app_secrets;
DROP SCHEMA af110 CASCADE;
RESET conn_crypto.fernet_key;
