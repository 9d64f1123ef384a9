-- Planning's slice of the `core` schema: outcomes and their hypotheses.
-- Audit columns exactly; hardening added (enum/JSON CHECKs, composite
-- tenant keys, list indexes, row-level security).

CREATE TABLE core.outcomes (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           UUID NOT NULL REFERENCES core.tenants(id),
    title               VARCHAR(500) NOT NULL,
    description         TEXT,
    success_criteria    TEXT,
    target_metrics      TEXT CHECK (target_metrics IS NULL OR core.is_json(target_metrics)),
    current_metrics     TEXT CHECK (current_metrics IS NULL OR core.is_json(current_metrics)),
    status              VARCHAR(255) NOT NULL CHECK (status IN ('DRAFT', 'NOT_STARTED', 'IN_PROGRESS', 'VALIDATING', 'VALIDATED', 'INVALIDATED', 'ABANDONED')),
    priority            VARCHAR(255) NOT NULL CHECK (priority IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'BACKLOG')),
    team_id             UUID,
    owner_id            UUID,
    target_date         DATE,
    started_at          TIMESTAMP WITH TIME ZONE,
    validated_at        TIMESTAMP WITH TIME ZONE,
    invalidated_at      TIMESTAMP WITH TIME ZONE,
    validation_notes    TEXT,
    validated_by_id     UUID,
    invalidated_by_id   UUID,
    external_refs       TEXT CHECK (external_refs IS NULL OR core.is_json(external_refs)),
    tags                TEXT CHECK (tags IS NULL OR core.is_json(tags)),
    created_at          TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at          TIMESTAMP WITH TIME ZONE DEFAULT now(),
    created_by_id       UUID,
    CONSTRAINT outcomes_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT outcomes_team_fkey FOREIGN KEY (tenant_id, team_id) REFERENCES core.teams (tenant_id, id),
    CONSTRAINT outcomes_owner_fkey FOREIGN KEY (tenant_id, owner_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT outcomes_validated_by_fkey FOREIGN KEY (tenant_id, validated_by_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT outcomes_invalidated_by_fkey FOREIGN KEY (tenant_id, invalidated_by_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT outcomes_created_by_fkey FOREIGN KEY (tenant_id, created_by_id) REFERENCES core.users (tenant_id, id)
);
CREATE INDEX outcomes_tenant_status_created_idx ON core.outcomes (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX outcomes_tenant_created_idx ON core.outcomes (tenant_id, created_at DESC, id DESC);
CREATE INDEX outcomes_tenant_team_idx ON core.outcomes (tenant_id, team_id);
CREATE INDEX outcomes_tenant_owner_idx ON core.outcomes (tenant_id, owner_id);
CREATE INDEX outcomes_tenant_validated_by_idx ON core.outcomes (tenant_id, validated_by_id);
CREATE INDEX outcomes_tenant_invalidated_by_idx ON core.outcomes (tenant_id, invalidated_by_id);
CREATE INDEX outcomes_tenant_created_by_idx ON core.outcomes (tenant_id, created_by_id);

CREATE TABLE core.hypotheses (
    id                      UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id               UUID NOT NULL REFERENCES core.tenants(id),
    outcome_id              UUID NOT NULL,
    title                   VARCHAR(500) NOT NULL,
    belief                  TEXT NOT NULL,
    expected_result         TEXT NOT NULL,
    measurement_criteria    TEXT,
    status                  VARCHAR(255) NOT NULL CHECK (status IN ('DRAFT', 'READY', 'BLOCKED', 'BUILDING', 'DEPLOYED', 'MEASURING', 'VALIDATED', 'INVALIDATED', 'ABANDONED')),
    priority                VARCHAR(255) NOT NULL CHECK (priority IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW')),
    owner_id                UUID,
    experiment_config       TEXT CHECK (experiment_config IS NULL OR core.is_json(experiment_config)),
    experiment_results      TEXT CHECK (experiment_results IS NULL OR core.is_json(experiment_results)),
    blocked_reason          TEXT,
    conclusion_notes        TEXT,
    external_refs           TEXT CHECK (external_refs IS NULL OR core.is_json(external_refs)),
    tags                    TEXT CHECK (tags IS NULL OR core.is_json(tags)),
    started_at              TIMESTAMP WITH TIME ZONE,
    deployed_at             TIMESTAMP WITH TIME ZONE,
    measuring_started_at    TIMESTAMP WITH TIME ZONE,
    concluded_at            TIMESTAMP WITH TIME ZONE,
    concluded_by_id         UUID,
    created_at              TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at              TIMESTAMP WITH TIME ZONE DEFAULT now(),
    created_by_id           UUID,
    CONSTRAINT hypotheses_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT hypotheses_outcome_fkey FOREIGN KEY (tenant_id, outcome_id) REFERENCES core.outcomes (tenant_id, id),
    CONSTRAINT hypotheses_owner_fkey FOREIGN KEY (tenant_id, owner_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT hypotheses_concluded_by_fkey FOREIGN KEY (tenant_id, concluded_by_id) REFERENCES core.users (tenant_id, id),
    CONSTRAINT hypotheses_created_by_fkey FOREIGN KEY (tenant_id, created_by_id) REFERENCES core.users (tenant_id, id)
);
CREATE INDEX hypotheses_tenant_status_created_idx ON core.hypotheses (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX hypotheses_tenant_outcome_created_idx ON core.hypotheses (tenant_id, outcome_id, created_at DESC, id DESC);
CREATE INDEX hypotheses_tenant_owner_idx ON core.hypotheses (tenant_id, owner_id);
CREATE INDEX hypotheses_tenant_concluded_by_idx ON core.hypotheses (tenant_id, concluded_by_id);
CREATE INDEX hypotheses_tenant_created_by_idx ON core.hypotheses (tenant_id, created_by_id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['outcomes', 'hypotheses'] LOOP
        EXECUTE format('ALTER TABLE core.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE core.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON core.%I USING (tenant_id = core.current_tenant_id()) '
                       'WITH CHECK (tenant_id = core.current_tenant_id())', t);
    END LOOP;
END $$;

GRANT SELECT, INSERT, UPDATE, DELETE ON core.outcomes, core.hypotheses TO codeops_app;
