//! OutcomeService CRUD: create, read, update with masks and etags, delete
//! rules, typed JSON fields, hypothesis counts.

use codeops_proto::planning::{
    CreateOutcomeRequest, DeleteOutcomeRequest, ExternalRef, GetOutcomeRequest, Metric, Outcome,
    OutcomePriority, OutcomeStatus, UpdateOutcomeRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::{Planning, outcome, seeded, uuid_of};
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
async fn create_outcome_starts_draft_records_the_creator_and_audits_create() {
    let p = Planning::spawn().await;
    let request_id = new_request_id("create-outcome");
    let created = p
        .app
        .outcomes()
        .create_outcome(call(
            CreateOutcomeRequest {
                outcome: Some(Outcome {
                    title: "  Cut churn  ".into(),
                    priority: OutcomePriority::High as i32,
                    team_id: id(seeded::ACME_TEAM),
                    owner_id: id(ids::BOB),
                    target_date: "2031-06-30".into(),
                    tags: vec!["retention".into(), "retention".into(), " q3 ".into()],
                    target_metrics: vec![Metric {
                        key: "churn".into(),
                        unit: "percent".into(),
                        baseline: Some(4.0),
                        target: Some(2.5),
                        ..Default::default()
                    }],
                    external_refs: vec![ExternalRef {
                        system: "jira".into(),
                        id: "CH-1".into(),
                        url: "https://jira.acme.test/CH-1".into(),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &p.alice,
            &request_id,
        ))
        .await
        .expect("CreateOutcome")
        .into_inner();
    assert_eq!(created.title, "Cut churn");
    assert_eq!(created.status, OutcomeStatus::Draft as i32);
    assert_eq!(created.created_by_id, id(ids::ALICE));
    assert_eq!(created.tags, ["retention", "q3"]);
    assert_eq!(created.target_date, "2031-06-30");
    assert_eq!(created.target_metrics[0].target, Some(2.5));
    assert_eq!(created.external_refs[0].id, "CH-1");
    assert!(created.start_time.is_none() && !created.etag.is_empty());
    assert_eq!(created.hypothesis_counts.unwrap_or_default().total, 0);
    let row = the_audit_row(&p.pool, &request_id).await;
    assert_audit(
        &row,
        "CREATE",
        Some(ids::ALICE),
        "outcome",
        uuid_of(&created.id),
    );
    assert_eq!(row.new_json()["title"], "Cut churn");
    assert_eq!(row.new_json()["target_metrics"][0]["key"], "churn");
    // Stored as the first release wrote such JSON.
    let stored: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT external_refs, tags FROM core.outcomes WHERE id = $1::uuid")
            .bind(&created.id)
            .fetch_one(&p.pool)
            .await
            .expect("stored row");
    assert!(stored.0.unwrap().contains(r#""key":"CH-1""#));
    assert_eq!(stored.1.as_deref(), Some(r#"["retention","q3"]"#));
}

#[tokio::test]
async fn create_outcome_may_start_not_started_but_no_further() {
    let p = Planning::spawn().await;
    let not_started = p
        .create_outcome(Outcome {
            status: OutcomeStatus::NotStarted as i32,
            ..outcome("planned")
        })
        .await;
    assert_eq!(not_started.status, OutcomeStatus::NotStarted as i32);
    for status in [OutcomeStatus::InProgress, OutcomeStatus::Validated] {
        expect_invalid(
            p.app
                .outcomes()
                .create_outcome(bearer(
                    CreateOutcomeRequest {
                        outcome: Some(Outcome {
                            status: status as i32,
                            ..outcome("too far")
                        }),
                        ..Default::default()
                    },
                    &p.alice,
                ))
                .await,
            "outcome.status",
        );
    }
}

#[tokio::test]
async fn create_outcome_rejects_each_bad_field_and_writes_nothing() {
    let p = Planning::spawn().await;
    let good = outcome("fine");
    let cases: Vec<(&str, Outcome)> = vec![
        (
            "outcome.title",
            Outcome {
                title: "x".repeat(501),
                ..good.clone()
            },
        ),
        (
            "outcome.title",
            Outcome {
                title: "   ".into(),
                ..good.clone()
            },
        ),
        (
            "outcome.priority",
            Outcome {
                priority: 0,
                ..good.clone()
            },
        ),
        (
            "outcome.priority",
            Outcome {
                priority: 42,
                ..good.clone()
            },
        ),
        (
            "outcome.owner_id",
            Outcome {
                owner_id: "nope".into(),
                ..good.clone()
            },
        ),
        (
            "outcome.target_date",
            Outcome {
                target_date: "2031-02-30".into(),
                ..good.clone()
            },
        ),
        (
            "outcome.description",
            Outcome {
                description: "d".repeat(20_001),
                ..good.clone()
            },
        ),
        (
            "outcome.tags[0]",
            Outcome {
                tags: vec!["t".repeat(65)],
                ..good.clone()
            },
        ),
        (
            "outcome.tags",
            Outcome {
                tags: (0..51).map(|i| format!("t{i}")).collect(),
                ..good.clone()
            },
        ),
        (
            "outcome.target_metrics[0].key",
            Outcome {
                target_metrics: vec![Metric::default()],
                ..good.clone()
            },
        ),
        (
            "outcome.target_metrics[0].target",
            Outcome {
                target_metrics: vec![Metric {
                    key: "k".into(),
                    target: Some(f64::NAN),
                    ..Default::default()
                }],
                ..good.clone()
            },
        ),
        (
            "outcome.target_metrics",
            Outcome {
                target_metrics: (0..101)
                    .map(|i| Metric {
                        key: format!("k{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..good.clone()
            },
        ),
        (
            "outcome.current_metrics",
            Outcome {
                // Under the item cap, over the 16 KiB JSON cap.
                current_metrics: (0..90)
                    .map(|i| Metric {
                        key: format!("k{i}"),
                        label: "l".repeat(250),
                        ..Default::default()
                    })
                    .collect(),
                ..good.clone()
            },
        ),
        (
            "outcome.external_refs[0].url",
            Outcome {
                external_refs: vec![ExternalRef {
                    system: "s".into(),
                    id: "i".into(),
                    url: "javascript:x".into(),
                }],
                ..good.clone()
            },
        ),
        // Ids of another tenant, or of nobody: the composite foreign keys.
        (
            "outcome.team_id",
            Outcome {
                team_id: id(seeded::GLOBEX_TEAM),
                ..good.clone()
            },
        ),
        (
            "outcome.owner_id",
            Outcome {
                owner_id: id(ids::ERIN),
                ..good.clone()
            },
        ),
        (
            "outcome.owner_id",
            Outcome {
                owner_id: id(random_id()),
                ..good.clone()
            },
        ),
    ];
    let before = snapshot(&p.pool).await;
    for (field, bad) in cases {
        expect_invalid(
            p.app
                .outcomes()
                .create_outcome(bearer(
                    CreateOutcomeRequest {
                        outcome: Some(bad),
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
async fn seeded_rows_of_the_first_release_read_back_typed() {
    let p = Planning::spawn().await;
    let activation = p
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
    assert_eq!(activation.status, OutcomeStatus::InProgress as i32);
    assert_eq!(activation.target_metrics[0].key, "week1_activation_rate");
    assert_eq!(activation.target_metrics[0].baseline, Some(31.0));
    assert_eq!(activation.current_metrics[0].current, Some(36.5));
    assert_eq!(activation.external_refs[0].id, "GROW-12");
    assert_eq!(activation.tags, ["activation", "onboarding", "q3"]);
    let counts = activation.hypothesis_counts.expect("counts");
    assert_eq!(
        (
            counts.total,
            counts.building,
            counts.measuring,
            counts.blocked
        ),
        (3, 1, 1, 1)
    );

    // JSON that fits no message still reads, as far as it fits.
    sqlx::query(
        "UPDATE core.outcomes SET target_metrics = '{\"odd\": true}', tags = '[1, \"ok\"]', \
             external_refs = '\"just text\"' WHERE id = $1",
    )
    .bind(seeded::ACME_BILLING)
    .execute(&p.pool)
    .await
    .expect("odd json");
    let billing = p
        .app
        .outcomes()
        .get_outcome(bearer(
            GetOutcomeRequest {
                id: id(seeded::ACME_BILLING),
            },
            &p.alice,
        ))
        .await
        .expect("GetOutcome of odd JSON")
        .into_inner();
    assert!(billing.target_metrics.is_empty() && billing.external_refs.is_empty());
    assert_eq!(billing.tags, ["ok"]);
}

#[tokio::test]
async fn get_outcome_of_an_unknown_or_malformed_id() {
    let p = Planning::spawn().await;
    let status = expect_code(
        p.app
            .outcomes()
            .get_outcome(bearer(
                GetOutcomeRequest {
                    id: id(random_id()),
                },
                &p.alice,
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "RESOURCE_NOT_FOUND");
    expect_invalid(
        p.app
            .outcomes()
            .get_outcome(bearer(GetOutcomeRequest { id: "x".into() }, &p.alice))
            .await,
        "id",
    );
}

#[tokio::test]
async fn update_outcome_changes_only_masked_fields_and_audits_the_changes() {
    let p = Planning::spawn().await;
    let created = p
        .create_outcome(Outcome {
            description: "keep me".into(),
            owner_id: id(ids::BOB),
            ..outcome("before")
        })
        .await;
    let request_id = new_request_id("update-outcome");
    let updated = p
        .app
        .outcomes()
        .update_outcome(call(
            UpdateOutcomeRequest {
                outcome: Some(Outcome {
                    id: created.id.clone(),
                    etag: created.etag.clone(),
                    title: "after".into(),
                    owner_id: String::new(),
                    description: "ignored: not in the mask".into(),
                    status: OutcomeStatus::Validated as i32,
                    current_metrics: vec![Metric {
                        key: "m".into(),
                        current: Some(1.0),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                update_mask: mask(&["title", "owner_id", "current_metrics"]),
            },
            &p.alice,
            &request_id,
        ))
        .await
        .expect("UpdateOutcome")
        .into_inner();
    assert_eq!(updated.title, "after");
    assert_eq!(updated.owner_id, "");
    assert_eq!(updated.description, "keep me");
    assert_eq!(
        updated.status,
        OutcomeStatus::Draft as i32,
        "status is output only"
    );
    assert_eq!(updated.current_metrics.len(), 1);
    assert_ne!(updated.etag, created.etag);
    let row = the_audit_row(&p.pool, &request_id).await;
    assert_audit(
        &row,
        "UPDATE",
        Some(ids::ALICE),
        "outcome",
        uuid_of(&created.id),
    );
    assert_eq!(row.old_json()["title"], "before");
    assert_eq!(row.new_json()["title"], "after");
    assert_eq!(row.old_json()["owner_id"], id(ids::BOB));
    assert!(
        row.new_json().get("description").is_none(),
        "only changes are recorded"
    );

    // A stale etag: ABORTED, nothing changes.
    let before = snapshot(&p.pool).await;
    let stale = expect_code(
        p.app
            .outcomes()
            .update_outcome(bearer(
                UpdateOutcomeRequest {
                    outcome: Some(Outcome {
                        id: created.id.clone(),
                        etag: created.etag.clone(),
                        title: "again".into(),
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
    // Masks: required, known paths only; status is not a path.
    for paths in [&[][..], &["status"][..], &["start_time"][..], &["nope"][..]] {
        expect_invalid(
            p.app
                .outcomes()
                .update_outcome(bearer(
                    UpdateOutcomeRequest {
                        outcome: Some(Outcome {
                            id: created.id.clone(),
                            ..Default::default()
                        }),
                        update_mask: mask(paths),
                    },
                    &p.alice,
                ))
                .await,
            "update_mask",
        );
    }
    assert_unchanged(&before, &snapshot(&p.pool).await);
}

#[tokio::test]
async fn update_outcome_with_star_needs_every_required_field() {
    let p = Planning::spawn().await;
    let created = p.create_outcome(outcome("star")).await;
    expect_invalid(
        p.app
            .outcomes()
            .update_outcome(bearer(
                UpdateOutcomeRequest {
                    outcome: Some(Outcome {
                        id: created.id.clone(),
                        title: "t".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["*"]),
                },
                &p.alice,
            ))
            .await,
        "outcome.priority",
    );
    let replaced = p
        .app
        .outcomes()
        .update_outcome(bearer(
            UpdateOutcomeRequest {
                outcome: Some(Outcome {
                    id: created.id.clone(),
                    title: "t".into(),
                    priority: OutcomePriority::Critical as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["*"]),
            },
            &p.alice,
        ))
        .await
        .expect("UpdateOutcome *")
        .into_inner();
    assert_eq!(replaced.priority, OutcomePriority::Critical as i32);
}

#[tokio::test]
async fn delete_outcome_only_when_draft_or_abandoned_and_without_hypotheses() {
    let p = Planning::spawn().await;
    let outcomes = p.app.outcomes();
    let delete = |id: &str, etag: &str| DeleteOutcomeRequest {
        id: id.into(),
        etag: etag.into(),
    };

    // A fresh draft goes, audited DELETE with its last values.
    let draft = p.create_outcome(outcome("short-lived")).await;
    let request_id = new_request_id("delete-outcome");
    outcomes
        .clone()
        .delete_outcome(call(delete(&draft.id, &draft.etag), &p.alice, &request_id))
        .await
        .expect("DeleteOutcome");
    let row = the_audit_row(&p.pool, &request_id).await;
    assert_audit(
        &row,
        "DELETE",
        Some(ids::ALICE),
        "outcome",
        uuid_of(&draft.id),
    );
    assert_eq!(row.old_json()["title"], "short-lived");
    expect_code(
        outcomes
            .clone()
            .get_outcome(bearer(
                GetOutcomeRequest {
                    id: draft.id.clone(),
                },
                &p.alice,
            ))
            .await,
        Code::NotFound,
    );

    let before = snapshot(&p.pool).await;
    // In progress: not deletable.
    let refused = expect_code(
        outcomes
            .clone()
            .delete_outcome(bearer(delete(&id(seeded::ACME_ACTIVATION), ""), &p.alice))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "OUTCOME_NOT_DELETABLE");
    // A draft with a hypothesis.
    let refused = expect_code(
        outcomes
            .clone()
            .delete_outcome(bearer(delete(&id(seeded::ACME_BILLING), ""), &p.alice))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "OUTCOME_HAS_HYPOTHESES");
    // A stale etag.
    let other = p.create_outcome(outcome("stale delete")).await;
    p.force_outcome_status(&other.id, "ABANDONED").await;
    let before_stale = snapshot(&p.pool).await;
    let refused = expect_code(
        outcomes
            .clone()
            .delete_outcome(bearer(delete(&other.id, &other.etag), &p.alice))
            .await,
        Code::Aborted,
    );
    assert_eq!(reason(&refused), "ETAG_MISMATCH");
    assert_unchanged(&before_stale, &snapshot(&p.pool).await);
    drop(before);
    // Abandoned and empty: deletable without an etag.
    outcomes
        .clone()
        .delete_outcome(bearer(delete(&other.id, ""), &p.alice))
        .await
        .expect("delete an abandoned outcome");
}

#[tokio::test]
async fn delete_outcome_a_decision_links_to_is_refused() {
    let p = Planning::spawn().await;
    // The seeded billing draft has a hypothesis and a decision; without the
    // hypothesis, the decision still holds it.
    sqlx::query("UPDATE core.decisions SET hypothesis_id = NULL WHERE outcome_id = $1")
        .bind(seeded::ACME_BILLING)
        .execute(&p.pool)
        .await
        .expect("unlink the hypothesis");
    sqlx::query("DELETE FROM core.hypotheses WHERE outcome_id = $1")
        .bind(seeded::ACME_BILLING)
        .execute(&p.pool)
        .await
        .expect("remove the hypothesis");
    let before = snapshot(&p.pool).await;
    let refused = expect_code(
        p.app
            .outcomes()
            .delete_outcome(bearer(
                DeleteOutcomeRequest {
                    id: id(seeded::ACME_BILLING),
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
async fn validating_needs_outcome_validate_which_an_engineer_lacks() {
    let p = Planning::spawn().await;
    let carol = p.app.login_seeded("acme", "carol@acme.test").await;
    let target = p.create_outcome(outcome("validate me")).await;
    p.force_outcome_status(&target.id, "VALIDATING").await;
    let denied = expect_code(
        p.app
            .outcomes()
            .validate_outcome(bearer(
                codeops_proto::planning::ValidateOutcomeRequest {
                    id: target.id.clone(),
                    ..Default::default()
                },
                &carol,
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&denied), "PERMISSION_MISSING");
    // Bob, a product lead, may.
    let bob = p.app.login_seeded("acme", "bob@acme.test").await;
    let validated = p
        .app
        .outcomes()
        .validate_outcome(bearer(
            codeops_proto::planning::ValidateOutcomeRequest {
                id: target.id.clone(),
                ..Default::default()
            },
            &bob,
        ))
        .await
        .expect("ValidateOutcome by a product lead")
        .into_inner();
    assert_eq!(validated.validated_by_id, id(ids::BOB));
}
