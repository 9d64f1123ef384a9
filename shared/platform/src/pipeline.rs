//! The request pipeline: the outermost layer of every port, in front of the
//! auth layer, for unary and streaming calls alike. For each request it
//!
//! - takes the caller's `x-request-id` (or makes one), puts the request's
//!   [`RequestMeta`] in its extensions for the auth layer and handlers, and
//!   returns the id in the response headers, refusals and panics included;
//! - opens the RPC's tracing span (`service`, `method`, `request_id`; the
//!   auth layer fills in `tenant_id` and `user_id`; `code` once the call
//!   ends) and keeps it entered while a streaming response is produced;
//! - answers INTERNAL when a handler panics, before or while streaming its
//!   response, instead of taking the connection down;
//! - holds messages to [`MessageLimits`] and gives the transport's own
//!   refusals (oversized or malformed messages) the codes and `ErrorInfo`
//!   clients can act on (`transport_errors`);
//! - counts the call: started, in flight, finished by code and latency, up
//!   to its final status, so a stream counts for as long as it runs and a
//!   call the client abandons counts as CANCELLED;
//! - holds the call to its deadline: the caller's `grpc-timeout`, capped by
//!   the port's default timeout. The deadline goes into [`RequestMeta`] (the
//!   database cuts the call's statements off at it) and a call still without
//!   its response then answers DEADLINE_EXCEEDED (`DEADLINE_EXCEEDED`); for
//!   a stream the deadline bounds the time to its first response.

mod body;
mod frames;
mod transport_errors;

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codeops_tenant::RequestMeta;
use http::{HeaderValue, Request, Response};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument, Span};
use uuid::Uuid;

pub use body::ResponseBody;
pub use frames::RequestBody;
pub use transport_errors::{MALFORMED_REQUEST, REQUEST_TOO_LARGE, RESPONSE_TOO_LARGE};

use crate::metrics::{MethodMetrics, RpcMetrics, code_name};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The client address a trusted proxy reports (`CODEOPS_TRUSTED_PROXIES`).
const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";
/// A caller's request id longer than this, or with anything but visible
/// ASCII, is replaced by a fresh one: it goes into logs and audit rows.
const MAX_REQUEST_ID_LEN: usize = 128;
const MAX_USER_AGENT_LEN: usize = 255;

/// The largest message a port takes and sends, in bytes as framed on the
/// wire (the compressed size of a compressed message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// A larger request message is RESOURCE_EXHAUSTED (`REQUEST_TOO_LARGE`).
    pub max_request_bytes: usize,
    /// A larger response message ends the call with RESOURCE_EXHAUSTED
    /// (`RESPONSE_TOO_LARGE`) rather than reaching a client that would
    /// refuse it.
    pub max_response_bytes: usize,
}

impl MessageLimits {
    /// gRPC's customary limit, what default clients accept.
    pub const DEFAULT_BYTES: usize = 4 * 1024 * 1024;
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: Self::DEFAULT_BYTES,
            max_response_bytes: Self::DEFAULT_BYTES,
        }
    }
}

/// The pipeline of one port.
#[derive(Clone)]
pub struct PipelineLayer {
    shared: Arc<Shared>,
}

struct Shared {
    service: &'static str,
    rpc: Arc<RpcMetrics>,
    limits: MessageLimits,
    /// The longest a call may take when its caller sets no shorter
    /// deadline; `None`: only the caller's.
    default_timeout: Option<Duration>,
    /// Peers whose `x-forwarded-for` names the client.
    trusted_proxies: Vec<crate::transport::IpRange>,
}

impl PipelineLayer {
    pub(crate) fn new(
        service: &'static str,
        rpc: Arc<RpcMetrics>,
        limits: MessageLimits,
        default_timeout: Option<Duration>,
        trusted_proxies: Vec<crate::transport::IpRange>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                service,
                rpc,
                limits,
                default_timeout,
                trusted_proxies,
            }),
        }
    }
}

