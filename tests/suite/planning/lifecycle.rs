//! Both lifecycle tables of product.md ("Planning lifecycle"), written once
//! here: every edge is walked through the API (status, timestamps, actors,
//! audit row, etag) and every non-edge is tried and refused with nothing
//! changed. Then races: two concurrent moves, exactly one wins.

use std::collections::BTreeSet;

use codeops_proto::planning::{
    AbandonHypothesisRequest, AbandonOutcomeRequest, BlockHypothesisRequest,
    ConcludeHypothesisRequest, ExperimentResults, GetHypothesisRequest, GetOutcomeRequest,
    Hypothesis, HypothesisConclusion, HypothesisStatus, InvalidateOutcomeRequest,
    MarkHypothesisDeployedRequest, MarkHypothesisReadyRequest, Metric, Outcome, OutcomeStatus,
    PlanOutcomeRequest, StartBuildingHypothesisRequest, StartMeasuringHypothesisRequest,
    StartOutcomeRequest, SubmitOutcomeForValidationRequest, UnblockHypothesisRequest,
    UpdateOutcomeRequest, ValidateOutcomeRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::{Planning, outcome, uuid_of};
use crate::common::checks::{
    assert_audit, assert_unchanged, audit_rows, call, expect_code, mask, new_request_id, snapshot,
    the_audit_row,
};
use crate::common::{bearer, ids};

/// product.md's outcome table: from → to.
const OUTCOME_TABLE: &[(&str, &[&str])] = &[
    ("DRAFT", &["NOT_STARTED", "IN_PROGRESS", "ABANDONED"]),
    ("NOT_STARTED", &["IN_PROGRESS", "ABANDONED"]),
    ("IN_PROGRESS", &["VALIDATING", "ABANDONED"]),
    (
        "VALIDATING",
        &["VALIDATED", "INVALIDATED", "IN_PROGRESS", "ABANDONED"],
    ),
    ("VALIDATED", &[]),
    ("INVALIDATED", &[]),
    ("ABANDONED", &[]),
];

/// product.md's hypothesis table: from → to; BLOCKED returns to the status
/// it was blocked from.
const BLOCKED_FROM: &str = "<the status it was blocked from>";
const HYPOTHESIS_TABLE: &[(&str, &[&str])] = &[
    ("DRAFT", &["READY", "ABANDONED"]),
    ("READY", &["BUILDING", "BLOCKED", "ABANDONED"]),
    ("BUILDING", &["DEPLOYED", "BLOCKED", "ABANDONED"]),
    ("DEPLOYED", &["MEASURING", "BLOCKED", "ABANDONED"]),
    (
        "MEASURING",
        &["VALIDATED", "INVALIDATED", "BLOCKED", "ABANDONED"],
    ),
    ("BLOCKED", &[BLOCKED_FROM, "ABANDONED"]),
    ("VALIDATED", &[]),
    ("INVALIDATED", &[]),
    ("ABANDONED", &[]),
];

fn targets(table: &[(&str, &'static [&'static str])], from: &str) -> &'static [&'static str] {
    table
        .iter()
        .find(|(status, _)| *status == from)
        .map(|(_, to)| *to)
        .expect("a status of the table")
}

fn error_info(status: &Status) -> (String, std::collections::HashMap<String, String>) {
    let info = status.get_details_error_info().expect("ErrorInfo");
    (info.reason, info.metadata)
}

/// The one move each method makes, by the target it names in the table.
#[derive(Clone, Copy, Debug)]
enum OutcomeMove {
    Plan,
    Start,
    Submit,
    Validate,
    Invalidate,
    Abandon,
}

impl OutcomeMove {
    const ALL: [OutcomeMove; 6] = [
        OutcomeMove::Plan,
        OutcomeMove::Start,
        OutcomeMove::Submit,
        OutcomeMove::Validate,
        OutcomeMove::Invalidate,
        OutcomeMove::Abandon,
    ];

