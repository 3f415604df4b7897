-- conn_crypto 1.0: Fernet functions. Everything lives in schema conn_crypto.
\echo Use "CREATE EXTENSION conn_crypto" to load this file. \quit

-- Role allowed to decrypt with the server keyring. Roles are cluster-wide, so
-- a second database that installs the extension reuses it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conn_crypto_reader') THEN
        CREATE ROLE conn_crypto_reader NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

CREATE FUNCTION @extschema@.fernet_generate_key() RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_generate_key' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

-- Functions that use the server keyring are PARALLEL RESTRICTED: the keyring
-- lives in the leader's GUC state, which parallel workers only see masked.
-- Encryption: the server keyring, or an explicit key/keyring. text and bytea
-- payloads; an untyped literal resolves to the text version.
CREATE FUNCTION @extschema@.fernet_encrypt(plaintext text) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_encrypt' LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.fernet_encrypt(plaintext text, keys text) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_encrypt_keys' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.fernet_encrypt(plaintext bytea) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_encrypt' LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.fernet_encrypt(plaintext bytea, keys text) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_encrypt_keys' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

-- Decryption. ttl (seconds) enables the time check, as cryptography's ttl.
-- STABLE, not IMMUTABLE: the result depends on the keyring and the clock.
CREATE FUNCTION @extschema@.fernet_decrypt(token text) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_decrypt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.fernet_decrypt(token text, ttl integer) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_decrypt_ttl' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.fernet_decrypt(token text, keys text) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_decrypt_keys' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.fernet_decrypt(token text, keys text, ttl integer) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_decrypt_keys_ttl' LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.fernet_decrypt_bytea(token text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'cc_fernet_decrypt_bytea' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.fernet_decrypt_bytea(token text, ttl integer) RETURNS bytea
    AS 'MODULE_PATHNAME', 'cc_fernet_decrypt_bytea_ttl' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.fernet_decrypt_bytea(token text, keys text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'cc_fernet_decrypt_bytea_keys' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.fernet_decrypt_bytea(token text, keys text, ttl integer) RETURNS bytea
    AS 'MODULE_PATHNAME', 'cc_fernet_decrypt_bytea_keys_ttl' LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- Re-encrypt under the first key, keeping the token's timestamp (MultiFernet.rotate).
CREATE FUNCTION @extschema@.fernet_rotate(token text) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_rotate' LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.fernet_rotate(token text, keys text) RETURNS text
    AS 'MODULE_PATHNAME', 'cc_fernet_rotate_keys' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

-- The authenticated timestamp of a token.
CREATE FUNCTION @extschema@.fernet_extract_timestamp(token text) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'cc_fernet_extract_timestamp' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.fernet_extract_timestamp(token text, keys text) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'cc_fernet_extract_timestamp_keys' LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- 1-based position of the key that authenticates the token; NULL when none does.
CREATE FUNCTION @extschema@.fernet_key_index(token text) RETURNS integer
    AS 'MODULE_PATHNAME', 'cc_fernet_key_index' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION @extschema@.fernet_key_index(token text, keys text) RETURNS integer
    AS 'MODULE_PATHNAME', 'cc_fernet_key_index_keys' LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- Privileges: whoever may use the server keyring to decrypt, rotate or probe
-- tokens must be granted conn_crypto_reader. Explicit-key variants, key
-- generation and encryption stay open to everyone.
REVOKE EXECUTE ON FUNCTION
    @extschema@.fernet_decrypt(text), @extschema@.fernet_decrypt(text, integer),
    @extschema@.fernet_decrypt_bytea(text), @extschema@.fernet_decrypt_bytea(text, integer),
    @extschema@.fernet_rotate(text),
    @extschema@.fernet_extract_timestamp(text),
    @extschema@.fernet_key_index(text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    @extschema@.fernet_decrypt(text), @extschema@.fernet_decrypt(text, integer),
    @extschema@.fernet_decrypt_bytea(text), @extschema@.fernet_decrypt_bytea(text, integer),
    @extschema@.fernet_rotate(text),
    @extschema@.fernet_extract_timestamp(text),
    @extschema@.fernet_key_index(text)
    TO conn_crypto_reader;
