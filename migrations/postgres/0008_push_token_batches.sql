-- PUT and POST of push tokens in batches: the writes that arrive together
-- run as one statement and one transaction, so they share a round trip and
-- a commit (group commit in the server, as SQLite's writer does), where
-- each was a statement and a commit of its own (`pushtoken_put_row` of
-- 0007, kept for instances of the version before during an upgrade) or a
-- transaction of five statements (POST).
--
-- Item `i` of the arrays is one write: a PUT at `p_serials[i]`, or a POST
-- when that is NULL (the caller's row holding the token is updated, else a
-- row is created at the caller's highest serial + 1, or 1). Each write
-- releases its token from any other row, then updates or creates its row
-- (absent optional fields, NULL, keep their values on update and take the
-- defaults on create). The advisory locks of every user and family in the
-- batch are taken first, in key order, so that batches never wait for
-- each other in a circle. One row comes back per item: `created`,
-- `updated`, or `conflict` (a POST with no serial left: nothing written,
-- the other items unaffected).
CREATE FUNCTION pushtoken_register_rows(
    p_lock_keys BIGINT[], p_user_ids BIGINT[], p_families TEXT[], p_serials BIGINT[],
    p_push_tokens TEXT[], p_languages TEXT[], p_devs BIGINT[], p_bundleids TEXT[],
    p_oses TEXT[], p_os_tokens TEXT[], p_push_platforms TEXT[], p_phone_models TEXT[],
    p_default_bundleids TEXT[], p_nows BIGINT[])
RETURNS TABLE (item INT, outcome TEXT, user_id BIGINT, serial BIGINT, push_token TEXT,
    language TEXT, dev BIGINT, bundleid TEXT, os TEXT, os_token TEXT,
    push_platform TEXT, phone_model TEXT, created_at BIGINT, updated_at BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_key BIGINT;
    v_serial BIGINT;
    v_holder BIGINT;
    v_highest BIGINT;
BEGIN
    FOR v_key IN SELECT DISTINCT k FROM unnest(p_lock_keys) AS k ORDER BY k LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
    FOR i IN 1 .. cardinality(p_user_ids) LOOP
        v_serial := p_serials[i];
        IF v_serial IS NULL THEN
            -- By the token alone: whose row holds it (the caller's, when
            -- it is the caller's own).
            SELECT t.user_id, t.serial INTO v_holder, v_serial FROM push_tokens t
                WHERE t.push_token = p_push_tokens[i] AND t.family = p_families[i];
            IF v_holder IS DISTINCT FROM p_user_ids[i] THEN
                -- Not MAX(serial): planned while the table was small, it
                -- read all of the user's rows instead of the last one.
                SELECT t.serial INTO v_highest FROM push_tokens t
                    WHERE t.user_id = p_user_ids[i] AND t.family = p_families[i]
                    ORDER BY t.serial DESC LIMIT 1;
                IF v_highest = 9223372036854775807 THEN
                    RETURN QUERY SELECT i, 'conflict'::TEXT, NULL::BIGINT, NULL::BIGINT,
                        NULL::TEXT, NULL::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                        NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
                    CONTINUE;
                END IF;
                v_serial := COALESCE(v_highest + 1, 1);
            END IF;
        END IF;
        DELETE FROM push_tokens t
            WHERE t.family = p_families[i] AND t.push_token = p_push_tokens[i]
                AND NOT (t.user_id = p_user_ids[i] AND t.serial = v_serial);
        RETURN QUERY UPDATE push_tokens t SET push_token = p_push_tokens[i],
            language = p_languages[i], dev = COALESCE(p_devs[i], t.dev),
            bundleid = COALESCE(p_bundleids[i], t.bundleid), os = COALESCE(p_oses[i], t.os),
            os_token = COALESCE(p_os_tokens[i], t.os_token),
            push_platform = COALESCE(p_push_platforms[i], t.push_platform),
            phone_model = COALESCE(p_phone_models[i], t.phone_model), updated_at = p_nows[i]
            WHERE t.user_id = p_user_ids[i] AND t.family = p_families[i] AND t.serial = v_serial
            RETURNING i, 'updated'::TEXT, t.user_id, t.serial, t.push_token, t.language, t.dev,
                t.bundleid, t.os, t.os_token, t.push_platform, t.phone_model, t.created_at,
                t.updated_at;
        IF NOT FOUND THEN
            RETURN QUERY INSERT INTO push_tokens AS t (user_id, family, serial, push_token,
                language, dev, bundleid, os, os_token, push_platform, phone_model, created_at,
                updated_at)
                VALUES (p_user_ids[i], p_families[i], v_serial, p_push_tokens[i], p_languages[i],
                    COALESCE(p_devs[i], 0), COALESCE(p_bundleids[i], p_default_bundleids[i]),
                    COALESCE(p_oses[i], ''), COALESCE(p_os_tokens[i], ''),
                    COALESCE(p_push_platforms[i], ''), COALESCE(p_phone_models[i], ''),
                    p_nows[i], p_nows[i])
                RETURNING i, 'created'::TEXT, t.user_id, t.serial, t.push_token, t.language,
                    t.dev, t.bundleid, t.os, t.os_token, t.push_platform, t.phone_model,
                    t.created_at, t.updated_at;
        END IF;
    END LOOP;
END
$$;

-- The one-token-one-row constraint with the token first. Its columns were
-- (family, push_token), and a plan made while the table was small (every
-- plan a connection caches in this function, before the first ANALYZE of a
-- young table) read a user's row at a serial through it by `family` alone,
-- filtering the whole family: 1.4 ms per statement at 15,000 rows, where
-- the primary key finds it in microseconds. Led by the token, it serves
-- only lookups of a token, and the primary key serves the rest. (For the
-- same reason the function looks a token up by the token alone: with the
-- user's id beside it, such a plan read all of the user's rows through the
-- primary key.)
ALTER TABLE push_tokens ADD CONSTRAINT push_tokens_push_token_family_key
    UNIQUE (push_token, family);
ALTER TABLE push_tokens DROP CONSTRAINT push_tokens_family_push_token_key;
