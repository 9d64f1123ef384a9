//! The suite-level integration tests: one test binary (`cargo test --test
//! suite`), one module per area, all on the harness in `common`.

mod common;
mod foundation;
mod identity_audit;
mod identity_auth;
mod identity_cross_tenant;
mod identity_jwt;
mod identity_roles;
mod identity_stale_tokens;
mod identity_support;
mod identity_teams;
mod identity_tenants;
mod identity_tokens;
mod identity_users;
mod planning;
