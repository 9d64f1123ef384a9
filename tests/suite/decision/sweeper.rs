//! The SLA sweeper: the clock is moved by handing the sweep a later `now`,
//! never by sleeping. Seeded chain: carol → bob → alice.

use chrono::{Duration, Utc};
use codeops_proto::decision::{
    AssignDecisionRequest, CreateDecisionRequest, Decision, DecisionStatus, ResolveDecisionRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::stakeholders::{assert_counters_match_a_recount, internal};
use super::{Decisions, decision, seeded, time_of, uuid_of};
use crate::common::checks::{assert_unchanged, expect_code, snapshot};
use crate::common::{bearer, free_port, ids, suite_config};

async fn escalations(d: &Decisions, id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM core.audit_logs WHERE action = 'DECISION_ESCALATED' AND entity_id = $1",
    )
    .bind(uuid_of(id))
    .fetch_one(&d.pool)
    .await
    .expect("count escalations")
}

#[tokio::test]
async fn overdue_decisions_climb_the_chain_once_per_deadline_then_are_flagged() {
    let d = Decisions::spawn().await;
    let sweeper = d.sweeper(None).await;
    let created = d
        .create(Decision {
            owner_id: ids::CAROL.to_string(),
            sla_hours: 1,
            ..decision("sweep me")
        })
        .await;
    let now = Utc::now();

    // Not yet due: nothing of ours happens (the seeded overdue ones do).
    sweeper.sweep(now).await.expect("sweep");
    assert_eq!(d.get(&created.id).await.escalation_level, 0);
    // Seeded overdue decisions of both tenants were escalated once, and a
    // second sweep at the same time finds nothing left to do.
    assert_eq!(
        escalations(&d, &seeded::ACME_CHECKLIST.to_string()).await,
        1
    );
    assert_eq!(
        escalations(&d, &seeded::GLOBEX_OVERDUE.to_string()).await,
        1
    );
    let again = sweeper.sweep(now).await.expect("sweep again");
    assert_eq!((again.escalated, again.flagged), (0, 0));

    // Two hours later: carol's manager bob.
    let report = sweeper
        .sweep(now + Duration::hours(2))
        .await
        .expect("sweep");
    assert!(report.escalated >= 1);
    let first = d.get(&created.id).await;
    assert_eq!(first.escalated_to_id, ids::BOB.to_string());
    assert_eq!(first.escalation_level, 1);
    let row: (String, Option<uuid::Uuid>, Option<String>) = sqlx::query_as(
        "SELECT action, actor_id, actor_name FROM core.audit_logs \
         WHERE entity_id = $1 AND action = 'DECISION_ESCALATED'",
    )
    .bind(uuid_of(&created.id))
    .fetch_one(&d.pool)
    .await
    .expect("escalation audit");
    assert_eq!(row.1, None, "the sweeper is no user");
    assert_eq!(row.2.as_deref(), Some("sla-sweeper"));
    // Same clock again: this deadline was escalated already.
    sweeper
        .sweep(now + Duration::hours(2))
        .await
        .expect("sweep");
    assert_eq!(d.get(&created.id).await.escalation_level, 1);

    // Past the new deadline: bob's manager alice.
    sweeper
        .sweep(now + Duration::hours(4))
        .await
        .expect("sweep");
    let second = d.get(&created.id).await;
    assert_eq!(second.escalated_to_id, ids::ALICE.to_string());
    assert_eq!(second.escalation_level, 2);

    // Alice has no manager: flagged, not escalated, and not again.
    let report = sweeper
        .sweep(now + Duration::hours(6))
        .await
        .expect("sweep");
    assert!(report.flagged >= 1);
    let flagged = d.get(&created.id).await;
    assert!(flagged.escalation_flagged);
    assert_eq!(flagged.escalation_level, 2);
    let snap = snapshot(&d.pool).await;
    let report = sweeper
        .sweep(now + Duration::hours(7))
        .await
        .expect("sweep");
    assert_eq!(
        (report.escalated, report.flagged),
        (0, 0),
        "flagged once per deadline"
    );
    assert_unchanged(&snap, &snapshot(&d.pool).await);
    assert_eq!(escalations(&d, &created.id).await, 2);
    d.app.shutdown().await;
}

