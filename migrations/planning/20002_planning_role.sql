-- codeops_planning: planning's own tables plus appending to the audit
-- trail; nothing of identity's or decision's slices. Facts about other
-- slices (a user or team of the tenant) are checked by composite foreign
-- keys, which PostgreSQL evaluates with the table owner's rights.
DO $$
BEGIN
    CREATE ROLE codeops_planning NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA core TO codeops_planning;
GRANT SELECT, INSERT, UPDATE, DELETE ON core.outcomes, core.hypotheses TO codeops_planning;
GRANT INSERT ON core.audit_logs TO codeops_planning;

REVOKE ALL ON core.outcomes, core.hypotheses FROM codeops_app;
