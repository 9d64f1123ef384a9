//! What every port serves (reflection, health) and the planning and
//! decision read RPCs across tenants. Request ids are the pipeline's
//! (`foundation::pipeline`).

use std::collections::BTreeSet;
use std::time::Duration;

use codeops::suite::Service;
use codeops_proto::decision::{GetDecisionRequest, ListDecisionsRequest};
use codeops_proto::planning::{GetOutcomeRequest, ListOutcomesRequest};
use prost::Message;
use prost_types::FileDescriptorProto;
use sqlx::PgPool;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use crate::common::grpc::{
    HEALTH_SERVICE, file_containing_symbol_v1, file_containing_symbol_v1alpha, health_status,
    list_services_v1, list_services_v1alpha, services_of,
};
use crate::common::{TestApp, bearer, ids, with_database};

fn assert_lists(service: Service, version: &str, listed: &[String]) {
    for expected in services_of(service).iter().chain([&HEALTH_SERVICE]) {
        assert!(
            listed.iter().any(|l| l == expected),
            "{version} reflection on the {} port does not list {expected}; it lists {listed:?}",
            service.name()
        );
    }
    // A port lists what it serves, not the other services' APIs.
    for other in Service::ALL.into_iter().filter(|o| *o != service) {
        for foreign in services_of(other) {
            assert!(
                !listed.iter().any(|l| l == foreign),
                "{version} reflection on the {} port lists {foreign}, which it does not serve",
                service.name()
            );
        }
    }
}

#[tokio::test]
async fn reflection_v1_lists_each_ports_services_and_health() {
    let app = TestApp::spawn().await;
    for service in Service::ALL {
        let listed = list_services_v1(app.channel(service))
            .await
            .unwrap_or_else(|s| panic!("v1 reflection on {}: {s:?}", service.name()));
        assert_lists(service, "grpc.reflection.v1", &listed);
    }
}

#[tokio::test]
async fn reflection_v1alpha_lists_each_ports_services_and_health() {
    let app = TestApp::spawn().await;
    for service in Service::ALL {
        let listed = list_services_v1alpha(app.channel(service))
            .await
            .unwrap_or_else(|s| panic!("v1alpha reflection on {}: {s:?}", service.name()));
        assert_lists(service, "grpc.reflection.v1alpha", &listed);
    }
}

#[tokio::test]
async fn health_answers_serving_for_the_server_and_each_service() {
    let app = TestApp::spawn().await;
    for service in Service::ALL {
        for name in [""].iter().chain(services_of(service)) {
            let status = health_status(app.channel(service), name)
                .await
                .unwrap_or_else(|s| panic!("health check {name:?} on {}: {s:?}", service.name()));
            assert_eq!(
                status,
                ServingStatus::Serving,
                "health of {name:?} on the {} port",
                service.name()
            );
        }
    }
}

#[tokio::test]
async fn health_of_an_unknown_service_is_not_found() {
    let app = TestApp::spawn().await;
    let err = health_status(app.channel(Service::Planning), "codeops.nope.v1.Nothing")
        .await
        .expect_err("an unknown service has no health");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn health_watch_of_an_unknown_service_streams_service_unknown_and_stays_open() {
    let app = TestApp::spawn().await;
    let mut stream = app
        .health(Service::Planning)
        .watch(HealthCheckRequest {
            service: "codeops.nope.v1.Nothing".into(),
        })
        .await
        .expect("Watch of an unknown service opens a stream, not NOT_FOUND")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a first status within 5 s")
        .expect("no error")
        .expect("a status, not the end");
    assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
    // The stream stays open (the service could still appear): nothing
    // more arrives, neither an end nor an error.
    let more = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(more.is_err(), "the stream went on with {more:?}");
}

/// The next answer of a health Watch, within 5 s.
async fn next_health(
    stream: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> Result<Option<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an answer within 5 s")
}

#[tokio::test]
async fn health_watch_sends_the_status_and_its_change_on_shutdown() {
    let app = TestApp::spawn().await;
    let mut stream = app
        .health(Service::Decision)
        .watch(HealthCheckRequest {
            service: "codeops.decision.v1.DecisionService".into(),
        })
        .await
        .expect("Watch")
        .into_inner();
    let first = next_health(&mut stream)
        .await
        .expect("no error")
        .expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(app.shutdown());
    let second = next_health(&mut stream)
        .await
        .expect("no error")
        .expect("a status");
    assert_eq!(second.status, ServingStatus::NotServing as i32);
    // Then the stream ends (OK): a watcher does not hold the drain.
    let end = next_health(&mut stream).await;
    assert!(matches!(end, Ok(None)), "a clean end: {end:?}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown does not wait out the grace period")
        .expect("shutdown task");
}

/// The files reflection (v1) answers `FileByFilename(name)` with.
async fn file_by_filename(
    channel: tonic::transport::Channel,
    name: &str,
) -> Result<Vec<FileDescriptorProto>, tonic::Status> {
    use pb::server_reflection_request::MessageRequest;
    use pb::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1 as pb;
    let request = pb::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileByFilename(name.to_owned())),
    };
    let mut responses = pb::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    match responses.message().await?.and_then(|r| r.message_response) {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            Ok(decode_files(files.file_descriptor_proto))
        }
        Some(MessageResponse::ErrorResponse(error)) => Err(tonic::Status::new(
            Code::from_i32(error.error_code),
            error.error_message,
        )),
        other => Err(tonic::Status::internal(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

fn decode_files(encoded: Vec<Vec<u8>>) -> Vec<FileDescriptorProto> {
    encoded
        .iter()
        .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).expect("a FileDescriptorProto"))
        .collect()
}