    fn target(self) -> &'static str {
        match self {
            OutcomeMove::Plan => "NOT_STARTED",
            OutcomeMove::Start => "IN_PROGRESS",
            OutcomeMove::Submit => "VALIDATING",
            OutcomeMove::Validate => "VALIDATED",
            OutcomeMove::Invalidate => "INVALIDATED",
            OutcomeMove::Abandon => "ABANDONED",
        }
    }

    fn audit_action(self) -> &'static str {
        match self {
            OutcomeMove::Validate => "OUTCOME_VALIDATED",
            OutcomeMove::Invalidate => "OUTCOME_INVALIDATED",
            _ => "STATUS_CHANGE",
        }
    }

    async fn call(
        self,
        p: &Planning,
        id: &str,
        etag: &str,
        request_id: &str,
    ) -> Result<Outcome, Status> {
        let mut client = p.app.outcomes();
        let (id, etag) = (id.to_owned(), etag.to_owned());
        let token = &p.alice;
        let response = match self {
            OutcomeMove::Plan => {
                client
                    .plan_outcome(call(PlanOutcomeRequest { id, etag }, token, request_id))
                    .await
            }
            OutcomeMove::Start => {
                client
                    .start_outcome(call(StartOutcomeRequest { id, etag }, token, request_id))
                    .await
            }
            OutcomeMove::Submit => {
                client
                    .submit_outcome_for_validation(call(
                        SubmitOutcomeForValidationRequest { id, etag },
                        token,
                        request_id,
                    ))
                    .await
            }
            OutcomeMove::Validate => {
                client
                    .validate_outcome(call(
                        ValidateOutcomeRequest {
                            id,
                            etag,
                            notes: "held for 3 weeks".into(),
                            current_metrics: vec![Metric {
                                key: "rate".into(),
                                current: Some(47.0),
                                ..Default::default()
                            }],
                        },
                        token,
                        request_id,
                    ))
                    .await
            }
            OutcomeMove::Invalidate => {
                client
                    .invalidate_outcome(call(
                        InvalidateOutcomeRequest {
                            id,
                            etag,
                            notes: "no movement".into(),
                        },
                        token,
                        request_id,
                    ))
                    .await
            }
            OutcomeMove::Abandon => {
                client
                    .abandon_outcome(call(
                        AbandonOutcomeRequest {
                            id,
                            etag,
                            reason: "priorities changed".into(),
                        },
                        token,
                        request_id,
                    ))
                    .await
            }
        };
        response.map(tonic::Response::into_inner)
    }
}

async fn get_outcome(p: &Planning, id: &str) -> Outcome {
    p.app
        .outcomes()
        .get_outcome(bearer(GetOutcomeRequest { id: id.into() }, &p.alice))
        .await
        .expect("GetOutcome")
        .into_inner()
}

/// A start time far in the past, set on every case whose status lies after
/// IN_PROGRESS, so "the first time only" shows.
const EARLY_START: &str = "2020-01-02T03:04:05Z";

/// A new outcome in `status`.
async fn outcome_in(p: &Planning, status: &str) -> Outcome {
    let created = p.create_outcome(outcome(&format!("case {status}"))).await;
    if status != "DRAFT" {
        p.force_outcome_status(&created.id, status).await;
    }
    if !matches!(status, "DRAFT" | "NOT_STARTED") {
        sqlx::query("UPDATE core.outcomes SET started_at = $2::timestamptz WHERE id = $1::uuid")
            .bind(&created.id)
            .bind(EARLY_START)
            .execute(&p.pool)
            .await
            .expect("set started_at");
    }
    get_outcome(p, &created.id).await
}

fn outcome_status(name: &str) -> i32 {
    OutcomeStatus::from_str_name(&format!("OUTCOME_STATUS_{name}")).expect("an outcome status")
        as i32
}

