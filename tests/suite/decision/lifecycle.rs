//! product.md's decision table, written once here: every edge is walked
//! through the API (status, audit row, etag) and every non-edge is tried and
//! refused with nothing changed. Then a race: two resolutions, one wins.

use codeops_proto::decision::{
    CancelDecisionRequest, Decision, DecisionStatus, DeferDecisionRequest, DiscussDecisionRequest,
    MarkDecisionImplementedRequest, ReopenDecisionRequest, RequestDecisionInputRequest,
    ResolveDecisionRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::{Decisions, decision, time_of, uuid_of};
use crate::common::checks::{
    assert_audit, assert_unchanged, call, new_request_id, snapshot, the_audit_row,
};
use crate::common::ids;

/// product.md's decision table: from → to.
pub(super) const TABLE: &[(&str, &[&str])] = &[
    (
        "NEEDS_INPUT",
        &["UNDER_DISCUSSION", "DECIDED", "DEFERRED", "CANCELLED"],
    ),
    (
        "UNDER_DISCUSSION",
        &["NEEDS_INPUT", "DECIDED", "DEFERRED", "CANCELLED"],
    ),
    ("DECIDED", &["IMPLEMENTED", "UNDER_DISCUSSION"]),
    (
        "DEFERRED",
        &["NEEDS_INPUT", "UNDER_DISCUSSION", "CANCELLED"],
    ),
    ("IMPLEMENTED", &[]),
    ("CANCELLED", &[]),
];

/// The methods, each with the target it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Move {
    Discuss,
    RequestInput,
    Resolve,
    Defer,
    Cancel,
    Implement,
    Reopen,
}

impl Move {
    pub(super) const ALL: [Move; 7] = [
        Move::Discuss,
        Move::RequestInput,
        Move::Resolve,
        Move::Defer,
        Move::Cancel,
        Move::Implement,
        Move::Reopen,
    ];

