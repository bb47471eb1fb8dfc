-- PUT of a push token as one statement: the lock, the release of the
-- token from any other row and the row's write run in the database, one
-- round trip instead of five or six (BEGIN, the lock, the DELETE, the
-- UPDATE and maybe the INSERT, COMMIT), the statements the server ran one
-- by one before. (POST stays a transaction of the server's statements,
-- `Queries::post_row`: as a function it measured no faster.)

-- `PUT {base}/{serial}`: the token leaves any other row holding it, then
-- the row at the serial is updated (absent optional fields, NULL, keep
-- their values) or created (they take the defaults). The row, and whether
-- it was created.
CREATE FUNCTION pushtoken_put_row(
    p_lock_key BIGINT, p_user_id BIGINT, p_family TEXT, p_serial BIGINT,
    p_push_token TEXT, p_language TEXT, p_dev BIGINT, p_bundleid TEXT,
    p_os TEXT, p_os_token TEXT, p_push_platform TEXT, p_phone_model TEXT,
    p_default_bundleid TEXT, p_now BIGINT)
RETURNS TABLE (created BOOLEAN, user_id BIGINT, serial BIGINT, push_token TEXT,
    language TEXT, dev BIGINT, bundleid TEXT, os TEXT, os_token TEXT,
    push_platform TEXT, phone_model TEXT, created_at BIGINT, updated_at BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    DELETE FROM push_tokens t WHERE t.family = p_family AND t.push_token = p_push_token
        AND NOT (t.user_id = p_user_id AND t.serial = p_serial);
    RETURN QUERY UPDATE push_tokens t SET push_token = p_push_token, language = p_language,
        dev = COALESCE(p_dev, t.dev), bundleid = COALESCE(p_bundleid, t.bundleid),
        os = COALESCE(p_os, t.os), os_token = COALESCE(p_os_token, t.os_token),
        push_platform = COALESCE(p_push_platform, t.push_platform),
        phone_model = COALESCE(p_phone_model, t.phone_model), updated_at = p_now
        WHERE t.user_id = p_user_id AND t.family = p_family AND t.serial = p_serial
        RETURNING false, t.user_id, t.serial, t.push_token, t.language, t.dev, t.bundleid,
            t.os, t.os_token, t.push_platform, t.phone_model, t.created_at, t.updated_at;
    IF NOT FOUND THEN
        RETURN QUERY INSERT INTO push_tokens AS t (user_id, family, serial, push_token,
            language, dev, bundleid, os, os_token, push_platform, phone_model, created_at,
            updated_at)
            VALUES (p_user_id, p_family, p_serial, p_push_token, p_language,
                COALESCE(p_dev, 0), COALESCE(p_bundleid, p_default_bundleid),
                COALESCE(p_os, ''), COALESCE(p_os_token, ''), COALESCE(p_push_platform, ''),
                COALESCE(p_phone_model, ''), p_now, p_now)
            RETURNING true, t.user_id, t.serial, t.push_token, t.language, t.dev, t.bundleid,
                t.os, t.os_token, t.push_platform, t.phone_model, t.created_at, t.updated_at;
    END IF;
END
$$;
