-- Decision's idempotency keys (core.request_ids, created by identity's
-- migration 10005): its role sees and writes only its tenant's keys of
-- decision's own methods.
CREATE POLICY decision_keys ON core.request_ids TO codeops_decision
    USING (tenant_id = core.current_tenant_id() AND starts_with(method, '/codeops.decision.v1.'))
    WITH CHECK (tenant_id = core.current_tenant_id() AND starts_with(method, '/codeops.decision.v1.'));
GRANT SELECT, INSERT, UPDATE, DELETE ON core.request_ids TO codeops_decision;
