//! WatchDecisions: events arrive in commit order, only the caller's
//! tenant's, narrowed by the filters; a subscriber that never reads is cut
//! off with WATCH_OVERFLOW while another keeps receiving; a lost listener
//! connection ends the streams with WATCH_INTERRUPTED; either way the
//! client watches again.

use std::time::Duration;

use codeops_proto::decision::decision_service_client::DecisionServiceClient;
use codeops_proto::decision::{
    AssignDecisionRequest, Decision, DecisionEvent, DecisionEventType, DecisionStatus,
    ResolveDecisionRequest, WatchDecisionsRequest,
};
use tonic::Code;
use tonic::codec::Streaming;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use super::{Decisions, decision};
use crate::common::checks::expect_code;
use crate::common::{bearer, ids};

async fn watch(
    client: &mut DecisionServiceClient<Channel>,
    token: &str,
    request: WatchDecisionsRequest,
) -> Streaming<DecisionEvent> {
    client
        .watch_decisions(bearer(request, token))
        .await
        .expect("WatchDecisions")
        .into_inner()
}

/// The next event, within a few seconds.
async fn next(stream: &mut Streaming<DecisionEvent>) -> DecisionEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("an event, not the end")
}

/// Nothing more arrives for a moment.
async fn quiet(stream: &mut Streaming<DecisionEvent>) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("expected no event, got {got:?}");
    }
}

fn kind(event: &DecisionEvent) -> DecisionEventType {
    DecisionEventType::try_from(event.event_type).expect("a known event type")
}

async fn assign(d: &Decisions, id: &str) {
    d.app
        .decisions()
        .assign_decision(bearer(
            AssignDecisionRequest {
                id: id.into(),
                assigned_to_id: ids::BOB.to_string(),
                etag: String::new(),
            },
            &d.alice,
        ))
        .await
        .expect("AssignDecision");
}

async fn resolve(d: &Decisions, id: &str) {
    d.app
        .decisions()
        .resolve_decision(bearer(
            ResolveDecisionRequest {
                id: id.into(),
                selected_option_id: "opt-a".into(),
                rationale: "cheapest".into(),
                ..Default::default()
            },
            &d.alice,
        ))
        .await
        .expect("ResolveDecision");
}

fn sla(title: &str) -> Decision {
    Decision {
        sla_hours: 24,
        ..decision(title)
    }
}

#[tokio::test]
async fn a_subscriber_sees_its_tenants_events_in_commit_order_and_no_other_tenants() {
    let d = Decisions::spawn().await;
    let erin = d.app.login_seeded("globex", "erin@globex.test").await;
    let mut acme = watch(
        &mut d.app.decisions(),
        &d.alice,
        WatchDecisionsRequest::default(),
    )
    .await;
    let mut globex = watch(
        &mut d.app.decisions(),
        &erin,
        WatchDecisionsRequest::default(),
    )
    .await;

    // Globex's write commits first: had it leaked, acme would see it first.
    let theirs = d
        .app
        .decisions()
        .create_decision(bearer(
            codeops_proto::decision::CreateDecisionRequest {
                decision: Some(sla("globex only")),
                ..Default::default()
            },
            &erin,
        ))
        .await
        .expect("globex CreateDecision")
        .into_inner();
    let ours = d.create(sla("watch me")).await;
    assign(&d, &ours.id).await;
    resolve(&d, &ours.id).await;

    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = next(&mut acme).await;
        assert_eq!(
            event.decision_id, ours.id,
            "only acme's decision: {event:?}"
        );
        assert!(event.event_time.is_some());
        assert!(!event.id.is_empty());
        seen.push((kind(&event), event.status()));
    }
    assert_eq!(
        seen,
        vec![
            (DecisionEventType::Created, DecisionStatus::NeedsInput),
            (DecisionEventType::Assigned, DecisionStatus::NeedsInput),
            (DecisionEventType::Resolved, DecisionStatus::Decided),
        ]
    );
    quiet(&mut acme).await;

    let event = next(&mut globex).await;
    assert_eq!(event.decision_id, theirs.id);
    assert_eq!(kind(&event), DecisionEventType::Created);
    quiet(&mut globex).await;
}