#[tokio::test]
async fn reflection_serves_health_under_its_standard_file_name() {
    const FILE: &str = "grpc/health/v1/health.proto";
    let app = TestApp::spawn().await;
    for service in Service::ALL {
        for (version, files) in [
            (
                "v1",
                file_containing_symbol_v1(app.channel(service), HEALTH_SERVICE).await,
            ),
            (
                "v1alpha",
                file_containing_symbol_v1alpha(app.channel(service), HEALTH_SERVICE).await,
            ),
        ] {
            let files = decode_files(files.unwrap_or_else(|s| {
                panic!("{version} FileContainingSymbol({HEALTH_SERVICE}) on {service:?}: {s:?}")
            }));
            let names: Vec<_> = files.iter().map(|f| f.name().to_owned()).collect();
            assert_eq!(names, [FILE], "{version} on {service:?}");
        }
        let files = file_by_filename(app.channel(service), FILE)
            .await
            .unwrap_or_else(|s| panic!("FileByFilename({FILE}) on {service:?}: {s:?}"));
        assert_eq!(files.len(), 1, "{service:?}");
        assert_eq!(files[0].package(), "grpc.health.v1");
        assert_eq!(files[0].service[0].name(), "Health");
    }
}

async fn ids_of(pool: &PgPool, table: &str, tenant: Uuid) -> BTreeSet<String> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar(&format!("SELECT id FROM core.{table} WHERE tenant_id = $1"))
            .bind(tenant)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("ids of core.{table}: {e}"));
    ids.into_iter().map(|id| id.to_string()).collect()
}

