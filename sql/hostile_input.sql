-- Hostile and extreme input: every outcome is a clean error or a correct result.
\set k1 '''cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4='''
\set k2 '''YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY='''
-- Counts outcomes of a statement run once per input, by SQLSTATE.
CREATE FUNCTION pg_temp.outcomes(stmt text, inputs text[]) RETURNS TABLE (outcome text, n bigint)
LANGUAGE plpgsql AS $$
DECLARE
    results text[] := '{}';
    x text;
BEGIN
    FOREACH x IN ARRAY inputs LOOP
        BEGIN
            EXECUTE stmt USING x;
            results := results || 'ok'::text;
        EXCEPTION WHEN OTHERS THEN
            results := results || SQLSTATE::text;
        END;
    END LOOP;
    RETURN QUERY SELECT r, count(*) FROM unnest(results) r GROUP BY r ORDER BY r;
END $$;

-- Tokens of every length 0..300: url-safe characters, and pseudo-random bytes as characters.
SELECT * FROM pg_temp.outcomes('SELECT conn_crypto.fernet_decrypt($1, ' || quote_literal(:k1) || ')',
    ARRAY(SELECT repeat('A', n) FROM generate_series(0, 300) n));
SELECT * FROM pg_temp.outcomes('SELECT conn_crypto.fernet_decrypt($1, ' || quote_literal(:k1) || ')',
    ARRAY(SELECT 'gAAAAA' || repeat('-_', n) FROM generate_series(0, 150) n));
SELECT * FROM pg_temp.outcomes('SELECT conn_crypto.fernet_decrypt($1, ' || quote_literal(:k1) || ')',
    ARRAY(SELECT string_agg(chr(1 + (get_byte(decode(md5(n || ':' || i), 'hex'), 0) % 255)), '')
          FROM generate_series(1, 300) n, generate_series(1, n) i GROUP BY n));
-- Every character from 1 to 255 alone, and inside an otherwise valid token.
SELECT * FROM pg_temp.outcomes('SELECT conn_crypto.fernet_key_index($1, ' || quote_literal(:k1) || ')',
    ARRAY(SELECT chr(c) FROM generate_series(1, 255) c));
SELECT * FROM pg_temp.outcomes('SELECT conn_crypto.fernet_decrypt($1, ' || quote_literal(:k1) || ')',
    ARRAY(SELECT overlay(conn_crypto.fernet_encrypt('payload', :k1) placing chr(c) from 30 for 1)
          FROM generate_series(1, 255) c WHERE chr(c) !~ '[A-Za-z0-9_-]'));
-- Every truncation of a valid token: only the missing '=' padding is tolerated.
SELECT * FROM pg_temp.outcomes('SELECT conn_crypto.fernet_decrypt($1, ' || quote_literal(:k1) || ')',
    ARRAY(SELECT left(t, n) FROM (SELECT conn_crypto.fernet_encrypt('truncate me', :k1) AS t) s,
          generate_series(0, length(t)) n));
-- Every single-bit flip of the spec's token (ASCII-preserving: one of the low 6 bits of each character).
SELECT * FROM pg_temp.outcomes('SELECT conn_crypto.fernet_decrypt($1, ' || quote_literal(:k1) || ')',
    ARRAY(SELECT overlay(t placing chr(ascii(substr(t, i, 1)) # (1 << b)) from i for 1)
          FROM (SELECT 'gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA=='::text AS t) s,
               generate_series(1, length(t)) i, generate_series(0, 5) b));

-- Keys of every length 0..300 and every character: bad keys are errors (22023), never a crash.
SELECT * FROM pg_temp.outcomes('SELECT conn_crypto.fernet_encrypt(''x'', $1)',
    ARRAY(SELECT repeat('A', n) FROM generate_series(1, 300) n));
SELECT * FROM pg_temp.outcomes('SELECT conn_crypto.fernet_encrypt(''x'', $1)',
    ARRAY(SELECT overlay(:k1 placing chr(c) from 10 for 1) FROM generate_series(1, 255) c));

-- A keyring of 1,000 keys works (the token's key is tried last); 1,001 is refused.
SELECT conn_crypto.fernet_decrypt(conn_crypto.fernet_encrypt('deep', :k2),
                                  (SELECT string_agg(:k1, ',') FROM generate_series(1, 999)) || ',' || :k2) AS last_of_1000;
SELECT pg_temp.outcomes('SELECT conn_crypto.fernet_encrypt(''x'', $1)',
    ARRAY[(SELECT string_agg(:k1, ',') FROM generate_series(1, 1001))]);

-- A value whose token cannot fit PostgreSQL's 1 GB limit: a clear error, no overflow.
SELECT pg_temp.outcomes('SELECT conn_crypto.fernet_encrypt(repeat(repeat(''x'', 1048576), $1::integer), ' || quote_literal(:k1) || ')',
    ARRAY['768']);  -- 768 MiB
