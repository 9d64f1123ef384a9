//! What a handler knows about its caller.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::permission::{Permission, PermissionSet};

/// Per-request facts every RPC has, authenticated or not: written to audit
/// rows and logs.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub peer_ip: Option<String>,
    pub user_agent: Option<String>,
    /// When the caller stops waiting (its `grpc-timeout`, or the server's
    /// default): database statements of the call are cut off then too.
    pub deadline: Option<std::time::Instant>,
}

/// The verified caller of an authenticated RPC. Built by the auth layer from
/// the access token only: a handler never takes a tenant id from a request.
#[derive(Clone, Debug)]
pub struct TenantContext {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub permissions: PermissionSet,
    pub name: String,
    pub email: String,
    pub token_id: Uuid,
    /// The session (refresh-token family) the token was issued for.
    pub session_id: Uuid,
    pub meta: RequestMeta,
}

impl TenantContext {
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(permission)
    }

    /// `PERMISSION_DENIED` naming the missing permission, unless held.
    pub fn require(&self, permission: Permission) -> Result<(), Status> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(permission_denied(&[permission]))
        }
    }
}

/// Marks a request authenticated with the operator credential.
#[derive(Clone, Debug)]
pub struct OperatorContext {
    pub meta: RequestMeta,
}

/// The `ErrorInfo.domain` of every CodeOps error.
pub const ERROR_DOMAIN: &str = "codeops";

/// Why a call was refused as `UNAUTHENTICATED`: the `ErrorInfo` reason tells
/// a client what to do next (AIP-193).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No bearer token (no or blank `authorization`): send one.
    TokenMissing,
    /// A token we signed whose `exp` has passed: refresh it and retry.
    TokenExpired,
    /// Any other bad token (forged, tampered, other audience, not yet
    /// valid, unknown key): log in again.
    TokenInvalid,
    /// An operator method without the right operator credential.
    OperatorCredentialRequired,
    /// An internal method without the right service credential.
    ServiceCredentialRequired,
    /// A valid token whose session was revoked (logout, password change):
    /// log in again.
    SessionRevoked,
    /// A valid token of a deactivated user.
    UserDeactivated,
}

impl AuthFailure {
    /// The stable `ErrorInfo.reason`.
    pub const fn reason(self) -> &'static str {
        match self {
            AuthFailure::TokenMissing => "TOKEN_MISSING",
            AuthFailure::TokenExpired => "TOKEN_EXPIRED",
            AuthFailure::TokenInvalid => "TOKEN_INVALID",
            AuthFailure::OperatorCredentialRequired => "OPERATOR_CREDENTIAL_REQUIRED",
            AuthFailure::ServiceCredentialRequired => "SERVICE_CREDENTIAL_REQUIRED",
            AuthFailure::SessionRevoked => "SESSION_REVOKED",
            AuthFailure::UserDeactivated => "USER_DEACTIVATED",
        }
    }

    fn message(self) -> &'static str {
        match self {
            AuthFailure::TokenMissing => "access token missing",
            AuthFailure::TokenExpired => "access token expired; refresh it",
            AuthFailure::TokenInvalid => "access token invalid; log in again",
            AuthFailure::OperatorCredentialRequired => "operator credential required",
            AuthFailure::ServiceCredentialRequired => "service credential required",
            AuthFailure::SessionRevoked => "the session of this token is revoked; log in again",
            AuthFailure::UserDeactivated => "user is deactivated",
        }
    }

    /// `UNAUTHENTICATED` with this reason in an `ErrorInfo` detail.
    pub fn status(self) -> Status {
        let details = ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, HashMap::new());
        Status::with_error_details(Code::Unauthenticated, self.message(), details)
    }
}

/// Marks a request authenticated with the service credential: another
/// CodeOps process, never a user.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    pub meta: RequestMeta,
}

/// `PERMISSION_DENIED` with the missing permission codes in an `ErrorInfo`
/// detail (`metadata.permission`), so clients can tell what to ask for.
pub fn permission_denied(missing: &[Permission]) -> Status {
    let codes = missing
        .iter()
        .map(|p| p.code())
        .collect::<Vec<_>>()
        .join(",");
    let details = ErrorDetails::with_error_info(
        "PERMISSION_MISSING",
        ERROR_DOMAIN,
        [("permission".to_owned(), codes.clone())],
    );
    Status::with_error_details(
        Code::PermissionDenied,
        format!("missing permission {codes}"),
        details,
    )
}

/// Reads the contexts the auth layer put on a request.
pub trait RequestExt {
    /// The caller of an authenticated RPC.
    fn tenant(&self) -> Result<&TenantContext, Status>;
    /// The caller of an operator RPC.
    fn operator(&self) -> Result<&OperatorContext, Status>;
    /// The caller of an internal RPC (service credential).
    fn service(&self) -> Result<&ServiceContext, Status>;
    /// Request id, peer and user agent; the request pipeline puts them on
    /// every request.
    fn meta(&self) -> RequestMeta;
}

impl<T> RequestExt for tonic::Request<T> {
    fn tenant(&self) -> Result<&TenantContext, Status> {
        self.extensions()
            .get::<TenantContext>()
            .ok_or_else(|| AuthFailure::TokenMissing.status())
    }

    fn operator(&self) -> Result<&OperatorContext, Status> {
        self.extensions()
            .get::<OperatorContext>()
            .ok_or_else(|| AuthFailure::OperatorCredentialRequired.status())
    }

    fn service(&self) -> Result<&ServiceContext, Status> {
        self.extensions()
            .get::<ServiceContext>()
            .ok_or_else(|| Status::unauthenticated("service credential required"))
    }

    fn meta(&self) -> RequestMeta {
        self.extensions()
            .get::<RequestMeta>()
            .cloned()
            .unwrap_or_default()
    }
}