async fn list_outcome_ids(app: &TestApp, token: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let request = ListOutcomesRequest {
            page_size: 100,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = app
            .outcomes()
            .list_outcomes(bearer(request, token))
            .await
            .expect("ListOutcomes")
            .into_inner();
        for outcome in page.outcomes {
            assert!(
                ids.insert(outcome.id.clone()),
                "outcome {} listed twice",
                outcome.id
            );
        }
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

async fn list_decision_ids(app: &TestApp, token: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let request = ListDecisionsRequest {
            page_size: 100,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = app
            .decisions()
            .list_decisions(bearer(request, token))
            .await
            .expect("ListDecisions")
            .into_inner();
        for decision in page.decisions {
            assert!(
                ids.insert(decision.id.clone()),
                "decision {} listed twice",
                decision.id
            );
        }
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn list_outcomes_returns_only_the_callers_tenant() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let acme = ids_of(&pool, "outcomes", ids::ACME).await;
    let globex = ids_of(&pool, "outcomes", ids::GLOBEX).await;
    assert!(
        !acme.is_empty() && !globex.is_empty(),
        "the seeds need outcomes in both tenants"
    );

    let alice = app.login_seeded("acme", "alice@acme.test").await;
    assert_eq!(list_outcome_ids(&app, &alice).await, acme);
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    assert_eq!(list_outcome_ids(&app, &erin).await, globex);
}

#[tokio::test]
async fn list_decisions_returns_only_the_callers_tenant() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let acme = ids_of(&pool, "decisions", ids::ACME).await;
    let globex = ids_of(&pool, "decisions", ids::GLOBEX).await;
    assert!(
        !acme.is_empty() && !globex.is_empty(),
        "the seeds need decisions in both tenants"
    );

    let alice = app.login_seeded("acme", "alice@acme.test").await;
    assert_eq!(list_decision_ids(&app, &alice).await, acme);
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    assert_eq!(list_decision_ids(&app, &erin).await, globex);
}

#[tokio::test]
async fn reads_without_a_token_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let status = app
        .outcomes()
        .list_outcomes(ListOutcomesRequest::default())
        .await
        .expect_err("ListOutcomes without a token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = app
        .decisions()
        .list_decisions(ListDecisionsRequest::default())
        .await
        .expect_err("ListDecisions without a token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = app
        .outcomes()
        .list_outcomes(bearer(ListOutcomesRequest::default(), "not-a-token"))
        .await
        .expect_err("ListOutcomes with a garbage token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn another_tenants_rows_are_not_found() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;

    let outcome = ids_of(&pool, "outcomes", ids::GLOBEX)
        .await
        .into_iter()
        .next()
        .expect("a globex outcome");
    let status = app
        .outcomes()
        .get_outcome(bearer(
            GetOutcomeRequest {
                id: outcome.clone(),
            },
            &alice,
        ))
        .await
        .expect_err("alice reads a globex outcome");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let decision = ids_of(&pool, "decisions", ids::GLOBEX)
        .await
        .into_iter()
        .next()
        .expect("a globex decision");
    let status = app
        .decisions()
        .get_decision(bearer(GetDecisionRequest { id: decision }, &alice))
        .await
        .expect_err("alice reads a globex decision");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // The same outcome is there for its own tenant.
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    let found = app
        .outcomes()
        .get_outcome(bearer(
            GetOutcomeRequest {
                id: outcome.clone(),
            },
            &erin,
        ))
        .await
        .expect("erin reads her tenant's outcome")
        .into_inner();
    assert_eq!(found.id, outcome);
}

#[tokio::test]
async fn a_viewer_can_read_outcomes_and_decisions() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    assert_eq!(
        list_outcome_ids(&app, &dan).await,
        ids_of(&pool, "outcomes", ids::ACME).await
    );
    assert_eq!(
        list_decision_ids(&app, &dan).await,
        ids_of(&pool, "decisions", ids::ACME).await
    );

    let outcome = ids_of(&pool, "outcomes", ids::ACME)
        .await
        .into_iter()
        .next()
        .expect("an acme outcome");
    let found = app
        .outcomes()
        .get_outcome(bearer(
            GetOutcomeRequest {
                id: outcome.clone(),
            },
            &dan,
        ))
        .await
        .expect("a viewer reads an outcome")
        .into_inner();
    assert_eq!(found.id, outcome);
}

/// Polls health of `service` on the planning port until it reports `want`.
async fn wait_for_health(app: &TestApp, service: &str, want: ServingStatus) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if health_status(app.channel(Service::Planning), service)
            .await
            .ok()
            == Some(want)
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unreachable_and_recovers() {
    let app = TestApp::spawn().await;
    // ALTER DATABASE … ALLOW_CONNECTIONS cannot name the current database.
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&with_database(&app.db.url, "postgres"))
        .await
        .expect("superuser connection to the postgres database");
    let database = app.db.name.clone();
    let outcomes = "codeops.planning.v1.OutcomeService";
    assert!(wait_for_health(&app, outcomes, ServingStatus::Serving).await);
    let token = app.login_seeded("acme", "alice@acme.test").await;
    let list = || {
        crate::common::bearer(
            codeops_proto::planning::ListOutcomesRequest::default(),
            &token,
        )
    };

    // Cut the services off: no new connections, existing ones killed.
    sqlx::raw_sql(&format!(
        r#"ALTER DATABASE "{database}" ALLOW_CONNECTIONS false"#
    ))
    .execute(&admin)
    .await
    .expect("disallow connections");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&admin)
        .await
        .expect("terminate the services' connections");
    let went_down = wait_for_health(&app, outcomes, ServingStatus::NotServing).await;
    let server_down = health_status(app.channel(Service::Planning), "").await.ok();
    // Known unreachable: refused at once, not after the pool's 5 s acquire
    // timeout (the bound is generous; the point is not waiting it out).
    let started = std::time::Instant::now();
    let refused = app.outcomes().list_outcomes(list()).await;
    let refused_after = started.elapsed();

    sqlx::raw_sql(&format!(
        r#"ALTER DATABASE "{database}" ALLOW_CONNECTIONS true"#
    ))
    .execute(&admin)
    .await
    .expect("allow connections again");
    assert!(
        went_down,
        "health stayed SERVING with the database unreachable"
    );
    assert_eq!(server_down, Some(ServingStatus::NotServing));
    let status = refused.expect_err("no database, no outcomes");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        tonic_types::StatusExt::get_details_error_info(&status)
            .expect("ErrorInfo")
            .reason,
        "DATABASE_UNAVAILABLE"
    );
    assert!(
        refused_after < std::time::Duration::from_secs(2),
        "UNAVAILABLE took {refused_after:?}"
    );
    assert!(
        wait_for_health(&app, outcomes, ServingStatus::Serving).await,
        "health did not recover with the database back"
    );
    // And calls work again without a restart.
    app.outcomes()
        .list_outcomes(list())
        .await
        .expect("calls recover with the database");
    admin.close().await;
}

#[tokio::test]
async fn health_and_reflection_accept_gzip_requests() {
    use tonic::codec::CompressionEncoding::Gzip;
    let app = TestApp::spawn().await;
    for service in Service::ALL {
        let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel(service))
            .send_compressed(Gzip)
            .accept_compressed(Gzip);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("{service:?}: gzip health check: {s:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");

        use tonic_reflection::pb::v1 as pb;
        let mut reflection =
            pb::server_reflection_client::ServerReflectionClient::new(app.channel(service))
                .send_compressed(Gzip)
                .accept_compressed(Gzip);
        let request = pb::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(pb::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap_or_else(|s| panic!("{service:?}: gzip reflection: {s:?}"))
            .into_inner();
        assert!(
            answers.message().await.expect("an answer").is_some(),
            "{service:?}: reflection answered"
        );
    }
    app.shutdown().await;
}
