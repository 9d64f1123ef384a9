//! The one error type of the services and its one mapping to `Status`
//! (AIP-193): codes and reasons are chosen here, every status carries a
//! `google.rpc.ErrorInfo` (stable UPPER_SNAKE reason, domain `codeops`) plus
//! the detail that fits its class, internal causes are logged here (inside
//! the RPC span, so with the request id) and never sent to the client.
//! README "Errors" lists the reasons.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// `ErrorInfo.domain` of every CodeOps error.
pub const DOMAIN: &str = "codeops";

/// At most this many field violations go back to a client: a request with
/// 20,000 bad values must not produce a trailer no client accepts.
pub const MAX_FIELD_VIOLATIONS: usize = 50;

/// How long a client should wait before retrying while the database is
/// unreachable.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);

/// A stable reason with its client-facing message, for errors whose text
/// is fixed (`ApiError::Unauthenticated(BAD_CREDENTIALS)`).
#[derive(Clone, Copy, Debug)]
pub struct Problem {
    pub reason: &'static str,
    pub message: &'static str,
}

impl Problem {
    pub const fn new(reason: &'static str, message: &'static str) -> Self {
        Self { reason, message }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: `FIELD_VIOLATIONS` with a `BadRequest`.
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    /// No such resource in the caller's tenant: `RESOURCE_NOT_FOUND` with a
    /// `ResourceInfo` naming its type.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique clash: `RESOURCE_ALREADY_EXISTS` with a `ResourceInfo`.
    #[error("{message}")]
    AlreadyExists {
        resource: &'static str,
        message: String,
    },
    /// The resource's state forbids the call (illegal transition, last
    /// owner); `metadata` goes to the `ErrorInfo` for clients to branch on.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
        metadata: Vec<(&'static str, String)>,
    },
    /// A stale etag or a concurrent update: read again and retry.
    #[error("{message}")]
    Aborted {
        reason: &'static str,
        message: String,
    },
    #[error("{0}")]
    Unauthenticated(Problem),
    /// Throttled; `retry_after` becomes a `RetryInfo`.
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A status built elsewhere with its own details (permission checks),
    /// passed through as is.
    #[error("{0}")]
    Status(#[from] Status),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Health knows the database is unreachable: refused without trying.
    #[error("database known to be unreachable")]
    DatabaseDown,
    /// The call's deadline passed (a statement cancelled at it, or none
    /// left to start one).
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }

    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        ApiError::FailedPrecondition {
            reason,
            message: message.into(),
            metadata: Vec::new(),
        }
    }

    /// A move a resource's lifecycle table does not allow from its current
    /// status: `ILLEGAL_TRANSITION`, naming the current status and the moves
    /// it allows, in the message and in `ErrorInfo` metadata
    /// (`current_status`, `requested_status`, `allowed_statuses`).
    /// `allowed` pairs each allowed status with the method that moves there.
    pub fn illegal_transition(
        resource: &str,
        from: &str,
        to: &str,
        allowed: &[(String, &str)],
    ) -> Self {
        let moves = if allowed.is_empty() {
            format!("{from} is terminal")
        } else {
            let moves: Vec<String> = allowed
                .iter()
                .map(|(status, method)| format!("{status} ({method})"))
                .collect();
            format!("from {from} it may move to {}", moves.join(", "))
        };
        let statuses: Vec<&str> = allowed.iter().map(|(s, _)| s.as_str()).collect();
        ApiError::FailedPrecondition {
            reason: "ILLEGAL_TRANSITION",
            message: format!("cannot move the {resource} from {from} to {to}: {moves}"),
            metadata: vec![
                ("current_status", from.to_owned()),
                ("requested_status", to.to_owned()),
                ("allowed_statuses", statuses.join(",")),
            ],
        }
    }

    pub fn already_exists(resource: &'static str, message: impl Into<String>) -> Self {
        ApiError::AlreadyExists {
            resource,
            message: message.into(),
        }
    }

    /// The etag a client sent is not the resource's current one.
    pub fn stale_etag() -> Self {
        ApiError::Aborted {
            reason: "ETAG_MISMATCH",
            message: "the resource changed since it was read (stale etag); read it again and retry"
                .into(),
        }
    }

