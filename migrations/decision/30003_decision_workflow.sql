-- The decision workflow (issue 9): what the writes, the lists and the SLA
-- sweeper need. Additive only; the audited columns keep their names and types.

-- A decision's hypothesis must belong to the decision's outcome. The
-- composite key below needs (tenant_id, outcome_id, id) to be unique on
-- hypotheses (it is: id alone is), and a hypothesis is only linked together
-- with its outcome, so the key is always checked (MATCH SIMPLE skips rows
-- with a NULL column).
ALTER TABLE core.hypotheses
    ADD CONSTRAINT hypotheses_tenant_outcome_id_key UNIQUE (tenant_id, outcome_id, id);
ALTER TABLE core.decisions
    ADD CONSTRAINT decisions_hypothesis_outcome_fkey
        FOREIGN KEY (tenant_id, outcome_id, hypothesis_id)
        REFERENCES core.hypotheses (tenant_id, outcome_id, id),
    ADD CONSTRAINT decisions_hypothesis_needs_outcome_check
        CHECK (hypothesis_id IS NULL OR outcome_id IS NOT NULL);
-- Backs the key (a hypothesis's delete checks it).
CREATE INDEX decisions_tenant_outcome_hypothesis_idx ON core.decisions (tenant_id, outcome_id, hypothesis_id);

-- The SLA is an hour count between 1 hour and one year.
ALTER TABLE core.decisions
    ADD CONSTRAINT decisions_sla_hours_range_check CHECK (sla_hours IS NULL OR sla_hours BETWEEN 1 AND 8760);

-- The deadline the sweeper found nobody to escalate to (the holder has no
-- manager): the decision stays flagged for that deadline and is not picked
-- again until its deadline changes or it is reassigned.
ALTER TABLE core.decisions ADD COLUMN unescalated_due_at TIMESTAMP WITH TIME ZONE;

-- Priority as a number for ordering, higher = more urgent, kept by
-- PostgreSQL so no writer can get it wrong.
ALTER TABLE core.decisions
    ADD COLUMN priority_weight SMALLINT NOT NULL GENERATED ALWAYS AS (
        CASE priority
            WHEN 'BLOCKING' THEN 4
            WHEN 'HIGH' THEN 3
            WHEN 'NORMAL' THEN 2
            WHEN 'LOW' THEN 1
            ELSE 0
        END) STORED;

-- The due date as a sort key: no due date sorts after every date. A plain
-- column so the keyset row comparison is an index condition (see planning's
-- 20003 for why an expression would not be).
ALTER TABLE core.decisions
    ADD COLUMN due_key TIMESTAMP WITH TIME ZONE NOT NULL
        GENERATED ALWAYS AS (coalesce(due_at, 'infinity'::timestamptz)) STORED;

-- One index per ordering of ListDecisions (newest first has
-- decisions_tenant_created_idx).
CREATE INDEX decisions_tenant_due_idx ON core.decisions (tenant_id, due_key, created_at, id);
CREATE INDEX decisions_tenant_priority_idx
    ON core.decisions (tenant_id, priority_weight DESC, created_at DESC, id DESC);

-- The SLA sweeper's one read across tenants: the ids, tenants and current
-- deadlines of open decisions past due, oldest deadline first. A SECURITY
-- DEFINER function owned by a role of its own that may read only those
-- columns, through a policy for that role alone; only the decision
-- service's role may call it. The sweeper then escalates each decision in a
-- transaction of the decision's own tenant, locking the row with
-- FOR UPDATE SKIP LOCKED, so several sweepers escalate each deadline once.
DO $$
BEGIN
    CREATE ROLE codeops_sla_sweeper NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA core TO codeops_sla_sweeper;
GRANT SELECT (id, tenant_id, status, due_at, unescalated_due_at) ON core.decisions TO codeops_sla_sweeper;
CREATE POLICY sla_sweeper ON core.decisions FOR SELECT TO codeops_sla_sweeper USING (true);

CREATE FUNCTION core.overdue_decisions(p_now timestamptz, p_limit integer)
    RETURNS TABLE (tenant_id uuid, id uuid, due_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = core, pg_temp
    AS $$
    SELECT d.tenant_id, d.id, d.due_at
      FROM core.decisions d
     WHERE d.status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION')
       AND d.due_at < p_now
       AND d.unescalated_due_at IS DISTINCT FROM d.due_at
     ORDER BY d.due_at, d.id
     LIMIT least(greatest(p_limit, 0), 10000)
    $$;
ALTER FUNCTION core.overdue_decisions(timestamptz, integer) OWNER TO codeops_sla_sweeper;
REVOKE ALL ON FUNCTION core.overdue_decisions(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.overdue_decisions(timestamptz, integer) TO codeops_decision;
