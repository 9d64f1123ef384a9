-- Comments and stakeholders (issue 9). Additive only; the audited columns
-- keep their names and types.

-- DeleteComment is a soft delete: the content is blanked and the time
-- recorded, the row stays, so replies keep their parent (the composite key
-- decision_comments_parent_fkey) and their place in the thread.
ALTER TABLE core.decision_comments ADD COLUMN deleted_at TIMESTAMP WITH TIME ZONE;

-- One stakeholder per e-mail address (stored normalised: NFKC, lower case)
-- and per user in a tenant.
ALTER TABLE core.stakeholders
    ADD CONSTRAINT stakeholders_email_key UNIQUE (tenant_id, email),
    ADD CONSTRAINT stakeholders_user_id_key UNIQUE (tenant_id, user_id);

-- An internal stakeholder is a user of the tenant (stakeholders_user_fkey
-- checks the tenant).
ALTER TABLE core.stakeholders
    ADD CONSTRAINT stakeholders_internal_user_check CHECK (type <> 'INTERNAL' OR user_id IS NOT NULL);
