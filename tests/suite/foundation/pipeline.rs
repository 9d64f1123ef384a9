//! The request pipeline every port runs first, over real gRPC on loopback:
//! request ids, panics, metrics, message limits and malformed messages, the
//! auth layer's token reasons, the error details reflection serves, and the
//! HTTP/2 stream limit.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codeops::suite::Service;
use codeops_platform::server::{self, AuthSettings, PipelineSettings, ServiceSpec};
use codeops_proto::decision::ListDecisionsRequest;
use codeops_proto::identity::{CreateTenantRequest, GetCurrentUserRequest, LoginRequest};
use codeops_proto::planning::ListOutcomesRequest;
use codeops_tenant::{Access, KeyPair, MethodAccess, TokenSettings, TokenVerifier};
use prost::Message;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::common::grpc::{file_containing_symbol_v1, file_containing_symbol_v1alpha};
use crate::common::metrics::{sample, scrape, wait_for_sample};
use crate::common::raw::{RawConnection, frame, frame_claiming};
use crate::common::{TestApp, TestDb, bearer, ids};
use crate::identity::jwt::{Ed25519, sign_eddsa, unix_now};
use crate::identity::support::KeyedIdentity;

const REQUEST_ID: &str = "x-request-id";
const LOGIN: &str = "/codeops.identity.v1.AuthService/Login";
const GET_CURRENT_USER: &str = "/codeops.identity.v1.AuthService/GetCurrentUser";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

const HANDLED: &str = "codeops_grpc_server_handled_total";
const STARTED: &str = "codeops_grpc_server_started_total";
const IN_FLIGHT: &str = "codeops_grpc_server_in_flight";
const LATENCY: &str = "codeops_grpc_server_handling_seconds";

fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata.get(REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// Code and `ErrorInfo` reason of `status`, whose domain must be ours.
fn reason_of(status: &Status) -> (Code, String) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "codeops", "{status:?}");
    (status.code(), info.reason)
}

/// The labels of `method` on `service`'s port, plus `extra`.
fn labels<'a>(
    service: &'a str,
    method: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![("service", service), ("method", method)];
    labels.extend_from_slice(extra);
    labels
}

async fn expect_sample(addr: SocketAddr, name: &str, labels: &[(&str, &str)], value: f64) {
    if let Err(text) = wait_for_sample(addr, name, labels, value).await {
        panic!("{name}{labels:?} never became {value}:\n{text}");
    }
}

// ---------------------------------------------------------------------------
// Request ids

#[tokio::test]
async fn request_id_is_echoed_when_given() {
    let app = TestApp::spawn().await;
    for service in Service::ALL {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        request
            .metadata_mut()
            .insert(REQUEST_ID, "suite-test-request-42".parse().expect("ascii"));
        let response = app
            .health(service)
            .check(request)
            .await
            .expect("health check");
        assert_eq!(
            request_id_of(response.metadata()),
            Some("suite-test-request-42"),
            "request id on the {} port",
            service.name()
        );
    }

    // Also on a real RPC.
    let mut request = tonic::Request::new(LoginRequest {
        tenant_slug: "acme".into(),
        email: "alice@acme.test".into(),
        password: "password123".into(),
    });
    request
        .metadata_mut()
        .insert(REQUEST_ID, "login-request-7".parse().expect("ascii"));
    let response = app.auth().login(request).await.expect("login");
    assert_eq!(request_id_of(response.metadata()), Some("login-request-7"));
}

#[tokio::test]
async fn request_id_is_generated_when_absent() {
    let app = TestApp::spawn().await;
    let mut seen = BTreeSet::new();
    for service in Service::ALL {
        let response = app
            .health(service)
            .check(HealthCheckRequest::default())
            .await
            .expect("health check");
        let id = request_id_of(response.metadata())
            .unwrap_or_else(|| panic!("no {REQUEST_ID} from the {} port", service.name()))
            .to_owned();
        assert!(Uuid::parse_str(&id).is_ok(), "generated request id {id:?}");
        assert!(
            seen.insert(id.clone()),
            "request id {id} was handed out twice"
        );
    }
}