    pub(super) fn target(self) -> &'static str {
        match self {
            Move::Discuss | Move::Reopen => "UNDER_DISCUSSION",
            Move::RequestInput => "NEEDS_INPUT",
            Move::Resolve => "DECIDED",
            Move::Defer => "DEFERRED",
            Move::Cancel => "CANCELLED",
            Move::Implement => "IMPLEMENTED",
        }
    }

    /// Which method makes the edge from → to (reopening is the one way
    /// back from DECIDED).
    fn makes(self, from: &str, to: &str) -> bool {
        self.target() == to
            && match self {
                Move::Reopen => from == "DECIDED",
                Move::Discuss => from != "DECIDED",
                _ => true,
            }
    }

    fn audit_action(self) -> &'static str {
        match self {
            Move::Resolve => "DECISION_RESOLVED",
            _ => "STATUS_CHANGE",
        }
    }

    async fn call(
        self,
        d: &Decisions,
        id: &str,
        etag: &str,
        request_id: &str,
    ) -> Result<Decision, Status> {
        let mut client = d.app.decisions();
        let (id, etag) = (id.to_owned(), etag.to_owned());
        let token = &d.alice;
        let response = match self {
            Move::Discuss => {
                client
                    .discuss_decision(call(DiscussDecisionRequest { id, etag }, token, request_id))
                    .await
            }
            Move::RequestInput => {
                client
                    .request_decision_input(call(
                        RequestDecisionInputRequest { id, etag },
                        token,
                        request_id,
                    ))
                    .await
            }
            Move::Resolve => {
                client
                    .resolve_decision(call(
                        ResolveDecisionRequest {
                            id,
                            etag,
                            selected_option_id: "opt-a".into(),
                            rationale: "the table says so".into(),
                        },
                        token,
                        request_id,
                    ))
                    .await
            }
            Move::Defer => {
                client
                    .defer_decision(call(
                        DeferDecisionRequest {
                            id,
                            etag,
                            reason: "later".into(),
                        },
                        token,
                        request_id,
                    ))
                    .await
            }
            Move::Cancel => {
                client
                    .cancel_decision(call(
                        CancelDecisionRequest {
                            id,
                            etag,
                            reason: "moot".into(),
                        },
                        token,
                        request_id,
                    ))
                    .await
            }
            Move::Implement => {
                client
                    .mark_decision_implemented(call(
                        MarkDecisionImplementedRequest { id, etag },
                        token,
                        request_id,
                    ))
                    .await
            }
            Move::Reopen => {
                client
                    .reopen_decision(call(
                        ReopenDecisionRequest {
                            id,
                            etag,
                            reason: "new facts".into(),
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

fn status_name(status: i32) -> &'static str {
    DecisionStatus::try_from(status)
        .expect("a status")
        .as_str_name()
        .trim_start_matches("DECISION_STATUS_")
}

/// A decision in `status` (options opt-a and opt-b; resolved ones with
/// opt-a selected).
async fn decision_in(d: &Decisions, status: &str) -> Decision {
    let created = d.create(decision(&format!("from {status}"))).await;
    if status == "DECIDED" || status == "IMPLEMENTED" {
        sqlx::query(
            "UPDATE core.decisions SET decided_by_id = $2, decided_at = now(), decision_rationale = 'set up', \
                 selected_option = '{\"id\":\"opt-a\",\"title\":\"Option opt-a\"}' WHERE id = $1",
        )
        .bind(uuid_of(&created.id))
        .bind(ids::ALICE)
        .execute(&d.pool)
        .await
        .expect("set up a resolution");
    }
    if status != "NEEDS_INPUT" {
        d.force_status(&created.id, status).await;
    }
    d.get(&created.id).await
}

#[tokio::test]
async fn every_edge_of_the_table_moves_and_every_other_move_is_refused() {
    let d = Decisions::spawn().await;
    for (from, targets) in TABLE {
        for mv in Move::ALL {
            let legal = targets.iter().any(|to| mv.makes(from, to));
            let before = decision_in(&d, from).await;
            let request_id = new_request_id("move");
            if legal {
                let after = mv
                    .call(&d, &before.id, &before.etag, &request_id)
                    .await
                    .unwrap_or_else(|e| panic!("{from} -> {mv:?}: {e:?}"));
                assert_eq!(status_name(after.status), mv.target(), "{from} -> {mv:?}");
                assert_ne!(after.etag, before.etag, "{from} -> {mv:?}: a new etag");
                let row = the_audit_row(&d.pool, &request_id).await;
                assert_audit(
                    &row,
                    mv.audit_action(),
                    Some(ids::ALICE),
                    "decision",
                    uuid_of(&before.id),
                );
                match mv {
                    Move::Resolve => {
                        assert_eq!(after.decided_by_id, ids::ALICE.to_string());
                        assert_eq!(after.selected_option.as_ref().expect("option").id, "opt-a");
                    }
                    Move::Reopen => {
                        assert!(after.decided_by_id.is_empty() && after.selected_option.is_none());
                    }
                    _ => {}
                }
                let open = matches!(mv.target(), "NEEDS_INPUT" | "UNDER_DISCUSSION");
                if open && !matches!(*from, "NEEDS_INPUT" | "UNDER_DISCUSSION") {
                    assert!(
                        time_of(&after.due_time) > time_of(&before.update_time),
                        "{from} -> {mv:?}: entering an open status starts a new deadline"
                    );
                }
                if open {
                    assert!(after.due_time.is_some(), "an open decision has a deadline");
                }
            } else {
                let snap = snapshot(&d.pool).await;
                let refused = mv
                    .call(&d, &before.id, "", &request_id)
                    .await
                    .expect_err(&format!("{from} -> {mv:?} is not in the table"));
                assert_eq!(refused.code(), Code::FailedPrecondition, "{from} -> {mv:?}");
                let info = refused.get_details_error_info().expect("ErrorInfo");
                assert_eq!(info.reason, "ILLEGAL_TRANSITION");
                assert_eq!(info.metadata["current_status"], *from);
                let allowed: Vec<&str> = info.metadata["allowed_statuses"]
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .collect();
                let mut expected = targets.to_vec();
                expected.sort();
                let mut allowed_sorted = allowed.clone();
                allowed_sorted.sort();
                assert_eq!(allowed_sorted, expected, "{from}: allowed statuses");
                assert_unchanged(&snap, &snapshot(&d.pool).await);
            }
        }
    }
    d.app.shutdown().await;
}

#[tokio::test]
async fn two_concurrent_resolutions_one_wins_and_one_is_audited() {
    let d = Decisions::spawn().await;
    for _ in 0..5 {
        let created = d.create(decision("race")).await;
        let (ra, rb) = (new_request_id("race-a"), new_request_id("race-b"));
        let (a, b) = tokio::join!(
            Move::Resolve.call(&d, &created.id, "", &ra),
            Move::Resolve.call(&d, &created.id, "", &rb),
        );
        let wins = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "exactly one resolution wins: {a:?} {b:?}");
        for result in [a, b] {
            if let Err(status) = result {
                assert!(
                    matches!(status.code(), Code::Aborted | Code::FailedPrecondition),
                    "{status:?}"
                );
            }
        }
        let resolutions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM core.audit_logs WHERE action = 'DECISION_RESOLVED' AND entity_id = $1",
        )
        .bind(uuid_of(&created.id))
        .fetch_one(&d.pool)
        .await
        .expect("count");
        assert_eq!(resolutions, 1);
    }
    d.app.shutdown().await;
}