impl<S> Layer<S> for PipelineLayer {
    type Service = Pipeline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Pipeline {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Pipeline<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Pipeline<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Default + Unpin + Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();

        let timeout = [grpc_timeout(&req), shared.default_timeout]
            .into_iter()
            .flatten()
            .min();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut meta = request_meta(&req, &self.shared.trusted_proxies);
        meta.deadline = deadline;
        let request_id = HeaderValue::from_str(&meta.request_id)
            .expect("a request id is visible ASCII: checked or generated");
        let path = req.uri().path();
        let span = tracing::info_span!(
            "rpc",
            service = %shared.service,
            method = %path,
            request_id = %meta.request_id,
            tenant_id = tracing::field::Empty,
            user_id = tracing::field::Empty,
            code = tracing::field::Empty,
        );
        let client_gone = Arc::new(AtomicBool::new(false));
        let call = Call::start(
            shared.rpc.method(path).clone(),
            span.clone(),
            client_gone.clone(),
        );

        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(meta);
        // The deadline is enforced here, with the code and details the
        // README documents; tonic's own timeout would answer CANCELLED.
        parts.headers.remove(GRPC_TIMEOUT_HEADER);
        let req = Request::from_parts(
            parts,
            RequestBody::new(body, shared.limits.max_request_bytes, client_gone),
        );
        // The auth layer does its work in `call` and records the caller
        // into the current span.
        let future =
            span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))));

        Box::pin(
            async move {
                let outcome = match (future, deadline) {
                    (Ok(future), None) => catch_panic(future).await,
                    (Ok(future), Some(deadline)) => {
                        match tokio::time::timeout_at(deadline.into(), catch_panic(future)).await {
                            Ok(outcome) => outcome,
                            // The handler's future is dropped here: its
                            // database statement is cut off by the
                            // statement timeout its transaction carries.
                            Err(_) => Ok(Ok(deadline_exceeded().into_http())),
                        }
                    }
                    (Err(payload), _) => Err(payload),
                };
                let mut call = call;
                let mut response = match outcome {
                    Ok(Ok(response)) => response,
                    Ok(Err(err)) => {
                        call.finish(Code::Unknown);
                        return Err(err);
                    }
                    Err(payload) => {
                        tracing::error!(panic = %panic_message(&payload), "handler panicked");
                        Status::internal("internal error").into_http()
                    }
                };
                response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
                Ok(body::wrap(response, call, shared.limits.max_response_bytes))
            }
            .instrument(span),
        )
    }
}

/// Polls `future`, turning a panic into `Err` with its payload.
async fn catch_panic<F: Future>(future: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await
}

/// What a panic said, for the log line that ties it to its request.
fn panic_message(payload: &Box<dyn Any + Send>) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// One call from its request to its final status: counted in flight until
/// then, and recorded exactly once, as CANCELLED if the client went away
/// first (it reset the stream or closed the connection).
struct Call {
    method: Arc<MethodMetrics>,
    span: Span,
    started: Instant,
    finished: bool,
    /// Set by the request body when the transport failed under it.
    client_gone: Arc<AtomicBool>,
}

