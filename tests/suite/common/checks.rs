//! Checks every service's tests share: request ids, error-detail decoding,
//! audit rows read as the superuser, and "nothing changed" digests of every
//! table in `core`.

#![allow(dead_code)]

use std::fmt::Debug;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::common::{OPERATOR_TOKEN, bearer};

pub const REQUEST_ID: &str = "x-request-id";

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

/// A digest of every `core` table's rows (every service's slice and the
/// migrations' history), to compare before and after a refused call.
pub async fn snapshot(pool: &PgPool) -> Vec<(String, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'core' ORDER BY tablename",
    )
    .fetch_all(pool)
    .await
    .expect("list core tables");
    assert!(
        tables.len() >= 13,
        "core has fewer tables than the audit names"
    );
    let mut out = Vec::new();
    for table in &tables {
        let digest: String = sqlx::query_scalar(&format!(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM core.{table} t"
        ))
        .fetch_one(pool)
        .await
        .expect("table digest");
        out.push((table.clone(), digest));
    }
    out
}

#[track_caller]
pub fn assert_unchanged(before: &[(String, String)], after: &[(String, String)]) {
    for ((table, a), (_, b)) in before.iter().zip(after) {
        assert_eq!(a, b, "core.{table} changed although the call was refused");
    }
}