#[tokio::test]
async fn request_id_is_returned_on_errors_too() {
    let app = TestApp::spawn().await;
    let mut request = tonic::Request::new(ListOutcomesRequest::default());
    request
        .metadata_mut()
        .insert(REQUEST_ID, "rejected-call-1".parse().expect("ascii"));
    let status = app
        .outcomes()
        .list_outcomes(request)
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(request_id_of(status.metadata()), Some("rejected-call-1"));
}

// ---------------------------------------------------------------------------
// Panics

/// A service whose handler panics (`Unary`) or whose response stream panics
/// once the handler has returned (`Stream`).
#[derive(Clone)]
struct Panics;

const PANICS: &str = "codeops.test.v1.Panics";
const PANICS_ACCESS: &[MethodAccess] =
    &[MethodAccess::new("/codeops.test.v1.Panics", Access::Public)];

impl tonic::server::NamedService for Panics {
    const NAME: &'static str = PANICS;
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Panics {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let streaming = req.uri().path().ends_with("/Stream");
        Box::pin(async move {
            if !streaming {
                panic!("a handler bug");
            }
            let mut response = http::Response::new(tonic::body::Body::new(PanickingStream));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok(response)
        })
    }
}

struct PanickingStream;

impl http_body::Body for PanickingStream {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        panic!("a stream bug")
    }
}

/// `Panics` served by the production bootstrap on a loopback port, until
/// the sender is dropped.
async fn serve_panics(db: &TestDb) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let spec = ServiceSpec {
        name: "panics",
        grpc_services: &[PANICS],
        routes: tonic::service::Routes::new(Panics),
        access: PANICS_ACCESS,
    };
    let keys = KeyPair::generate().expect("key pair");
    let verifier =
        TokenVerifier::new(&[keys.public_key()], &TokenSettings::default()).expect("verifier");
    let auth = AuthSettings {
        verifier: Arc::new(verifier),
        operator_token_sha256: None,
        service_token_sha256: None,
    };
    let db = db.service_db(codeops_platform::ServiceRole::Planning).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(
        listener,
        spec,
        auth,
        PipelineSettings::default(),
        db,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

#[tokio::test]
async fn a_panic_answers_internal_with_the_request_id_and_the_connection_lives_on() {
    let db = TestDb::seeded().await;
    let (addr, _stop) = serve_panics(&db).await;
    let mut connection = RawConnection::connect(addr).await;

    let unary = connection
        .call(
            "/codeops.test.v1.Panics/Unary",
            &[(REQUEST_ID, "panic-1")],
            frame(false, b""),
        )
        .await;
    let status = unary.status();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Internal, "internal error")
    );
    assert_eq!(unary.headers[REQUEST_ID], "panic-1");

    let stream = connection
        .call("/codeops.test.v1.Panics/Stream", &[], frame(false, b""))
        .await;
    let status = stream.status();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Internal, "internal error")
    );
    assert!(stream.trailers.is_some(), "the stream ends with trailers");
    let made = stream.headers[REQUEST_ID].to_str().expect("ascii");
    assert!(
        Uuid::parse_str(made).is_ok(),
        "generated request id {made:?}"
    );

    // The same connection still serves.
    let health = connection
        .call(
            HEALTH_CHECK,
            &[],
            frame(false, &HealthCheckRequest::default().encode_to_vec()),
        )
        .await;
    assert_eq!(health.status().code(), Code::Ok);
}

// ---------------------------------------------------------------------------
// Metrics