#[tokio::test]
async fn two_sweepers_racing_escalate_each_decision_exactly_once() {
    let d = Decisions::spawn().await;
    let mut ids_created = Vec::new();
    for i in 0..30 {
        let created = d
            .create(Decision {
                owner_id: ids::CAROL.to_string(),
                sla_hours: 1,
                ..decision(&format!("race {i}"))
            })
            .await;
        ids_created.push(created.id);
    }
    let (a, b) = (d.sweeper(None).await, d.sweeper(None).await);
    let later = Utc::now() + Duration::hours(2);
    let (ra, rb) = tokio::join!(a.sweep(later), b.sweep(later));
    let (ra, rb) = (ra.expect("sweeper a"), rb.expect("sweeper b"));
    // 30 of ours plus the three seeded overdue ones.
    assert_eq!(ra.escalated + rb.escalated, 33, "{ra:?} {rb:?}");
    for id in &ids_created {
        let decision = d.get(id).await;
        assert_eq!(decision.escalation_level, 1, "{id}");
        assert_eq!(decision.escalated_to_id, ids::BOB.to_string());
        assert_eq!(escalations(&d, id).await, 1, "{id}");
    }
    d.app.shutdown().await;
}

#[tokio::test]
async fn closed_decisions_are_never_escalated() {
    let d = Decisions::spawn().await;
    let sweeper = d.sweeper(None).await;
    let created = d
        .create(Decision {
            owner_id: ids::CAROL.to_string(),
            sla_hours: 1,
            ..decision("deferred")
        })
        .await;
    d.force_status(&created.id, "DEFERRED").await;
    sweeper
        .sweep(Utc::now() + Duration::hours(3))
        .await
        .expect("sweep");
    let after = d.get(&created.id).await;
    assert_eq!(after.status, DecisionStatus::Deferred as i32);
    assert_eq!(after.escalation_level, 0);
    d.app.shutdown().await;
}

