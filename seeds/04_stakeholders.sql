-- Demo seed 04: stakeholders.
--
-- Acme: Alice Anders (INTERNAL, user 001), Bob Brown (INTERNAL, user 002) and
-- Priya Patel of Initech, an EXTERNAL customer with no user.
-- Globex: Erin Evans (EXECUTIVE, user 005).
--
-- The counters match the decisions of 07_decisions.sql, counted for the
-- stakeholder's user:
--   decisions_pending       open decisions (NEEDS_INPUT, UNDER_DISCUSSION) the
--                           user holds now: escalated_to, else assignee
--   decisions_completed     decisions the user resolved (decided_by_id)
--   decisions_escalated     decisions escalated to the user (escalated_to_id)
--   avg_response_time_hours mean of decided_at - created_at over those resolved
--   last_decision_at        latest decided_at among them
-- Alice: pending 1 (fff...005), completed 1 (fff...004, decided 50 h after creation).
-- Bob:   pending 2 (fff...001 assigned, fff...002 escalated to him), escalated 1.
-- Erin:  completed 1 (fff...007, decided 20 h after creation); fff...006 is held by Frank.
-- Stakeholders without a user have zero counters.

INSERT INTO core.stakeholders (id, tenant_id, name, email, title, organization, phone, avatar_url, type,
                               user_id, expertise, preferred_contact_method, availability_notes, timezone,
                               decisions_pending, decisions_completed, decisions_escalated,
                               avg_response_time_hours, last_decision_at, is_active, notes, external_refs,
                               created_at, updated_at, created_by_id) VALUES
    ('cccccccc-cccc-cccc-cccc-ccccccccc001', '11111111-1111-1111-1111-111111111111',
     'Alice Anders', 'alice@acme.test', 'Chief Executive Officer', 'Acme Corp', NULL, NULL, 'INTERNAL',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001', '["strategy","pricing","budget"]', 'slack',
     'Decision slots Tuesday and Thursday afternoons', 'UTC',
     1, 1, 0, 50.0, NOW() - INTERVAL '25 days' + INTERVAL '50 hours', true,
     'Final say on strategic and pricing decisions', NULL,
     NOW() - INTERVAL '88 days', NOW() - INTERVAL '88 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001'),
    ('cccccccc-cccc-cccc-cccc-ccccccccc002', '11111111-1111-1111-1111-111111111111',
     'Bob Brown', 'bob@acme.test', 'Head of Product', 'Acme Corp', NULL, NULL, 'INTERNAL',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', '["product strategy","onboarding","analytics"]', 'slack',
     'Usually answers within a working day', 'UTC',
     2, 0, 1, NULL, NULL, true,
     'Owns the product roadmap; escalation point for engineering', NULL,
     NOW() - INTERVAL '84 days', NOW() - INTERVAL '84 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001'),
    ('cccccccc-cccc-cccc-cccc-ccccccccc003', '11111111-1111-1111-1111-111111111111',
     'Priya Patel', 'priya.patel@initech.test', 'VP Operations', 'Initech', '+1-555-0142', NULL, 'EXTERNAL',
     NULL, '["billing","enterprise procurement"]', 'email',
     'Monthly customer advisory call; email otherwise', 'America/Chicago',
     0, 0, 0, NULL, NULL, true,
     'Design-partner customer for self-serve annual billing',
     '[{"system":"crm","key":"ACC-2041","url":"https://crm.acme.test/accounts/ACC-2041"}]',
     NOW() - INTERVAL '40 days', NOW() - INTERVAL '40 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002'),
    ('cccccccc-cccc-cccc-cccc-ccccccccc004', '22222222-2222-2222-2222-222222222222',
     'Erin Evans', 'erin@globex.test', 'Founder & CEO', 'Globex', NULL, NULL, 'EXECUTIVE',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005', '["logistics","operations","hiring"]', 'email',
     'Mornings, Central European Time', 'Europe/Berlin',
     0, 1, 0, 20.0, NOW() - INTERVAL '10 days' + INTERVAL '20 hours', true,
     NULL, NULL,
     NOW() - INTERVAL '78 days', NOW() - INTERVAL '78 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005')
ON CONFLICT (id) DO NOTHING;