    /// Another write changed the resource between this call's read and
    /// its conditional write: nothing changed.
    pub fn concurrent_update() -> Self {
        ApiError::Aborted {
            reason: "CONCURRENT_UPDATE",
            message: "the resource changed while this call ran; read it again and retry".into(),
        }
    }

    pub fn throttled(
        reason: &'static str,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        ApiError::ResourceExhausted {
            reason,
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => ApiError::NotFound("resource"),
            sqlx::Error::Database(db) => {
                let field = || constraint_field(db.table(), db.constraint());
                match db.code().as_deref() {
                    // unique_violation
                    Some("23505") => {
                        let field = field();
                        ApiError::AlreadyExists {
                            resource: "resource",
                            message: format!("{} is already taken", field.replace('_', " ")),
                        }
                    }
                    // foreign_key_violation: an id that does not exist in the
                    // caller's tenant (composite keys make both the same case).
                    Some("23503") => {
                        ApiError::field(field(), "refers to a record that does not exist")
                    }
                    // check_violation, not_null_violation, and every data
                    // exception (class 22: too long, bad text, out of range)
                    Some(code) if code == "23514" || code == "23502" || code.starts_with("22") => {
                        ApiError::field(field(), "value is not allowed")
                    }
                    // query_canceled: the statement timeout a call's deadline set
                    Some("57014") => ApiError::DeadlineExceeded,
                    // serialization_failure, deadlock_detected
                    Some("40001") | Some("40P01") => ApiError::Aborted {
                        reason: "CONCURRENT_UPDATE",
                        message: "concurrent update, retry the request".into(),
                    },
                    // connection and resource classes: the database is not usable now
                    Some(code)
                        if code.starts_with("08")
                            || code.starts_with("53")
                            || code.starts_with("57P") =>
                    {
                        ApiError::Unavailable(err)
                    }
                    _ => ApiError::Internal(err.into()),
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => ApiError::Unavailable(err),
            _ => ApiError::Internal(err.into()),
        }
    }
}

/// The field a constraint is about. Constraints are named
/// `<table>_<column(s)>_<suffix>` (PostgreSQL's own default), and
/// PostgreSQL reports the table with the error, so no table list is kept
/// here. Foreign keys are named for the referencing column without `_id`.
fn constraint_field(table: Option<&str>, constraint: Option<&str>) -> String {
    let Some(name) = constraint else {
        return "request".into();
    };
    let (trimmed, is_fkey) = match name.strip_suffix("_fkey") {
        Some(rest) => (rest, true),
        None => (
            ["_key", "_check", "_idx"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name),
            false,
        ),
    };
    let column = table
        .and_then(|table| trimmed.strip_prefix(table))
        .and_then(|rest| rest.strip_prefix('_'))
        .unwrap_or(trimmed);
    let column = column.strip_prefix("tenant_id_").unwrap_or(column);
    if is_fkey && !column.ends_with("_id") && column != "tenant" {
        format!("{column}_id")
    } else {
        column.to_owned()
    }
}

fn status(code: Code, message: impl Into<String>, details: ErrorDetails, reason: &str) -> Status {
    status_with(code, message, details, reason, Vec::new())
}

fn status_with(
    code: Code,
    message: impl Into<String>,
    mut details: ErrorDetails,
    reason: &str,
    metadata: Vec<(&'static str, String)>,
) -> Status {
    let metadata: std::collections::HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    details.set_error_info(reason, DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(mut violations) => {
                let total = violations.len();
                if total > MAX_FIELD_VIOLATIONS {
                    violations.truncate(MAX_FIELD_VIOLATIONS);
                    violations.push(FieldViolation::new(
                        "request",
                        format!("{} more violations left out", total - MAX_FIELD_VIOLATIONS),
                    ));
                }
                let summary = violations
                    .iter()
                    .take(5)
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let more = if total > 5 {
                    format!(" (and {} more)", total - 5)
                } else {
                    String::new()
                };
                status(
                    Code::InvalidArgument,
                    format!("invalid argument: {summary}{more}"),
                    ErrorDetails::with_bad_request(violations),
                    "FIELD_VIOLATIONS",
                )
            }
            ApiError::NotFound(what) => status(
                Code::NotFound,
                format!("{what} not found"),
                ErrorDetails::with_resource_info(
                    what,
                    "",
                    "",
                    format!("no such {what} in this tenant"),
                ),
                "RESOURCE_NOT_FOUND",
            ),
            ApiError::AlreadyExists { resource, message } => status(
                Code::AlreadyExists,
                message.clone(),
                ErrorDetails::with_resource_info(resource, "", "", message),
                "RESOURCE_ALREADY_EXISTS",
            ),
            ApiError::FailedPrecondition {
                reason,
                message,
                metadata,
            } => status_with(
                Code::FailedPrecondition,
                message,
                ErrorDetails::new(),
                reason,
                metadata,
            ),
            ApiError::Aborted { reason, message } => {
                status(Code::Aborted, message, ErrorDetails::new(), reason)
            }
            ApiError::Unauthenticated(problem) => status(
                Code::Unauthenticated,
                problem.message,
                ErrorDetails::new(),
                problem.reason,
            ),
            ApiError::ResourceExhausted {
                reason,
                message,
                retry_after,
            } => {
                let details = match retry_after {
                    Some(delay) => ErrorDetails::with_retry_info(Some(delay)),
                    None => ErrorDetails::new(),
                };
                status(Code::ResourceExhausted, message, details, reason)
            }
            ApiError::Status(status) => status,
            ApiError::DatabaseDown => status(
                Code::Unavailable,
                "database unavailable, retry later",
                ErrorDetails::with_retry_info(Some(UNAVAILABLE_RETRY)),
                "DATABASE_UNAVAILABLE",
            ),
            ApiError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                status(
                    Code::Unavailable,
                    "database unavailable, retry later",
                    ErrorDetails::with_retry_info(Some(UNAVAILABLE_RETRY)),
                    "DATABASE_UNAVAILABLE",
                )
            }
            ApiError::DeadlineExceeded => status(
                Code::DeadlineExceeded,
                "the call's deadline passed before it finished",
                ErrorDetails::new(),
                "DEADLINE_EXCEEDED",
            ),
            ApiError::Internal(source) => {
                tracing::error!(error = ?source, "internal error");
                status(
                    Code::Internal,
                    "internal error",
                    ErrorDetails::new(),
                    "INTERNAL_ERROR",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_names_map_to_fields_using_the_reported_table() {
        assert_eq!(
            constraint_field(Some("users"), Some("users_manager_fkey")),
            "manager_id"
        );
        assert_eq!(
            constraint_field(Some("teams"), Some("teams_tenant_id_slug_key")),
            "slug"
        );
        assert_eq!(
            constraint_field(
                Some("decision_comments"),
                Some("decision_comments_parent_fkey")
            ),
            "parent_id"
        );
        assert_eq!(constraint_field(None, None), "request");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status: Status = ApiError::internal(anyhow::anyhow!("SELECT secret FROM x")).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "INTERNAL_ERROR");
        assert_eq!(info.domain, DOMAIN);
    }

    #[test]
    fn illegal_transitions_name_the_status_and_the_allowed_moves() {
        let status: Status = ApiError::illegal_transition(
            "outcome",
            "DRAFT",
            "VALIDATED",
            &[
                ("NOT_STARTED".into(), "PlanOutcome"),
                ("ABANDONED".into(), "AbandonOutcome"),
            ],
        )
        .into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status
                .message()
                .contains("from DRAFT it may move to NOT_STARTED (PlanOutcome)")
        );
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "ILLEGAL_TRANSITION");
        assert_eq!(info.metadata["current_status"], "DRAFT");
        assert_eq!(info.metadata["allowed_statuses"], "NOT_STARTED,ABANDONED");
        let terminal: Status =
            ApiError::illegal_transition("outcome", "VALIDATED", "DRAFT", &[]).into();
        assert!(terminal.message().contains("VALIDATED is terminal"));
    }

    #[test]
    fn violations_are_capped() {
        let violations = (0..20_000)
            .map(|i| FieldViolation::new(format!("permissions[{i}]"), "unknown permission"))
            .collect();
        let status: Status = ApiError::InvalidArgument(violations).into();
        let bad = status.get_details_bad_request().expect("bad request");
        assert_eq!(bad.field_violations.len(), MAX_FIELD_VIOLATIONS + 1);
        assert!(
            bad.field_violations
                .last()
                .is_some_and(|v| v.description == "19950 more violations left out")
        );
        assert!(status.message().len() < 1_000);
    }
}
