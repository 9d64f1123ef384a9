//! The identity service (`codeops.identity.v1`): tenants, users, roles,
//! permissions, teams, login and tokens, and reads of the audit trail.
//! It owns those tables and their migrations, and holds the only signing key.

mod audit_logs;
mod auth;
mod internal;
mod password;
pub use password::Hasher;
mod roles;
mod teams;
pub mod tenants;
mod throttle;
mod users;

use std::sync::Arc;
use std::time::Duration;

use codeops_platform::server::ServiceSpec;
use codeops_platform::{ApiError, Db, Problem, WriteTx};
use codeops_proto::identity::audit_service_server::AuditServiceServer;
use codeops_proto::identity::auth_service_server::AuthServiceServer;
use codeops_proto::identity::internal_service_server::InternalServiceServer;
use codeops_proto::identity::role_service_server::RoleServiceServer;
use codeops_proto::identity::team_service_server::TeamServiceServer;
use codeops_proto::identity::tenant_service_server::TenantServiceServer;
use codeops_proto::identity::user_service_server::UserServiceServer;
use codeops_tenant::Access::{Authenticated, Operator, Public, Require, Service};
use codeops_tenant::Permission as P;
use codeops_tenant::{
    MethodAccess, Permission, PermissionSet, PublicKey, TenantContext, TokenSigner,
};
use tonic::codec::CompressionEncoding::Gzip;
use tonic::service::Routes;

/// Identity's migrations (`migrations/identity`), applied first.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../../migrations/identity");
    // The three services share one history table; the others' rows are not missing.
    migrator.set_ignore_missing(true);
    migrator
}

pub struct IdentityConfig {
    pub signer: Arc<TokenSigner>,
    /// Keys published by GetPublicKeys (the current one first).
    pub public_keys: Vec<PublicKey>,
    pub refresh_ttl: Duration,
    pub bcrypt_cost: u32,
    /// Hashes that may run at once; 0: all cores but one.
    pub bcrypt_threads: usize,
    /// Where identity counts its own events (failed logins, lock-outs).
    pub metrics: codeops_platform::Metrics,
}

const fn rpc(path: &'static str, access: codeops_tenant::Access) -> MethodAccess {
    MethodAccess::new(path, access)
}

/// Who may call each identity method: the permission check lives here, next
/// to the list of RPCs, not in handler bodies.
pub const ACCESS: &[MethodAccess] = &[
    rpc("/codeops.identity.v1.AuthService/Login", Public),
    rpc("/codeops.identity.v1.AuthService/Refresh", Public),
    rpc("/codeops.identity.v1.AuthService/GetPublicKeys", Public),
    rpc("/codeops.identity.v1.AuthService/Logout", Authenticated),
    rpc(
        "/codeops.identity.v1.AuthService/ChangePassword",
        Authenticated,
    ),
    rpc(
        "/codeops.identity.v1.AuthService/GetCurrentUser",
        Authenticated,
    ),
    rpc(
        "/codeops.identity.v1.TenantService/GetTenant",
        Require(P::TenantRead),
    ),
    rpc(
        "/codeops.identity.v1.TenantService/UpdateTenant",
        Require(P::TenantManage),
    ),
    rpc("/codeops.identity.v1.TenantService/CreateTenant", Operator),
    rpc("/codeops.identity.v1.TenantService/SuspendTenant", Operator),
    rpc(
        "/codeops.identity.v1.TenantService/ReactivateTenant",
        Operator,
    ),
    rpc("/codeops.identity.v1.TenantService/CancelTenant", Operator),
    rpc("/codeops.identity.v1.TenantService/AppointOwner", Operator),
    rpc(
        "/codeops.identity.v1.UserService/CreateUser",
        Require(P::UserManage),
    ),
    rpc(
        "/codeops.identity.v1.UserService/GetUser",
        Require(P::UserRead),
    ),
    rpc(
        "/codeops.identity.v1.UserService/ListUsers",
        Require(P::UserRead),
    ),
    rpc(
        "/codeops.identity.v1.UserService/UpdateUser",
        Require(P::UserManage),
    ),
    rpc(
        "/codeops.identity.v1.UserService/DeactivateUser",
        Require(P::UserManage),
    ),
    rpc(
        "/codeops.identity.v1.UserService/AssignRole",
        Require(P::UserManage),
    ),
    rpc(
        "/codeops.identity.v1.RoleService/ListRoles",
        Require(P::RoleRead),
    ),
    rpc(
        "/codeops.identity.v1.RoleService/GetRole",
        Require(P::RoleRead),
    ),
    rpc(
        "/codeops.identity.v1.RoleService/CreateRole",
        Require(P::RoleManage),
    ),
    rpc(
        "/codeops.identity.v1.RoleService/UpdateRole",
        Require(P::RoleManage),
    ),
    rpc(
        "/codeops.identity.v1.RoleService/DeleteRole",
        Require(P::RoleManage),
    ),
    rpc(
        "/codeops.identity.v1.RoleService/ListPermissions",
        Require(P::RoleRead),
    ),
    rpc(
        "/codeops.identity.v1.RoleService/SetRolePermissions",
        Require(P::RoleManage),
    ),
    rpc(
        "/codeops.identity.v1.TeamService/CreateTeam",
        Require(P::TeamManage),
    ),
    rpc(
        "/codeops.identity.v1.TeamService/GetTeam",
        Require(P::TeamRead),
    ),
    rpc(
        "/codeops.identity.v1.TeamService/ListTeams",
        Require(P::TeamRead),
    ),
    rpc(
        "/codeops.identity.v1.TeamService/UpdateTeam",
        Require(P::TeamManage),
    ),
    rpc(
        "/codeops.identity.v1.TeamService/DeleteTeam",
        Require(P::TeamManage),
    ),
    rpc(
        "/codeops.identity.v1.TeamService/AddTeamMember",
        Require(P::TeamManage),
    ),
    rpc(
        "/codeops.identity.v1.TeamService/RemoveTeamMember",
        Require(P::TeamManage),
    ),
    rpc(
        "/codeops.identity.v1.TeamService/ListTeamMembers",
        Require(P::TeamRead),
    ),
    rpc(
        "/codeops.identity.v1.AuditService/ListAuditLogs",
        Require(P::AuditRead),
    ),
    rpc(
        "/codeops.identity.v1.InternalService/ListRevocations",
        Service,
    ),
    rpc("/codeops.identity.v1.InternalService/GetManager", Service),
    rpc(
        "/codeops.identity.v1.InternalService/GetSlaDefaults",
        Service,
    ),
];