#[tokio::test]
async fn every_outcome_edge_moves_and_every_non_edge_is_refused() {
    let p = Planning::spawn().await;
    let mut legal = 0;
    let mut illegal = 0;
    for (from, _) in OUTCOME_TABLE {
        for mv in OutcomeMove::ALL {
            let to = mv.target();
            let before = outcome_in(&p, from).await;
            let request_id = new_request_id("outcome-move");
            let case = format!("{from} --{mv:?}--> {to}");
            if targets(OUTCOME_TABLE, from).contains(&to) {
                legal += 1;
                let after = mv
                    .call(&p, &before.id, &before.etag, &request_id)
                    .await
                    .unwrap_or_else(|s| panic!("{case}: {s:?}"));
                assert_eq!(after.status, outcome_status(to), "{case}");
                assert_ne!(after.etag, before.etag, "{case}: a move changes the etag");
                check_outcome_effects(&case, from, to, &before, &after);
                let row = the_audit_row(&p.pool, &request_id).await;
                assert_audit(
                    &row,
                    mv.audit_action(),
                    Some(ids::ALICE),
                    "outcome",
                    uuid_of(&before.id),
                );
                assert_eq!(row.old_json()["status"], *from, "{case}: audit old status");
                assert_eq!(row.new_json()["status"], to, "{case}: audit new status");
                assert_eq!(get_outcome(&p, &before.id).await, after, "{case}: as read");
            } else {
                illegal += 1;
                let snap = snapshot(&p.pool).await;
                let status = expect_code(
                    mv.call(&p, &before.id, &before.etag, &request_id).await,
                    Code::FailedPrecondition,
                );
                let (reason, metadata) = error_info(&status);
                assert_eq!(reason, "ILLEGAL_TRANSITION", "{case}");
                assert_eq!(metadata["current_status"], *from, "{case}");
                assert_eq!(metadata["requested_status"], to, "{case}");
                let allowed: BTreeSet<&str> = metadata["allowed_statuses"]
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .collect();
                assert_eq!(
                    allowed,
                    targets(OUTCOME_TABLE, from).iter().copied().collect(),
                    "{case}: the error lists the allowed moves"
                );
                assert!(
                    status.message().contains(from),
                    "{case}: {}",
                    status.message()
                );
                assert_unchanged(&snap, &snapshot(&p.pool).await);
                assert!(audit_rows(&p.pool, &request_id).await.is_empty(), "{case}");
            }
        }
    }
    let edges: usize = OUTCOME_TABLE.iter().map(|(_, to)| to.len()).sum();
    assert_eq!(legal, edges, "every edge of the table was walked");
    assert_eq!(
        legal + illegal,
        OUTCOME_TABLE.len() * OutcomeMove::ALL.len()
    );
}

fn check_outcome_effects(case: &str, from: &str, to: &str, before: &Outcome, after: &Outcome) {
    let alice = ids::ALICE.to_string();
    let early = prost_types::Timestamp {
        seconds: chrono::DateTime::parse_from_rfc3339(EARLY_START)
            .expect("time")
            .timestamp(),
        nanos: 0,
    };
    match to {
        "IN_PROGRESS" if from == "VALIDATING" => {
            assert_eq!(after.start_time, Some(early), "{case}: start time kept");
        }
        "IN_PROGRESS" => {
            assert!(before.start_time.is_none(), "{case}");
            assert!(after.start_time.is_some(), "{case}: start time set");
        }
        "VALIDATED" => {
            assert!(after.validate_time.is_some(), "{case}");
            assert_eq!(after.validated_by_id, alice, "{case}");
            assert_eq!(after.validation_notes, "held for 3 weeks", "{case}");
            assert_eq!(after.current_metrics[0].current, Some(47.0), "{case}");
            assert!(after.invalidate_time.is_none(), "{case}");
        }
        "INVALIDATED" => {
            assert!(after.invalidate_time.is_some(), "{case}");
            assert_eq!(after.invalidated_by_id, alice, "{case}");
            assert_eq!(after.validation_notes, "no movement", "{case}");
            assert!(after.validate_time.is_none(), "{case}");
        }
        "ABANDONED" => {
            assert!(after.abandon_time.is_some(), "{case}");
            assert_eq!(after.abandon_reason, "priorities changed", "{case}");
        }
        _ => {}
    }
    if to != "IN_PROGRESS" {
        assert_eq!(
            after.start_time, before.start_time,
            "{case}: start time kept"
        );
    }
    if !matches!(to, "VALIDATED" | "INVALIDATED") {
        assert!(after.validate_time.is_none() && after.invalidate_time.is_none());
        assert!(after.validated_by_id.is_empty() && after.invalidated_by_id.is_empty());
    }
}

