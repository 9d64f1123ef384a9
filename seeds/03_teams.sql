-- Demo seed 03: teams and team members.
--
-- Acme: Growth (`growth`, lead Bob) and Platform (`platform`, lead Carol).
-- Globex: Operations (`operations`, lead Frank).
-- Each team's lead is also its LEAD member; team_members carries the
-- tenant_id the migrations add, so every membership stays in its tenant.

INSERT INTO core.teams (id, tenant_id, name, slug, description, icon_url, color, lead_id, is_active,
                        settings, created_at, updated_at) VALUES
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001', '11111111-1111-1111-1111-111111111111',
     'Growth', 'growth', 'Activation, onboarding and self-serve revenue', NULL, '#22c55e',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', true, '{"slack_channel":"#team-growth"}',
     NOW() - INTERVAL '84 days', NOW() - INTERVAL '84 days'),
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb002', '11111111-1111-1111-1111-111111111111',
     'Platform', 'platform', 'APIs, infrastructure and reliability', NULL, '#3b82f6',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003', true, '{"slack_channel":"#team-platform"}',
     NOW() - INTERVAL '79 days', NOW() - INTERVAL '79 days'),
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb003', '22222222-2222-2222-2222-222222222222',
     'Operations', 'operations', 'Warehouse and fulfilment tooling', NULL, '#f97316',
     'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006', true, '{"slack_channel":"#ops-tooling"}',
     NOW() - INTERVAL '79 days', NOW() - INTERVAL '79 days')
ON CONFLICT (id) DO NOTHING;

INSERT INTO core.team_members (id, tenant_id, team_id, user_id, team_role, joined_at, added_by_id) VALUES
    -- Acme / Growth
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb101', '11111111-1111-1111-1111-111111111111',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', 'LEAD',
     NOW() - INTERVAL '84 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001'),
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb102', '11111111-1111-1111-1111-111111111111',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003', 'MEMBER',
     NOW() - INTERVAL '78 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002'),
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb103', '11111111-1111-1111-1111-111111111111',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa004', 'OBSERVER',
     NOW() - INTERVAL '59 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002'),
    -- Acme / Platform
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb104', '11111111-1111-1111-1111-111111111111',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003', 'LEAD',
     NOW() - INTERVAL '79 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001'),
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb105', '11111111-1111-1111-1111-111111111111',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', 'MEMBER',
     NOW() - INTERVAL '79 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001'),
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb106', '11111111-1111-1111-1111-111111111111',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb002', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001', 'OBSERVER',
     NOW() - INTERVAL '79 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001'),
    -- Globex / Operations
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb107', '22222222-2222-2222-2222-222222222222',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb003', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006', 'LEAD',
     NOW() - INTERVAL '79 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005'),
    ('bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb108', '22222222-2222-2222-2222-222222222222',
     'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb003', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005', 'OBSERVER',
     NOW() - INTERVAL '79 days', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005')
ON CONFLICT (id) DO NOTHING;