#[tokio::test]
async fn filters_by_decision_id_and_event_type() {
    let d = Decisions::spawn().await;
    let a = d.create(sla("watched")).await;
    let b = d.create(sla("not watched")).await;
    let mut by_id = watch(
        &mut d.app.decisions(),
        &d.alice,
        WatchDecisionsRequest {
            decision_ids: vec![a.id.clone()],
            ..Default::default()
        },
    )
    .await;
    let mut by_type = watch(
        &mut d.app.decisions(),
        &d.alice,
        WatchDecisionsRequest {
            event_types: vec![DecisionEventType::Resolved as i32],
            ..Default::default()
        },
    )
    .await;

    assign(&d, &b.id).await;
    assign(&d, &a.id).await;
    resolve(&d, &b.id).await;
    resolve(&d, &a.id).await;

    let got: Vec<_> = [next(&mut by_id).await, next(&mut by_id).await]
        .iter()
        .map(|e| (e.decision_id.clone(), kind(e)))
        .collect();
    assert_eq!(
        got,
        vec![
            (a.id.clone(), DecisionEventType::Assigned),
            (a.id.clone(), DecisionEventType::Resolved),
        ]
    );
    quiet(&mut by_id).await;
    let got: Vec<_> = [next(&mut by_type).await, next(&mut by_type).await]
        .iter()
        .map(|e| (e.decision_id.clone(), kind(e)))
        .collect();
    assert_eq!(
        got,
        vec![
            (b.id.clone(), DecisionEventType::Resolved),
            (a.id.clone(), DecisionEventType::Resolved),
        ]
    );
    quiet(&mut by_type).await;

    // Bad filters are refused before anything is watched.
    for request in [
        WatchDecisionsRequest {
            decision_ids: vec!["not-a-uuid".into()],
            ..Default::default()
        },
        WatchDecisionsRequest {
            event_types: vec![99],
            ..Default::default()
        },
        WatchDecisionsRequest {
            decision_ids: vec![a.id.clone(); 101],
            ..Default::default()
        },
    ] {
        expect_code(
            d.app
                .decisions()
                .watch_decisions(bearer(request, &d.alice))
                .await,
            Code::InvalidArgument,
        );
    }
}

