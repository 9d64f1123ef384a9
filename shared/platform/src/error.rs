//! The one error type of the services and its one mapping to `Status`:
//! codes are chosen here, internal causes are logged here (inside the RPC
//! span, so with the request id) and never sent to the client.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    ResourceExhausted(String),
    /// A status built elsewhere (permission checks), passed through as is.
    #[error("{0}")]
    Status(#[from] Status),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
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
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => ApiError::NotFound("resource"),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // unique_violation
                Some("23505") => ApiError::AlreadyExists(unique_message(db.constraint())),
                // foreign_key_violation: an id that does not exist in the
                // caller's tenant (composite keys make both the same case).
                Some("23503") => ApiError::field(
                    constraint_field(db.constraint()),
                    "refers to a record that does not exist",
                ),
                // check_violation, not_null_violation, and every data exception
                // (class 22: too long, bad text, out of range)
                Some(code) if code == "23514" || code == "23502" || code.starts_with("22") => {
                    ApiError::field(constraint_field(db.constraint()), "value is not allowed")
                }
                // serialization_failure, deadlock_detected
                Some("40001") | Some("40P01") => {
                    ApiError::Aborted("concurrent update, retry the request".into())
                }
                // connection and resource classes: the database is not usable now
                Some(code)
                    if code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57P") =>
                {
                    ApiError::Unavailable(err)
                }
                _ => ApiError::Internal(err.into()),
            },
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => ApiError::Unavailable(err),
            _ => ApiError::Internal(err.into()),
        }
    }
}

/// Constraint names follow `<table>_<column(s)>_<suffix>`; the column part
/// is the field the client got wrong.
fn constraint_field(constraint: Option<&str>) -> String {
    let Some(name) = constraint else {
        return "request".into();
    };
    // Foreign keys are named for the referencing column without its `_id`.
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
    for table in [
        "team_members_",
        "decision_comments_",
        "refresh_tokens_",
        "role_permissions_",
        "tenants_",
        "roles_",
        "users_",
        "teams_",
        "outcomes_",
        "hypotheses_",
        "decisions_",
        "stakeholders_",
        "audit_logs_",
    ] {
        if let Some(rest) = trimmed.strip_prefix(table) {
            let column = rest.trim_start_matches("tenant_id_");
            return if is_fkey && !column.ends_with("_id") && column != "tenant" {
                format!("{column}_id")
            } else {
                column.to_owned()
            };
        }
    }
    trimmed.to_owned()
}

fn unique_message(constraint: Option<&str>) -> String {
    format!(
        "{} is already taken",
        constraint_field(constraint).replace('_', " ")
    )
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(violations) => {
                let summary = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid argument: {summary}"),
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ApiError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ApiError::AlreadyExists(msg) => Status::already_exists(msg),
            ApiError::FailedPrecondition(msg) => Status::failed_precondition(msg),
            ApiError::Aborted(msg) => Status::aborted(msg),
            ApiError::Unauthenticated(msg) => Status::unauthenticated(msg),
            ApiError::ResourceExhausted(msg) => Status::resource_exhausted(msg),
            ApiError::Status(status) => status,
            ApiError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("database unavailable, retry later")
            }
            ApiError::Internal(source) => {
                tracing::error!(error = ?source, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_names_map_to_fields() {
        assert_eq!(constraint_field(Some("users_manager_fkey")), "manager_id");
        assert_eq!(constraint_field(Some("teams_tenant_id_slug_key")), "slug");
        assert_eq!(constraint_field(Some("users_tenant_id_email_key")), "email");
        assert_eq!(constraint_field(None), "request");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status: Status = ApiError::internal(anyhow::anyhow!("SELECT secret FROM x")).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }
}
