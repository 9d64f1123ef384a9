-- The permission catalogue and the system roles of product.md. They are
-- reference data every tenant needs (CreateTenant gives its owner the
-- system OWNER role), so they ship with the schema rather than the demo
-- seeds. Predictable ids: permissions 00000000-0000-4000-8001-0000000000NN,
-- system roles 00000000-0000-4000-8002-00000000000N.

INSERT INTO core.permissions (id, code, name, description, category) VALUES
    ('00000000-0000-4000-8001-000000000001', 'tenant.read',         'Read tenant',          'See the tenant and its settings',              'TENANT'),
    ('00000000-0000-4000-8001-000000000002', 'tenant.manage',       'Manage tenant',        'Change the tenant name, logo and settings',    'TENANT'),
    ('00000000-0000-4000-8001-000000000003', 'user.read',           'Read users',           'See the users of the tenant',                  'USER'),
    ('00000000-0000-4000-8001-000000000004', 'user.manage',         'Manage users',         'Create, change and deactivate users',          'USER'),
    ('00000000-0000-4000-8001-000000000005', 'role.read',           'Read roles',           'See roles and the permission catalogue',       'ROLE'),
    ('00000000-0000-4000-8001-000000000006', 'role.manage',         'Manage roles',         'Create, change and delete custom roles',       'ROLE'),
    ('00000000-0000-4000-8001-000000000007', 'team.read',           'Read teams',           'See teams and their members',                  'TEAM'),
    ('00000000-0000-4000-8001-000000000008', 'team.manage',         'Manage teams',         'Create, change and archive teams',             'TEAM'),
    ('00000000-0000-4000-8001-000000000009', 'outcome.read',        'Read outcomes',        'See outcomes',                                 'PLANNING'),
    ('00000000-0000-4000-8001-000000000010', 'outcome.write',       'Write outcomes',       'Create and change outcomes',                   'PLANNING'),
    ('00000000-0000-4000-8001-000000000011', 'outcome.validate',    'Validate outcomes',    'Mark outcomes validated or invalidated',       'PLANNING'),
    ('00000000-0000-4000-8001-000000000012', 'hypothesis.read',     'Read hypotheses',      'See hypotheses',                               'PLANNING'),
    ('00000000-0000-4000-8001-000000000013', 'hypothesis.write',    'Write hypotheses',     'Create, change and advance hypotheses',        'PLANNING'),
    ('00000000-0000-4000-8001-000000000014', 'hypothesis.conclude', 'Conclude hypotheses',  'Conclude hypotheses with results',             'PLANNING'),
    ('00000000-0000-4000-8001-000000000015', 'decision.read',       'Read decisions',       'See decisions and their comments',             'DECISION'),
    ('00000000-0000-4000-8001-000000000016', 'decision.write',      'Write decisions',      'Create, change and assign decisions',          'DECISION'),
    ('00000000-0000-4000-8001-000000000017', 'decision.resolve',    'Resolve decisions',    'Choose an option and resolve a decision',      'DECISION'),
    ('00000000-0000-4000-8001-000000000018', 'decision.escalate',   'Escalate decisions',   'Escalate a decision up the management chain',  'DECISION'),
    ('00000000-0000-4000-8001-000000000019', 'comment.write',       'Comment',              'Comment on decisions',                         'DECISION'),
    ('00000000-0000-4000-8001-000000000020', 'stakeholder.read',    'Read stakeholders',    'See stakeholders',                             'DECISION'),
    ('00000000-0000-4000-8001-000000000021', 'stakeholder.manage',  'Manage stakeholders',  'Create and change stakeholders',               'DECISION'),
    ('00000000-0000-4000-8001-000000000022', 'audit.read',          'Read audit trail',     'See the tenant audit trail',                   'AUDIT')
ON CONFLICT (id) DO NOTHING;

INSERT INTO core.roles (id, tenant_id, code, name, description, category, level, is_system_role, created_at, updated_at) VALUES
    ('00000000-0000-4000-8002-000000000001', NULL, 'OWNER',        'Owner',        'Everything, including tenant settings',          'SYSTEM',      'L9_OWNER',          true, now(), now()),
    ('00000000-0000-4000-8002-000000000002', NULL, 'ADMIN',        'Administrator','Everything but tenant settings',                 'SYSTEM',      'L8_CXXX',           true, now(), now()),
    ('00000000-0000-4000-8002-000000000003', NULL, 'PRODUCT_LEAD', 'Product lead', 'Runs outcomes, hypotheses, decisions and teams', 'PRODUCT',     'L4_MANAGER',        true, now(), now()),
    ('00000000-0000-4000-8002-000000000004', NULL, 'ENGINEER',     'Engineer',     'Works on hypotheses and decisions',              'ENGINEERING', 'L1_INDIVIDUAL',     true, now(), now()),
    ('00000000-0000-4000-8002-000000000005', NULL, 'VIEWER',       'Viewer',       'Reads only',                                     'SYSTEM',      'L1_INDIVIDUAL',     true, now(), now()),
    ('00000000-0000-4000-8002-000000000006', NULL, 'STAKEHOLDER',  'Stakeholder',  'Reads, comments and resolves decisions',         'STAKEHOLDER', 'L5_SENIOR_MANAGER', true, now(), now())
ON CONFLICT (id) DO NOTHING;

-- Reads shared by every system role. audit.read is deliberately not a
-- plain read: the trail names people, IPs and old values.
WITH grants (role_code, permission_code) AS (
    SELECT 'OWNER', code FROM core.permissions
    UNION ALL
    SELECT 'ADMIN', code FROM core.permissions WHERE code <> 'tenant.manage'
    UNION ALL
    SELECT r.role_code, p.code
    FROM (VALUES ('PRODUCT_LEAD'), ('ENGINEER'), ('VIEWER'), ('STAKEHOLDER')) AS r(role_code)
    CROSS JOIN core.permissions p
    WHERE p.code IN ('tenant.read', 'user.read', 'role.read', 'team.read', 'outcome.read',
                     'hypothesis.read', 'decision.read', 'stakeholder.read')
    UNION ALL
    SELECT 'PRODUCT_LEAD', unnest(ARRAY['team.manage', 'outcome.write', 'outcome.validate', 'hypothesis.write',
                                        'hypothesis.conclude', 'decision.write', 'decision.resolve',
                                        'decision.escalate', 'comment.write', 'stakeholder.manage'])
    UNION ALL
    SELECT 'ENGINEER', unnest(ARRAY['hypothesis.write', 'decision.write', 'comment.write'])
    UNION ALL
    SELECT 'STAKEHOLDER', unnest(ARRAY['comment.write', 'decision.resolve'])
)
INSERT INTO core.role_permissions (role_id, permission_id)
SELECT r.id, p.id
FROM grants g
JOIN core.roles r ON r.code = g.role_code AND r.tenant_id IS NULL
JOIN core.permissions p ON p.code = g.permission_code
ON CONFLICT DO NOTHING;
