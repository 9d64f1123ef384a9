//! HypothesisService CRUD and the rules around the lifecycle: a terminal
//! outcome takes no new or advancing hypotheses, blocking needs a reason,
//! rows blocked by the first release unblock to where they were.

use std::collections::HashMap;

use codeops_proto::planning::{
    AbandonHypothesisRequest, BlockHypothesisRequest, ConcludeHypothesisRequest,
    CreateHypothesisRequest, DeleteHypothesisRequest, ExperimentConfig, ExperimentType,
    GetHypothesisRequest, GetOutcomeRequest, Hypothesis, HypothesisStatus,
    MarkHypothesisReadyRequest, UnblockHypothesisRequest, UpdateHypothesisRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::{Planning, hypothesis, outcome, seeded, uuid_of};
use crate::common::checks::{
    assert_audit, assert_unchanged, call, expect_code, expect_invalid, id, mask, new_request_id,
    snapshot, the_audit_row,
};
use crate::common::{bearer, ids, random_id};

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

#[tokio::test]
async fn create_hypothesis_starts_draft_under_its_outcome_and_audits_create() {
    let p = Planning::spawn().await;
    let request_id = new_request_id("create-hypothesis");
    let created = p
        .app
        .hypotheses()
        .create_hypothesis(call(
            CreateHypothesisRequest {
                hypothesis: Some(Hypothesis {
                    owner_id: id(ids::CAROL),
                    status: HypothesisStatus::Measuring as i32,
                    experiment_config: Some(ExperimentConfig {
                        r#type: ExperimentType::AbTest as i32,
                        split: HashMap::from([
                            ("control".into(), 50.0),
                            ("treatment".into(), 50.0),
                        ]),
                        min_duration_days: 14,
                        primary_metric: "week1_activation_rate".into(),
                        ..Default::default()
                    }),
                    tags: vec!["ab".into()],
                    ..hypothesis(&id(seeded::ACME_ACTIVATION), "Checklist v2")
                }),
                ..Default::default()
            },
            &p.alice,
            &request_id,
        ))
        .await
        .expect("CreateHypothesis")
        .into_inner();
    assert_eq!(
        created.status,
        HypothesisStatus::Draft as i32,
        "status is output only"
    );
    assert_eq!(created.outcome_id, id(seeded::ACME_ACTIVATION));
    assert_eq!(created.created_by_id, id(ids::ALICE));
    let config = created.experiment_config.clone().expect("config");
    assert_eq!(config.split.get("treatment"), Some(&50.0));
    assert_eq!(config.min_duration_days, 14);
    let row = the_audit_row(&p.pool, &request_id).await;
    assert_audit(
        &row,
        "CREATE",
        Some(ids::ALICE),
        "hypothesis",
        uuid_of(&created.id),
    );
    assert_eq!(row.new_json()["experiment_config"]["type"], "ab_test");
    // The outcome counts it.
    let parent = p
        .app
        .outcomes()
        .get_outcome(bearer(
            GetOutcomeRequest {
                id: id(seeded::ACME_ACTIVATION),
            },
            &p.alice,
        ))
        .await
        .expect("GetOutcome")
        .into_inner();
    let counts = parent.hypothesis_counts.expect("counts");
    assert_eq!((counts.total, counts.draft), (4, 1));
}

#[tokio::test]
async fn create_hypothesis_rejects_bad_fields_and_foreign_ids_and_writes_nothing() {
    let p = Planning::spawn().await;
    let good = hypothesis(&id(seeded::ACME_ACTIVATION), "fine");
    let cases: Vec<(&str, Hypothesis)> = vec![
        (
            "hypothesis.title",
            Hypothesis {
                title: "x".repeat(501),
                ..good.clone()
            },
        ),
        (
            "hypothesis.belief",
            Hypothesis {
                belief: " ".into(),
                ..good.clone()
            },
        ),
        (
            "hypothesis.expected_result",
            Hypothesis {
                expected_result: String::new(),
                ..good.clone()
            },
        ),
        (
            "hypothesis.priority",
            Hypothesis {
                priority: 9,
                ..good.clone()
            },
        ),
        (
            "hypothesis.outcome_id",
            Hypothesis {
                outcome_id: "bad".into(),
                ..good.clone()
            },
        ),
        (
            "hypothesis.outcome_id",
            Hypothesis {
                outcome_id: String::new(),
                ..good.clone()
            },
        ),
        (
            "hypothesis.outcome_id",
            Hypothesis {
                outcome_id: id(seeded::GLOBEX_PICKS),
                ..good.clone()
            },
        ),
        (
            "hypothesis.outcome_id",
            Hypothesis {
                outcome_id: id(random_id()),
                ..good.clone()
            },
        ),
        (
            "hypothesis.owner_id",
            Hypothesis {
                owner_id: id(ids::FRANK),
                ..good.clone()
            },
        ),
        (
            "hypothesis.experiment_config.type",
            Hypothesis {
                experiment_config: Some(ExperimentConfig {
                    r#type: 77,
                    ..Default::default()
                }),
                ..good.clone()
            },
        ),
        (
            "hypothesis.experiment_config.split",
            Hypothesis {
                experiment_config: Some(ExperimentConfig {
                    split: HashMap::from([("a".into(), 70.0), ("b".into(), 70.0)]),
                    ..Default::default()
                }),
                ..good.clone()
            },
        ),
        (
            "hypothesis.experiment_config.min_duration_days",
            Hypothesis {
                experiment_config: Some(ExperimentConfig {
                    min_duration_days: -1,
                    ..Default::default()
                }),
                ..good.clone()
            },
        ),
        (
            "hypothesis.experiment_config",
            Hypothesis {
                experiment_config: Some(ExperimentConfig {
                    notes: "n".repeat(17_000),
                    ..Default::default()
                }),
                ..good.clone()
            },
        ),
    ];
    let before = snapshot(&p.pool).await;
    for (field, bad) in cases {
        expect_invalid(
            p.app
                .hypotheses()
                .create_hypothesis(bearer(
                    CreateHypothesisRequest {
                        hypothesis: Some(bad),
                        ..Default::default()
                    },
                    &p.alice,
                ))
                .await,
            field,
        );
    }
    assert_unchanged(&before, &snapshot(&p.pool).await);
}

#[tokio::test]
async fn a_terminal_outcome_takes_no_new_or_advancing_hypotheses_but_lets_them_go() {
    let p = Planning::spawn().await;
    let parent = p.create_outcome(outcome("closing")).await;
    let live = p.create_hypothesis(&parent.id, "left over").await;
    p.force_outcome_status(&parent.id, "ABANDONED").await;
    let before = snapshot(&p.pool).await;
    let refused = expect_code(
        p.app
            .hypotheses()
            .create_hypothesis(bearer(
                CreateHypothesisRequest {
                    hypothesis: Some(hypothesis(&parent.id, "late")),
                    ..Default::default()
                },
                &p.alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "OUTCOME_CLOSED");
    let refused = expect_code(
        p.app
            .hypotheses()
            .mark_hypothesis_ready(bearer(
                MarkHypothesisReadyRequest {
                    id: live.id.clone(),
                    etag: String::new(),
                },
                &p.alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "OUTCOME_CLOSED");
    // The seeded VALIDATED outcome refuses too.
    expect_code(
        p.app
            .hypotheses()
            .create_hypothesis(bearer(
                CreateHypothesisRequest {
                    hypothesis: Some(hypothesis(&id(seeded::ACME_LATENCY), "late")),
                    ..Default::default()
                },
                &p.alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_unchanged(&before, &snapshot(&p.pool).await);
    // Abandoning what is left is still possible.
    let abandoned = p
        .app
        .hypotheses()
        .abandon_hypothesis(bearer(
            AbandonHypothesisRequest {
                id: live.id.clone(),
                etag: live.etag.clone(),
                reason: String::new(),
            },
            &p.alice,
        ))
        .await
        .expect("AbandonHypothesis under a closed outcome")
        .into_inner();
    assert_eq!(abandoned.status, HypothesisStatus::Abandoned as i32);
}

#[tokio::test]
async fn blocking_needs_a_reason() {
    let p = Planning::spawn().await;
    let before = snapshot(&p.pool).await;
    expect_invalid(
        p.app
            .hypotheses()
            .block_hypothesis(bearer(
                BlockHypothesisRequest {
                    id: id(seeded::ACME_CHECKLIST),
                    etag: String::new(),
                    reason: "  ".into(),
                },
                &p.alice,
            ))
            .await,
        "reason",
    );
    expect_invalid(
        p.app
            .hypotheses()
            .conclude_hypothesis(bearer(
                ConcludeHypothesisRequest {
                    id: id(seeded::ACME_CHECKLIST),
                    ..Default::default()
                },
                &p.alice,
            ))
            .await,
        "result",
    );
    assert_unchanged(&before, &snapshot(&p.pool).await);
}

#[tokio::test]
async fn a_hypothesis_blocked_by_the_first_release_unblocks_to_where_it_was() {
    let p = Planning::spawn().await;
    let chat = p
        .app
        .hypotheses()
        .get_hypothesis(bearer(
            GetHypothesisRequest {
                id: id(seeded::ACME_CHAT),
            },
            &p.alice,
        ))
        .await
        .expect("GetHypothesis")
        .into_inner();
    assert_eq!(chat.status, HypothesisStatus::Blocked as i32);
    assert_eq!(
        chat.blocked_from,
        HypothesisStatus::Ready as i32,
        "never started"
    );
    let request_id = new_request_id("unblock");
    let unblocked = p
        .app
        .hypotheses()
        .unblock_hypothesis(call(
            UnblockHypothesisRequest {
                id: chat.id.clone(),
                etag: chat.etag.clone(),
            },
            &p.alice,
            &request_id,
        ))
        .await
        .expect("UnblockHypothesis")
        .into_inner();
    assert_eq!(unblocked.status, HypothesisStatus::Ready as i32);
    assert!(unblocked.blocked_reason.is_empty());
    let row = the_audit_row(&p.pool, &request_id).await;
    assert_audit(
        &row,
        "HYPOTHESIS_UNBLOCKED",
        Some(ids::ALICE),
        "hypothesis",
        seeded::ACME_CHAT,
    );
    assert!(
        row.old_json()["blocked_reason"]
            .as_str()
            .unwrap()
            .contains("SEC-88")
    );
}

#[tokio::test]
async fn update_hypothesis_changes_masked_fields_only() {
    let p = Planning::spawn().await;
    let created = p
        .create_hypothesis(&id(seeded::ACME_ACTIVATION), "before")
        .await;
    let request_id = new_request_id("update-hypothesis");
    let updated = p
        .app
        .hypotheses()
        .update_hypothesis(call(
            UpdateHypothesisRequest {
                hypothesis: Some(Hypothesis {
                    id: created.id.clone(),
                    etag: created.etag.clone(),
                    belief: "sharper belief".into(),
                    outcome_id: id(seeded::ACME_BILLING),
                    title: "ignored".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["belief"]),
            },
            &p.alice,
            &request_id,
        ))
        .await
        .expect("UpdateHypothesis")
        .into_inner();
    assert_eq!(updated.belief, "sharper belief");
    assert_eq!(updated.title, "before");
    assert_eq!(updated.outcome_id, id(seeded::ACME_ACTIVATION));
    let row = the_audit_row(&p.pool, &request_id).await;
    assert_audit(
        &row,
        "UPDATE",
        Some(ids::ALICE),
        "hypothesis",
        uuid_of(&created.id),
    );
    assert_eq!(row.new_json()["belief"], "sharper belief");

    let before = snapshot(&p.pool).await;
    for (paths, field) in [
        (&["outcome_id"][..], "update_mask"),
        (&["experiment_results"][..], "update_mask"),
        (&["belief"][..], "hypothesis.belief"),
    ] {
        expect_invalid(
            p.app
                .hypotheses()
                .update_hypothesis(bearer(
                    UpdateHypothesisRequest {
                        hypothesis: Some(Hypothesis {
                            id: created.id.clone(),
                            ..Default::default()
                        }),
                        update_mask: mask(paths),
                    },
                    &p.alice,
                ))
                .await,
            field,
        );
    }
    let stale = expect_code(
        p.app
            .hypotheses()
            .update_hypothesis(bearer(
                UpdateHypothesisRequest {
                    hypothesis: Some(Hypothesis {
                        id: created.id.clone(),
                        etag: created.etag.clone(),
                        title: "t".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["title"]),
                },
                &p.alice,
            ))
            .await,
        Code::Aborted,
    );
    assert_eq!(reason(&stale), "ETAG_MISMATCH");
    assert_unchanged(&before, &snapshot(&p.pool).await);
}

#[tokio::test]
async fn delete_hypothesis_only_when_draft_or_abandoned_and_unreferenced() {
    let p = Planning::spawn().await;
    let draft = p
        .create_hypothesis(&id(seeded::ACME_ACTIVATION), "gone soon")
        .await;
    let request_id = new_request_id("delete-hypothesis");
    p.app
        .hypotheses()
        .delete_hypothesis(call(
            DeleteHypothesisRequest {
                id: draft.id.clone(),
                etag: draft.etag.clone(),
            },
            &p.alice,
            &request_id,
        ))
        .await
        .expect("DeleteHypothesis");
    let row = the_audit_row(&p.pool, &request_id).await;
    assert_audit(
        &row,
        "DELETE",
        Some(ids::ALICE),
        "hypothesis",
        uuid_of(&draft.id),
    );

    let before = snapshot(&p.pool).await;
    let refused = expect_code(
        p.app
            .hypotheses()
            .delete_hypothesis(bearer(
                DeleteHypothesisRequest {
                    id: id(seeded::ACME_CHECKLIST),
                    etag: String::new(),
                },
                &p.alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "HYPOTHESIS_NOT_DELETABLE");
    // The seeded billing draft is linked from a decision.
    let refused = expect_code(
        p.app
            .hypotheses()
            .delete_hypothesis(bearer(
                DeleteHypothesisRequest {
                    id: "eeeeeeee-eeee-eeee-eeee-eeeeeeeee004".into(),
                    etag: String::new(),
                },
                &p.alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "RESOURCE_REFERENCED");
    assert_unchanged(&before, &snapshot(&p.pool).await);
}

#[tokio::test]
async fn concluding_needs_hypothesis_conclude_which_an_engineer_lacks() {
    let p = Planning::spawn().await;
    let carol = p.app.login_seeded("acme", "carol@acme.test").await;
    // An engineer advances hypotheses...
    let created = p
        .create_hypothesis(&id(seeded::ACME_ACTIVATION), "engineer's")
        .await;
    let ready = p
        .app
        .hypotheses()
        .mark_hypothesis_ready(bearer(
            MarkHypothesisReadyRequest {
                id: created.id.clone(),
                etag: String::new(),
            },
            &carol,
        ))
        .await
        .expect("an engineer marks a hypothesis ready")
        .into_inner();
    assert_eq!(ready.status, HypothesisStatus::Ready as i32);
    // ...but does not conclude them.
    let denied = expect_code(
        p.app
            .hypotheses()
            .conclude_hypothesis(bearer(
                ConcludeHypothesisRequest {
                    id: created.id.clone(),
                    result: 1,
                    ..Default::default()
                },
                &carol,
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&denied), "PERMISSION_MISSING");
}
