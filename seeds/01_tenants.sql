-- Demo seed 01: tenants.
--
-- Two ACTIVE tenants, Acme Corp (slug `acme`) and Globex (slug `globex`),
-- with the decision SLA defaults of product.md in their settings.
-- Fixed ids; every insert is ON CONFLICT (id) DO NOTHING, so loading the
-- seeds again changes nothing. Timestamps are relative to NOW().
--
-- Seed id scheme (all files):
--   tenants            11111111-1111-1111-1111-111111111111 (acme), 22222222-... (globex)
--   users              aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa0NN
--   teams              bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb0NN, team members ...bbbbbbbbb1NN
--   stakeholders       cccccccc-cccc-cccc-cccc-ccccccccc0NN
--   outcomes           dddddddd-dddd-dddd-dddd-ddddddddd0NN
--   hypotheses         eeeeeeee-eeee-eeee-eeee-eeeeeeeee0NN
--   decisions          ffffffff-ffff-ffff-ffff-fffffffff0NN, comments ...fffffffff1NN
-- System roles and permissions come from migration 10002, not from here.

INSERT INTO core.tenants (id, name, slug, logo_url, settings, status, created_at, updated_at) VALUES
    ('11111111-1111-1111-1111-111111111111', 'Acme Corp', 'acme', NULL,
     '{"sla_defaults":{"blocking_hours":24,"high_hours":72,"normal_hours":168,"low_hours":336},"timezone":"UTC"}',
     'ACTIVE', NOW() - INTERVAL '120 days', NOW() - INTERVAL '120 days'),
    ('22222222-2222-2222-2222-222222222222', 'Globex', 'globex', NULL,
     '{"sla_defaults":{"blocking_hours":24,"high_hours":72,"normal_hours":168,"low_hours":336},"timezone":"Europe/Berlin"}',
     'ACTIVE', NOW() - INTERVAL '100 days', NOW() - INTERVAL '100 days')
ON CONFLICT (id) DO NOTHING;