#[tokio::test]
async fn identity_unreachable_escalation_waits_and_explicit_slas_still_create() {
    let d = Decisions::spawn().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let created = d
        .create(Decision {
            owner_id: ids::CAROL.to_string(),
            sla_hours: 1,
            ..decision("identity down")
        })
        .await;
    let later = Utc::now() + Duration::hours(2);
    let snap = snapshot(&d.pool).await;
    let report = d
        .sweeper(Some(dead.clone()))
        .await
        .sweep(later)
        .await
        .expect("a sweep with identity down still ends");
    assert!(report.identity_failed);
    assert_eq!(report.escalated, 0);
    assert_unchanged(&snap, &snapshot(&d.pool).await);
    // Identity back: nothing was lost.
    d.sweeper(None).await.sweep(later).await.expect("sweep");
    assert_eq!(
        d.get(&created.id).await.escalated_to_id,
        ids::BOB.to_string()
    );

    // A decision service whose identity is unreachable: explicit SLAs
    // still create; defaults cannot be read (UNAVAILABLE, retry).
    let mut config = suite_config(&d.app.db);
    config.identity_url = Some(dead);
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("loopback");
    // Same keys as the app's identity is not available here, so sign in
    // through a suite that shares this config's keys.
    let suite = codeops::suite::start(
        &config,
        &[(codeops::suite::Service::Decision, loopback)],
        loopback,
    )
    .await
    .expect("decision alone");
    let identity_suite = codeops::suite::start(
        &codeops::suite::SuiteConfig {
            identity_url: None,
            ..config.clone()
        },
        &[(codeops::suite::Service::Identity, loopback)],
        loopback,
    )
    .await
    .expect("identity alone");
    let identity = crate::common::channel(
        identity_suite
            .addr(codeops::suite::Service::Identity)
            .expect("identity addr"),
    );
    let login = codeops_proto::identity::auth_service_client::AuthServiceClient::new(identity)
        .login(codeops_proto::identity::LoginRequest {
            tenant_slug: "acme".into(),
            email: "alice@acme.test".into(),
            password: crate::common::PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner();
    let token = login.tokens.expect("tokens").access_token;
    let mut client = codeops_proto::decision::decision_service_client::DecisionServiceClient::new(
        crate::common::channel(suite.addr(codeops::suite::Service::Decision).expect("addr")),
    );
    let explicit = client
        .create_decision(bearer(
            CreateDecisionRequest {
                decision: Some(Decision {
                    sla_hours: 3,
                    ..decision("explicit")
                }),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("explicit sla needs no identity")
        .into_inner();
    assert_eq!(explicit.sla_hours, 3);
    let defaulted = client
        .create_decision(bearer(
            CreateDecisionRequest {
                decision: Some(decision("default")),
                ..Default::default()
            },
            &token,
        ))
        .await;
    let status = expect_code(defaulted, Code::Unavailable);
    assert_eq!(
        status.get_details_error_info().expect("info").reason,
        "IDENTITY_UNAVAILABLE"
    );
    assert!(status.get_details_retry_info().is_some());
    suite.shutdown().await.expect("shutdown");
    identity_suite.shutdown().await.expect("shutdown");
    d.app.shutdown().await;
}

/// Resolves `id` as `token`, again after each ABORTED (the sweeper
/// escalated it meanwhile: read again and retry, as the API says);
/// returns how many tries it took.
async fn resolve_until_done(
    mut client: codeops_proto::decision::decision_service_client::DecisionServiceClient<
        tonic::transport::Channel,
    >,
    token: String,
    id: String,
) -> u32 {
    for attempt in 1..=10 {
        let answer = client
            .resolve_decision(bearer(
                ResolveDecisionRequest {
                    id: id.clone(),
                    selected_option_id: "opt-b".into(),
                    rationale: "racing the sweeper".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await;
        match answer {
            Ok(_) => return attempt,
            Err(status) if status.code() == Code::Aborted => continue,
            Err(status) => panic!("resolving {id}: {status:?}"),
        }
    }
    panic!("resolving {id}: still ABORTED after 10 tries")
}

#[tokio::test]
async fn a_sweep_racing_resolutions_escalates_before_the_resolution_or_not_at_all() {
    let d = Decisions::spawn().await;
    d.create_stakeholder(internal(&ids::CAROL.to_string(), "carol@acme.test"))
        .await
        .expect("carol's stakeholder");
    // 30 decisions held by carol (assigned), due in an hour, in creation
    // order: the sweep takes them oldest deadline first.
    let mut created = Vec::new();
    for i in 0..30 {
        let decision = d
            .create(Decision {
                owner_id: ids::CAROL.to_string(),
                sla_hours: 1,
                ..decision(&format!("sweep or resolve {i}"))
            })
            .await;
        d.app
            .decisions()
            .assign_decision(bearer(
                AssignDecisionRequest {
                    id: decision.id.clone(),
                    assigned_to_id: ids::CAROL.to_string(),
                    etag: String::new(),
                },
                &d.alice,
            ))
            .await
            .expect("assign to carol");
        created.push(decision.id);
    }
    assert_counters_match_a_recount(&d.pool).await;

    // Two hours later, a sweep and the resolutions at once. The sweep goes
    // oldest deadline first; one lane of resolutions goes the same way
    // (meeting the sweep head-on: locked rows, ABORTED and retried), the
    // other starts from the newest, so the sweep finds some decisions
    // already resolved and reaches others before their resolution.
    let sweeper = d.sweeper(None).await;
    let later = Utc::now() + Duration::hours(2);
    let (oldest, newest) = created.split_at(created.len() / 2);
    let lane = |ids: Vec<String>| {
        let client = d.app.decisions();
        let token = d.alice.clone();
        async move {
            let mut tries = Vec::new();
            for id in ids {
                tries.push(resolve_until_done(client.clone(), token.clone(), id).await);
            }
            tries
        }
    };
    let forward = tokio::spawn(lane(oldest.to_vec()));
    let backward = tokio::spawn(lane(newest.iter().rev().cloned().collect()));
    let (report, forward, backward) = tokio::join!(sweeper.sweep(later), forward, backward);
    let tries: Vec<u32> = forward
        .expect("forward lane")
        .into_iter()
        .chain(backward.expect("backward lane"))
        .collect();
    let report = report.expect("sweep");
    assert!(!report.identity_failed, "{report:?}");
    assert_eq!(tries.len(), created.len());

    let mut escalated_first = 0;
    for id in &created {
        let after = d.get(id).await;
        assert_eq!(after.status, DecisionStatus::Decided as i32, "{id}");
        assert_eq!(after.decided_by_id, ids::ALICE.to_string(), "{id}");
        let decided_at = time_of(&after.decide_time);
        // (action, time, the status the row records, when it changed)
        let rows: Vec<(String, chrono::DateTime<Utc>, Option<String>)> = sqlx::query_as(
            "SELECT action, timestamp, new_values::jsonb ->> 'status' FROM core.audit_logs \
             WHERE entity_id = $1 AND action IN ('DECISION_ESCALATED', 'DECISION_RESOLVED') \
             ORDER BY timestamp, id",
        )
        .bind(uuid_of(id))
        .fetch_all(&d.pool)
        .await
        .expect("the decision's audit rows");
        let resolved: Vec<_> = rows.iter().filter(|r| r.0 == "DECISION_RESOLVED").collect();
        assert_eq!(resolved.len(), 1, "{id}: one resolution: {rows:?}");
        let escalations: Vec<_> = rows
            .iter()
            .filter(|r| r.0 == "DECISION_ESCALATED")
            .collect();
        match after.escalation_level {
            0 => {
                assert!(escalations.is_empty(), "{id}: not escalated: {rows:?}");
                assert_eq!(after.escalated_to_id, "", "{id}");
            }
            1 => {
                escalated_first += 1;
                assert_eq!(escalations.len(), 1, "{id}: escalated once: {rows:?}");
                let (_, escalated_at, status) = escalations[0];
                assert!(
                    *escalated_at < decided_at && *escalated_at < resolved[0].1,
                    "{id}: the escalation precedes the resolution: {rows:?}, decided {decided_at}"
                );
                // The audit keeps what changed: an escalation of an open
                // decision leaves its status out, or names an open one.
                assert!(
                    matches!(status.as_deref(), None | Some("NEEDS_INPUT")),
                    "{id}: escalated while open: {rows:?}"
                );
                assert_eq!(after.escalated_to_id, ids::BOB.to_string(), "{id}");
            }
            level => panic!("{id}: escalated {level} times by one sweep"),
        }
        assert_eq!(
            rows.last().map(|r| r.0.as_str()),
            Some("DECISION_RESOLVED"),
            "{id}: nothing after the resolution: {rows:?}"
        );
    }
    assert_counters_match_a_recount(&d.pool).await;
    // A later sweep finds nothing of ours: resolved decisions are done.
    let snap = snapshot(&d.pool).await;
    let again = sweeper
        .sweep(later + Duration::hours(1))
        .await
        .expect("sweep again");
    assert_eq!((again.escalated, again.flagged), (0, 0), "{again:?}");
    assert_unchanged(&snap, &snapshot(&d.pool).await);
    eprintln!(
        "sweep vs resolve: {escalated_first} of {} escalated before their resolution ({report:?}, tries {tries:?})",
        created.len()
    );
    d.app.shutdown().await;
}
