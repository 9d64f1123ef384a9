-- Planning's lifecycles (issue 8): additive columns the transitions need,
-- and the indexes that keep every ordering of ListOutcomes a keyset scan.
-- Nothing of the audited schema changes; existing rows keep working.

-- Where a BLOCKED hypothesis returns when unblocked. Set by BlockHypothesis,
-- cleared by UnblockHypothesis. Rows blocked by the old application have
-- none: they are back-filled below from the lifecycle timestamps (the
-- furthest stage a hypothesis reached), and the service applies the same
-- rule to a BLOCKED row that still has none (rows seeded after migrating).
ALTER TABLE core.hypotheses
    ADD COLUMN blocked_from VARCHAR(255)
        CONSTRAINT hypotheses_blocked_from_check
        CHECK (blocked_from IN ('READY', 'BUILDING', 'DEPLOYED', 'MEASURING'));

UPDATE core.hypotheses
SET blocked_from = CASE
        WHEN measuring_started_at IS NOT NULL THEN 'MEASURING'
        WHEN deployed_at IS NOT NULL THEN 'DEPLOYED'
        WHEN started_at IS NOT NULL THEN 'BUILDING'
        ELSE 'READY'
    END
WHERE status = 'BLOCKED' AND blocked_from IS NULL;

-- Why and when an outcome or hypothesis was abandoned (AbandonOutcome,
-- AbandonHypothesis): every other terminal status has its time already.
ALTER TABLE core.outcomes
    ADD COLUMN abandoned_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN abandon_reason TEXT;
ALTER TABLE core.hypotheses
    ADD COLUMN abandoned_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN abandon_reason TEXT;

-- Priority as a number for ordering, higher = more urgent (CRITICAL 5 ..
-- BACKLOG 1), kept by PostgreSQL so no writer can get it wrong.
ALTER TABLE core.outcomes
    ADD COLUMN priority_weight SMALLINT NOT NULL GENERATED ALWAYS AS (
        CASE priority
            WHEN 'CRITICAL' THEN 5
            WHEN 'HIGH' THEN 4
            WHEN 'MEDIUM' THEN 3
            WHEN 'LOW' THEN 2
            WHEN 'BACKLOG' THEN 1
            ELSE 0
        END) STORED;

-- The target date as a sort key: no date sorts after every date. A plain
-- column rather than an expression index because PostgreSQL uses a row
-- comparison ((key, created_at, id) > (...)) as an index condition only on
-- plain columns: with an expression the keyset would be a filter, and deep
-- pages would cost more than the first.
ALTER TABLE core.outcomes
    ADD COLUMN target_date_key DATE NOT NULL
        GENERATED ALWAYS AS (coalesce(target_date, 'infinity'::date)) STORED;

-- One index per ordering of ListOutcomes, matching its ORDER BY and keyset
-- predicate column for column, so page 200 costs what page 1 costs.
-- Newest first already has outcomes_tenant_created_idx.
-- Soonest target date first, outcomes without one last, then oldest first.
CREATE INDEX outcomes_tenant_target_date_idx
    ON core.outcomes (tenant_id, target_date_key, created_at, id);
-- Most urgent first, then newest first.
CREATE INDEX outcomes_tenant_priority_idx
    ON core.outcomes (tenant_id, priority_weight DESC, created_at DESC, id DESC);
-- ListHypotheses, newest first (per outcome there is
-- hypotheses_tenant_outcome_created_idx).
CREATE INDEX hypotheses_tenant_created_idx
    ON core.hypotheses (tenant_id, created_at DESC, id DESC);