/// Sends `count` notifications of acme events straight from the database
/// in one transaction (as the schema owner), and returns the last event id.
async fn burst(d: &Decisions, decision_id: &str, count: i32) -> String {
    sqlx::query_scalar(
        "SELECT max(id::text) FROM ( \
             SELECT id, pg_notify('codeops_decision_events', json_build_object( \
                 'id', id, 'tenant_id', $1::uuid, 'decision_id', $2::uuid, 'type', 'UPDATED', \
                 'status', 'NEEDS_INPUT', 'at', clock_timestamp())::text) \
             FROM (SELECT gen_random_uuid() AS id, n FROM generate_series(1, $3) n ORDER BY n) ids \
         ) sent",
    )
    .bind(ids::ACME)
    .bind(decision_id)
    .bind(count)
    .fetch_one(&d.pool)
    .await
    .expect("notify")
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_cut_off_while_another_keeps_receiving() {
    let d = Decisions::spawn().await;
    let watched = d.create(sla("busy")).await;
    // The slow subscriber's own connection, with a small HTTP/2 window, so
    // its unread events back up into its buffer soon.
    let slow_channel = Channel::from_shared(format!("http://{}", d.app.decision_addr))
        .expect("endpoint")
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .expect("connect");
    let mut slow = watch(
        &mut DecisionServiceClient::new(slow_channel),
        &d.alice,
        WatchDecisionsRequest::default(),
    )
    .await;
    let mut fast = watch(
        &mut d.app.decisions(),
        &d.alice,
        WatchDecisionsRequest::default(),
    )
    .await;

    // Bursts of 100 (under the 256 buffer); the fast one reads each.
    let mut sent = 0;
    for _ in 0..10 {
        let _ = burst(&d, &watched.id, 100).await;
        for _ in 0..100 {
            let event = next(&mut fast).await;
            assert_eq!(event.decision_id, watched.id);
        }
        sent += 100;
    }

    // The slow one gets what it had buffered, then WATCH_OVERFLOW naming
    // the last event it got.
    let mut received = 0;
    let mut last_id = String::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.message())
            .await
            .expect("the slow stream answers")
        {
            Ok(Some(event)) => {
                received += 1;
                last_id = event.id;
            }
            Ok(None) => panic!("the slow stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "WATCH_OVERFLOW");
    assert!(
        received > 0 && received < sent,
        "received {received} of {sent}"
    );
    assert_eq!(info.domain, "codeops");
    assert_eq!(info.metadata.get("last_event_id"), Some(&last_id));
    assert!(!info.metadata["last_event_time"].is_empty());
    assert!(
        status.message().contains("watch again"),
        "the message says what to do: {status:?}"
    );

    // The fast one still receives, real writes included.
    assign(&d, &watched.id).await;
    let event = next(&mut fast).await;
    assert_eq!(
        (event.decision_id.as_str(), kind(&event)),
        (watched.id.as_str(), DecisionEventType::Assigned)
    );

    // The one cut off watches again (what it missed it reads with
    // GetDecision) and receives what commits from then on.
    let mut resumed = watch(
        &mut d.app.decisions(),
        &d.alice,
        WatchDecisionsRequest {
            decision_ids: vec![watched.id.clone()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        d.get(&watched.id).await.assigned_to_id,
        ids::BOB.to_string()
    );
    resolve(&d, &watched.id).await;
    let event = next(&mut resumed).await;
    assert_eq!(
        (event.decision_id.as_str(), kind(&event)),
        (watched.id.as_str(), DecisionEventType::Resolved)
    );
}

#[tokio::test]
async fn streams_end_cleanly_on_shutdown() {
    let d = Decisions::spawn().await;
    let mut stream = watch(
        &mut d.app.decisions(),
        &d.alice,
        WatchDecisionsRequest::default(),
    )
    .await;
    let Decisions { app, .. } = d;
    let stopping = tokio::spawn(app.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends before the grace period");
    assert!(matches!(end, Ok(None)), "a clean end: {end:?}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown does not wait out the grace period")
        .expect("shutdown");
}

/// The backend pids of the decision service's `LISTEN` connections on the
/// app's database, as the superuser sees them.
async fn listener_backends(d: &Decisions) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND query ILIKE 'LISTEN %codeops_decision_events%'",
    )
    .fetch_all(&d.pool)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test]
async fn a_lost_listener_connection_ends_streams_with_watch_interrupted_and_watching_again_works() {
    let d = Decisions::spawn().await;
    let mut stream = watch(
        &mut d.app.decisions(),
        &d.alice,
        WatchDecisionsRequest::default(),
    )
    .await;
    let first = d.create(sla("before the cut")).await;
    let delivered = next(&mut stream).await;
    assert_eq!(delivered.decision_id, first.id);

    // The listener's connection dies (an administrator, a failover).
    let backends = listener_backends(&d).await;
    assert_eq!(backends.len(), 1, "one LISTEN connection per process");
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(backends[0])
        .fetch_one(&d.pool)
        .await
        .expect("pg_terminate_backend");
    assert!(terminated);

    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends once the listener is lost");
    let status = match end {
        Err(status) => status,
        other => panic!("expected WATCH_INTERRUPTED, got {other:?}"),
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "WATCH_INTERRUPTED");
    assert!(
        status.get_details_retry_info().is_some(),
        "UNAVAILABLE says when to retry: {status:?}"
    );
    assert_eq!(info.domain, "codeops");
    assert_eq!(info.metadata.get("last_event_id"), Some(&delivered.id));
    assert!(!info.metadata["last_event_time"].is_empty());
    assert!(
        status.message().contains("watch again"),
        "the message says what to do: {status:?}"
    );

    // Watching again starts a new listener, and what commits from then on
    // arrives.
    let mut again = watch(
        &mut d.app.decisions(),
        &d.alice,
        WatchDecisionsRequest::default(),
    )
    .await;
    let second = d.create(sla("after the cut")).await;
    let event = next(&mut again).await;
    assert_eq!(
        (event.decision_id.as_str(), kind(&event)),
        (second.id.as_str(), DecisionEventType::Created)
    );
    assert_eq!(listener_backends(&d).await.len(), 1);
    d.app.shutdown().await;
}
