-- Demo seed 05: outcomes.
--
-- Acme: week-1 activation (IN_PROGRESS, Growth), API latency (VALIDATED,
-- Platform, validated by Bob) and self-serve annual billing (DRAFT, Growth).
-- Globex: fewer pick errors (IN_PROGRESS, Operations).
-- JSON columns: target_metrics / current_metrics are arrays of metric
-- objects, external_refs an array of {system, key, url}, tags an array of
-- strings.

INSERT INTO core.outcomes (id, tenant_id, title, description, success_criteria, target_metrics, current_metrics,
                           status, priority, team_id, owner_id, target_date, started_at, validated_at,
                           invalidated_at, validation_notes, validated_by_id, invalidated_by_id, external_refs,
                           tags, created_at, updated_at, created_by_id) VALUES
    -- Acme: in progress
    ('dddddddd-dddd-dddd-dddd-ddddddddd001', '11111111-1111-1111-1111-111111111111',
     'Raise week-1 activation to 45%',
     'Too many new workspaces never invite a teammate or create a first project in their first week.',
     'At least 45% of workspaces created in a calendar month are activated (teammate invited and first project created) within 7 days, for two consecutive months.',
     '[{"key":"week1_activation_rate","label":"Week-1 activation","unit":"percent","baseline":31,"target":45}]',
     '[{"key":"week1_activation_rate","label":"Week-1 activation","unit":"percent","value":36.5}]',
     'IN_PROGRESS', 'HIGH', 'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002',
     CURRENT_DATE + 60, NOW() - INTERVAL '45 days', NULL,
     NULL, NULL, NULL, NULL,
     '[{"system":"jira","key":"GROW-12","url":"https://jira.acme.test/browse/GROW-12"}]',
     '["activation","onboarding","q3"]',
     NOW() - INTERVAL '50 days', NOW() - INTERVAL '2 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002'),
    -- Acme: validated
    ('dddddddd-dddd-dddd-dddd-ddddddddd002', '11111111-1111-1111-1111-111111111111',
     'Cut p95 API latency below 300 ms',
     'Slow list endpoints are the top complaint of enterprise admins.',
     'p95 latency of the public API below 300 ms for 14 consecutive days.',
     '[{"key":"api_p95_latency_ms","label":"API p95 latency","unit":"ms","baseline":820,"target":300}]',
     '[{"key":"api_p95_latency_ms","label":"API p95 latency","unit":"ms","value":240}]',
     'VALIDATED', 'MEDIUM', 'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003',
     CURRENT_DATE - 5, NOW() - INTERVAL '70 days', NOW() - INTERVAL '10 days',
     NULL, 'p95 held at 220-260 ms for 21 days after connection pooling and the new list indexes shipped.',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', NULL,
     '[{"system":"grafana","key":"api-latency","url":"https://grafana.acme.test/d/api-latency"}]',
     '["performance","api","enterprise"]',
     NOW() - INTERVAL '75 days', NOW() - INTERVAL '10 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003'),
    -- Acme: draft
    ('dddddddd-dddd-dddd-dddd-ddddddddd003', '11111111-1111-1111-1111-111111111111',
     'Launch self-serve annual billing',
     'Customers on monthly plans ask for annual invoices; today that needs a sales call.',
     '15% of new paid workspaces choose an annual plan without talking to sales.',
     '[{"key":"annual_plan_share","label":"Share of new paid workspaces on annual plans","unit":"percent","baseline":4,"target":15}]',
     NULL,
     'DRAFT', 'LOW', 'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002',
     CURRENT_DATE + 120, NULL, NULL,
     NULL, NULL, NULL, NULL,
     '[]',
     '["billing","revenue"]',
     NOW() - INTERVAL '5 days', NOW() - INTERVAL '5 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002'),
    -- Globex: in progress
    ('dddddddd-dddd-dddd-dddd-ddddddddd004', '22222222-2222-2222-2222-222222222222',
     'Reduce warehouse pick errors by 30%',
     'Mis-picks cause most returns at the Leipzig warehouse.',
     'Pick error rate at or below 0.7% of order lines for a full month.',
     '[{"key":"pick_error_rate","label":"Pick error rate","unit":"percent","baseline":1.0,"target":0.7}]',
     '[{"key":"pick_error_rate","label":"Pick error rate","unit":"percent","value":0.92}]',
     'IN_PROGRESS', 'CRITICAL', 'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb003', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005',
     CURRENT_DATE + 45, NOW() - INTERVAL '30 days', NULL,
     NULL, NULL, NULL, NULL,
     '[{"system":"linear","key":"OPS-7","url":"https://linear.globex.test/issue/OPS-7"}]',
     '["warehouse","quality"]',
     NOW() - INTERVAL '35 days', NOW() - INTERVAL '30 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005')
ON CONFLICT (id) DO NOTHING;
