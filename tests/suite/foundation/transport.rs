//! How connections live: the maximum connection age (GOAWAY, then the
//! grace, then the cut) and TLS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use codeops::suite::Service;
use codeops_platform::transport::{TransportSettings, tls_config};
use codeops_proto::planning::ListOutcomesRequest;
use codeops_proto::planning::outcome_service_client::OutcomeServiceClient;
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::grpc::{health_status, services_of};
use crate::common::{TestApp, TestDb, bearer, suite_config};

const AGE: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(1);

async fn spawn_with_transport(transport: TransportSettings) -> TestApp {
    let db = TestDb::seeded().await;
    let mut config = suite_config(&db);
    config.transport = transport;
    TestApp::spawn_with(db, config).await
}

fn aged() -> TransportSettings {
    TransportSettings {
        max_connection_age: Some(AGE),
        max_connection_age_grace: GRACE,
        ..TransportSettings::default()
    }
}

#[tokio::test]
async fn an_idle_connection_past_its_age_is_told_to_go_away_and_closed() {
    let app = spawn_with_transport(aged()).await;
    let tcp = TcpStream::connect(app.addr(Service::Planning))
        .await
        .expect("connect");
    let started = Instant::now();
    let (_send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    // The connection future ends when the server has sent GOAWAY and
    // closed it: gracefully, as nothing was in flight.
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the server closes a connection past its age");
    let lived = started.elapsed();
    assert!(ended.is_ok(), "a graceful close (GOAWAY): {ended:?}");
    assert!(
        lived >= AGE.mul_f32(0.9) && lived < AGE + GRACE + Duration::from_secs(2),
        "closed after {lived:?}"
    );
}

#[tokio::test]
async fn a_channel_reconnects_transparently_after_its_connection_ages_out() {
    let app = spawn_with_transport(aged()).await;
    let token = app.login_seeded("acme", "alice@acme.test").await;
    let mut outcomes = OutcomeServiceClient::new(app.channel(Service::Planning));
    for round in 0..3 {
        outcomes
            .list_outcomes(bearer(ListOutcomesRequest::default(), &token))
            .await
            .unwrap_or_else(|s| panic!("call {round} on the same channel: {s:?}"));
        // Past the age (and the grace): the connection is gone by now.
        tokio::time::sleep(AGE + GRACE + Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_stream_still_open_past_age_and_grace_is_cut() {
    let app = spawn_with_transport(aged()).await;
    let started = Instant::now();
    let mut stream = app
        .health(Service::Identity)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Watch")
        .into_inner();
    let first = stream.message().await.expect("no error").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // GOAWAY at AGE leaves it running; at AGE + GRACE it is cut.
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream is cut within 10 s");
    let lived = started.elapsed();
    assert!(
        !matches!(end, Ok(Some(_))),
        "no status change was due: {end:?}"
    );
    assert!(
        lived >= (AGE + GRACE).mul_f32(0.9),
        "cut after {lived:?}, before age and grace"
    );
    // The channel serves the next call on a new connection.
    let status = health_status(app.channel(Service::Identity), "")
        .await
        .expect("a call after the cut");
    assert_eq!(status, ServingStatus::Serving);
}

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key.
fn self_signed() -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn tls_channel(addr: SocketAddr, ca_pem: &str) -> Channel {
    Channel::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost"),
        )
        .expect("client TLS config")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

#[tokio::test]
async fn with_tls_every_port_serves_a_client_trusting_the_certificate_and_refuses_plaintext() {
    let (cert, key) = self_signed();
    let app = spawn_with_transport(TransportSettings {
        tls: Some(tls_config(&cert, &key).expect("TLS settings")),
        ..TransportSettings::default()
    })
    .await;
    for service in Service::ALL {
        let channel = tls_channel(app.addr(service), &cert);
        for name in [""].iter().chain(services_of(service)) {
            let status = health_status(channel.clone(), name)
                .await
                .unwrap_or_else(|s| panic!("health of {name:?} over TLS on {service:?}: {s:?}"));
            assert_eq!(status, ServingStatus::Serving, "{name:?} on {service:?}");
        }
        // The test harness's channels speak plaintext HTTP/2: refused.
        let plaintext = tokio::time::timeout(
            Duration::from_secs(10),
            health_status(app.channel(service), ""),
        )
        .await
        .expect("a plaintext call fails fast");
        assert!(
            plaintext.is_err(),
            "{service:?} answered plaintext: {plaintext:?}"
        );
    }

    // A token from identity over TLS works on planning over TLS; planning
    // and decision reach identity (revocation feed, SLA defaults) inside
    // the process.
    let login = codeops_proto::identity::auth_service_client::AuthServiceClient::new(tls_channel(
        app.addr(Service::Identity),
        &cert,
    ))
    .login(codeops_proto::identity::LoginRequest {
        tenant_slug: "acme".into(),
        email: "alice@acme.test".into(),
        password: crate::common::PASSWORD.into(),
    })
    .await
    .expect("login over TLS")
    .into_inner();
    let token = login.tokens.expect("tokens").access_token;
    OutcomeServiceClient::new(tls_channel(app.addr(Service::Planning), &cert))
        .list_outcomes(bearer(ListOutcomesRequest::default(), &token))
        .await
        .expect("ListOutcomes over TLS");
    let created = codeops_proto::decision::decision_service_client::DecisionServiceClient::new(
        tls_channel(app.addr(Service::Decision), &cert),
    )
    .create_decision(bearer(
        codeops_proto::decision::CreateDecisionRequest {
            decision: Some(crate::decision::decision("Over TLS")),
            ..Default::default()
        },
        &token,
    ))
    .await
    .expect("CreateDecision over TLS: decision reads identity's SLA defaults")
    .into_inner();
    assert!(created.due_time.is_some(), "{created:?}");
}

#[test]
fn tls_settings_refuse_a_key_that_is_not_the_certificates() {
    let (cert, _) = self_signed();
    let (_, other_key) = self_signed();
    assert!(tls_config(&cert, &other_key).is_err());
    assert!(tls_config("not a certificate", "not a key").is_err());
}

/// The address a login is audited (and throttled) under, for a login
/// carrying `x-forwarded-for: 198.51.100.9, 203.0.113.7` from 127.0.0.1.
async fn audited_address(app: &TestApp) -> Option<String> {
    let request_id = crate::common::checks::new_request_id("forwarded");
    let mut request = crate::common::checks::anonymous(
        codeops_proto::identity::LoginRequest {
            tenant_slug: "acme".into(),
            email: "alice@acme.test".into(),
            password: crate::common::PASSWORD.into(),
        },
        &request_id,
    );
    request.metadata_mut().insert(
        "x-forwarded-for",
        "198.51.100.9, 203.0.113.7".parse().expect("ascii"),
    );
    app.auth().login(request).await.expect("login");
    let pool = app.admin_pool().await;
    let row = crate::common::checks::the_audit_row(&pool, &request_id).await;
    pool.close().await;
    row.ip_address
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    // Trusted: the right-most hop the proxy (127.0.0.1) appended.
    let app = spawn_with_transport(TransportSettings {
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("range")],
        ..TransportSettings::default()
    })
    .await;
    assert_eq!(audited_address(&app).await.as_deref(), Some("203.0.113.7"));
    app.shutdown().await;

    // Not configured: anyone can write the header, so it is ignored.
    let app = spawn_with_transport(TransportSettings::default()).await;
    assert_eq!(audited_address(&app).await.as_deref(), Some("127.0.0.1"));
    app.shutdown().await;
}