// ---------------------------------------------------------------------------
// Hypotheses

#[derive(Clone, Copy, Debug)]
enum HypothesisMove {
    MarkReady,
    StartBuilding,
    MarkDeployed,
    StartMeasuring,
    Block,
    Unblock,
    ConcludeValidated,
    ConcludeInvalidated,
    Abandon,
}

impl HypothesisMove {
    const ALL: [HypothesisMove; 9] = [
        HypothesisMove::MarkReady,
        HypothesisMove::StartBuilding,
        HypothesisMove::MarkDeployed,
        HypothesisMove::StartMeasuring,
        HypothesisMove::Block,
        HypothesisMove::Unblock,
        HypothesisMove::ConcludeValidated,
        HypothesisMove::ConcludeInvalidated,
        HypothesisMove::Abandon,
    ];

    /// The target as the table names it.
    fn target(self) -> &'static str {
        match self {
            HypothesisMove::MarkReady => "READY",
            HypothesisMove::StartBuilding => "BUILDING",
            HypothesisMove::MarkDeployed => "DEPLOYED",
            HypothesisMove::StartMeasuring => "MEASURING",
            HypothesisMove::Block => "BLOCKED",
            HypothesisMove::Unblock => BLOCKED_FROM,
            HypothesisMove::ConcludeValidated => "VALIDATED",
            HypothesisMove::ConcludeInvalidated => "INVALIDATED",
            HypothesisMove::Abandon => "ABANDONED",
        }
    }

    fn audit_action(self) -> &'static str {
        match self {
            HypothesisMove::Block => "HYPOTHESIS_BLOCKED",
            HypothesisMove::Unblock => "HYPOTHESIS_UNBLOCKED",
            HypothesisMove::ConcludeValidated | HypothesisMove::ConcludeInvalidated => {
                "HYPOTHESIS_CONCLUDED"
            }
            _ => "HYPOTHESIS_TRANSITIONED",
        }
    }

    async fn call(
        self,
        p: &Planning,
        id: &str,
        etag: &str,
        request_id: &str,
    ) -> Result<Hypothesis, Status> {
        let mut client = p.app.hypotheses();
        let (id, etag) = (id.to_owned(), etag.to_owned());
        let token = &p.alice;
        let conclude = |result: HypothesisConclusion| ConcludeHypothesisRequest {
            id: id.clone(),
            etag: etag.clone(),
            result: result as i32,
            notes: "clear effect".into(),
            experiment_results: Some(ExperimentResults {
                summary: "up 7 points".into(),
                sample_size: 1200,
                confidence: Some(0.95),
                ..Default::default()
            }),
        };
        let response = match self {
            HypothesisMove::MarkReady => {
                client
                    .mark_hypothesis_ready(call(
                        MarkHypothesisReadyRequest { id, etag },
                        token,
                        request_id,
                    ))
                    .await
            }
            HypothesisMove::StartBuilding => {
                client
                    .start_building_hypothesis(call(
                        StartBuildingHypothesisRequest { id, etag },
                        token,
                        request_id,
                    ))
                    .await
            }
            HypothesisMove::MarkDeployed => {
                client
                    .mark_hypothesis_deployed(call(
                        MarkHypothesisDeployedRequest { id, etag },
                        token,
                        request_id,
                    ))
                    .await
            }
            HypothesisMove::StartMeasuring => {
                client
                    .start_measuring_hypothesis(call(
                        StartMeasuringHypothesisRequest { id, etag },
                        token,
                        request_id,
                    ))
                    .await
            }
            HypothesisMove::Block => {
                client
                    .block_hypothesis(call(
                        BlockHypothesisRequest {
                            id,
                            etag,
                            reason: "waiting for legal".into(),
                        },
                        token,
                        request_id,
                    ))
                    .await
            }
            HypothesisMove::Unblock => {
                client
                    .unblock_hypothesis(call(
                        UnblockHypothesisRequest { id, etag },
                        token,
                        request_id,
                    ))
                    .await
            }
            HypothesisMove::ConcludeValidated => {
                client
                    .conclude_hypothesis(call(
                        conclude(HypothesisConclusion::Validated),
                        token,
                        request_id,
                    ))
                    .await
            }
            HypothesisMove::ConcludeInvalidated => {
                client
                    .conclude_hypothesis(call(
                        conclude(HypothesisConclusion::Invalidated),
                        token,
                        request_id,
                    ))
                    .await
            }
            HypothesisMove::Abandon => {
                client
                    .abandon_hypothesis(call(
                        AbandonHypothesisRequest {
                            id,
                            etag,
                            reason: "superseded".into(),
                        },
                        token,
                        request_id,
                    ))
                    .await
            }
        };
        response.map(tonic::Response::into_inner)
    }
}

