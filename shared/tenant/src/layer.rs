//! The auth layer: token verification and the per-method permission check,
//! nothing else. It runs inside the request pipeline
//! (`codeops_platform::pipeline`), which has already given the request its
//! [`RequestMeta`] and opened the RPC's tracing span; this layer records the
//! caller's tenant and user into that span.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use sha2::{Digest, Sha256};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower_layer::Layer;
use tower_service::Service;

use crate::context::{
    AuthFailure, ERROR_DOMAIN, OperatorContext, RequestMeta, ServiceContext, TenantContext,
    permission_denied,
};
use crate::permission::{Permission, PermissionSet};
use crate::token::{TokenError, TokenVerifier};

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (login, health, reflection).
    Public,
    /// Any valid access token.
    Authenticated,
    /// A valid access token whose role holds this permission.
    Require(Permission),
    /// The operator credential from configuration.
    Operator,
    /// The service credential other CodeOps processes call internal
    /// methods with (`CODEOPS_SERVICE_TOKEN`); a user token never passes.
    Service,
}

/// One row of a service's access table: a full method path
/// (`/pkg.Service/Method`) or a whole service (`/pkg.Service`).
#[derive(Clone, Copy, Debug)]
pub struct MethodAccess {
    pub path: &'static str,
    pub access: Access,
}

impl MethodAccess {
    pub const fn new(path: &'static str, access: Access) -> Self {
        Self { path, access }
    }
}