#[tokio::test]
async fn metrics_count_calls_by_method_and_code() {
    let app = TestApp::spawn().await;
    let token = app.login_seeded("acme", "alice@acme.test").await;
    for _ in 0..3 {
        app.auth()
            .get_current_user(bearer(GetCurrentUserRequest {}, &token))
            .await
            .expect("current user");
    }
    for _ in 0..2 {
        app.auth()
            .get_current_user(GetCurrentUserRequest {})
            .await
            .expect_err("no token");
    }

    let text = scrape(app.metrics_addr).await;
    let method = |extra| labels("identity", GET_CURRENT_USER, extra);
    assert_eq!(
        sample(&text, HANDLED, &method(&[("code", "OK")])),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, HANDLED, &method(&[("code", "UNAUTHENTICATED")])),
        Some(2.0)
    );
    let codes: Vec<_> = crate::common::metrics::samples(&text)
        .into_iter()
        .filter(|(name, l, _)| name == HANDLED && l["method"] == GET_CURRENT_USER)
        .map(|(_, l, _)| l["code"].clone())
        .collect();
    assert_eq!(codes.len(), 2, "only OK and UNAUTHENTICATED: {codes:?}");
    assert_eq!(sample(&text, STARTED, &method(&[])), Some(5.0));
    assert_eq!(sample(&text, IN_FLIGHT, &method(&[])), Some(0.0));
    assert_eq!(
        sample(&text, &format!("{LATENCY}_count"), &method(&[])),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("{LATENCY}_bucket"),
            &method(&[("le", "+Inf")])
        ),
        Some(5.0)
    );
    assert!(sample(&text, &format!("{LATENCY}_sum"), &method(&[])).is_some_and(|s| s > 0.0));
    assert!(text.contains(&format!("# TYPE {LATENCY} histogram\n")));
    assert!(text.contains(&format!("# TYPE {IN_FLIGHT} gauge\n")));
    assert_eq!(
        sample(
            &text,
            HANDLED,
            &labels("identity", LOGIN, &[("code", "OK")])
        ),
        Some(1.0),
        "the login"
    );
}

#[tokio::test]
async fn an_open_stream_is_in_flight_until_the_client_goes_away() {
    let app = TestApp::spawn().await;
    let mut stream = app
        .health(Service::Planning)
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    stream
        .message()
        .await
        .expect("a status")
        .expect("a first message");
    let watch = |extra| labels("planning", HEALTH_WATCH, extra);
    expect_sample(app.metrics_addr, IN_FLIGHT, &watch(&[]), 1.0).await;

    drop(stream);
    expect_sample(app.metrics_addr, IN_FLIGHT, &watch(&[]), 0.0).await;
    expect_sample(
        app.metrics_addr,
        HANDLED,
        &watch(&[("code", "CANCELLED")]),
        1.0,
    )
    .await;
}

#[tokio::test]
async fn pool_gauges_are_reported_for_each_service() {
    let app = TestApp::spawn().await;
    let text = scrape(app.metrics_addr).await;
    for service in Service::ALL {
        let of = |name| {
            sample(&text, name, &[("service", service.name())])
                .unwrap_or_else(|| panic!("no {name} for {}:\n{text}", service.name()))
        };
        let (size, idle, max) = (
            of("codeops_db_pool_connections"),
            of("codeops_db_pool_idle_connections"),
            of("codeops_db_pool_max_connections"),
        );
        assert_eq!(max, 16.0, "{}", service.name());
        assert!(
            size >= 1.0 && idle <= size && size <= max,
            "{}: size {size}, idle {idle}, max {max}",
            service.name()
        );
    }
}

// ---------------------------------------------------------------------------
// Message limits and malformed messages

