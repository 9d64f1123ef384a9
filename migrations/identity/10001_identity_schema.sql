-- Identity's slice of the `core` schema: tenants, roles, permissions,
-- users, teams, team members and the audit trail every service appends to.
--
-- Columns, types, NOT NULLs, keys and uniques are exactly those of the
-- schema audit (shared/seed/codeops-schema-audit.md). What is added on top is
-- hardening only: CHECKs for enum and JSON columns, composite (tenant_id, id)
-- keys so a row can only point at rows of its own tenant, indexes, and
-- row-level security keyed on the per-transaction setting `app.tenant_id`.

CREATE SCHEMA IF NOT EXISTS core;

-- The role every service query runs as (pools `SET ROLE` to it). It owns
-- nothing and cannot bypass row-level security, so RLS really applies.
-- Parallel migrations of several databases in one cluster race on role
-- creation, hence both exception names.
DO $$
BEGIN
    CREATE ROLE codeops_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- Owns the one function that may look at tenants before a tenant is known
-- (login by slug). It sees only what the `login_lookup` policy lets it see.
DO $$
BEGIN
    CREATE ROLE codeops_auth NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA core TO codeops_app, codeops_auth;

-- The tenant of the current transaction, NULL when none is set: every
-- tenant policy compares against it, so no tenant means no rows.
CREATE FUNCTION core.current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

