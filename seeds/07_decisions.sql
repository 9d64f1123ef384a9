-- Demo seed 07: decisions.
--
-- Acme:
--   fff...001 NEEDS_INPUT      BLOCKING PRODUCT       overdue (created 3 days ago, SLA 24 h), not yet escalated
--   fff...002 UNDER_DISCUSSION HIGH     ARCHITECTURAL escalated once: assignee Carol -> her manager Bob
--   fff...003 UNDER_DISCUSSION HIGH     SCOPE         overdue (created 3 days ago, SLA 24 h), not yet escalated
--   fff...004 DECIDED          NORMAL   UX            resolved by Alice with option opt-b
--   fff...005 NEEDS_INPUT      NORMAL   STRATEGIC     not yet due (due in 6 days)
-- Globex:
--   fff...006 UNDER_DISCUSSION BLOCKING TECHNICAL     overdue (created 3 days ago, SLA 24 h), not yet escalated
--   fff...007 DECIDED          NORMAL   OPERATIONAL   resolved by Erin with option opt-a
--
-- due_at = created_at + sla_hours, except for the escalated fff...002: its
-- first deadline (created_at + 24 h) passed 12 hours ago, the sweeper
-- escalated it 5 minutes later, and its new due_at is escalated_at + sla_hours.
-- The overdue decisions are held by users who have a manager, so the SLA
-- sweeper has someone to escalate them to. NEEDS_INPUT decisions have no
-- comments (a comment moves a decision to UNDER_DISCUSSION).
-- options: JSON array of {id, title, description, pros, cons};
-- selected_option: the chosen option object, verbatim.

-- fff...001: Acme, overdue, blocks the checklist hypothesis.
INSERT INTO core.decisions (id, tenant_id, title, description, context, options, status, priority, decision_type,
                            owner_id, assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at,
                            escalation_level, escalated_at, escalated_to_id, decided_by_id, decided_at,
                            decision_rationale, selected_option, blocked_items, external_refs, tags,
                            created_at, updated_at, created_by_id) VALUES
    ('ffffffff-ffff-ffff-ffff-fffffffff001', '11111111-1111-1111-1111-111111111111',
     'Should the onboarding checklist be mandatory or skippable?',
     'The guided checklist is half built; the team needs to know whether admins can dismiss it.',
     'Carol''s team is blocked on the checklist routing work until this is settled.',
     '[{"id":"opt-a","title":"Mandatory checklist","description":"New admins finish the three setup steps before they reach the dashboard.","pros":["Every admin sees the key steps","Cleaner experiment signal"],"cons":["Extra friction on day one","May raise day-1 drop-off"]},'
     '{"id":"opt-b","title":"Skippable checklist","description":"The checklist sits on the home page and can be dismissed at any time.","pros":["No added friction","Cheaper to build"],"cons":["Many admins may dismiss it unread"]}]',
     'NEEDS_INPUT', 'BLOCKING', 'PRODUCT',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002',
     'dddddddd-dddd-dddd-dddd-ddddddddd001', 'eeeeeeee-eeee-eeee-eeee-eeeeeeeee001',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001', 24, NOW() - INTERVAL '3 days' + INTERVAL '24 hours',
     0, NULL, NULL, NULL, NULL,
     NULL, NULL,
     '[{"type":"hypothesis","id":"eeeeeeee-eeee-eeee-eeee-eeeeeeeee001","title":"A guided setup checklist lifts week-1 activation"}]',
     NULL, '["onboarding","checklist"]',
     NOW() - INTERVAL '3 days', NOW() - INTERVAL '3 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003')
ON CONFLICT (id) DO NOTHING;