fn hypothesis_status(name: &str) -> i32 {
    HypothesisStatus::from_str_name(&format!("HYPOTHESIS_STATUS_{name}"))
        .expect("a hypothesis status") as i32
}

async fn get_hypothesis(p: &Planning, id: &str) -> Hypothesis {
    p.app
        .hypotheses()
        .get_hypothesis(bearer(GetHypothesisRequest { id: id.into() }, &p.alice))
        .await
        .expect("GetHypothesis")
        .into_inner()
}

/// Every start state: each status of the table, and BLOCKED once for each
/// status the table lets block.
fn hypothesis_cases() -> Vec<(&'static str, Option<&'static str>)> {
    let mut cases = Vec::new();
    for (from, to) in HYPOTHESIS_TABLE {
        if *from != "BLOCKED" {
            cases.push((*from, None));
        }
        if to.contains(&"BLOCKED") {
            cases.push(("BLOCKED", Some(*from)));
        }
    }
    cases
}

#[tokio::test]
async fn every_hypothesis_edge_moves_and_every_non_edge_is_refused() {
    let p = Planning::spawn().await;
    let parent = p.create_outcome(outcome("hypotheses live here")).await;
    let cases = hypothesis_cases();
    assert_eq!(
        cases.len(),
        8 + 4,
        "eight statuses and four ways to be blocked"
    );
    let mut edges_walked = BTreeSet::new();
    let mut illegal = 0;
    for (from, blocked_from) in cases {
        for mv in HypothesisMove::ALL {
            let created = p.create_hypothesis(&parent.id, "case").await;
            if from != "DRAFT" {
                p.force_hypothesis_status(&created.id, from, blocked_from)
                    .await;
            }
            let before = get_hypothesis(&p, &created.id).await;
            let table_target = mv.target();
            let to = if table_target == BLOCKED_FROM {
                blocked_from.unwrap_or("-")
            } else {
                table_target
            };
            let case = format!("{from} (blocked from {blocked_from:?}) --{mv:?}--> {to}");
            let request_id = new_request_id("hypothesis-move");
            if targets(HYPOTHESIS_TABLE, from).contains(&table_target) {
                edges_walked.insert((from, table_target));
                let after = mv
                    .call(&p, &before.id, &before.etag, &request_id)
                    .await
                    .unwrap_or_else(|s| panic!("{case}: {s:?}"));
                assert_eq!(after.status, hypothesis_status(to), "{case}");
                assert_ne!(after.etag, before.etag, "{case}: a move changes the etag");
                check_hypothesis_effects(&case, from, mv, &before, &after);
                let row = the_audit_row(&p.pool, &request_id).await;
                assert_audit(
                    &row,
                    mv.audit_action(),
                    Some(ids::ALICE),
                    "hypothesis",
                    uuid_of(&before.id),
                );
                assert_eq!(row.old_json()["status"], from, "{case}");
                assert_eq!(row.new_json()["status"], to, "{case}");
                assert_eq!(get_hypothesis(&p, &before.id).await, after, "{case}");
            } else {
                illegal += 1;
                let snap = snapshot(&p.pool).await;
                let status = expect_code(
                    mv.call(&p, &before.id, &before.etag, &request_id).await,
                    Code::FailedPrecondition,
                );
                let (reason, metadata) = error_info(&status);
                assert_eq!(reason, "ILLEGAL_TRANSITION", "{case}: {status:?}");
                assert_eq!(metadata["current_status"], from, "{case}");
                let allowed: BTreeSet<&str> = metadata["allowed_statuses"]
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .collect();
                let expected: BTreeSet<&str> = targets(HYPOTHESIS_TABLE, from)
                    .iter()
                    .map(|t| {
                        if *t == BLOCKED_FROM {
                            blocked_from.unwrap()
                        } else {
                            *t
                        }
                    })
                    .collect();
                assert_eq!(
                    allowed, expected,
                    "{case}: the error lists the allowed moves"
                );
                assert_unchanged(&snap, &snapshot(&p.pool).await);
                assert!(audit_rows(&p.pool, &request_id).await.is_empty(), "{case}");
            }
        }
    }
    let edges: BTreeSet<(&str, &str)> = HYPOTHESIS_TABLE
        .iter()
        .flat_map(|(from, to)| to.iter().map(move |t| (*from, *t)))
        .collect();
    assert_eq!(edges_walked, edges, "every edge of the table was walked");
    assert!(illegal > 60, "non-edges tried: {illegal}");
}