-- PostgreSQL 15 has no `IS JSON`; JSON text columns are checked with this.
CREATE FUNCTION core.is_json(value text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
BEGIN
    PERFORM value::jsonb;
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END $$;

CREATE TABLE core.tenants (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name            VARCHAR(255) NOT NULL UNIQUE,
    slug            VARCHAR(255) NOT NULL UNIQUE,
    logo_url        VARCHAR(255),
    settings        TEXT CHECK (settings IS NULL OR core.is_json(settings)),
    status          VARCHAR(255) CHECK (status IN ('ACTIVE', 'SUSPENDED', 'TRIAL', 'CANCELLED')),
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at      TIMESTAMP WITH TIME ZONE DEFAULT now()
);

CREATE TABLE core.roles (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       UUID REFERENCES core.tenants(id),
    code            VARCHAR(255) NOT NULL,
    name            VARCHAR(255) NOT NULL,
    description     VARCHAR(255),
    category        VARCHAR(255) NOT NULL CHECK (category IN ('SYSTEM', 'EXECUTIVE', 'PRODUCT', 'ENGINEERING', 'UX', 'QA', 'DATA', 'BUSINESS', 'STAKEHOLDER', 'CUSTOM')),
    level           VARCHAR(255) NOT NULL CHECK (level IN ('L1_INDIVIDUAL', 'L2_SENIOR', 'L3_LEAD', 'L4_MANAGER', 'L5_SENIOR_MANAGER', 'L6_VP', 'L7_SVP', 'L8_CXXX', 'L9_OWNER')),
    is_system_role  BOOLEAN,
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    -- Added: roles are updatable, and etags derive from updated_at.
    updated_at      TIMESTAMP WITH TIME ZONE DEFAULT now(),
    -- System roles have no tenant; NULLS NOT DISTINCT keeps their codes unique too.
    CONSTRAINT roles_tenant_id_code_key UNIQUE NULLS NOT DISTINCT (tenant_id, code),
    CONSTRAINT roles_system_has_no_tenant CHECK ((tenant_id IS NULL) = coalesce(is_system_role, false))
);

CREATE TABLE core.permissions (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    code            VARCHAR(255) NOT NULL UNIQUE,
    name            VARCHAR(255) NOT NULL,
    description     VARCHAR(255),
    category        VARCHAR(255) NOT NULL
);

CREATE TABLE core.role_permissions (
    role_id         UUID NOT NULL REFERENCES core.roles(id) ON DELETE CASCADE,
    permission_id   UUID NOT NULL REFERENCES core.permissions(id),
    PRIMARY KEY (role_id, permission_id)
);
CREATE INDEX role_permissions_permission_id_idx ON core.role_permissions (permission_id);

CREATE TABLE core.users (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       UUID NOT NULL REFERENCES core.tenants(id),
    email           VARCHAR(255) NOT NULL,
    password_hash   VARCHAR(255) NOT NULL,
    first_name      VARCHAR(255) NOT NULL,
    last_name       VARCHAR(255) NOT NULL,
    title           VARCHAR(255),
    department      VARCHAR(255),
    avatar_url      VARCHAR(255),
    role_id         UUID NOT NULL REFERENCES core.roles(id),
    manager_id      UUID,
    is_active       BOOLEAN DEFAULT true,
    last_login_at   TIMESTAMP WITH TIME ZONE,
    -- Kept for compatibility and always NULL: refresh tokens live, hashed,
    -- in core.refresh_tokens.
    refresh_token   VARCHAR(255),
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at      TIMESTAMP WITH TIME ZONE DEFAULT now(),
    UNIQUE (tenant_id, email),
    CONSTRAINT users_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT users_manager_fkey FOREIGN KEY (tenant_id, manager_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT users_not_own_manager CHECK (manager_id IS DISTINCT FROM id)
);
CREATE INDEX users_role_id_idx ON core.users (role_id);
CREATE INDEX users_tenant_manager_idx ON core.users (tenant_id, manager_id);
CREATE INDEX users_tenant_created_idx ON core.users (tenant_id, created_at, id);

-- A user's role is a system role or one of the user's own tenant.
CREATE FUNCTION core.check_user_role_tenant() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM core.roles r
        WHERE r.id = NEW.role_id AND (r.tenant_id IS NULL OR r.tenant_id = NEW.tenant_id)
    ) THEN
        RAISE EXCEPTION 'role % is not available to tenant %', NEW.role_id, NEW.tenant_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'users_role_tenant';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER users_role_tenant BEFORE INSERT OR UPDATE OF role_id, tenant_id ON core.users
    FOR EACH ROW EXECUTE FUNCTION core.check_user_role_tenant();

CREATE TABLE core.teams (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       UUID NOT NULL REFERENCES core.tenants(id),
    name            VARCHAR(255) NOT NULL,
    slug            VARCHAR(255) NOT NULL,
    description     VARCHAR(255),
    icon_url        VARCHAR(255),
    color           VARCHAR(255),
    lead_id         UUID,
    is_active       BOOLEAN DEFAULT true,
    settings        TEXT CHECK (settings IS NULL OR core.is_json(settings)),
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at      TIMESTAMP WITH TIME ZONE DEFAULT now(),
    UNIQUE (tenant_id, slug),
    CONSTRAINT teams_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT teams_lead_fkey FOREIGN KEY (tenant_id, lead_id) REFERENCES core.users (tenant_id, id)
);
CREATE INDEX teams_tenant_lead_idx ON core.teams (tenant_id, lead_id);
CREATE INDEX teams_tenant_created_idx ON core.teams (tenant_id, created_at, id);

CREATE TABLE core.team_members (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Added: ties the membership to one tenant for RLS and composite keys.
    tenant_id       UUID NOT NULL REFERENCES core.tenants(id),
    team_id         UUID NOT NULL,
    user_id         UUID NOT NULL,
    team_role       VARCHAR(255) NOT NULL CHECK (team_role IN ('LEAD', 'MEMBER', 'OBSERVER')),
    joined_at       TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    added_by_id     UUID,
    UNIQUE (team_id, user_id),
    CONSTRAINT team_members_team_fkey FOREIGN KEY (tenant_id, team_id) REFERENCES core.teams (tenant_id, id),
    CONSTRAINT team_members_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT team_members_added_by_fkey FOREIGN KEY (tenant_id, added_by_id) REFERENCES core.users (tenant_id, id)
);
CREATE INDEX team_members_tenant_user_idx ON core.team_members (tenant_id, user_id);
CREATE INDEX team_members_tenant_team_joined_idx ON core.team_members (tenant_id, team_id, joined_at, id);
CREATE INDEX team_members_tenant_added_by_idx ON core.team_members (tenant_id, added_by_id);

CREATE TABLE core.audit_logs (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       UUID NOT NULL REFERENCES core.tenants(id),
    actor_id        UUID,
    actor_name      VARCHAR(255),
    actor_email     VARCHAR(255),
    action          VARCHAR(255) NOT NULL CHECK (action IN (
        'CREATE', 'READ', 'UPDATE', 'DELETE', 'STATUS_CHANGE', 'DECISION_RESOLVED', 'DECISION_ESCALATED',
        'DECISION_ASSIGNED', 'DECISION_COMMENTED', 'OUTCOME_VALIDATED', 'OUTCOME_INVALIDATED',
        'HYPOTHESIS_TRANSITIONED', 'HYPOTHESIS_CONCLUDED', 'HYPOTHESIS_BLOCKED', 'HYPOTHESIS_UNBLOCKED',
        'LOGIN', 'LOGOUT', 'PASSWORD_CHANGED', 'USER_CREATED', 'USER_DEACTIVATED', 'ROLE_ASSIGNED',
        'TEAM_MEMBER_ADDED', 'TEAM_MEMBER_REMOVED')),
    entity_type     VARCHAR(255) NOT NULL,
    entity_id       UUID NOT NULL,
    entity_title    VARCHAR(255),
    description     TEXT,
    old_values      TEXT CHECK (old_values IS NULL OR core.is_json(old_values)),
    new_values      TEXT CHECK (new_values IS NULL OR core.is_json(new_values)),
    ip_address      VARCHAR(255),
    user_agent      VARCHAR(255),
    request_id      VARCHAR(255),
    timestamp       TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
-- ListAuditLogs: newest first, optionally by entity, actor or action.
CREATE INDEX audit_logs_tenant_time_idx ON core.audit_logs (tenant_id, timestamp DESC, id DESC);
CREATE INDEX audit_logs_tenant_entity_idx ON core.audit_logs (tenant_id, entity_type, entity_id, timestamp DESC);
CREATE INDEX audit_logs_tenant_actor_idx ON core.audit_logs (tenant_id, actor_id, timestamp DESC);
CREATE INDEX audit_logs_tenant_action_idx ON core.audit_logs (tenant_id, action, timestamp DESC);

-- Refresh tokens: opaque to the client, stored only as a SHA-256 hash,
-- rotated on every use. Tokens rotated from one login share a family;
-- presenting a used token revokes the whole family.
CREATE TABLE core.refresh_tokens (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       UUID NOT NULL REFERENCES core.tenants(id),
    user_id         UUID NOT NULL,
    family_id       UUID NOT NULL,
    token_hash      VARCHAR(64) NOT NULL UNIQUE,
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    expires_at      TIMESTAMP WITH TIME ZONE NOT NULL,
    used_at         TIMESTAMP WITH TIME ZONE,
    revoked_at      TIMESTAMP WITH TIME ZONE,
    CONSTRAINT refresh_tokens_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES core.users (tenant_id, id)
);
CREATE INDEX refresh_tokens_tenant_user_idx ON core.refresh_tokens (tenant_id, user_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_tokens_family_idx ON core.refresh_tokens (tenant_id, family_id);

-- Row-level security: a tenant's rows are visible only while its id is the
-- transaction's `app.tenant_id`. FORCE makes it hold for the owner too.
ALTER TABLE core.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON core.tenants
    USING (id = core.current_tenant_id()) WITH CHECK (id = core.current_tenant_id());
CREATE POLICY login_lookup ON core.tenants FOR SELECT TO codeops_auth USING (true);

ALTER TABLE core.roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.roles FORCE ROW LEVEL SECURITY;
-- System roles are readable by every tenant and writable by none: reads
-- and writes get separate policies, since a USING clause that admits
-- system rows would also let UPDATE and DELETE reach them.
CREATE POLICY tenant_read ON core.roles FOR SELECT
    USING (tenant_id IS NULL OR tenant_id = core.current_tenant_id());
CREATE POLICY tenant_insert ON core.roles FOR INSERT
    WITH CHECK (tenant_id = core.current_tenant_id());
CREATE POLICY tenant_update ON core.roles FOR UPDATE
    USING (tenant_id = core.current_tenant_id()) WITH CHECK (tenant_id = core.current_tenant_id());
CREATE POLICY tenant_delete ON core.roles FOR DELETE
    USING (tenant_id = core.current_tenant_id());

ALTER TABLE core.role_permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.role_permissions FORCE ROW LEVEL SECURITY;
-- Follows the role: readable with any readable role, writable only for the
-- tenant's own roles.
CREATE POLICY tenant_read ON core.role_permissions FOR SELECT
    USING (EXISTS (SELECT 1 FROM core.roles r WHERE r.id = role_id));
CREATE POLICY tenant_insert ON core.role_permissions FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM core.roles r WHERE r.id = role_id AND r.tenant_id = core.current_tenant_id()));
CREATE POLICY tenant_update ON core.role_permissions FOR UPDATE
    USING (EXISTS (SELECT 1 FROM core.roles r WHERE r.id = role_id AND r.tenant_id = core.current_tenant_id()))
    WITH CHECK (EXISTS (SELECT 1 FROM core.roles r WHERE r.id = role_id AND r.tenant_id = core.current_tenant_id()));
CREATE POLICY tenant_delete ON core.role_permissions FOR DELETE
    USING (EXISTS (SELECT 1 FROM core.roles r WHERE r.id = role_id AND r.tenant_id = core.current_tenant_id()));

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'teams', 'team_members', 'audit_logs', 'refresh_tokens'] LOOP
        EXECUTE format('ALTER TABLE core.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE core.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON core.%I USING (tenant_id = core.current_tenant_id()) '
                       'WITH CHECK (tenant_id = core.current_tenant_id())', t);
    END LOOP;
END $$;

-- Login resolves a tenant by slug before any tenant is set. This is the one
-- narrow path for it: it returns only id and status, for one slug.
CREATE FUNCTION core.tenant_for_login(p_slug text)
    RETURNS TABLE (id uuid, status varchar)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = core, pg_temp
    AS $$ SELECT t.id, t.status FROM core.tenants t WHERE t.slug = p_slug $$;
GRANT SELECT (id, slug, status) ON core.tenants TO codeops_auth;
ALTER FUNCTION core.tenant_for_login(text) OWNER TO codeops_auth;
REVOKE ALL ON FUNCTION core.tenant_for_login(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.tenant_for_login(text) TO codeops_app;

GRANT SELECT, INSERT, UPDATE ON core.tenants TO codeops_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON core.roles, core.role_permissions, core.users,
    core.teams, core.team_members, core.refresh_tokens TO codeops_app;
GRANT SELECT ON core.permissions TO codeops_app;
-- The audit trail is append-only for the services.
GRANT SELECT, INSERT ON core.audit_logs TO codeops_app;
