-- One database role per service, so that "each service owns its slice of
-- `core`" is enforced by the database rather than by convention.
--
-- codeops_identity: identity's tables, reading the audit trail, and the one
-- login-by-slug function. Like every service role it cannot log in, is no
-- superuser, cannot bypass row-level security and owns nothing; pools take
-- it with `SET ROLE` on connect. Parallel migrations of several databases in
-- one cluster race on role creation, hence both exception names.
DO $$
BEGIN
    CREATE ROLE codeops_identity NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA core TO codeops_identity;
GRANT SELECT, INSERT, UPDATE ON core.tenants TO codeops_identity;
GRANT SELECT, INSERT, UPDATE, DELETE ON core.roles, core.role_permissions, core.users,
    core.teams, core.team_members, core.refresh_tokens TO codeops_identity;
GRANT SELECT ON core.permissions TO codeops_identity;
-- The audit trail is append-only; identity alone reads it (ListAuditLogs).
GRANT SELECT, INSERT ON core.audit_logs TO codeops_identity;
GRANT EXECUTE ON FUNCTION core.tenant_for_login(text) TO codeops_identity;

-- The shared role of the first release could touch every table of every
-- service: it keeps existing (an operator may still name it) but loses
-- every grant on identity's slice.
REVOKE ALL ON core.tenants, core.roles, core.permissions, core.role_permissions, core.users,
    core.teams, core.team_members, core.refresh_tokens, core.audit_logs FROM codeops_app;
REVOKE EXECUTE ON FUNCTION core.tenant_for_login(text) FROM codeops_app;