#[tokio::test]
async fn a_5_mib_request_is_resource_exhausted_with_error_info() {
    let app = TestApp::spawn().await;
    let five_mib = "x".repeat(5 * 1024 * 1024);
    let mut request = tonic::Request::new(LoginRequest {
        tenant_slug: "acme".into(),
        email: "alice@acme.test".into(),
        password: five_mib.clone(),
    });
    request
        .metadata_mut()
        .insert(REQUEST_ID, "too-large-1".parse().expect("ascii"));
    let status = app.auth().login(request).await.expect_err("over the limit");
    assert_eq!(
        reason_of(&status),
        (Code::ResourceExhausted, "REQUEST_TOO_LARGE".into()),
        "{status:?}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata["limitBytes"], "4194304");
    assert_eq!(request_id_of(status.metadata()), Some("too-large-1"));

    // Past the auth layer on another port, the same.
    let token = app.login_seeded("acme", "alice@acme.test").await;
    let request = ListOutcomesRequest {
        page_token: five_mib,
        ..Default::default()
    };
    let status = app
        .outcomes()
        .list_outcomes(bearer(request, &token))
        .await
        .expect_err("over the limit");
    assert_eq!(
        reason_of(&status),
        (Code::ResourceExhausted, "REQUEST_TOO_LARGE".into())
    );
}

/// A request body that does not decode, with the headers it goes with.
struct Malformed {
    case: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Vec<u8>,
}

/// `LoginRequest` bodies that do not decode, one per way to break one.
fn malformed_logins() -> Vec<Malformed> {
    let mut bad_varint = vec![0x0a];
    bad_varint.extend([0xff; 10]);
    bad_varint.push(0x01);
    vec![
        Malformed {
            case: "bad varint",
            headers: &[],
            body: frame(false, &bad_varint),
        },
        Malformed {
            case: "invalid UTF-8 in a string field",
            headers: &[],
            body: frame(false, &[0x0a, 0x02, 0xff, 0xfe]),
        },
        Malformed {
            case: "truncated frame",
            headers: &[],
            body: frame_claiming(false, 40, &[0x0a, 0x04, b'a', b'c']),
        },
        Malformed {
            case: "compressed flag without grpc-encoding",
            headers: &[],
            body: frame(true, &[0x0a, 0x01, b'a']),
        },
        Malformed {
            case: "corrupt gzip",
            headers: &[("grpc-encoding", "gzip")],
            body: frame(true, b"this is not gzip"),
        },
    ]
}

#[tokio::test]
async fn malformed_request_messages_are_invalid_argument_with_error_info() {
    let app = TestApp::spawn().await;
    let mut connection = RawConnection::connect(app.identity_addr).await;
    let cases = malformed_logins();
    for Malformed {
        case,
        headers,
        body,
    } in &cases
    {
        let response = connection.call(LOGIN, headers, body.clone()).await;
        let status = response.status();
        assert_eq!(
            reason_of(&status),
            (Code::InvalidArgument, "MALFORMED_REQUEST".into()),
            "{case}: {status:?}"
        );
        assert!(
            status.message().starts_with("malformed request message: "),
            "{case}: {status:?}"
        );
        assert!(response.headers.contains_key(REQUEST_ID), "{case}");
    }
    let text = scrape(app.metrics_addr).await;
    assert_eq!(
        sample(
            &text,
            HANDLED,
            &labels("identity", LOGIN, &[("code", "INVALID_ARGUMENT")])
        ),
        Some(cases.len() as f64),
        "counted by their final code"
    );
}

#[tokio::test]
async fn a_malformed_request_is_invalid_argument_on_every_port() {
    let app = TestApp::spawn().await;
    for service in Service::ALL {
        let mut connection = RawConnection::connect(app.addr(service)).await;
        let response = connection
            .call(HEALTH_CHECK, &[], frame(false, &[0x0a, 0x02, 0xc3, 0x28]))
            .await;
        assert_eq!(
            reason_of(&response.status()),
            (Code::InvalidArgument, "MALFORMED_REQUEST".into()),
            "{} port",
            service.name()
        );
    }
}

// ---------------------------------------------------------------------------
// The auth layer's reasons

#[tokio::test]
async fn missing_expired_and_invalid_tokens_have_distinct_reasons() {
    let identity = KeyedIdentity::spawn().await;
    let key = Ed25519::from_key_pair(&identity.key);
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": identity.key.public_key().kid()});
    let now = unix_now();
    let claims = |exp: u64| {
        json!({
            "sub": ids::ALICE, "tid": ids::ACME, "role": "OWNER", "perms": [],
            "name": "Alice Anders", "email": "alice@acme.test",
            "iss": "codeops-identity", "aud": "codeops",
            "exp": exp, "nbf": exp - 900, "iat": exp - 900, "jti": Uuid::new_v4(),
            "sid": Uuid::new_v4(),
        })
    };
    let valid = sign_eddsa(&key, &header, &claims(now + 600));
    let expired = sign_eddsa(&key, &header, &claims(now - 3600));
    let other_key = Ed25519::from_key_pair(&KeyPair::generate().expect("key pair"));
    let expired_by_another_key = sign_eddsa(&other_key, &header, &claims(now - 3600));
    let other_audience = {
        let mut claims = claims(now + 600);
        claims["aud"] = json!("billing");
        sign_eddsa(&key, &header, &claims)
    };

    let call = |authorization: Option<String>| {
        let mut request = tonic::Request::new(GetCurrentUserRequest {});
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii"));
        }
        let mut auth = identity.auth();
        async move { auth.get_current_user(request).await }
    };
    call(Some(format!("Bearer {valid}")))
        .await
        .expect("control: a valid token is accepted");

    let cases = [
        ("no authorization", None, "TOKEN_MISSING"),
        (
            "a blank bearer",
            Some("Bearer ".to_owned()),
            "TOKEN_MISSING",
        ),
        (
            "not a bearer",
            Some(format!("Basic {valid}")),
            "TOKEN_MISSING",
        ),
        (
            "expired",
            Some(format!("Bearer {expired}")),
            "TOKEN_EXPIRED",
        ),
        (
            "garbage",
            Some("Bearer not.a.jwt".to_owned()),
            "TOKEN_INVALID",
        ),
        (
            "expired, signed by another key",
            Some(format!("Bearer {expired_by_another_key}")),
            "TOKEN_INVALID",
        ),
        (
            "another audience",
            Some(format!("Bearer {other_audience}")),
            "TOKEN_INVALID",
        ),
    ];
    for (case, authorization, reason) in cases {
        let status = call(authorization).await.expect_err(case);
        assert_eq!(
            reason_of(&status),
            (Code::Unauthenticated, reason.to_owned()),
            "{case}: {status:?}"
        );
    }
}

