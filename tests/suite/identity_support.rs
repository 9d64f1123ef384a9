//! Helpers of the identity tests: request ids, error-detail decoding, audit
//! rows read as the superuser, "nothing changed" snapshots, users with
//! chosen permissions, and an identity server whose signing key the test
//! holds (to forge tokens).

#![allow(dead_code)]

use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use codeops::suite::{Keys, Service, Suite, SuiteConfig};
use codeops_platform::DbOptions;
use codeops_proto::identity::auth_service_client::AuthServiceClient;
use codeops_proto::identity::role_service_client::RoleServiceClient;
use codeops_proto::identity::user_service_client::UserServiceClient;
use codeops_proto::identity::{
    CreateRoleRequest, CreateUserRequest, LoginRequest, LoginResponse, Role, RoleCategory,
    RoleLevel, User,
};
use codeops_tenant::{KeyPair, TokenSettings};
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::common::{
    OPERATOR_TOKEN, PASSWORD, REVOCATION_POLL, SERVICE_TOKEN, TestApp, TestDb, bearer, channel,
};

pub const REQUEST_ID: &str = "x-request-id";
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
// Requests

/// A request id unique to this call, recognisable in the audit trail.
pub fn new_request_id(tag: &str) -> String {
    format!("{tag}-{}", Uuid::new_v4().simple())
}

pub fn set_request_id<T>(request: &mut Request<T>, request_id: &str) {
    request
        .metadata_mut()
        .insert(REQUEST_ID, request_id.parse().expect("ascii request id"));
}

/// `message` with `authorization: Bearer <token>` and `x-request-id`.
pub fn call<T>(message: T, token: &str, request_id: &str) -> Request<T> {
    let mut request = bearer(message, token);
    set_request_id(&mut request, request_id);
    request
}

/// `message` with the operator credential and `x-request-id`.
pub fn operator_call<T>(message: T, request_id: &str) -> Request<T> {
    call(message, OPERATOR_TOKEN, request_id)
}

/// `message` with only `x-request-id` (public methods).
pub fn anonymous<T>(message: T, request_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    set_request_id(&mut request, request_id);
    request
}

pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

pub fn id(value: Uuid) -> String {
    value.to_string()
}

// ---------------------------------------------------------------------------
// Errors

/// Words of SQL and PostgreSQL errors no client message may contain.
const SQL_WORDS: &[&str] = &[
    "SELECT ",
    "INSERT ",
    "UPDATE core",
    "DELETE FROM",
    " WHERE ",
    "core.",
    "violates",
    "constraint",
    "sqlx",
    "SQLSTATE",
    "duplicate key",
    "relation ",
    "pg_",
    "syntax error",
];

pub fn assert_no_sql(status: &Status) {
    for word in SQL_WORDS {
        assert!(
            !status.message().contains(word),
            "the error message leaks SQL ({word:?}): {:?}",
            status.message()
        );
    }
    if let Some(bad_request) = status.get_error_details().bad_request() {
        for violation in &bad_request.field_violations {
            for word in SQL_WORDS {
                assert!(
                    !violation.description.contains(word) && !violation.field.contains(word),
                    "a field violation leaks SQL ({word:?}): {violation:?}"
                );
            }
        }
    }
}

/// The error of `result`, which must be `code`.
#[track_caller]
pub fn expect_code<T: Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "expected {code:?}, got {:?}: {:?}",
                status.code(),
                status.message()
            );
            assert_no_sql(&status);
            status
        }
    }
}

/// The fields named by the `google.rpc.BadRequest` detail of `status`.
pub fn violation_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// `INVALID_ARGUMENT` with a field violation naming `field`.
#[track_caller]
pub fn expect_invalid<T: Debug>(result: Result<T, Status>, field: &str) -> Status {
    let status = expect_code(result, Code::InvalidArgument);
    let fields = violation_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a field violation on {field:?}, got {fields:?} ({:?})",
        status.message()
    );
    status
}

/// The permission codes named by the `ErrorInfo` detail of `status`.
pub fn missing_permissions(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get("permission").cloned())
        .map(|codes| codes.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `PERMISSION_DENIED` naming `permission` in the error details.
#[track_caller]
pub fn expect_denied<T: Debug>(result: Result<T, Status>, permission: &str) -> Status {
    let status = expect_code(result, Code::PermissionDenied);
    let missing = missing_permissions(&status);
    assert!(
        missing.iter().any(|p| p == permission),
        "expected {permission:?} in the ErrorInfo metadata \"permission\", got {missing:?} ({:?})",
        status.message()
    );
    status
}

// ---------------------------------------------------------------------------
// The audit trail, read as the superuser

#[derive(sqlx::FromRow, Debug, Clone)]
pub struct AuditRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub actor_id: Option<Uuid>,
    pub actor_name: Option<String>,
    pub actor_email: Option<String>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Uuid,
    pub entity_title: Option<String>,
    pub description: Option<String>,
    pub old_values: Option<String>,
    pub new_values: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub timestamp: DateTime<Utc>,
}

