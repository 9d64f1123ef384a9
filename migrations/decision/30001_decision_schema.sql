-- Decision's slice of the `core` schema: stakeholders, decisions and their
-- threaded comments. Audit columns exactly; hardening added (enum/JSON
-- CHECKs, composite tenant keys, list indexes, row-level security).

CREATE TABLE core.stakeholders (
    id                          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id                   UUID NOT NULL REFERENCES core.tenants(id),
    name                        VARCHAR(255) NOT NULL,
    email                       VARCHAR(255) NOT NULL,
    title                       VARCHAR(255),
    organization                VARCHAR(255),
    phone                       VARCHAR(255),
    avatar_url                  VARCHAR(255),
    type                        VARCHAR(255) NOT NULL CHECK (type IN ('INTERNAL', 'EXTERNAL', 'EXECUTIVE', 'CUSTOMER', 'REGULATORY', 'TECHNICAL')),
    user_id                     UUID,
    expertise                   TEXT CHECK (expertise IS NULL OR core.is_json(expertise)),
    preferred_contact_method    VARCHAR(255),
    availability_notes          TEXT,
    timezone                    VARCHAR(255),
    decisions_pending           INTEGER DEFAULT 0,
    decisions_completed         INTEGER DEFAULT 0,
    decisions_escalated         INTEGER DEFAULT 0,
    avg_response_time_hours     DOUBLE PRECISION,
    last_decision_at            TIMESTAMP WITH TIME ZONE,
    is_active                   BOOLEAN DEFAULT true,
    notes                       TEXT,
    external_refs               TEXT CHECK (external_refs IS NULL OR core.is_json(external_refs)),
    created_at                  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at                  TIMESTAMP WITH TIME ZONE DEFAULT now(),
    created_by_id               UUID,
    CONSTRAINT stakeholders_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT stakeholders_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT stakeholders_created_by_fkey FOREIGN KEY (tenant_id, created_by_id) REFERENCES core.users (tenant_id, id)
);
CREATE INDEX stakeholders_tenant_created_idx ON core.stakeholders (tenant_id, created_at DESC, id DESC);
CREATE INDEX stakeholders_tenant_user_idx ON core.stakeholders (tenant_id, user_id);
CREATE INDEX stakeholders_tenant_created_by_idx ON core.stakeholders (tenant_id, created_by_id);