/// `message`, with `authorization: Bearer <token>` when there is a token.
fn maybe_bearer<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    match token {
        Some(token) => bearer(message, token),
        None => tonic::Request::new(message),
    }
}

#[tokio::test]
async fn every_port_gives_the_same_token_reasons() {
    let app = TestApp::spawn().await;
    for (token, reason) in [(None, "TOKEN_MISSING"), (Some("garbage"), "TOKEN_INVALID")] {
        let planning = app
            .outcomes()
            .list_outcomes(maybe_bearer(ListOutcomesRequest::default(), token))
            .await
            .expect_err("refused");
        let decision = app
            .decisions()
            .list_decisions(maybe_bearer(ListDecisionsRequest::default(), token))
            .await
            .expect_err("refused");
        for status in [planning, decision] {
            assert_eq!(
                reason_of(&status),
                (Code::Unauthenticated, reason.to_owned())
            );
        }
    }
}

#[tokio::test]
async fn an_undeclared_method_is_unimplemented_and_a_wrong_operator_credential_unauthenticated() {
    let app = TestApp::spawn().await;
    let mut connection = RawConnection::connect(app.planning_addr).await;
    let response = connection
        .call(
            "/codeops.planning.v1.OutcomeService/DropEverything",
            &[],
            frame(false, b""),
        )
        .await;
    let status = response.status();
    assert_eq!(
        reason_of(&status),
        (Code::Unimplemented, "METHOD_NOT_FOUND".into())
    );
    assert_eq!(
        status.get_details_error_info().expect("ErrorInfo").metadata["method"],
        "/codeops.planning.v1.OutcomeService/DropEverything"
    );

    let status = app
        .tenants()
        .create_tenant(bearer(
            CreateTenantRequest::default(),
            "not-the-operator-credential",
        ))
        .await
        .expect_err("wrong credential");
    assert_eq!(
        reason_of(&status),
        (Code::Unauthenticated, "OPERATOR_CREDENTIAL_REQUIRED".into())
    );
}

// ---------------------------------------------------------------------------
// Reflection