-- fff...002: Acme, escalated once (assignee Carol, manager Bob), new deadline in the future.
INSERT INTO core.decisions (id, tenant_id, title, description, context, options, status, priority, decision_type,
                            owner_id, assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at,
                            escalation_level, escalated_at, escalated_to_id, decided_by_id, decided_at,
                            decision_rationale, selected_option, blocked_items, external_refs, tags,
                            created_at, updated_at, created_by_id) VALUES
    ('ffffffff-ffff-ffff-ffff-fffffffff002', '11111111-1111-1111-1111-111111111111',
     'Which event pipeline should feed the activation metrics?',
     'Activation is computed from nightly database dumps; the experiments need events within minutes.',
     'Expected volume is about 3 million events a day, growing with signups.',
     '[{"id":"opt-a","title":"Kafka cluster","description":"Run a three-broker Kafka cluster and stream product events into the warehouse.","pros":["Scales far beyond current volume","Replayable history"],"cons":["New system to operate","Nobody on the team has run Kafka"]},'
     '{"id":"opt-b","title":"Postgres outbox","description":"Write events to an outbox table in the same transaction and ship them with logical replication.","pros":["No new datastore","Events are exactly as consistent as the data"],"cons":["Adds write load to the primary","Replay needs extra tooling"]},'
     '{"id":"opt-c","title":"Managed event service","description":"Send events to a hosted customer-data platform.","pros":["Nothing to operate","Ready-made connectors"],"cons":["Per-event pricing","Customer data leaves our infrastructure"]}]',
     'UNDER_DISCUSSION', 'HIGH', 'ARCHITECTURAL',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003',
     'dddddddd-dddd-dddd-dddd-ddddddddd001', NULL,
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb002', 24,
     NOW() - INTERVAL '36 hours' + INTERVAL '24 hours' + INTERVAL '5 minutes' + INTERVAL '24 hours',
     1, NOW() - INTERVAL '36 hours' + INTERVAL '24 hours' + INTERVAL '5 minutes',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', NULL, NULL,
     NULL, NULL, NULL,
     '[{"system":"jira","key":"PLAT-204","url":"https://jira.acme.test/browse/PLAT-204"}]',
     '["data","architecture"]',
     NOW() - INTERVAL '36 hours', NOW() - INTERVAL '36 hours' + INTERVAL '24 hours' + INTERVAL '5 minutes',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002')
ON CONFLICT (id) DO NOTHING;

-- fff...003: Acme, overdue, under discussion.
INSERT INTO core.decisions (id, tenant_id, title, description, context, options, status, priority, decision_type,
                            owner_id, assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at,
                            escalation_level, escalated_at, escalated_to_id, decided_by_id, decided_at,
                            decision_rationale, selected_option, blocked_items, external_refs, tags,
                            created_at, updated_at, created_by_id) VALUES
    ('ffffffff-ffff-ffff-ffff-fffffffff003', '11111111-1111-1111-1111-111111111111',
     'Drop SAML single sign-on from the Q3 platform release?',
     'SAML SSO is the riskiest item of the Q3 release and is running two weeks late.',
     'Two enterprise renewals mention SSO; neither is due before November.',
     '[{"id":"opt-a","title":"Keep SSO in Q3","description":"Hold the release until SAML SSO is done.","pros":["Enterprise promise kept"],"cons":["Whole release slips about two weeks"]},'
     '{"id":"opt-b","title":"Ship without SSO","description":"Release on time and ship SAML SSO in the first Q4 drop.","pros":["Rest of the release reaches customers on time","SSO gets a proper security review"],"cons":["Sales must reset expectations with two accounts"]}]',
     'UNDER_DISCUSSION', 'HIGH', 'SCOPE',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003',
     NULL, NULL,
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb002', 24, NOW() - INTERVAL '3 days' + INTERVAL '24 hours',
     0, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, '["release","sso","enterprise"]',
     NOW() - INTERVAL '3 days', NOW() - INTERVAL '3 days' + INTERVAL '3 hours', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002')
ON CONFLICT (id) DO NOTHING;

-- fff...004: Acme, decided by Alice 50 hours after it was raised (before its due time).
INSERT INTO core.decisions (id, tenant_id, title, description, context, options, status, priority, decision_type,
                            owner_id, assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at,
                            escalation_level, escalated_at, escalated_to_id, decided_by_id, decided_at,
                            decision_rationale, selected_option, blocked_items, external_refs, tags,
                            created_at, updated_at, created_by_id) VALUES
    ('ffffffff-ffff-ffff-ffff-fffffffff004', '11111111-1111-1111-1111-111111111111',
     'Which project template should the welcome e-mail promote?',
     'The welcome e-mail links to one starter project; we need to pick which.',
     'Support data: 62% of new workspaces that create a project pick a board layout.',
     '[{"id":"opt-a","title":"Blank project with a tour","description":"An empty project with a five-step product tour.","pros":["Works for every use case"],"cons":["Empty screens are what we are trying to avoid"]},'
     '{"id":"opt-b","title":"Kanban starter","description":"A board with sample columns and cards the admin can edit.","pros":["Matches what most new workspaces build","Shows value on first open"],"cons":["Sample cards must be deleted by hand"]},'
     '{"id":"opt-c","title":"Template gallery","description":"Let the admin choose among six templates.","pros":["Fits more use cases"],"cons":["One more choice on day one","More to build and maintain"]}]',
     'DECIDED', 'NORMAL', 'UX',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001',
     'dddddddd-dddd-dddd-dddd-ddddddddd001', 'eeeeeeee-eeee-eeee-eeee-eeeeeeeee002',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001', 168, NOW() - INTERVAL '25 days' + INTERVAL '168 hours',
     0, NULL, NULL,
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001', NOW() - INTERVAL '25 days' + INTERVAL '50 hours',
     'Most new workspaces build a board anyway; starting them on one removes the empty-screen problem with the least extra work. The gallery can come later if the experiment works.',
     '{"id":"opt-b","title":"Kanban starter","description":"A board with sample columns and cards the admin can edit.","pros":["Matches what most new workspaces build","Shows value on first open"],"cons":["Sample cards must be deleted by hand"]}',
     NULL, NULL, '["onboarding","email"]',
     NOW() - INTERVAL '25 days', NOW() - INTERVAL '25 days' + INTERVAL '50 hours', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002')
ON CONFLICT (id) DO NOTHING;

-- fff...005: Acme, waiting for Alice, due in 6 days.
INSERT INTO core.decisions (id, tenant_id, title, description, context, options, status, priority, decision_type,
                            owner_id, assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at,
                            escalation_level, escalated_at, escalated_to_id, decided_by_id, decided_at,
                            decision_rationale, selected_option, blocked_items, external_refs, tags,
                            created_at, updated_at, created_by_id) VALUES
    ('ffffffff-ffff-ffff-ffff-fffffffff005', '11111111-1111-1111-1111-111111111111',
     'What discount should annual plans carry?',
     'The annual-billing outcome needs a price point before the hypothesis can be made ready.',
     'Competitors offer between 10% and 20% off for annual commitment.',
     '[{"id":"opt-a","title":"Two months free","description":"Annual price is ten times the monthly price (about 17% off).","pros":["Easy to explain","Strong pull towards annual"],"cons":["Gives away the most revenue"]},'
     '{"id":"opt-b","title":"10% off","description":"Annual price is the monthly price times twelve, minus 10%.","pros":["Keeps more revenue per seat"],"cons":["May not be enough to move monthly payers"]},'
     '{"id":"opt-c","title":"No discount","description":"Offer annual invoicing at the monthly rate.","pros":["No revenue given away"],"cons":["Little reason to switch"]}]',
     'NEEDS_INPUT', 'NORMAL', 'STRATEGIC',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001',
     'dddddddd-dddd-dddd-dddd-ddddddddd003', 'eeeeeeee-eeee-eeee-eeee-eeeeeeeee004',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001', 168, NOW() - INTERVAL '1 day' + INTERVAL '168 hours',
     0, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, '["pricing","billing"]',
     NOW() - INTERVAL '1 day', NOW() - INTERVAL '1 day', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002')
ON CONFLICT (id) DO NOTHING;

-- fff...006: Globex, overdue, blocks the pick-to-light pilot.
INSERT INTO core.decisions (id, tenant_id, title, description, context, options, status, priority, decision_type,
                            owner_id, assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at,
                            escalation_level, escalated_at, escalated_to_id, decided_by_id, decided_at,
                            decision_rationale, selected_option, blocked_items, external_refs, tags,
                            created_at, updated_at, created_by_id) VALUES
    ('ffffffff-ffff-ffff-ffff-fffffffff006', '22222222-2222-2222-2222-222222222222',
     'Which pick-to-light hardware for the aisle 3 pilot?',
     'The pilot cannot start until the light modules are ordered; lead time is three weeks.',
     'Aisle 3 has 480 bin locations and no network cabling along the shelves.',
     '[{"id":"opt-a","title":"Wired modules","description":"Bus-wired light modules with a controller per shelf run.","pros":["Cheaper per module","No batteries to replace"],"cons":["Needs cabling along every shelf","Two extra weeks of installation"]},'
     '{"id":"opt-b","title":"Wireless modules","description":"Battery-powered modules talking to a gateway over the air.","pros":["Installed in two days","Easy to move to another aisle"],"cons":["About 40% more per module","Batteries every 18 months"]}]',
     'UNDER_DISCUSSION', 'BLOCKING', 'TECHNICAL',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006',
     'dddddddd-dddd-dddd-dddd-ddddddddd004', 'eeeeeeee-eeee-eeee-eeee-eeeeeeeee005',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb003', 24, NOW() - INTERVAL '3 days' + INTERVAL '24 hours',
     0, NULL, NULL, NULL, NULL,
     NULL, NULL,
     '[{"type":"hypothesis","id":"eeeeeeee-eeee-eeee-eeee-eeeeeeeee005","title":"Pick-to-light on fast movers halves their mis-picks"}]',
     NULL, '["hardware","pilot"]',
     NOW() - INTERVAL '3 days', NOW() - INTERVAL '3 days' + INTERVAL '2 hours', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005')
ON CONFLICT (id) DO NOTHING;

-- fff...007: Globex, decided by Erin 20 hours after it was raised.
INSERT INTO core.decisions (id, tenant_id, title, description, context, options, status, priority, decision_type,
                            owner_id, assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at,
                            escalation_level, escalated_at, escalated_to_id, decided_by_id, decided_at,
                            decision_rationale, selected_option, blocked_items, external_refs, tags,
                            created_at, updated_at, created_by_id) VALUES
    ('ffffffff-ffff-ffff-ffff-fffffffff007', '22222222-2222-2222-2222-222222222222',
     'How often should the pick-error review meet?',
     'Shift leads review mis-picks by hand; the meeting takes an hour each time.',
     NULL,
     '[{"id":"opt-a","title":"Weekly review","description":"One hour every Monday with all shift leads.","pros":["Enough data per meeting to see patterns","Less time off the floor"],"cons":["Slower reaction to a bad day"]},'
     '{"id":"opt-b","title":"Daily stand-up","description":"Fifteen minutes at every shift change.","pros":["Problems caught the same day"],"cons":["Too little data per meeting","Adds up to more time off the floor"]}]',
     'DECIDED', 'NORMAL', 'OPERATIONAL',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005',
     'dddddddd-dddd-dddd-dddd-ddddddddd004', NULL,
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb003', 168, NOW() - INTERVAL '10 days' + INTERVAL '168 hours',
     0, NULL, NULL,
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005', NOW() - INTERVAL '10 days' + INTERVAL '20 hours',
     'A daily slot has too few mis-picks to show a pattern; the scanner dashboard covers same-day alerts.',
     '{"id":"opt-a","title":"Weekly review","description":"One hour every Monday with all shift leads.","pros":["Enough data per meeting to see patterns","Less time off the floor"],"cons":["Slower reaction to a bad day"]}',
     NULL, NULL, '["process"]',
     NOW() - INTERVAL '10 days', NOW() - INTERVAL '10 days' + INTERVAL '20 hours', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006')
ON CONFLICT (id) DO NOTHING;
