//! Helpers of the identity tests: seeded ids, users with chosen
//! permissions, and an identity server whose signing key the test holds
//! (to forge tokens). The generic checks every service's tests use live in
//! `common::checks` and are re-exported here.

#![allow(dead_code)]

use std::net::SocketAddr;

use codeops::suite::{Keys, Service, Suite, SuiteConfig};
use codeops_proto::identity::auth_service_client::AuthServiceClient;
use codeops_proto::identity::role_service_client::RoleServiceClient;
use codeops_proto::identity::user_service_client::UserServiceClient;
use codeops_proto::identity::{
    CreateRoleRequest, CreateUserRequest, LoginRequest, LoginResponse, Role, RoleCategory,
    RoleLevel, User,
};
use codeops_tenant::KeyPair;
use sqlx::PgPool;
use tonic::Status;
use tonic::transport::Channel;
use uuid::Uuid;

pub use crate::common::checks::*;
use crate::common::{PASSWORD, TestApp, TestDb, bearer, channel, suite_config};

/// Password of the users the tests create.
pub const NEW_PASSWORD: &str = "correct-horse-battery-9";

/// System roles (migration 10002).
pub mod roles {
    use uuid::{Uuid, uuid};

    pub const OWNER: Uuid = uuid!("00000000-0000-4000-8002-000000000001");
    pub const ADMIN: Uuid = uuid!("00000000-0000-4000-8002-000000000002");
    pub const PRODUCT_LEAD: Uuid = uuid!("00000000-0000-4000-8002-000000000003");
    pub const ENGINEER: Uuid = uuid!("00000000-0000-4000-8002-000000000004");
    pub const VIEWER: Uuid = uuid!("00000000-0000-4000-8002-000000000005");
    pub const STAKEHOLDER: Uuid = uuid!("00000000-0000-4000-8002-000000000006");
}

/// Seeded teams (seeds/03_teams.sql).
pub mod teams {
    use uuid::{Uuid, uuid};

    /// Acme: Bob (LEAD), Carol (MEMBER), Dan (OBSERVER).
    pub const GROWTH: Uuid = uuid!("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001");
    /// Acme: Carol (LEAD), Bob (MEMBER), Alice (OBSERVER).
    pub const PLATFORM: Uuid = uuid!("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb002");
    /// Globex: Frank (LEAD), Erin (OBSERVER).
    pub const OPERATIONS: Uuid = uuid!("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb003");
}

/// Every permission code of product.md.
pub const ALL_PERMISSIONS: &[&str] = &[
    "tenant.read",
    "tenant.manage",
    "user.read",
    "user.manage",
    "role.read",
    "role.manage",
    "team.read",
    "team.manage",
    "outcome.read",
    "outcome.write",
    "outcome.validate",
    "hypothesis.read",
    "hypothesis.write",
    "hypothesis.conclude",
    "decision.read",
    "decision.write",
    "decision.resolve",
    "decision.escalate",
    "comment.write",
    "stakeholder.read",
    "stakeholder.manage",
    "audit.read",
];

/// The VIEWER role's permissions.
pub const VIEWER_PERMISSIONS: &[&str] = &[
    "tenant.read",
    "user.read",
    "role.read",
    "team.read",
    "outcome.read",
    "hypothesis.read",
    "decision.read",
    "stakeholder.read",
];

// ---------------------------------------------------------------------------
// Users and roles made for a test

pub fn role_message(code: &str, permissions: &[&str]) -> Role {
    Role {
        code: code.to_owned(),
        name: format!("Role {code}"),
        description: "made by a test".into(),
        category: RoleCategory::Custom as i32,
        level: RoleLevel::L2Senior as i32,
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        ..Default::default()
    }
}

/// A custom role of the caller's tenant, created by `token` (alice).
pub async fn create_role(channel: Channel, token: &str, code: &str, permissions: &[&str]) -> Role {
    RoleServiceClient::new(channel)
        .create_role(bearer(
            CreateRoleRequest {
                role: Some(role_message(code, permissions)),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap_or_else(|s| panic!("create role {code}: {s:?}"))
        .into_inner()
}

pub fn user_message(email: &str, role_id: Uuid) -> User {
    User {
        email: email.to_owned(),
        first_name: "Test".into(),
        last_name: "User".into(),
        role_id: role_id.to_string(),
        ..Default::default()
    }
}

/// A user of the caller's tenant with `role_id` and `NEW_PASSWORD`.
pub async fn create_user(channel: Channel, token: &str, email: &str, role_id: Uuid) -> User {
    UserServiceClient::new(channel)
        .create_user(bearer(
            CreateUserRequest {
                user: Some(user_message(email, role_id)),
                password: NEW_PASSWORD.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap_or_else(|s| panic!("create user {email}: {s:?}"))
        .into_inner()
}

pub async fn login(
    channel: Channel,
    tenant_slug: &str,
    email: &str,
    password: &str,
) -> Result<LoginResponse, Status> {
    AuthServiceClient::new(channel)
        .login(LoginRequest {
            tenant_slug: tenant_slug.to_owned(),
            email: email.to_owned(),
            password: password.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// An acme user whose custom role holds exactly `permissions`, logged in:
/// (user, access token). Made by alice.
pub async fn acme_user_with(app: &TestApp, permissions: &[&str]) -> (User, String) {
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let suffix = Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    let role = create_role(
        app.channel(Service::Identity),
        &alice,
        &format!("CUSTOM_{suffix}"),
        permissions,
    )
    .await;
    let email = format!("custom-{}@acme.test", suffix.to_lowercase());
    let role_id = Uuid::parse_str(&role.id).expect("role id");
    let user = create_user(app.channel(Service::Identity), &alice, &email, role_id).await;
    let token = app.login("acme", &email, NEW_PASSWORD).await;
    (user, token)
}

/// Access and refresh token of a seeded user.
pub async fn login_pair(app: &TestApp, tenant_slug: &str, email: &str) -> (String, String) {
    let response = app
        .login_response(tenant_slug, email, PASSWORD)
        .await
        .unwrap_or_else(|s| panic!("login {email}: {s:?}"));
    let tokens = response.tokens.expect("tokens");
    (tokens.access_token, tokens.refresh_token)
}

// ---------------------------------------------------------------------------
// An identity server whose signing key the test holds

pub struct KeyedIdentity {
    pub key: KeyPair,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    channel: Channel,
    suite: Option<Suite>,
    /// Superuser pool on the database.
    pub pool: PgPool,
    /// Declared last: dropped after the server stops using it.
    pub db: TestDb,
}

impl KeyedIdentity {
    /// Identity alone, on a seeded database, signing with a key pair the
    /// test knows.
    pub async fn spawn() -> KeyedIdentity {
        let db = TestDb::seeded().await;
        let key = KeyPair::generate().expect("key pair");
        let config = SuiteConfig {
            keys: Keys {
                signing: Some(key.clone()),
                public: key.public_key(),
            },
            ..suite_config(&db)
        };
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback");
        let suite = codeops::suite::start(&config, &[(Service::Identity, loopback)], loopback)
            .await
            .expect("start identity");
        let addr = suite.addr(Service::Identity).expect("identity address");
        let pool = db.admin_pool().await;
        KeyedIdentity {
            key,
            addr,
            metrics_addr: suite.metrics_addr,
            channel: channel(addr),
            suite: Some(suite),
            pool,
            db,
        }
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub async fn shutdown(mut self) {
        if let Some(suite) = self.suite.take() {
            suite.shutdown().await.expect("identity shutdown");
        }
    }
}