CREATE TABLE core.decisions (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           UUID NOT NULL REFERENCES core.tenants(id),
    title               VARCHAR(500) NOT NULL,
    description         TEXT,
    context             TEXT,
    options             TEXT CHECK (options IS NULL OR core.is_json(options)),
    status              VARCHAR(255) NOT NULL CHECK (status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION', 'DECIDED', 'IMPLEMENTED', 'DEFERRED', 'CANCELLED')),
    priority            VARCHAR(255) NOT NULL CHECK (priority IN ('BLOCKING', 'HIGH', 'NORMAL', 'LOW')),
    decision_type       VARCHAR(255) CHECK (decision_type IN ('PRODUCT', 'UX', 'TECHNICAL', 'ARCHITECTURAL', 'STRATEGIC', 'OPERATIONAL', 'RESOURCE', 'SCOPE', 'TIMELINE')),
    owner_id            UUID,
    assigned_to_id      UUID,
    outcome_id          UUID,
    hypothesis_id       UUID,
    team_id             UUID,
    sla_hours           INTEGER CHECK (sla_hours IS NULL OR sla_hours > 0),
    due_at              TIMESTAMP WITH TIME ZONE,
    escalation_level    INTEGER DEFAULT 0 CHECK (escalation_level IS NULL OR escalation_level >= 0),
    escalated_at        TIMESTAMP WITH TIME ZONE,
    escalated_to_id     UUID,
    decided_by_id       UUID,
    decided_at          TIMESTAMP WITH TIME ZONE,
    decision_rationale  TEXT,
    selected_option     TEXT CHECK (selected_option IS NULL OR core.is_json(selected_option)),
    blocked_items       TEXT CHECK (blocked_items IS NULL OR core.is_json(blocked_items)),
    external_refs       TEXT CHECK (external_refs IS NULL OR core.is_json(external_refs)),
    tags                TEXT CHECK (tags IS NULL OR core.is_json(tags)),
    created_at          TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at          TIMESTAMP WITH TIME ZONE DEFAULT now(),
    created_by_id       UUID,
    CONSTRAINT decisions_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT decisions_owner_fkey FOREIGN KEY (tenant_id, owner_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT decisions_assigned_to_fkey FOREIGN KEY (tenant_id, assigned_to_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT decisions_outcome_fkey FOREIGN KEY (tenant_id, outcome_id) REFERENCES core.outcomes (tenant_id, id),
    CONSTRAINT decisions_hypothesis_fkey FOREIGN KEY (tenant_id, hypothesis_id) REFERENCES core.hypotheses (tenant_id, id),
    CONSTRAINT decisions_team_fkey FOREIGN KEY (tenant_id, team_id) REFERENCES core.teams (tenant_id, id),
    CONSTRAINT decisions_escalated_to_fkey FOREIGN KEY (tenant_id, escalated_to_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT decisions_decided_by_fkey FOREIGN KEY (tenant_id, decided_by_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT decisions_created_by_fkey FOREIGN KEY (tenant_id, created_by_id) REFERENCES core.users (tenant_id, id)
);
CREATE INDEX decisions_tenant_status_created_idx ON core.decisions (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX decisions_tenant_created_idx ON core.decisions (tenant_id, created_at DESC, id DESC);
-- The SLA sweeper looks for open decisions past due across tenants.
CREATE INDEX decisions_open_due_idx ON core.decisions (due_at) WHERE status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION');
CREATE INDEX decisions_tenant_owner_idx ON core.decisions (tenant_id, owner_id);
CREATE INDEX decisions_tenant_assigned_to_idx ON core.decisions (tenant_id, assigned_to_id);
CREATE INDEX decisions_tenant_outcome_idx ON core.decisions (tenant_id, outcome_id);
CREATE INDEX decisions_tenant_hypothesis_idx ON core.decisions (tenant_id, hypothesis_id);
CREATE INDEX decisions_tenant_team_idx ON core.decisions (tenant_id, team_id);
CREATE INDEX decisions_tenant_escalated_to_idx ON core.decisions (tenant_id, escalated_to_id);
CREATE INDEX decisions_tenant_decided_by_idx ON core.decisions (tenant_id, decided_by_id);
CREATE INDEX decisions_tenant_created_by_idx ON core.decisions (tenant_id, created_by_id);

CREATE TABLE core.decision_comments (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Added: ties the comment to one tenant for RLS and composite keys.
    tenant_id       UUID NOT NULL REFERENCES core.tenants(id),
    decision_id     UUID NOT NULL,
    author_id       UUID NOT NULL,
    parent_id       UUID,
    content         TEXT NOT NULL,
    option_id       VARCHAR(255),
    is_edited       BOOLEAN DEFAULT false,
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at      TIMESTAMP WITH TIME ZONE DEFAULT now(),
    CONSTRAINT decision_comments_tenant_decision_id_key UNIQUE (tenant_id, decision_id, id),
    CONSTRAINT decision_comments_decision_fkey FOREIGN KEY (tenant_id, decision_id) REFERENCES core.decisions (tenant_id, id),
    CONSTRAINT decision_comments_author_fkey FOREIGN KEY (tenant_id, author_id) REFERENCES core.users (tenant_id, id),
    -- A reply belongs to the same decision as its parent.
    CONSTRAINT decision_comments_parent_fkey FOREIGN KEY (tenant_id, decision_id, parent_id)
        REFERENCES core.decision_comments (tenant_id, decision_id, id)
);
CREATE INDEX decision_comments_tenant_decision_created_idx ON core.decision_comments (tenant_id, decision_id, created_at, id);
CREATE INDEX decision_comments_tenant_author_idx ON core.decision_comments (tenant_id, author_id);
CREATE INDEX decision_comments_parent_idx ON core.decision_comments (tenant_id, decision_id, parent_id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['stakeholders', 'decisions', 'decision_comments'] LOOP
        EXECUTE format('ALTER TABLE core.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE core.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON core.%I USING (tenant_id = core.current_tenant_id()) '
                       'WITH CHECK (tenant_id = core.current_tenant_id())', t);
    END LOOP;
END $$;

GRANT SELECT, INSERT, UPDATE, DELETE ON core.stakeholders, core.decisions, core.decision_comments TO codeops_app;