#[tokio::test]
async fn reflection_serves_the_error_details_on_every_port() {
    let app = TestApp::spawn().await;
    for service in Service::ALL {
        let answers = [
            (
                "v1",
                file_containing_symbol_v1(app.channel(service), "google.rpc.BadRequest").await,
            ),
            (
                "v1alpha",
                file_containing_symbol_v1alpha(app.channel(service), "google.rpc.BadRequest").await,
            ),
        ];
        for (version, answer) in answers {
            let files = answer.unwrap_or_else(|s| {
                panic!("{version} reflection on the {} port: {s:?}", service.name())
            });
            let file = files
                .iter()
                .map(|raw| {
                    prost_types::FileDescriptorProto::decode(raw.as_slice()).expect("a file")
                })
                .find(|file| file.name() == "google/rpc/error_details.proto")
                .unwrap_or_else(|| {
                    panic!("{version} on {}: no error_details.proto", service.name())
                });
            for message in ["ErrorInfo", "BadRequest", "ResourceInfo", "RetryInfo"] {
                assert!(
                    file.message_type.iter().any(|m| m.name() == message),
                    "{version} on {}: no {message}",
                    service.name()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The HTTP/2 stream limit

/// HTTP/2 by hand, for a client that ignores the server's stream limit (h2's
/// own client politely queues streams beyond it).
mod raw_h2 {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const REFUSED_STREAM: u32 = 0x7;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("small payload");
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// One frame: type, flags, stream id, payload.
    pub async fn read_frame(tcp: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await?;
        Ok((head[3], head[4], stream, payload))
    }

    /// An HPACK block of literal fields, never indexed, without Huffman.
    pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in headers {
            block.push(0x00);
            for text in [name, value] {
                let len = u8::try_from(text.len()).expect("short header");
                assert!(len < 0x7f, "one-byte length prefix");
                block.push(len);
                block.extend_from_slice(text.as_bytes());
            }
        }
        block
    }

    /// The value of one setting in a SETTINGS payload.
    pub fn setting(payload: &[u8], id: u16) -> Option<u32> {
        payload.chunks_exact(6).find_map(|entry| {
            (u16::from_be_bytes([entry[0], entry[1]]) == id)
                .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
        })
    }
}

#[tokio::test]
async fn a_connection_cannot_have_more_than_200_streams_in_flight_and_they_are_released_on_close() {
    use raw_h2::*;

    const LIMIT: u32 = 200;
    const OPENED: u32 = 250;
    let app = TestApp::spawn().await;
    let addr = app.identity_addr;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat())
        .await
        .expect("preface");
    let advertised = loop {
        let (kind, flags, _, payload) = read_frame(&mut tcp).await.expect("server settings");
        if kind == SETTINGS && flags & ACK == 0 {
            break setting(&payload, SETTINGS_MAX_CONCURRENT_STREAMS);
        }
    };
    assert_eq!(advertised, Some(LIMIT), "SETTINGS_MAX_CONCURRENT_STREAMS");
    tcp.write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .expect("settings ack");

    // Half-open health checks: headers, and never a body.
    let authority = addr.to_string();
    let block = header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", HEALTH_CHECK),
        (":authority", &authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    let stream_id = |i: u32| 1 + 2 * i;
    let opening: Vec<u8> = (0..OPENED)
        .flat_map(|i| frame(HEADERS, END_HEADERS, stream_id(i), &block))
        .collect();
    tcp.write_all(&opening).await.expect("open streams");

    let mut refused = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refused.len() < (OPENED - LIMIT) as usize {
        let (kind, flags, stream, payload) =
            tokio::time::timeout_at(deadline, read_frame(&mut tcp))
                .await
                .unwrap_or_else(|_| panic!("only {} streams refused: {refused:?}", refused.len()))
                .expect("a frame");
        match kind {
            RST_STREAM => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                assert_eq!(code, REFUSED_STREAM, "reset of stream {stream}");
                refused.insert(stream);
            }
            PING if flags & ACK == 0 => {
                tcp.write_all(&frame(PING, ACK, 0, &payload))
                    .await
                    .expect("ping ack");
            }
            GOAWAY => panic!("the server closed the connection: {payload:?}"),
            _ => {}
        }
    }
    let beyond: BTreeSet<u32> = (LIMIT..OPENED).map(stream_id).collect();
    assert_eq!(refused, beyond, "exactly the streams beyond the limit");

    let check = |extra| labels("identity", HEALTH_CHECK, extra);
    expect_sample(app.metrics_addr, IN_FLIGHT, &check(&[]), f64::from(LIMIT)).await;

    // Closing the connection releases every stream it held.
    let started = Instant::now();
    drop(tcp);
    expect_sample(app.metrics_addr, IN_FLIGHT, &check(&[]), 0.0).await;
    expect_sample(
        app.metrics_addr,
        HANDLED,
        &check(&[("code", "CANCELLED")]),
        f64::from(LIMIT),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "released promptly"
    );
}