impl Call {
    fn start(method: Arc<MethodMetrics>, span: Span, client_gone: Arc<AtomicBool>) -> Self {
        method.started();
        Self {
            method,
            span,
            started: Instant::now(),
            finished: false,
            client_gone,
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        // A handler that lost its request to the transport answers some
        // error (tonic makes it UNKNOWN, or "missing request message") that
        // no client receives: the call was cancelled.
        let code = if code != Code::Ok && self.client_gone.load(Ordering::Relaxed) {
            Code::Cancelled
        } else {
            code
        };
        let elapsed = self.started.elapsed();
        self.method.finished(code, elapsed);
        self.span.record("code", code_name(code));
        let _entered = self.span.enter();
        let elapsed_ms = elapsed.as_secs_f64() * 1e3;
        // The server's own failures are worth a warning; a client's
        // mistakes and refusals are routine.
        let server_fault = matches!(
            code,
            Code::Unknown | Code::Internal | Code::DataLoss | Code::Unavailable
        );
        if server_fault {
            tracing::warn!(elapsed_ms, "rpc failed");
        } else {
            tracing::debug!(elapsed_ms, "rpc finished");
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// The caller's `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a
/// unit, H M S m u n); an unreadable one is ignored as the spec allows.
fn grpc_timeout<B>(req: &Request<B>) -> Option<Duration> {
    let value = req.headers().get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
    parse_grpc_timeout(value)
}

fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// DEADLINE_EXCEEDED with its `ErrorInfo`.
fn deadline_exceeded() -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let details = ErrorDetails::with_error_info(
        "DEADLINE_EXCEEDED",
        crate::error::DOMAIN,
        std::collections::HashMap::new(),
    );
    Status::with_error_details(
        Code::DeadlineExceeded,
        "the call's deadline passed before it finished",
        details,
    )
}

fn request_meta<B>(req: &Request<B>, trusted_proxies: &[crate::transport::IpRange]) -> RequestMeta {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN)
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let peer_ip = crate::transport::client_ip(
        crate::transport::peer_addr(req).map(|addr| addr.ip()),
        req.headers()
            .get_all(FORWARDED_FOR_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        trusted_proxies,
    )
    .map(|ip| ip.to_string());
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| truncate(v, MAX_USER_AGENT_LEN));
    RequestMeta {
        request_id,
        peer_ip,
        user_agent,
        deadline: None,
    }
}

fn truncate(value: &str, max: usize) -> String {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "5", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use http::HeaderMap;
    use http_body::Frame;

    use super::*;
    use crate::metrics::Metrics;

    const METHOD: &str = "/x.v1.S/M";

    fn pipeline<S>(inner: S) -> (Pipeline<S>, Metrics) {
        let metrics = Metrics::new();
        let rpc = metrics.register_rpc("test", [METHOD.to_owned()]);
        let layer = PipelineLayer::new("test", rpc, MessageLimits::default(), None, Vec::new());
        (layer.layer(inner), metrics)
    }

    fn request(request_id: Option<&str>) -> Request<tonic::body::Body> {
        let mut builder = Request::builder().uri(METHOD);
        if let Some(id) = request_id {
            builder = builder.header(REQUEST_ID_HEADER, id);
        }
        builder.body(tonic::body::Body::empty()).expect("request")
    }

    fn count(metrics: &Metrics, code: &str) -> bool {
        metrics.render().contains(&format!(
            "service=\"test\",method=\"{METHOD}\",code=\"{code}\"}} 1\n"
        ))
    }

    /// A response body of given frames, or one that panics when polled.
    #[derive(Default)]
    struct TestBody {
        frames: VecDeque<Frame<Bytes>>,
        panics: bool,
    }

    impl http_body::Body for TestBody {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            if self.panics {
                panic!("stream bug");
            }
            Poll::Ready(self.frames.pop_front().map(Ok))
        }
    }

    /// A handler: answers with `respond`'s response, and records the
    /// request id it was handed in `x-seen-request-id`.
    #[derive(Clone)]
    struct Handler(fn() -> Response<TestBody>);

    impl Service<Request<RequestBody<tonic::body::Body>>> for Handler {
        type Response = Response<TestBody>;
        type Error = Infallible;
        type Future = BoxFuture<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<RequestBody<tonic::body::Body>>) -> Self::Future {
            let id = req
                .extensions()
                .get::<RequestMeta>()
                .map(|meta| meta.request_id.clone())
                .unwrap_or_default();
            let mut response = (self.0)();
            response.headers_mut().insert(
                "x-seen-request-id",
                HeaderValue::from_str(&id).expect("ascii"),
            );
            Box::pin(async move { Ok(response) })
        }
    }

    fn trailers_only_ok() -> Response<TestBody> {
        Status::ok("").into_http()
    }

    fn streaming(frames: Vec<Frame<Bytes>>) -> Response<TestBody> {
        Response::new(TestBody {
            frames: frames.into(),
            panics: false,
        })
    }

    fn ok_trailers() -> Frame<Bytes> {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Frame::trailers(trailers)
    }

