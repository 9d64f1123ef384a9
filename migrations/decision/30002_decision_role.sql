-- codeops_decision: decision's own tables plus appending to the audit
-- trail; nothing of identity's or planning's slices (outcomes and
-- hypotheses a decision links to are checked by composite foreign keys).
DO $$
BEGIN
    CREATE ROLE codeops_decision NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA core TO codeops_decision;
GRANT SELECT, INSERT, UPDATE, DELETE ON core.stakeholders, core.decisions, core.decision_comments
    TO codeops_decision;
GRANT INSERT ON core.audit_logs TO codeops_decision;

REVOKE ALL ON core.stakeholders, core.decisions, core.decision_comments FROM codeops_app;