fn check_hypothesis_effects(
    case: &str,
    from: &str,
    mv: HypothesisMove,
    before: &Hypothesis,
    after: &Hypothesis,
) {
    let alice = ids::ALICE.to_string();
    match mv {
        HypothesisMove::StartBuilding => assert!(after.start_time.is_some(), "{case}"),
        HypothesisMove::MarkDeployed => assert!(after.deploy_time.is_some(), "{case}"),
        HypothesisMove::StartMeasuring => assert!(after.measure_start_time.is_some(), "{case}"),
        HypothesisMove::ConcludeValidated | HypothesisMove::ConcludeInvalidated => {
            assert!(after.conclude_time.is_some(), "{case}");
            assert_eq!(after.concluded_by_id, alice, "{case}");
            assert_eq!(after.conclusion_notes, "clear effect", "{case}");
            let results = after.experiment_results.as_ref().expect("results");
            assert_eq!(results.sample_size, 1200, "{case}");
        }
        HypothesisMove::Block => {
            assert_eq!(after.blocked_reason, "waiting for legal", "{case}");
            assert_eq!(after.blocked_from, hypothesis_status(from), "{case}");
        }
        HypothesisMove::Unblock => {
            assert!(after.blocked_reason.is_empty(), "{case}: reason cleared");
            assert_eq!(after.blocked_from, 0, "{case}: blocked_from cleared");
        }
        HypothesisMove::Abandon => {
            assert!(after.abandon_time.is_some(), "{case}");
            assert_eq!(after.abandon_reason, "superseded", "{case}");
        }
        HypothesisMove::MarkReady => {}
    }
    // Times a move does not set stay as they were.
    let untouched = [
        (
            !matches!(mv, HypothesisMove::StartBuilding),
            &before.start_time,
            &after.start_time,
        ),
        (
            !matches!(mv, HypothesisMove::MarkDeployed),
            &before.deploy_time,
            &after.deploy_time,
        ),
        (
            !matches!(mv, HypothesisMove::StartMeasuring),
            &before.measure_start_time,
            &after.measure_start_time,
        ),
    ];
    for (check, was, is) in untouched {
        if check {
            assert_eq!(was, is, "{case}: a time this move does not set changed");
        }
    }
}

// ---------------------------------------------------------------------------
// Etags and races

