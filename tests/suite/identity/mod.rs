//! Identity: tenants, users, roles, teams, login and tokens, the audit
//! trail; `support` holds what only identity's tests need.

mod audit;
mod auth;
mod cross_tenant;
pub mod jwt;
mod login_security;
mod roles;
mod security;
mod stale_tokens;
pub mod support;
pub mod teams;
mod tenants;
mod tokens;
mod users;
