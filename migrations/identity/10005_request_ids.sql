-- Idempotency keys of the Create calls (AIP-155): a client may send a
-- `request_id` (a UUID of its choosing) with every Create and AddComment; a
-- retry with the same key within 24 hours answers what the first call
-- created instead of creating it again (shared/platform/src/idempotency.rs).
--
-- A key is claimed in the create's own transaction, next to the resource
-- and its audit row, so a key exists exactly when its resource does: a
-- call that fails leaves none, and a concurrent retry waits on the primary
-- key until the first call commits or rolls back.
--
-- Identity creates the table, like the audit trail every service appends
-- to; each service's role migration grants its role its own keys.
CREATE TABLE core.request_ids (
    -- The tenant the resource was created in (CreateTenant: the new tenant,
    -- checked at commit, after the tenant's row is inserted).
    tenant_id       UUID NOT NULL,
    request_id      UUID NOT NULL,
    -- The full gRPC method, e.g. /codeops.planning.v1.OutcomeService/CreateOutcome.
    method          TEXT NOT NULL CHECK (method ~ '^/codeops\.[a-z]+\.v1\.[A-Za-z]+/[A-Za-z]+$'),
    -- SHA-256 of the request message with request_id (and any password)
    -- cleared: a key reused for another request is refused, not replayed.
    request_digest  BYTEA NOT NULL CHECK (octet_length(request_digest) = 32),
    -- What the first call created (CreateTenant: the first owner; the
    -- tenant is tenant_id).
    resource_id     UUID NOT NULL,
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id),
    CONSTRAINT request_ids_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
-- Expired keys (older than 24 hours) are pruned per tenant by the next
-- keyed create of the same service: a range scan of this index.
CREATE INDEX request_ids_tenant_created_idx ON core.request_ids (tenant_id, created_at);

-- Row-level security by tenant, and by service: each service's role sees
-- and writes only the keys of its own methods (its policy, created in its
-- role migration), so no service learns another's keys. A key another
-- service holds still conflicts on the primary key, which is how a key
-- reused across services is refused.
ALTER TABLE core.request_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.request_ids FORCE ROW LEVEL SECURITY;
CREATE POLICY identity_keys ON core.request_ids TO codeops_identity
    USING (tenant_id = core.current_tenant_id() AND starts_with(method, '/codeops.identity.v1.'))
    WITH CHECK (tenant_id = core.current_tenant_id() AND starts_with(method, '/codeops.identity.v1.'));
GRANT SELECT, INSERT, UPDATE, DELETE ON core.request_ids TO codeops_identity;
