-- Demo seed 08: decision comments.
--
-- Threaded discussions (parent_id in the same decision; the composite key
-- (tenant_id, decision_id, parent_id) enforces it), some pointing at an
-- option id of their decision. Parents are listed before their replies.
--   fff...002 (Acme, escalated)   fff...101 -> 102 -> 103 (103 edited)
--   fff...003 (Acme, overdue)     fff...104 -> 105
--   fff...004 (Acme, decided)     fff...106 -> 107 -> 108
--   fff...006 (Globex, overdue)   fff...109 -> 110 -> 111
--   fff...007 (Globex, decided)   fff...112 -> 113
-- The NEEDS_INPUT decisions (fff...001, fff...005) have no comments.
-- Every comment falls between its decision's creation and its resolution.

INSERT INTO core.decision_comments (id, tenant_id, decision_id, author_id, parent_id, content, option_id,
                                    is_edited, created_at, updated_at) VALUES
    -- fff...002: event pipeline (created 36 hours ago)
    ('ffffffff-ffff-ffff-ffff-fffffffff101', '11111111-1111-1111-1111-111111111111',
     'ffffffff-ffff-ffff-ffff-fffffffff002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003', NULL,
     'I lean towards the outbox: we already run Postgres well and 3 million events a day is small for logical replication.',
     'opt-b', false, NOW() - INTERVAL '34 hours', NOW() - INTERVAL '34 hours'),
    ('ffffffff-ffff-ffff-ffff-fffffffff102', '11111111-1111-1111-1111-111111111111',
     'ffffffff-ffff-ffff-ffff-fffffffff002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002',
     'ffffffff-ffff-ffff-ffff-fffffffff101',
     'How would we replay a week of events if the activation definition changes?',
     NULL, false, NOW() - INTERVAL '32 hours', NOW() - INTERVAL '32 hours'),
    ('ffffffff-ffff-ffff-ffff-fffffffff103', '11111111-1111-1111-1111-111111111111',
     'ffffffff-ffff-ffff-ffff-fffffffff002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003',
     'ffffffff-ffff-ffff-ffff-fffffffff102',
     'We keep the outbox rows for 30 days and can re-publish any range from them; that covers the redefinition case. Still need an estimate of the primary''s extra write load.',
     'opt-b', true, NOW() - INTERVAL '30 hours', NOW() - INTERVAL '29 hours'),
    -- fff...003: SSO scope (created 3 days ago)
    ('ffffffff-ffff-ffff-ffff-fffffffff104', '11111111-1111-1111-1111-111111111111',
     'ffffffff-ffff-ffff-ffff-fffffffff003', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', NULL,
     'Neither renewal is due before November. I would rather ship the rest of the release on time.',
     'opt-b', false, NOW() - INTERVAL '3 days' + INTERVAL '3 hours', NOW() - INTERVAL '3 days' + INTERVAL '3 hours'),
    ('ffffffff-ffff-ffff-ffff-fffffffff105', '11111111-1111-1111-1111-111111111111',
     'ffffffff-ffff-ffff-ffff-fffffffff003', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003',
     'ffffffff-ffff-ffff-ffff-fffffffff104',
     'SSO is closer than it looks: the IdP integration tests pass, only the admin UI is left. Keeping it costs about a week, not two.',
     'opt-a', false, NOW() - INTERVAL '3 days' + INTERVAL '5 hours', NOW() - INTERVAL '3 days' + INTERVAL '5 hours'),
    -- fff...004: welcome e-mail template (created 25 days ago, decided 50 hours later)
    ('ffffffff-ffff-ffff-ffff-fffffffff106', '11111111-1111-1111-1111-111111111111',
     'ffffffff-ffff-ffff-ffff-fffffffff004', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003', NULL,
     'The gallery is two sprints of work; the Kanban starter is two days.',
     'opt-c', false, NOW() - INTERVAL '25 days' + INTERVAL '3 hours', NOW() - INTERVAL '25 days' + INTERVAL '3 hours'),
    ('ffffffff-ffff-ffff-ffff-fffffffff107', '11111111-1111-1111-1111-111111111111',
     'ffffffff-ffff-ffff-ffff-fffffffff004', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002',
     'ffffffff-ffff-ffff-ffff-fffffffff106',
     'Then Kanban first; if the e-mail moves the metric we can still build the gallery.',
     'opt-b', false, NOW() - INTERVAL '25 days' + INTERVAL '20 hours', NOW() - INTERVAL '25 days' + INTERVAL '20 hours'),
    ('ffffffff-ffff-ffff-ffff-fffffffff108', '11111111-1111-1111-1111-111111111111',
     'ffffffff-ffff-ffff-ffff-fffffffff004', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001',
     'ffffffff-ffff-ffff-ffff-fffffffff107',
     'Agreed. Going with the Kanban starter.',
     'opt-b', false, NOW() - INTERVAL '25 days' + INTERVAL '49 hours', NOW() - INTERVAL '25 days' + INTERVAL '49 hours'),
    -- fff...006: pick-to-light hardware (Globex, created 3 days ago)
    ('ffffffff-ffff-ffff-ffff-fffffffff109', '22222222-2222-2222-2222-222222222222',
     'ffffffff-ffff-ffff-ffff-fffffffff006', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006', NULL,
     'Wireless gets the pilot running three weeks sooner, and we can move the modules if aisle 3 is the wrong place.',
     'opt-b', false, NOW() - INTERVAL '3 days' + INTERVAL '2 hours', NOW() - INTERVAL '3 days' + INTERVAL '2 hours'),
    ('ffffffff-ffff-ffff-ffff-fffffffff110', '22222222-2222-2222-2222-222222222222',
     'ffffffff-ffff-ffff-ffff-fffffffff006', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005',
     'ffffffff-ffff-ffff-ffff-fffffffff109',
     'What is the total difference for 480 locations, installation included?',
     NULL, false, NOW() - INTERVAL '3 days' + INTERVAL '4 hours', NOW() - INTERVAL '3 days' + INTERVAL '4 hours'),
    ('ffffffff-ffff-ffff-ffff-fffffffff111', '22222222-2222-2222-2222-222222222222',
     'ffffffff-ffff-ffff-ffff-fffffffff006', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006',
     'ffffffff-ffff-ffff-ffff-fffffffff110',
     'About 9,000 EUR more for wireless, but the cabling quote alone is 6,500 EUR.',
     'opt-b', false, NOW() - INTERVAL '3 days' + INTERVAL '5 hours', NOW() - INTERVAL '3 days' + INTERVAL '5 hours'),
    -- fff...007: pick-error review cadence (Globex, created 10 days ago, decided 20 hours later)
    ('ffffffff-ffff-ffff-ffff-fffffffff112', '22222222-2222-2222-2222-222222222222',
     'ffffffff-ffff-ffff-ffff-fffffffff007', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006', NULL,
     'Shift leads prefer weekly; the dashboard already flags a bad shift the same day.',
     'opt-a', false, NOW() - INTERVAL '10 days' + INTERVAL '1 hour', NOW() - INTERVAL '10 days' + INTERVAL '1 hour'),
    ('ffffffff-ffff-ffff-ffff-fffffffff113', '22222222-2222-2222-2222-222222222222',
     'ffffffff-ffff-ffff-ffff-fffffffff007', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005',
     'ffffffff-ffff-ffff-ffff-fffffffff112',
     'Fine by me, weekly it is.',
     'opt-a', false, NOW() - INTERVAL '10 days' + INTERVAL '19 hours', NOW() - INTERVAL '10 days' + INTERVAL '19 hours')
ON CONFLICT (id) DO NOTHING;
