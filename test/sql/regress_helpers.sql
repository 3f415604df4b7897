-- Shared by the pg_regress tests: runs a statement and reports its error as
-- "SQLSTATE: message" (or 'no error'), so expected output stays stable.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
