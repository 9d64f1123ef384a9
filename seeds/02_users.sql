-- Demo seed 02: users.
--
-- Acme: Alice (OWNER) <- Bob (PRODUCT_LEAD) <- Carol (ENGINEER), Dan (VIEWER).
-- Globex: Erin (OWNER) <- Frank (ENGINEER). Arrows point at the manager.
-- Every user's password is `password123` (bcrypt, cost 10); refresh_token
-- stays NULL (refresh tokens live, hashed, in core.refresh_tokens).
-- Roles are the system roles of migration 10002:
--   OWNER 00000000-0000-4000-8002-000000000001, PRODUCT_LEAD ...003,
--   ENGINEER ...004, VIEWER ...005.
-- Managers are inserted before their reports, one level per statement.

-- Level 0: the tenant owners.
INSERT INTO core.users (id, tenant_id, email, password_hash, first_name, last_name, title, department,
                        avatar_url, role_id, manager_id, is_active, last_login_at, refresh_token,
                        created_at, updated_at) VALUES
    ('aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001', '11111111-1111-1111-1111-111111111111', 'alice@acme.test',
     '$2b$10$lJdP4.ww3.KP25JFnX1Ce.vD18jS6rz4LeyzVA.ikyYOR3DzNwLHO', 'Alice', 'Anders',
     'Chief Executive Officer', 'Executive', NULL,
     '00000000-0000-4000-8002-000000000001', NULL, true, NOW() - INTERVAL '1 day', NULL,
     NOW() - INTERVAL '90 days', NOW() - INTERVAL '90 days'),
    ('aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005', '22222222-2222-2222-2222-222222222222', 'erin@globex.test',
     '$2b$10$lJdP4.ww3.KP25JFnX1Ce.vD18jS6rz4LeyzVA.ikyYOR3DzNwLHO', 'Erin', 'Evans',
     'Founder & CEO', 'Executive', NULL,
     '00000000-0000-4000-8002-000000000001', NULL, true, NOW() - INTERVAL '2 days', NULL,
     NOW() - INTERVAL '95 days', NOW() - INTERVAL '95 days')
ON CONFLICT (id) DO NOTHING;

-- Level 1: reports of the owners.
INSERT INTO core.users (id, tenant_id, email, password_hash, first_name, last_name, title, department,
                        avatar_url, role_id, manager_id, is_active, last_login_at, refresh_token,
                        created_at, updated_at) VALUES
    ('aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', '11111111-1111-1111-1111-111111111111', 'bob@acme.test',
     '$2b$10$lJdP4.ww3.KP25JFnX1Ce.vD18jS6rz4LeyzVA.ikyYOR3DzNwLHO', 'Bob', 'Brown',
     'Head of Product', 'Product', NULL,
     '00000000-0000-4000-8002-000000000003', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001', true,
     NOW() - INTERVAL '3 hours', NULL,
     NOW() - INTERVAL '85 days', NOW() - INTERVAL '85 days'),
    ('aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006', '22222222-2222-2222-2222-222222222222', 'frank@globex.test',
     '$2b$10$lJdP4.ww3.KP25JFnX1Ce.vD18jS6rz4LeyzVA.ikyYOR3DzNwLHO', 'Frank', 'Fischer',
     'Staff Engineer', 'Engineering', NULL,
     '00000000-0000-4000-8002-000000000004', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005', true,
     NOW() - INTERVAL '5 hours', NULL,
     NOW() - INTERVAL '80 days', NOW() - INTERVAL '80 days')
ON CONFLICT (id) DO NOTHING;

-- Level 2: Bob's reports.
INSERT INTO core.users (id, tenant_id, email, password_hash, first_name, last_name, title, department,
                        avatar_url, role_id, manager_id, is_active, last_login_at, refresh_token,
                        created_at, updated_at) VALUES
    ('aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003', '11111111-1111-1111-1111-111111111111', 'carol@acme.test',
     '$2b$10$lJdP4.ww3.KP25JFnX1Ce.vD18jS6rz4LeyzVA.ikyYOR3DzNwLHO', 'Carol', 'Chen',
     'Senior Software Engineer', 'Engineering', NULL,
     '00000000-0000-4000-8002-000000000004', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', true,
     NOW() - INTERVAL '6 hours', NULL,
     NOW() - INTERVAL '80 days', NOW() - INTERVAL '80 days'),
    ('aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa004', '11111111-1111-1111-1111-111111111111', 'dan@acme.test',
     '$2b$10$lJdP4.ww3.KP25JFnX1Ce.vD18jS6rz4LeyzVA.ikyYOR3DzNwLHO', 'Dan', 'Diaz',
     'Business Analyst', 'Operations', NULL,
     '00000000-0000-4000-8002-000000000005', 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002', true,
     NULL, NULL,
     NOW() - INTERVAL '60 days', NOW() - INTERVAL '60 days')
ON CONFLICT (id) DO NOTHING;
