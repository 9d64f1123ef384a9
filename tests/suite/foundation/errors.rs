//! Errors clients can act on (AIP-193): every class of status decodes with
//! tonic-types into the details the README documents — an ErrorInfo with a
//! stable reason and domain `codeops`, plus BadRequest, ResourceInfo or
//! RetryInfo where the class calls for it.

use codeops_proto::identity::{
    CreateTeamRequest, DeleteTeamRequest, GetTeamRequest, Team, UpdateTeamRequest,
};
use codeops_proto::planning::GetOutcomeRequest;
use std::time::{Duration, Instant};

use codeops::suite::Service;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::common::grpc::health_status;
use crate::common::{PASSWORD, TestApp, bearer, with_database};
use crate::identity::support::{expect_code, mask, teams};

#[track_caller]
fn assert_reason(status: &Status, reason: &str) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "codeops");
}

#[tokio::test]
async fn every_client_error_class_carries_its_documented_details() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;

    // INVALID_ARGUMENT: BadRequest naming the field.
    let status = expect_code(
        app.teams()
            .get_team(bearer(GetTeamRequest { id: "nope".into() }, &alice))
            .await,
        Code::InvalidArgument,
    );
    assert_reason(&status, "FIELD_VIOLATIONS");
    let bad = status.get_details_bad_request().expect("BadRequest");
    assert_eq!(bad.field_violations[0].field, "id");

    // NOT_FOUND: ResourceInfo naming the type (another tenant's id alike).
    for id in [Uuid::new_v4(), teams::OPERATIONS] {
        let status = expect_code(
            app.teams()
                .get_team(bearer(GetTeamRequest { id: id.to_string() }, &alice))
                .await,
            Code::NotFound,
        );
        assert_reason(&status, "RESOURCE_NOT_FOUND");
        let info = status.get_details_resource_info().expect("ResourceInfo");
        assert_eq!(info.resource_type, "team");
    }

    // ALREADY_EXISTS: ResourceInfo.
    let taken = Team {
        name: "Another growth".into(),
        slug: "growth".into(),
        ..Default::default()
    };
    let status = expect_code(
        app.teams()
            .create_team(bearer(
                CreateTeamRequest {
                    team: Some(taken),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_reason(&status, "RESOURCE_ALREADY_EXISTS");
    assert_eq!(
        status
            .get_details_resource_info()
            .expect("ResourceInfo")
            .resource_type,
        "team"
    );

    // ABORTED: a stale etag.
    let stale = Team {
        id: teams::GROWTH.to_string(),
        name: "Renamed".into(),
        etag: "W/\"1\"".into(),
        ..Default::default()
    };
    let status = expect_code(
        app.teams()
            .update_team(bearer(
                UpdateTeamRequest {
                    team: Some(stale),
                    update_mask: mask(&["name"]),
                },
                &alice,
            ))
            .await,
        Code::Aborted,
    );
    assert_reason(&status, "ETAG_MISMATCH");

    // FAILED_PRECONDITION: archiving an archived team.
    let archive = || DeleteTeamRequest {
        id: teams::PLATFORM.to_string(),
    };
    app.teams()
        .delete_team(bearer(archive(), &alice))
        .await
        .expect("archive once");
    let status = expect_code(
        app.teams().delete_team(bearer(archive(), &alice)).await,
        Code::FailedPrecondition,
    );
    assert_reason(&status, "TEAM_ARCHIVED");

    // PERMISSION_DENIED: the missing permission in the ErrorInfo.
    let status = expect_code(
        app.teams().delete_team(bearer(archive(), &dan)).await,
        Code::PermissionDenied,
    );
    assert_reason(&status, "PERMISSION_MISSING");
    assert_eq!(
        status.get_details_error_info().expect("info").metadata["permission"],
        "team.manage"
    );

    // UNAUTHENTICATED: a stable reason the client can branch on.
    let status = expect_code(
        app.login_response("acme", "alice@acme.test", "not-her-password")
            .await,
        Code::Unauthenticated,
    );
    assert_reason(&status, "BAD_CREDENTIALS");

    // RESOURCE_EXHAUSTED: a throttled login says when to retry.
    let mut throttled = None;
    for _ in 0..50 {
        match app
            .login_response("acme", "carol@acme.test", "wrong-password")
            .await
        {
            Err(status) if status.code() == Code::ResourceExhausted => {
                throttled = Some(status);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
            Ok(_) => panic!("a wrong password logged in"),
        }
    }
    let status = throttled.expect("repeated wrong passwords are throttled");
    assert_reason(&status, "LOGIN_THROTTLED");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.is_some_and(|d| !d.is_zero()));
    app.shutdown().await;
}

/// Polls planning's health until it reports `want` (at most 20 s).
async fn planning_health_becomes(app: &TestApp, want: ServingStatus) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if health_status(app.channel(Service::Planning), "").await.ok() == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn unavailable_carries_retry_info_while_the_database_is_unreachable() {
    let app = TestApp::spawn().await;
    let token = app.login("acme", "alice@acme.test", PASSWORD).await;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&with_database(&app.db.url, "postgres"))
        .await
        .expect("superuser connection to the postgres database");
    let database = app.db.name.clone();
    let get = || {
        bearer(
            GetOutcomeRequest {
                id: Uuid::new_v4().to_string(),
            },
            &token,
        )
    };
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

    // Once health has noticed, a call is refused at once: no pool wait, no
    // connection attempt.
    let noticed = planning_health_becomes(&app, ServingStatus::NotServing).await;
    let mut latencies = Vec::new();
    let mut results = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        results.push(app.outcomes().get_outcome(get()).await);
        latencies.push(started.elapsed());
    }

    sqlx::raw_sql(&format!(
        r#"ALTER DATABASE "{database}" ALLOW_CONNECTIONS true"#
    ))
    .execute(&admin)
    .await
    .expect("allow connections again");
    assert!(
        noticed,
        "health stayed SERVING with the database unreachable"
    );
    for result in results {
        let status = expect_code(result, Code::Unavailable);
        assert_reason(&status, "DATABASE_UNAVAILABLE");
        assert!(status.get_details_retry_info().is_some(), "RetryInfo");
        assert!(!status.message().contains("connection"), "no driver text");
    }
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(100),
        "UNAVAILABLE took up to {slowest:?}: {latencies:?}"
    );

    // The database is back: calls succeed again without a restart.
    assert!(
        planning_health_becomes(&app, ServingStatus::Serving).await,
        "health did not recover with the database back"
    );
    let status = expect_code(app.outcomes().get_outcome(get()).await, Code::NotFound);
    assert_reason(&status, "RESOURCE_NOT_FOUND");
    admin.close().await;
    app.shutdown().await;
}
