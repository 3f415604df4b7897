-- Fernet SQL functions with explicit keys: spec vectors, call forms, NULLs, errors.
-- The spec's key and token (generate.json / verify.json of the Fernet spec).
\set spec_key '''cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4='''
\set spec_token '''gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA=='''
\set other_key '''YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY='''

\i test/sql/regress_helpers.sql

-- Key generation: 44 url-safe characters that work as a key.
SELECT length(k) AS len, k ~ '^[A-Za-z0-9_-]{43}=$' AS urlsafe,
       conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('x', k), k) AS roundtrip
FROM (SELECT conn_crypto.fernet_generate_key() AS k) s;
SELECT count(DISTINCT conn_crypto.fernet_generate_key()) AS distinct_keys FROM generate_series(1, 100);

-- The spec's token decrypts to its source, with and without a ttl given the spec's own clock.
SELECT conn_crypto.fernet_decrypt(:spec_token, :spec_key) AS spec_plaintext;
SELECT conn_crypto.fernet_extract_timestamp(:spec_token, :spec_key) AT TIME ZONE 'UTC' AS spec_time;
SELECT conn_crypto.fernet_key_index(:spec_token, :other_key || ',' || :spec_key) AS key_index;
-- ttl => 60 against today's clock: the 1985 token has expired.
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt($q$ || quote_literal(:spec_token) || $q$, $q$ || quote_literal(:spec_key) || $q$, ttl => 60)$q$);
SELECT conn_crypto.fernet_decrypt(:spec_token, :spec_key, ttl => 2147483647) AS huge_ttl;

-- Round trips through every call form.
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('pässwörd 🔑', :spec_key), :spec_key) AS text_roundtrip;
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('', :spec_key), :spec_key) = '' AS empty_roundtrip;
SELECT length(conn_crypto.fernet_encrypt('', :spec_key)) AS empty_token_length;
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('abc', :spec_key), :spec_key, ttl => 60) AS with_ttl;
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('abc', :spec_key), :spec_key, 60) AS positional_ttl;
SELECT conn_crypto.fernet_decrypt_bytea(conn_crypto.fernet_encrypt('\x00ff10'::bytea, :spec_key), :spec_key) AS bytea_roundtrip;
SELECT conn_crypto.fernet_decrypt_bytea(conn_crypto.fernet_encrypt('\x00'::bytea, :spec_key), :spec_key, ttl => 10) AS bytea_ttl;
-- An untyped literal resolves to the text version.
SELECT pg_typeof(conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('plain', :spec_key), :spec_key)) AS result_type,
       conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('plain', :spec_key), :spec_key) AS untyped;
-- Keys in the standard alphabet, without padding, with whitespace.
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('alpha', '+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/8='),
                                  ' -_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8 ') AS alphabets;

-- MultiFernet: the first key encrypts, every key decrypts, rotate keeps the timestamp.
SELECT conn_crypto.fernet_key_index(conn_crypto.fernet_encrypt('m', :other_key || ',' || :spec_key), :spec_key || ',' || :other_key) AS first_key_encrypts;
SELECT conn_crypto.fernet_key_index(r, :other_key || ',' || :spec_key) AS rotated_index,
       conn_crypto.fernet_extract_timestamp(r, :other_key) AT TIME ZONE 'UTC' AS rotated_time,
       conn_crypto.fernet_decrypt(r, :other_key) AS rotated_plaintext
FROM (SELECT conn_crypto.fernet_rotate(:spec_token, :other_key || ',' || :spec_key) AS r) s;
SELECT conn_crypto.fernet_key_index('not a token', :spec_key) IS NULL AS malformed_index_null,
       conn_crypto.fernet_key_index(:spec_token, :other_key) IS NULL AS foreign_index_null;

-- Tolerance: whitespace around tokens and missing padding.
SELECT conn_crypto.fernet_decrypt(E' \n' || :spec_token || E'\t', :spec_key) AS whitespace,
       conn_crypto.fernet_decrypt(rtrim(:spec_token, '='), :spec_key) AS unpadded;

-- NULL in, NULL out, for every overload.
SELECT conn_crypto.fernet_encrypt(NULL::text, :spec_key) IS NULL AS a,
       conn_crypto.fernet_encrypt('x', NULL) IS NULL AS b,
       conn_crypto.fernet_encrypt(NULL::bytea, :spec_key) IS NULL AS c,
       conn_crypto.fernet_encrypt(NULL::text) IS NULL AS d,
       conn_crypto.fernet_decrypt(NULL, :spec_key) IS NULL AS e,
       conn_crypto.fernet_decrypt(:spec_token, NULL::text) IS NULL AS f,
       conn_crypto.fernet_decrypt(:spec_token, :spec_key, ttl => NULL) IS NULL AS g,
       conn_crypto.fernet_decrypt(NULL) IS NULL AS h,
       conn_crypto.fernet_decrypt(NULL, ttl => 5) IS NULL AS i,
       conn_crypto.fernet_decrypt_bytea(NULL, :spec_key) IS NULL AS j,
       conn_crypto.fernet_rotate(NULL, :spec_key) IS NULL AS k,
       conn_crypto.fernet_rotate(NULL) IS NULL AS l,
       conn_crypto.fernet_extract_timestamp(NULL, :spec_key) IS NULL AS m,
       conn_crypto.fernet_key_index(NULL, :spec_key) IS NULL AS n,
       conn_crypto.fernet_key_index(NULL) IS NULL AS o;

