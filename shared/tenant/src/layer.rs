//! The tower layer in front of every service: request ids, token
//! verification, the per-method permission check and the tracing span.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::transport::server::TcpConnectInfo;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use uuid::Uuid;

use crate::context::{
    OperatorContext, RequestMeta, ServiceContext, TenantContext, permission_denied,
};
use crate::permission::{Permission, PermissionSet};
use crate::token::TokenVerifier;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;
const MAX_USER_AGENT_LEN: usize = 255;

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

        let meta = request_meta(&req);
        let request_id = HeaderValue::from_str(&meta.request_id)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let span = tracing::info_span!(
            "rpc",
            method = %req.uri().path(),
            request_id = %meta.request_id,
            tenant_id = tracing::field::Empty,
            user_id = tracing::field::Empty,
        );
        let outcome = authorize(&self.config, &req, meta.clone());
        req.extensions_mut().insert(meta);

        Box::pin(
            async move {
                let mut response = match outcome {
                    Err(status) => {
                        tracing::info!(code = ?status.code(), "rejected: {}", status.message());
                        status.into_http()
                    }
                    Ok(caller) => {
                        match caller {
                            Caller::Anonymous => {}
                            Caller::Operator(ctx) => {
                                req.extensions_mut().insert(ctx);
                            }
                            Caller::Service(ctx) => {
                                req.extensions_mut().insert(ctx);
                            }
                            Caller::Tenant(ctx) => {
                                let span = tracing::Span::current();
                                span.record("tenant_id", tracing::field::display(ctx.tenant_id));
                                span.record("user_id", tracing::field::display(ctx.user_id));
                                req.extensions_mut().insert(*ctx);
                            }
                        }
                        match CatchPanic(Box::pin(inner.call(req))).await {
                            Ok(result) => result?,
                            Err(()) => {
                                tracing::error!("handler panicked");
                                Status::internal("internal error").into_http()
                            }
                        }
                    }
                };
                response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Turns a panic while polling the handler into `Err(())`: one bad request
/// answers INTERNAL instead of taking its connection down with it.
struct CatchPanic<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
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
        .ok_or_else(|| Status::unimplemented(format!("unknown method {path}")))?;
    let required = match access {
        Access::Public => return Ok(Caller::Anonymous),
        Access::Operator => {
            return operator(config, req, meta);
        }
        Access::Service => {
            return service(config, req, meta);
        }
        Access::Authenticated => None,
        Access::Require(permission) => Some(permission),
    };
    let token = bearer(req).ok_or_else(unauthenticated)?;
    let claims = config.verifier.verify(token).map_err(|err| {
        tracing::debug!(error = %err, "access token refused");
        unauthenticated()
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

fn operator<B>(config: &AuthConfig, req: &Request<B>, meta: RequestMeta) -> Result<Caller, Status> {
    let expected = config
        .operator_token_sha256
        .ok_or_else(|| Status::permission_denied("operator methods are disabled"))?;
    let presented = bearer(req)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| Status::unauthenticated("operator credential required"))?;
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    // Constant-time comparison of the digests.
    let diff = expected
        .iter()
        .zip(presented.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(Status::unauthenticated("operator credential required"));
    }
    Ok(Caller::Operator(OperatorContext { meta }))
}

/// The service credential, compared like the operator's: as SHA-256
/// digests, in constant time.
fn service<B>(config: &AuthConfig, req: &Request<B>, meta: RequestMeta) -> Result<Caller, Status> {
    let expected = config
        .service_token_sha256
        .ok_or_else(|| Status::permission_denied("internal methods are disabled"))?;
    let presented = bearer(req)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| Status::unauthenticated("service credential required"))?;
    if !digests_equal(&expected, &operator_token_digest(presented)) {
        return Err(Status::unauthenticated("service credential required"));
    }
    Ok(Caller::Service(ServiceContext { meta }))
}

/// Compares two digests without an early exit, so timing says nothing
/// about how much of a guess was right.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn unauthenticated() -> Status {
    Status::unauthenticated("missing or invalid access token")
}

fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn request_meta<B>(req: &Request<B>) -> RequestMeta {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN)
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let peer_ip = req
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .map(|addr| addr.ip().to_string());
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| truncate(v, MAX_USER_AGENT_LEN));
    RequestMeta {
        request_id,
        peer_ip,
        user_agent,
    }
}