#[tokio::test]
async fn a_move_with_a_stale_etag_is_aborted_and_changes_nothing() {
    let p = Planning::spawn().await;
    let created = p.create_outcome(outcome("stale")).await;
    let renamed = p
        .app
        .outcomes()
        .update_outcome(bearer(
            UpdateOutcomeRequest {
                outcome: Some(Outcome {
                    id: created.id.clone(),
                    title: "renamed".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["title"]),
            },
            &p.alice,
        ))
        .await
        .expect("UpdateOutcome")
        .into_inner();
    assert_ne!(renamed.etag, created.etag);
    let snap = snapshot(&p.pool).await;
    let request_id = new_request_id("stale-move");
    let status = expect_code(
        OutcomeMove::Start
            .call(&p, &created.id, &created.etag, &request_id)
            .await,
        Code::Aborted,
    );
    assert_eq!(error_info(&status).0, "ETAG_MISMATCH");
    assert_unchanged(&snap, &snapshot(&p.pool).await);
    // With the current etag, or none, the move goes through.
    OutcomeMove::Start
        .call(
            &p,
            &created.id,
            &renamed.etag,
            &new_request_id("fresh-move"),
        )
        .await
        .expect("StartOutcome with the current etag");
    OutcomeMove::Submit
        .call(&p, &created.id, "", &new_request_id("no-etag"))
        .await
        .expect("SubmitOutcomeForValidation without an etag");
}

/// Rounds of racing moves: clients that all read the same version (and
/// send its etag), then clients that send no etag but each make the same
/// move, which only one status allows.
const RACE_ROUNDS: usize = 4;

#[tokio::test]
async fn concurrent_outcome_moves_have_exactly_one_winner() {
    let p = Planning::spawn().await;
    for round in 0..RACE_ROUNDS {
        let target = outcome_in(&p, "IN_PROGRESS").await;
        let with_etags = round % 2 == 0;
        let moves = if with_etags {
            [
                OutcomeMove::Submit,
                OutcomeMove::Abandon,
                OutcomeMove::Submit,
                OutcomeMove::Abandon,
                OutcomeMove::Submit,
                OutcomeMove::Abandon,
            ]
        } else {
            [OutcomeMove::Submit; 6]
        };
        let etag = if with_etags {
            target.etag.clone()
        } else {
            String::new()
        };
        let calls = moves.iter().map(|mv| {
            let (p, id, etag) = (&p, target.id.clone(), etag.clone());
            async move {
                mv.call(p, &id, &etag, &new_request_id(&format!("race-{round}")))
                    .await
            }
        });
        let results = futures_join_all(calls).await;
        let winners: Vec<&Outcome> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for loser in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(loser.code(), Code::Aborted | Code::FailedPrecondition),
                "round {round}: {loser:?}"
            );
        }
        let moves_audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM core.audit_logs WHERE entity_id = $1::uuid AND action = 'STATUS_CHANGE'",
        )
        .bind(&target.id)
        .fetch_one(&p.pool)
        .await
        .expect("count audit rows");
        assert_eq!(moves_audited, 1, "round {round}: one move in the trail");
        let now = get_outcome(&p, &target.id).await;
        assert_eq!(now.status, winners[0].status, "round {round}");
    }
}

#[tokio::test]
async fn concurrent_hypothesis_moves_have_exactly_one_winner() {
    let p = Planning::spawn().await;
    let parent = p.create_outcome(outcome("race parent")).await;
    for round in 0..RACE_ROUNDS {
        let created = p.create_hypothesis(&parent.id, "race").await;
        p.force_hypothesis_status(&created.id, "READY", None).await;
        let target = get_hypothesis(&p, &created.id).await;
        let with_etags = round % 2 == 0;
        let moves = if with_etags {
            [
                HypothesisMove::StartBuilding,
                HypothesisMove::Block,
                HypothesisMove::Abandon,
                HypothesisMove::StartBuilding,
                HypothesisMove::Block,
                HypothesisMove::Abandon,
            ]
        } else {
            [HypothesisMove::StartBuilding; 6]
        };
        let etag = if with_etags {
            target.etag.clone()
        } else {
            String::new()
        };
        let calls = moves.iter().map(|mv| {
            let (p, id, etag) = (&p, target.id.clone(), etag.clone());
            async move {
                mv.call(p, &id, &etag, &new_request_id(&format!("hrace-{round}")))
                    .await
            }
        });
        let results = futures_join_all(calls).await;
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        for loser in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(loser.code(), Code::Aborted | Code::FailedPrecondition),
                "round {round}: {loser:?}"
            );
        }
        let moves_audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM core.audit_logs WHERE entity_id = $1::uuid AND action <> 'CREATE'",
        )
        .bind(&target.id)
        .fetch_one(&p.pool)
        .await
        .expect("count audit rows");
        assert_eq!(moves_audited, 1, "round {round}: one move in the trail");
    }
}

/// Runs futures concurrently on this task (no extra dependency).
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send,
{
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => outputs[i] = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("finished")).collect()
}
