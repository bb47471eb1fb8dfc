-- POST of a new token in fewer statements: the function of 0008 ran, for
-- every POST, the lookup of the token, the caller's highest serial, a
-- DELETE of the token from any other row, an UPDATE of the caller's row at
-- the new serial (which cannot exist: it is past the highest, under the
-- family's lock) and then the INSERT. A POST of a token the caller does not
-- hold now goes from the highest serial straight to the INSERT, deleting
-- the token from its other holder only when the lookup found one. PUT, and
-- a POST of a token the caller already holds, run as before.
CREATE OR REPLACE FUNCTION pushtoken_register_rows(
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
                -- A new row past the caller's highest serial: no row of
                -- theirs to update, and the token's other holder, if any,
                -- is known.
                IF v_holder IS NOT NULL THEN
                    DELETE FROM push_tokens t
                        WHERE t.family = p_families[i] AND t.push_token = p_push_tokens[i];
                END IF;
                RETURN QUERY INSERT INTO push_tokens AS t (user_id, family, serial,
                    push_token, language, dev, bundleid, os, os_token, push_platform,
                    phone_model, created_at, updated_at)
                    VALUES (p_user_ids[i], p_families[i], v_serial, p_push_tokens[i],
                        p_languages[i], COALESCE(p_devs[i], 0),
                        COALESCE(p_bundleids[i], p_default_bundleids[i]),
                        COALESCE(p_oses[i], ''), COALESCE(p_os_tokens[i], ''),
                        COALESCE(p_push_platforms[i], ''), COALESCE(p_phone_models[i], ''),
                        p_nows[i], p_nows[i])
                    RETURNING i, 'created'::TEXT, t.user_id, t.serial, t.push_token,
                        t.language, t.dev, t.bundleid, t.os, t.os_token, t.push_platform,
                        t.phone_model, t.created_at, t.updated_at;
                CONTINUE;
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