    /// Every frame of `body`, polled to its end.
    async fn frames<B: http_body::Body<Data = Bytes> + Unpin>(mut body: B) -> Vec<Frame<Bytes>>
    where
        B::Error: std::fmt::Debug,
    {
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            out.push(frame.expect("a frame"));
        }
        out
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_with_the_request_id() {
        #[derive(Clone)]
        struct Panicking;
        impl Service<Request<RequestBody<tonic::body::Body>>> for Panicking {
            type Response = Response<TestBody>;
            type Error = Infallible;
            type Future = BoxFuture<Result<Self::Response, Infallible>>;
            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _req: Request<RequestBody<tonic::body::Body>>) -> Self::Future {
                Box::pin(async { panic!("handler bug") })
            }
        }
        let (mut service, metrics) = pipeline(Panicking);
        let response = service
            .call(request(Some("req-1")))
            .await
            .expect("a response");
        assert_eq!(response.headers()["grpc-status"], "13");
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
        assert!(count(&metrics, "INTERNAL"), "{}", metrics.render());
    }

    #[tokio::test]
    async fn a_stream_that_panics_ends_with_internal() {
        let (mut service, metrics) = pipeline(Handler(|| {
            Response::new(TestBody {
                frames: VecDeque::new(),
                panics: true,
            })
        }));
        let response = service.call(request(None)).await.expect("a response");
        let frames = frames(response.into_body()).await;
        let [frame] = frames.as_slice() else {
            panic!("one frame: {frames:?}");
        };
        assert_eq!(frame.trailers_ref().expect("trailers")["grpc-status"], "13");
        assert!(count(&metrics, "INTERNAL"), "{}", metrics.render());
    }

    #[tokio::test]
    async fn the_callers_request_id_reaches_the_handler_and_comes_back() {
        let (mut service, metrics) = pipeline(Handler(trailers_only_ok));
        let response = service
            .call(request(Some("abc-123")))
            .await
            .expect("a response");
        assert_eq!(response.headers()["x-seen-request-id"], "abc-123");
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "abc-123");
        assert!(
            count(&metrics, "OK"),
            "a trailers-only answer settles at once"
        );
    }

    #[tokio::test]
    async fn an_unusable_request_id_is_replaced() {
        let (mut service, _) = pipeline(Handler(trailers_only_ok));
        let too_long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        for id in ["", "has space", "caf\u{e9}", too_long.as_str()] {
            let mut req = request(None);
            if let Ok(value) = HeaderValue::from_bytes(id.as_bytes()) {
                req.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            let response = service.call(req).await.expect("a response");
            let returned = response.headers()[REQUEST_ID_HEADER]
                .to_str()
                .expect("ascii");
            assert_ne!(returned, id);
            assert!(Uuid::parse_str(returned).is_ok(), "{returned}");
            assert_eq!(response.headers()["x-seen-request-id"], returned);
        }
    }

    #[tokio::test]
    async fn a_stream_is_counted_when_its_trailers_go_out() {
        let (mut service, metrics) = pipeline(Handler(|| {
            streaming(vec![
                Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
                ok_trailers(),
            ])
        }));
        let response = service.call(request(None)).await.expect("a response");
        assert!(!count(&metrics, "OK"), "counted before its status");
        assert!(
            metrics.render().contains(
                "codeops_grpc_server_in_flight{service=\"test\",method=\"/x.v1.S/M\"} 1\n"
            )
        );
        let frames = frames(response.into_body()).await;
        assert_eq!(frames.len(), 2);
        assert!(count(&metrics, "OK"), "{}", metrics.render());
        assert!(
            metrics.render().contains(
                "codeops_grpc_server_in_flight{service=\"test\",method=\"/x.v1.S/M\"} 0\n"
            )
        );
    }

    #[tokio::test]
    async fn a_stream_dropped_before_its_status_counts_as_cancelled() {
        let (mut service, metrics) = pipeline(Handler(|| streaming(vec![ok_trailers()])));
        let response = service.call(request(None)).await.expect("a response");
        drop(response);
        assert!(count(&metrics, "CANCELLED"), "{}", metrics.render());
    }

    #[tokio::test]
    async fn a_response_message_over_the_limit_ends_the_call_before_it() {
        let metrics = Metrics::new();
        let rpc = metrics.register_rpc("test", [METHOD.to_owned()]);
        let limits = MessageLimits {
            max_request_bytes: 1024,
            max_response_bytes: 4,
        };
        let mut service =
            PipelineLayer::new("test", rpc, limits, None, Vec::new()).layer(Handler(|| {
                // A 2-byte message, then a 5-byte one.
                streaming(vec![
                    Frame::data(Bytes::from_static(b"\0\0\0\0\x02ab\0\0\0\0\x05abcde")),
                    ok_trailers(),
                ])
            }));
        let response = service.call(request(None)).await.expect("a response");
        let frames = frames(response.into_body()).await;
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(
            frames[0].data_ref().expect("data").as_ref(),
            b"\0\0\0\0\x02ab"
        );
        let status =
            Status::from_header_map(frames[1].trailers_ref().expect("trailers")).expect("a status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            count(&metrics, "RESOURCE_EXHAUSTED"),
            "{}",
            metrics.render()
        );
    }
}