impl AuditRow {
    pub fn old_json(&self) -> serde_json::Value {
        self.old_values
            .as_deref()
            .map(|s| serde_json::from_str(s).expect("old_values is JSON"))
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn new_json(&self) -> serde_json::Value {
        self.new_values
            .as_deref()
            .map(|s| serde_json::from_str(s).expect("new_values is JSON"))
            .unwrap_or(serde_json::Value::Null)
    }
}

const AUDIT_SELECT: &str = "SELECT id, tenant_id, actor_id, actor_name, actor_email, action, entity_type, entity_id, \
    entity_title, description, old_values, new_values, ip_address, user_agent, request_id, timestamp \
    FROM core.audit_logs";

/// Audit rows written under `request_id`, oldest first.
pub async fn audit_rows(pool: &PgPool, request_id: &str) -> Vec<AuditRow> {
    sqlx::query_as(&format!(
        "{AUDIT_SELECT} WHERE request_id = $1 ORDER BY timestamp, id"
    ))
    .bind(request_id)
    .fetch_all(pool)
    .await
    .expect("read audit rows")
}

/// The one audit row written under `request_id`.
pub async fn the_audit_row(pool: &PgPool, request_id: &str) -> AuditRow {
    let mut rows = audit_rows(pool, request_id).await;
    assert_eq!(
        rows.len(),
        1,
        "expected one audit row for request {request_id}, got {rows:#?}"
    );
    rows.remove(0)
}

/// Checks the common columns of an audit row.
#[track_caller]
pub fn assert_audit(
    row: &AuditRow,
    action: &str,
    actor: Option<Uuid>,
    entity_type: &str,
    entity_id: Uuid,
) {
    assert_eq!(row.action, action, "audit action of {row:#?}");
    assert_eq!(row.actor_id, actor, "audit actor of {row:#?}");
    assert_eq!(
        row.entity_type, entity_type,
        "audit entity type of {row:#?}"
    );
    assert_eq!(row.entity_id, entity_id, "audit entity id of {row:#?}");
    assert_eq!(
        row.ip_address.as_deref(),
        Some("127.0.0.1"),
        "the audit row records the caller's IP: {row:#?}"
    );
    assert!(
        row.user_agent.as_deref().is_some_and(|ua| !ua.is_empty()),
        "the audit row records the user agent: {row:#?}"
    );
}

pub async fn audit_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM core.audit_logs")
        .fetch_one(pool)
        .await
        .expect("count audit rows")
}

/// No audit row holds a password hash, a bcrypt string or any of `secrets`.
pub async fn assert_audit_has_no_secrets(pool: &PgPool, secrets: &[&str]) {
    let rows: Vec<String> = sqlx::query_scalar("SELECT a::text FROM core.audit_logs a")
        .fetch_all(pool)
        .await
        .expect("read audit rows as text");
    assert!(!rows.is_empty(), "the audit trail is empty");
    for row in &rows {
        assert!(
            !row.contains("password_hash"),
            "an audit row names password_hash: {row}"
        );
        assert!(
            !row.contains("$2"),
            "an audit row holds a bcrypt string: {row}"
        );
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(
                !row.contains(secret),
                "an audit row holds a secret ({secret}): {row}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// "Changes nothing"

const TABLES: &[&str] = &[
    "tenants",
    "users",
    "roles",
    "role_permissions",
    "teams",
    "team_members",
    "refresh_tokens",
    "audit_logs",
];

/// A digest of every identity table's rows, to compare before and after a
/// refused call.
pub async fn snapshot(pool: &PgPool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for table in TABLES {
        let digest: String = sqlx::query_scalar(&format!(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM core.{table} t"
        ))
        .fetch_one(pool)
        .await
        .expect("table digest");
        out.push(((*table).to_owned(), digest));
    }
    out
}

#[track_caller]
pub fn assert_unchanged(before: &[(String, String)], after: &[(String, String)]) {
    for ((table, a), (_, b)) in before.iter().zip(after) {
        assert_eq!(a, b, "core.{table} changed although the call was refused");
    }
}

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
            db: DbOptions::new(db.url.clone()),
            keys: Keys {
                signing: Some(key.clone()),
                public: key.public_key(),
            },
            token: TokenSettings::default(),
            refresh_ttl: Duration::from_secs(24 * 3600),
            bcrypt_cost: 4,
            bcrypt_threads: 0,
            operator_token: Some(OPERATOR_TOKEN.to_owned()),
            service_token: SERVICE_TOKEN.to_owned(),
            identity_url: None,
            revocation_poll: REVOCATION_POLL,
        };
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback");
        let suite = codeops::suite::start(&config, &[(Service::Identity, loopback)])
            .await
            .expect("start identity");
        let addr = suite.addr(Service::Identity).expect("identity address");
        let pool = db.admin_pool().await;
        KeyedIdentity {
            key,
            addr,
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