/// Methods with no row are refused (`UNIMPLEMENTED`): an RPC without a
/// declared permission can never be reached by accident.
#[derive(Clone, Debug, Default)]
pub struct AccessTable(HashMap<&'static str, Access>);

impl AccessTable {
    pub fn extend(&mut self, rows: &[MethodAccess]) {
        for row in rows {
            self.0.insert(row.path, row.access);
        }
    }

    pub fn lookup(&self, path: &str) -> Option<Access> {
        if let Some(access) = self.0.get(path) {
            return Some(*access);
        }
        let service = path.rsplit_once('/').map(|(s, _)| s)?;
        self.0.get(service).copied()
    }

    pub fn paths(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.keys().copied()
    }
}

/// Shared state of the auth layer.
pub struct AuthConfig {
    pub verifier: Arc<TokenVerifier>,
    pub table: AccessTable,
    /// SHA-256 of the operator credential; `None` disables operator RPCs.
    pub operator_token_sha256: Option<[u8; 32]>,
    /// SHA-256 of the service credential; `None` disables internal RPCs.
    pub service_token_sha256: Option<[u8; 32]>,
}

#[derive(Clone)]
pub struct AuthLayer {
    config: Arc<AuthConfig>,
}

impl AuthLayer {
    pub fn new(config: AuthConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            config: self.config.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    config: Arc<AuthConfig>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        // The pipeline always puts it there; a bare layer (unit tests, a
        // server built without the pipeline) still works without one.
        let meta = req
            .extensions()
            .get::<RequestMeta>()
            .cloned()
            .unwrap_or_default();
        let caller = match authorize(&self.config, &req, meta) {
            Ok(caller) => caller,
            Err(status) => {
                tracing::info!(code = ?status.code(), "rejected: {}", status.message());
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        };
        match caller {
            Caller::Anonymous => {}
            Caller::Operator(ctx) => {
                req.extensions_mut().insert(ctx);
            }
            Caller::Service(ctx) => {
                req.extensions_mut().insert(ctx);
            }
            Caller::Tenant(ctx) => {
                // The pipeline's span declared these fields empty.
                let span = tracing::Span::current();
                span.record("tenant_id", tracing::field::display(ctx.tenant_id));
                span.record("user_id", tracing::field::display(ctx.user_id));
                req.extensions_mut().insert(*ctx);
            }
        }
        Box::pin(inner.call(req))
    }
}

enum Caller {
    Anonymous,
    Operator(OperatorContext),
    Service(ServiceContext),
    Tenant(Box<TenantContext>),
}

fn authorize<B>(
    config: &AuthConfig,
    req: &Request<B>,
    meta: RequestMeta,
) -> Result<Caller, Status> {
    let path = req.uri().path();
    let access = config
        .table
        .lookup(path)
        .ok_or_else(|| method_not_found(path))?;
    let required = match access {
        Access::Public => return Ok(Caller::Anonymous),
        Access::Operator => {
            credential(
                config.operator_token_sha256,
                req,
                operator_methods_disabled,
                AuthFailure::OperatorCredentialRequired,
            )?;
            return Ok(Caller::Operator(OperatorContext { meta }));
        }
        Access::Service => {
            credential(
                config.service_token_sha256,
                req,
                internal_methods_disabled,
                AuthFailure::ServiceCredentialRequired,
            )?;
            return Ok(Caller::Service(ServiceContext { meta }));
        }
        Access::Authenticated => None,
        Access::Require(permission) => Some(permission),
    };
    let token = bearer(req).ok_or_else(|| AuthFailure::TokenMissing.status())?;
    let claims = config.verifier.verify(token).map_err(|err| {
        tracing::debug!(error = %err, "access token refused");
        match err {
            TokenError::Expired => AuthFailure::TokenExpired.status(),
            TokenError::SessionRevoked => AuthFailure::SessionRevoked.status(),
            TokenError::UserDeactivated => AuthFailure::UserDeactivated.status(),
            TokenError::Invalid(_) | TokenError::UnknownKey | TokenError::LifetimeTooLong(_) => {
                AuthFailure::TokenInvalid.status()
            }
        }
    })?;
    let permissions: PermissionSet = claims
        .perms
        .iter()
        .filter_map(|code| Permission::from_code(code))
        .collect();
    if let Some(permission) = required
        && !permissions.contains(permission)
    {
        return Err(permission_denied(&[permission]));
    }
    Ok(Caller::Tenant(Box::new(TenantContext {
        tenant_id: claims.tid,
        user_id: claims.sub,
        role: claims.role,
        permissions,
        name: claims.name,
        email: claims.email,
        token_id: claims.jti,
        session_id: claims.sid,
        meta,
    })))
}

/// A configured credential (operator, service), compared as SHA-256
/// digests in constant time, so timing says nothing about a guess.
fn credential<B>(
    expected: Option<[u8; 32]>,
    req: &Request<B>,
    disabled: fn() -> Status,
    failure: AuthFailure,
) -> Result<(), Status> {
    let expected = expected.ok_or_else(disabled)?;
    let presented = bearer(req).ok_or_else(|| failure.status())?;
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let diff = expected
        .iter()
        .zip(presented.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(failure.status());
    }
    Ok(())
}

/// `UNIMPLEMENTED` for a path no access row names: the method does not
/// exist here, or exists without a declared permission.
fn method_not_found(path: &str) -> Status {
    let details = ErrorDetails::with_error_info(
        "METHOD_NOT_FOUND",
        ERROR_DOMAIN,
        [("method".to_owned(), path.to_owned())],
    );
    Status::with_error_details(
        Code::Unimplemented,
        format!("unknown method {path}"),
        details,
    )
}

/// `PERMISSION_DENIED` for an operator method while no operator credential
/// is configured: no credential could succeed.
fn operator_methods_disabled() -> Status {
    let details =
        ErrorDetails::with_error_info("OPERATOR_METHODS_DISABLED", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::PermissionDenied,
        "operator methods are disabled",
        details,
    )
}

/// `PERMISSION_DENIED` for an internal method while no service credential
/// is configured.
fn internal_methods_disabled() -> Status {
    let details =
        ErrorDetails::with_error_info("INTERNAL_METHODS_DISABLED", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::PermissionDenied,
        "internal methods are disabled",
        details,
    )
}

/// The bearer token of `authorization`; `None` when there is none or it is
/// blank, which is a missing token rather than an invalid one.
fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// SHA-256 of an operator credential, as `AuthConfig` wants it.
pub fn operator_token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::token::{KeyPair, Subject, TokenSettings, TokenSigner};

    /// The handler behind the layer: answers with what the layer gave it.
    #[derive(Clone)]
    struct Handler;

    impl Service<Request<()>> for Handler {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = BoxFuture<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<()>) -> Self::Future {
            let user = req
                .extensions()
                .get::<TenantContext>()
                .map(|ctx| format!("{} {}", ctx.user_id, ctx.meta.request_id))
                .unwrap_or_default();
            let operator = req.extensions().get::<OperatorContext>().is_some();
            Box::pin(async move { Ok(Response::new(format!("user={user} operator={operator}"))) })
        }
    }

    struct Fixture {
        layer: AuthLayer,
        signer: TokenSigner,
    }

    fn fixture(rows: &[MethodAccess], operator: Option<&str>) -> Fixture {
        let keys = KeyPair::generate().expect("key pair");
        let verifier =
            TokenVerifier::new(&[keys.public_key()], &TokenSettings::default()).expect("verifier");
        let signer = TokenSigner::new(&keys, TokenSettings::default()).expect("signer");
        let mut table = AccessTable::default();
        table.extend(rows);
        let layer = AuthLayer::new(AuthConfig {
            verifier: Arc::new(verifier),
            table,
            operator_token_sha256: operator.map(operator_token_digest),
            service_token_sha256: Some(operator_token_digest("service-credential")),
        });
        Fixture { layer, signer }
    }

    impl Fixture {
        fn token(&self, permissions: &[&str]) -> (String, uuid::Uuid) {
            let user_id = uuid::Uuid::new_v4();
            let (token, _) = self
                .signer
                .sign(Subject {
                    user_id,
                    tenant_id: uuid::Uuid::new_v4(),
                    role: "ENGINEER",
                    permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
                    name: "Carol".into(),
                    email: "carol@example.test".into(),
                    session_id: uuid::Uuid::new_v4(),
                })
                .expect("sign");
            (token, user_id)
        }

        async fn call(&self, request: Request<()>) -> Response<String> {
            self.layer
                .layer(Handler)
                .call(request)
                .await
                .expect("a response")
        }
    }

    fn request(path: &str, authorization: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri(path);
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let mut request = builder.body(()).expect("request");
        request.extensions_mut().insert(RequestMeta {
            request_id: "req-1".into(),
            ..RequestMeta::default()
        });
        request
    }

    /// Code and `ErrorInfo` reason of a refusal.
    fn refusal(response: &Response<String>) -> (Code, String) {
        let status = Status::from_header_map(response.headers()).expect("a grpc-status");
        let info = status
            .get_details_error_info()
            .expect("an ErrorInfo detail");
        assert_eq!(info.domain, ERROR_DOMAIN);
        (status.code(), info.reason)
    }

    const READ_USERS: &str = "/x.v1.S/ReadUsers";

    fn rows() -> [MethodAccess; 2] {
        [
            MethodAccess::new(READ_USERS, Access::Require(Permission::UserRead)),
            MethodAccess::new("/x.v1.S/Operate", Access::Operator),
        ]
    }

    #[tokio::test]
    async fn an_allowed_call_reaches_the_handler_with_its_tenant_context_and_request_meta() {
        let fixture = fixture(&rows(), None);
        let (token, user_id) = fixture.token(&["user.read"]);
        let response = fixture
            .call(request(READ_USERS, Some(&format!("Bearer {token}"))))
            .await;
        assert_eq!(
            response.body(),
            &format!("user={user_id} req-1 operator=false")
        );
    }

    #[tokio::test]
    async fn no_authorization_is_token_missing() {
        let fixture = fixture(&rows(), None);
        let response = fixture.call(request(READ_USERS, None)).await;
        assert_eq!(
            refusal(&response),
            (Code::Unauthenticated, "TOKEN_MISSING".into())
        );
    }

    #[tokio::test]
    async fn a_blank_or_non_bearer_authorization_is_token_missing() {
        let fixture = fixture(&rows(), None);
        for value in ["Bearer", "Bearer    ", "Basic dXNlcjpwYXNz"] {
            let response = fixture.call(request(READ_USERS, Some(value))).await;
            assert_eq!(
                refusal(&response),
                (Code::Unauthenticated, "TOKEN_MISSING".into()),
                "{value:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_malformed_or_foreign_token_is_token_invalid() {
        let other_keys = fixture(&rows(), None);
        let (foreign, _) = other_keys.token(&["user.read"]);
        let fixture = fixture(&rows(), None);
        for token in ["not-a-jwt", foreign.as_str()] {
            let response = fixture
                .call(request(READ_USERS, Some(&format!("Bearer {token}"))))
                .await;
            assert_eq!(
                refusal(&response),
                (Code::Unauthenticated, "TOKEN_INVALID".into())
            );
        }
    }

    #[tokio::test]
    async fn a_token_without_the_permission_is_permission_missing() {
        let fixture = fixture(&rows(), None);
        let (token, _) = fixture.token(&["team.read"]);
        let response = fixture
            .call(request(READ_USERS, Some(&format!("Bearer {token}"))))
            .await;
        assert_eq!(
            refusal(&response),
            (Code::PermissionDenied, "PERMISSION_MISSING".into())
        );
    }

    #[tokio::test]
    async fn an_undeclared_method_is_unimplemented_method_not_found() {
        let fixture = fixture(&[], None);
        let response = fixture.call(request("/x.v1.S/M", None)).await;
        assert_eq!(
            refusal(&response),
            (Code::Unimplemented, "METHOD_NOT_FOUND".into())
        );
    }

    #[tokio::test]
    async fn operator_methods_are_disabled_without_a_configured_credential() {
        let fixture = fixture(&rows(), None);
        let response = fixture
            .call(request("/x.v1.S/Operate", Some("Bearer anything-at-all")))
            .await;
        assert_eq!(
            refusal(&response),
            (Code::PermissionDenied, "OPERATOR_METHODS_DISABLED".into())
        );
    }

    #[tokio::test]
    async fn an_operator_method_without_the_right_credential_is_unauthenticated() {
        let fixture = fixture(&rows(), Some("the-operator-credential"));
        for value in [None, Some("Bearer "), Some("Bearer wrong-credential-value")] {
            let response = fixture.call(request("/x.v1.S/Operate", value)).await;
            assert_eq!(
                refusal(&response),
                (Code::Unauthenticated, "OPERATOR_CREDENTIAL_REQUIRED".into()),
                "{value:?}"
            );
        }
        let response = fixture
            .call(request(
                "/x.v1.S/Operate",
                Some("Bearer the-operator-credential"),
            ))
            .await;
        assert_eq!(response.body(), "user= operator=true");
    }
}