-- Every error category, with its SQLSTATE; messages never show keys or plaintext.
SELECT pg_temp.err($$SELECT conn_crypto.fernet_decrypt('not a token', 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=')$$) AS malformed;
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt($q$ || quote_literal(:spec_token) || $q$, $q$ || quote_literal(:other_key) || $q$)$q$) AS wrong_key;
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt($q$ || quote_literal(overlay(:spec_token placing 'A' from 40 for 1)) || $q$, $q$ || quote_literal(:spec_key) || $q$)$q$) AS tampered;
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt($q$ || quote_literal(:spec_token || 'AAAA') || $q$, $q$ || quote_literal(:spec_key) || $q$)$q$) AS trailing_data;
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt($q$ || quote_literal(replace(:spec_token, '_', '/')) || $q$, $q$ || quote_literal(:spec_key) || $q$)$q$) AS std_alphabet_token;
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('x', $q$ || quote_literal(:spec_key) || $q$), $q$ || quote_literal(:spec_key) || $q$, ttl => -1)$q$) AS negative_ttl;
SELECT pg_temp.err($$SELECT conn_crypto.fernet_encrypt('x', 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=,c2hvcnQ=')$$) AS bad_key;
SELECT pg_temp.err($$SELECT conn_crypto.fernet_encrypt('x', '')$$) AS empty_keys;
SELECT pg_temp.err($$SELECT conn_crypto.fernet_encrypt('x', 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=,')$$) AS trailing_comma;
-- Invalid UTF-8 inside a token is an error for text, fine for bytea.
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('\xc328'::bytea, $q$ || quote_literal(:spec_key) || $q$), $q$ || quote_literal(:spec_key) || $q$)$q$) AS invalid_utf8;
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('\x6100'::bytea, $q$ || quote_literal(:spec_key) || $q$), $q$ || quote_literal(:spec_key) || $q$)$q$) AS nul_byte;
SELECT conn_crypto.fernet_decrypt_bytea(conn_crypto.fernet_encrypt('\xc328'::bytea, :spec_key), :spec_key) AS invalid_utf8_as_bytea;
-- Timestamps 0 and 2^64-1 (tokens made by Python cryptography's _encrypt_from_parts):
-- both authenticate; the maximum is beyond timestamptz's range, an error rather than garbage.
\set max_ts_token '''gP__________AAAAAAAAAAAAAAAAAAAAABjPVvjSF--uQrr0AvrXDja3HR8PHHd2tx01UXEuo7Dv3N4ZVXTpMTkczDQeFgS68w=='''
\set zero_ts_token '''gAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE-M35EMe5V1XnMjKQEKQXIb1Q8pNJSJJwssQgGPJH6MOrS2Jo_68dyiv63gzPRcMw=='''
SELECT conn_crypto.fernet_decrypt(:max_ts_token, :spec_key) AS max_plain,
       conn_crypto.fernet_decrypt(:zero_ts_token, :spec_key) AS zero_plain,
       conn_crypto.fernet_extract_timestamp(:zero_ts_token, :spec_key) AT TIME ZONE 'UTC' AS zero_time;
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_extract_timestamp($q$ || quote_literal(:max_ts_token) || $q$, $q$ || quote_literal(:spec_key) || $q$)$q$) AS max_timestamp;
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt($q$ || quote_literal(:max_ts_token) || $q$, $q$ || quote_literal(:spec_key) || $q$, ttl => 2147483647)$q$) AS max_ts_with_ttl;
SELECT pg_temp.err($q$SELECT conn_crypto.fernet_decrypt($q$ || quote_literal(:zero_ts_token) || $q$, $q$ || quote_literal(:spec_key) || $q$, ttl => 0)$q$) AS zero_ts_ttl_zero;

-- A keyring passed on every row is parsed once per call site and stays correct when it changes.
SELECT count(*) FILTER (WHERE conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt(i::text, k), k) = i::text) AS ok_rows
FROM generate_series(1, 200) i,
     LATERAL (SELECT CASE WHEN i % 2 = 0 THEN :spec_key ELSE :other_key END AS k) s;