pub const GRPC_SERVICES: &[&str] = &[
    "codeops.identity.v1.AuthService",
    "codeops.identity.v1.TenantService",
    "codeops.identity.v1.UserService",
    "codeops.identity.v1.RoleService",
    "codeops.identity.v1.TeamService",
    "codeops.identity.v1.AuditService",
    "codeops.identity.v1.InternalService",
];

/// State the identity handlers share.
pub(crate) struct Identity {
    pub db: Db,
    pub config: IdentityConfig,
    pub passwords: password::Hasher,
    pub throttle: throttle::LoginThrottle,
}

/// The handle every identity gRPC service is implemented on.
#[derive(Clone)]
pub(crate) struct Svc(Arc<Identity>);

impl std::ops::Deref for Svc {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.0
    }
}

impl Svc {
    /// The transaction of a write by `ctx`, after re-reading the caller.
    ///
    /// Access tokens are verified locally and may be up to one token
    /// lifetime old. Identity's own writes (grants above all) must not act
    /// on stale claims: a caller who has been deactivated, whose tenant is
    /// no longer open, or whose role lost a permission the token still
    /// claims is refused here, before anything is written; so is a token
    /// whose session (refresh-token family) has been revoked or has expired
    /// — logout and password change end a stolen token's writes at once.
    /// The caller's row stays share-locked until commit, so a concurrent
    /// deactivation or role change waits for this write instead of racing
    /// it. One round trip reads all of it.
    pub(crate) async fn write_tx(&self, ctx: &TenantContext) -> Result<WriteTx, ApiError> {
        let mut tx = self.db.write(ctx).await?;
        let current = sqlx::query!(
            r#"SELECT coalesce(u.is_active, false) AS "active!", t.status,
                   ARRAY(SELECT p.code::text FROM core.role_permissions rp
                         JOIN core.permissions p ON p.id = rp.permission_id
                         WHERE rp.role_id = u.role_id) AS "codes!",
                   EXISTS (SELECT 1 FROM core.refresh_tokens rt
                           WHERE rt.tenant_id = u.tenant_id AND rt.family_id = $3 AND rt.user_id = u.id
                             AND rt.revoked_at IS NULL AND rt.expires_at > now()) AS "session_live!"
               FROM core.users u JOIN core.tenants t ON t.id = u.tenant_id
               WHERE u.tenant_id = $1 AND u.id = $2
               FOR SHARE OF u"#,
            ctx.tenant_id,
            ctx.user_id,
            ctx.session_id,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(current) = current else {
            return Err(ApiError::Unauthenticated(STALE_TOKEN));
        };
        let (active, tenant_status, codes, session_live) = (
            current.active,
            current.status,
            current.codes,
            current.session_live,
        );
        let held: PermissionSet = codes
            .iter()
            .filter_map(|c| Permission::from_code(c))
            .collect();
        if !active
            || !auth::tenant_open(tenant_status.as_deref())
            || !held.is_superset(ctx.permissions)
        {
            return Err(ApiError::Unauthenticated(STALE_TOKEN));
        }
        if !session_live {
            return Err(ApiError::Unauthenticated(SESSION_REVOKED));
        }
        Ok(tx)
    }
}

const STALE_TOKEN: Problem = Problem::new(
    "TOKEN_STALE",
    "the access token no longer matches the account; log in again",
);
const SESSION_REVOKED: Problem = Problem::new(
    "SESSION_REVOKED",
    "the access token's session has ended (logout, password change or revocation); log in again",
);

macro_rules! compressed {
    ($server:ident, $svc:expr) => {
        $server::new($svc.clone())
            .accept_compressed(Gzip)
            .send_compressed(Gzip)
    };
}

pub fn spec(db: Db, config: IdentityConfig) -> ServiceSpec {
    let passwords = password::Hasher::new(config.bcrypt_cost, config.bcrypt_threads);
    let throttle = throttle::LoginThrottle::new(config.metrics.clone());
    let svc = Svc(Arc::new(Identity {
        db,
        config,
        passwords,
        throttle,
    }));
    let routes = Routes::new(compressed!(AuthServiceServer, svc))
        .add_service(compressed!(TenantServiceServer, svc))
        .add_service(compressed!(UserServiceServer, svc))
        .add_service(compressed!(RoleServiceServer, svc))
        .add_service(compressed!(TeamServiceServer, svc))
        .add_service(compressed!(AuditServiceServer, svc))
        .add_service(compressed!(InternalServiceServer, svc));
    ServiceSpec {
        name: "identity",
        grpc_services: GRPC_SERVICES,
        routes,
        access: ACCESS,
    }
}
