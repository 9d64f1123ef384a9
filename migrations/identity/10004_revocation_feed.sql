-- The revocation feed (identity's InternalService.ListRevocations): which
-- sessions were revoked and which users deactivated, in every tenant, so
-- that planning and decision refuse those access tokens within their poll
-- interval instead of trusting them until they expire.
--
-- It is work that spans tenants, so it goes through one narrow, explicit
-- path rather than around row-level security: a SECURITY DEFINER function
-- owned by a role of its own that may read only the columns the feed
-- returns (ids, tenant and time), through policies for that role alone.

DO $$
BEGIN
    CREATE ROLE codeops_revocations NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA core TO codeops_revocations;
GRANT SELECT (tenant_id, user_id, family_id, revoked_at) ON core.refresh_tokens TO codeops_revocations;
GRANT SELECT (id, tenant_id, is_active, updated_at) ON core.users TO codeops_revocations;
CREATE POLICY revocation_feed ON core.refresh_tokens FOR SELECT TO codeops_revocations USING (true);
CREATE POLICY revocation_feed ON core.users FOR SELECT TO codeops_revocations USING (true);

-- The feed reads what changed after a point in time across all tenants:
-- small partial indexes keep that a range scan of recent changes.
CREATE INDEX refresh_tokens_revoked_at_idx ON core.refresh_tokens (revoked_at)
    WHERE revoked_at IS NOT NULL;
CREATE INDEX users_inactive_updated_at_idx ON core.users (updated_at)
    WHERE is_active IS NOT TRUE;

-- Entries after the keyset position (p_at, p_kind, p_id), oldest first, at
-- most p_limit (capped at 10,000). kind 0: a revoked session (id = the
-- refresh-token family, the `sid` claim); kind 1: a deactivated user
-- (id = user id). `at` is when it happened (for a user, the last change of
-- the deactivated row).
CREATE FUNCTION core.revocations_after(p_at timestamptz, p_kind smallint, p_id uuid, p_limit integer)
    RETURNS TABLE (kind smallint, id uuid, tenant_id uuid, user_id uuid, at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = core, pg_temp
    AS $$
    SELECT e.kind, e.id, e.tenant_id, e.user_id, e.at FROM (
        SELECT 0::smallint AS kind, r.family_id AS id, r.tenant_id, r.user_id, max(r.revoked_at) AS at
          FROM core.refresh_tokens r
         WHERE r.revoked_at >= p_at
         GROUP BY r.family_id, r.tenant_id, r.user_id
        UNION ALL
        SELECT 1::smallint, u.id, u.tenant_id, u.id, u.updated_at
          FROM core.users u
         WHERE u.is_active IS NOT TRUE AND u.updated_at >= p_at
    ) e
    WHERE (e.at, e.kind, e.id) > (p_at, p_kind, p_id)
    ORDER BY e.at, e.kind, e.id
    LIMIT least(greatest(p_limit, 0), 10000)
    $$;
ALTER FUNCTION core.revocations_after(timestamptz, smallint, uuid, integer) OWNER TO codeops_revocations;
REVOKE ALL ON FUNCTION core.revocations_after(timestamptz, smallint, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.revocations_after(timestamptz, smallint, uuid, integer) TO codeops_identity;