fn truncate(value: &str, max: usize) -> String {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// SHA-256 of an operator credential, as `AuthConfig` wants it.
pub fn operator_token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::token::{KeyPair, TokenSettings};

    /// A handler that panics while handling the request.
    #[derive(Clone)]
    struct Panicking;

    impl Service<Request<()>> for Panicking {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = BoxFuture<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            Box::pin(async { panic!("handler bug") })
        }
    }

    fn layer(rows: &[MethodAccess]) -> AuthLayer {
        layer_with_operator(rows, None)
    }

    fn layer_with_operator(rows: &[MethodAccess], operator: Option<&str>) -> AuthLayer {
        let keys = KeyPair::generate().expect("key pair");
        let verifier =
            TokenVerifier::new(&[keys.public_key()], &TokenSettings::default()).expect("verifier");
        let mut table = AccessTable::default();
        table.extend(rows);
        AuthLayer::new(AuthConfig {
            verifier: Arc::new(verifier),
            table,
            operator_token_sha256: operator.map(operator_token_digest),
            service_token_sha256: Some(operator_token_digest("service-credential")),
        })
    }

    fn request(path: &str) -> Request<()> {
        Request::builder()
            .uri(path)
            .header(REQUEST_ID_HEADER, "req-1")
            .body(())
            .expect("request")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_with_the_request_id() {
        let mut service = layer(&[MethodAccess::new("/x.v1.S/M", Access::Public)]).layer(Panicking);
        let response = service
            .call(request("/x.v1.S/M"))
            .await
            .expect("a response");
        assert_eq!(response.headers()["grpc-status"], "13");
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
    }

    #[tokio::test]
    async fn an_operator_method_without_a_credential_is_unauthenticated_even_if_one_is_empty() {
        let rows = [MethodAccess::new("/x.v1.S/M", Access::Operator)];
        let mut service = layer_with_operator(&rows, Some("")).layer(Panicking);
        let response = service
            .call(request("/x.v1.S/M"))
            .await
            .expect("a response");
        assert_eq!(response.headers()["grpc-status"], "16");
    }

    #[tokio::test]
    async fn an_internal_method_refuses_anything_but_the_service_credential() {
        let rows = [MethodAccess::new("/x.v1.S/M", Access::Service)];
        let mut service = layer(&rows).layer(Panicking);
        for authorization in [
            None,
            Some("Bearer wrong"),
            Some("Bearer service-credentia"),
            Some("Basic service-credential"),
        ] {
            let mut req = request("/x.v1.S/M");
            if let Some(value) = authorization {
                req.headers_mut()
                    .insert(http::header::AUTHORIZATION, HeaderValue::from_static(value));
            }
            let response = service.call(req).await.expect("a response");
            assert_eq!(response.headers()["grpc-status"], "16", "{authorization:?}");
        }
        // The right credential passes the layer (and reaches the handler).
        let mut req = request("/x.v1.S/M");
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer service-credential"),
        );
        let response = service.call(req).await.expect("a response");
        assert_eq!(
            response.headers()["grpc-status"],
            "13",
            "reached the handler"
        );
    }

    #[tokio::test]
    async fn an_undeclared_method_is_unimplemented() {
        let mut service = layer(&[]).layer(Panicking);
        let response = service
            .call(request("/x.v1.S/M"))
            .await
            .expect("a response");
        assert_eq!(response.headers()["grpc-status"], "12");
    }

    #[tokio::test]
    async fn a_declared_method_without_a_token_is_unauthenticated() {
        let rows = [MethodAccess::new(
            "/x.v1.S/M",
            Access::Require(Permission::UserRead),
        )];
        let mut service = layer(&rows).layer(Panicking);
        let response = service
            .call(request("/x.v1.S/M"))
            .await
            .expect("a response");
        assert_eq!(response.headers()["grpc-status"], "16");
    }
}
