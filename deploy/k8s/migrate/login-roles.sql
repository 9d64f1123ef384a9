-- Login roles for the services, one per service. Run after `codeops migrate`,
-- as the schema owner: the migration Job's second step does it; by hand,
--
--   CODEOPS_IDENTITY_DB_PASSWORD=… CODEOPS_PLANNING_DB_PASSWORD=… \
--   CODEOPS_DECISION_DB_PASSWORD=… \
--     psql "$OWNER_URL" -X -v max_connections=30 -f deploy/k8s/migrate/login-roles.sql
--
-- (psql 15 or later, for \getenv; -v identity_password=… etc. work too).
--
-- The migrations create the service roles codeops_identity, codeops_planning
-- and codeops_decision NOLOGIN: they hold the grants, row-level security
-- applies to them, nobody logs in as them. Each service logs in as a role of
-- its own that holds nothing itself (NOINHERIT) and may only `SET ROLE` to
-- its service role, which the pool does on every connection
-- (CODEOPS_DB_SET_ROLE=true, the default). A leaked planning password thus
-- reaches planning's tables and nothing else, and the schema owner's
-- credential stays with the migration Job.
--
-- Idempotent: re-running it creates what is missing and resets passwords
-- and limits (rotate a password: change the Secret, re-run the Job, restart
-- that service). `max_connections` caps each login role's sessions:
-- (replicas + maxSurge) x CODEOPS_DB_MAX_CONNECTIONS, plus a little, so one
-- service cannot take the whole server.

\set ON_ERROR_STOP on

\if :{?identity_password}
\else
\getenv identity_password CODEOPS_IDENTITY_DB_PASSWORD
\endif
\if :{?planning_password}
\else
\getenv planning_password CODEOPS_PLANNING_DB_PASSWORD
\endif
\if :{?decision_password}
\else
\getenv decision_password CODEOPS_DECISION_DB_PASSWORD
\endif
\if :{?max_connections}
\else
\set max_connections 30
\endif
-- Refuse placeholders and short passwords (secrets.example.yaml holds
-- CHANGE-ME): a guessable password would open a service's tables.
\if :{?identity_password} \else \set identity_password '' \endif
\if :{?planning_password} \else \set planning_password '' \endif
\if :{?decision_password} \else \set decision_password '' \endif
SELECT length(:'identity_password') >= 16 AND length(:'planning_password') >= 16
   AND length(:'decision_password') >= 16 AS passwords_ok \gset
\if :passwords_ok
\else
DO $$ BEGIN RAISE EXCEPTION 'login-roles.sql: every service password must be at least 16 characters'; END $$;
\endif

SELECT format('CREATE ROLE %I LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', r)
  FROM unnest(ARRAY['codeops_identity_login', 'codeops_planning_login', 'codeops_decision_login']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
\gexec

-- The attributes again, for a role someone created by hand.
ALTER ROLE codeops_identity_login LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT :max_connections PASSWORD :'identity_password';
ALTER ROLE codeops_planning_login LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT :max_connections PASSWORD :'planning_password';
ALTER ROLE codeops_decision_login LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT :max_connections PASSWORD :'decision_password';

-- Membership only to SET ROLE: NOINHERIT, the login role cannot use the
-- service role's grants until it takes the role. The pool checks after
-- SET ROLE that the role is no superuser and cannot bypass RLS.
SELECT format('GRANT %I TO %I', service, service || '_login')
  FROM unnest(ARRAY['codeops_identity', 'codeops_planning', 'codeops_decision']) AS service
 WHERE NOT pg_has_role(service || '_login', service, 'MEMBER')
\gexec

SELECT format('GRANT CONNECT ON DATABASE %I TO codeops_identity_login, codeops_planning_login, codeops_decision_login',
              current_database())
\gexec
