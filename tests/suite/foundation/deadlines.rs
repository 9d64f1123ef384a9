//! Deadlines: a call past its caller's `grpc-timeout` answers
//! DEADLINE_EXCEEDED (not CANCELLED), and the database statement behind it
//! is cancelled rather than left running.

use std::time::Duration;

use codeops_proto::identity::{GetTeamRequest, Team, UpdateTeamRequest};
use prost::Message;
use sqlx::Connection;
use tonic::Code;

use crate::common::raw::{RawConnection, frame};
use crate::common::{TestApp, bearer};
use crate::identity::support::{mask, teams};

/// Backends of the test database waiting on a lock.
async fn lock_waiters(admin: &sqlx::PgPool, database: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .expect("count lock waiters")
}

#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded_and_its_statement_is_cancelled() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let admin = app.admin_pool().await;

    // Another transaction holds the team's row: the update has to wait.
    let mut holder = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("holder connection");
    sqlx::raw_sql(&format!(
        "BEGIN; SELECT 1 FROM core.teams WHERE id = '{}' FOR UPDATE",
        teams::GROWTH
    ))
    .execute(&mut holder)
    .await
    .expect("hold the row");

    // A raw HTTP/2 client: only the server enforces the deadline (tonic's
    // client would give up on its own first and say CANCELLED).
    let update = UpdateTeamRequest {
        team: Some(Team {
            id: teams::GROWTH.to_string(),
            name: "Renamed while locked".into(),
            ..Default::default()
        }),
        update_mask: mask(&["name"]),
    };
    let authorization = format!("Bearer {alice}");
    let mut connection = RawConnection::connect(app.identity_addr).await;
    let response = connection
        .call(
            "/codeops.identity.v1.TeamService/UpdateTeam",
            &[("authorization", &authorization), ("grpc-timeout", "700m")],
            frame(false, &update.encode_to_vec()),
        )
        .await;
    let status = response.status();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let info = tonic_types::StatusExt::get_details_error_info(&status).expect("ErrorInfo");
    assert_eq!(info.reason, "DEADLINE_EXCEEDED");

    // The blocked UPDATE does not outlive its deadline on the server.
    let mut waiting = lock_waiters(&admin, &app.db.name).await;
    for _ in 0..40 {
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waiting = lock_waiters(&admin, &app.db.name).await;
    }
    assert_eq!(waiting, 0, "the statement still waits after the deadline");

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release the row");
    let team = app
        .teams()
        .get_team(bearer(
            GetTeamRequest {
                id: teams::GROWTH.to_string(),
            },
            &alice,
        ))
        .await
        .expect("get the team")
        .into_inner();
    assert_eq!(team.name, "Growth", "nothing changed");
    admin.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_call_within_its_deadline_is_unaffected() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let mut request = bearer(
        GetTeamRequest {
            id: teams::GROWTH.to_string(),
        },
        &alice,
    );
    request.set_timeout(Duration::from_secs(10));
    let team = app
        .teams()
        .get_team(request)
        .await
        .expect("a generous deadline is no obstacle")
        .into_inner();
    assert_eq!(team.name, "Growth");
    app.shutdown().await;
}
