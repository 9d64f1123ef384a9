//! Create, get, update, assign, resolve, escalate on demand and lists.

use codeops_proto::decision::{
    AssignDecisionRequest, CreateDecisionRequest, Decision, DecisionOption, DecisionOrderBy,
    DecisionPriority, DecisionStatus, EscalateDecisionRequest, ListDecisionsRequest,
    ResolveDecisionRequest, UpdateDecisionRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::{Decisions, decision, seeded, time_of, uuid_of};
use crate::common::checks::{
    assert_audit, assert_unchanged, call, expect_code, expect_denied, expect_invalid, mask,
    new_request_id, snapshot, the_audit_row, violation_fields,
};
use crate::common::{bearer, ids};

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().expect("ErrorInfo").reason
}

#[tokio::test]
async fn create_takes_the_tenant_sla_default_for_each_priority() {
    let d = Decisions::spawn().await;
    for (priority, hours) in [
        (DecisionPriority::Blocking, 24),
        (DecisionPriority::High, 72),
        (DecisionPriority::Normal, 168),
        (DecisionPriority::Low, 336),
    ] {
        let created = d
            .create(Decision {
                priority: priority as i32,
                ..decision("default SLA")
            })
            .await;
        assert_eq!(created.sla_hours, hours, "{priority:?}");
        assert_eq!(
            time_of(&created.due_time) - time_of(&created.create_time),
            chrono::Duration::hours(hours.into()),
            "{priority:?}: due = created + sla"
        );
        assert_eq!(created.status, DecisionStatus::NeedsInput as i32);
        assert_eq!(
            created.owner_id,
            ids::ALICE.to_string(),
            "owner defaults to the caller"
        );
    }
    // A tenant's own defaults (identity's tenant settings) apply to globex
    // only, and reach decision through identity's internal API.
    sqlx::query(
        "UPDATE core.tenants SET settings = '{\"sla_defaults\":{\"blocking_hours\":2,\"high_hours\":3,\"normal_hours\":4,\"low_hours\":5}}' \
         WHERE id = $1",
    )
    .bind(ids::GLOBEX)
    .execute(&d.pool)
    .await
    .expect("globex settings");
    let erin = d.app.login_seeded("globex", "erin@globex.test").await;
    let created = d
        .app
        .decisions()
        .create_decision(bearer(
            CreateDecisionRequest {
                decision: Some(Decision {
                    priority: DecisionPriority::Low as i32,
                    ..decision("globex default")
                }),
                ..Default::default()
            },
            &erin,
        ))
        .await
        .expect("create in globex")
        .into_inner();
    assert_eq!(created.sla_hours, 5);
    // An explicit SLA wins.
    let explicit = d
        .create(Decision {
            sla_hours: 5,
            ..decision("explicit")
        })
        .await;
    assert_eq!(explicit.sla_hours, 5);
    assert_eq!(
        time_of(&explicit.due_time) - time_of(&explicit.create_time),
        chrono::Duration::hours(5)
    );
    let audit = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM core.audit_logs WHERE action = 'CREATE' AND entity_type = 'decision' AND entity_id = $1",
    )
    .bind(uuid_of(&explicit.id))
    .fetch_one(&d.pool)
    .await
    .expect("audit");
    assert_eq!(audit, 1);
    d.app.shutdown().await;
}

#[tokio::test]
async fn bad_decisions_are_refused_and_change_nothing() {
    let d = Decisions::spawn().await;
    let before = snapshot(&d.pool).await;
    let cases: Vec<(Decision, &str)> = vec![
        (
            Decision {
                sla_hours: -1,
                ..decision("negative sla")
            },
            "decision.sla_hours",
        ),
        (
            Decision {
                sla_hours: 8761,
                ..decision("absurd sla")
            },
            "decision.sla_hours",
        ),
        (
            Decision {
                options: vec![
                    DecisionOption {
                        id: "x".into(),
                        title: "one".into(),
                        ..Default::default()
                    },
                    DecisionOption {
                        id: "x".into(),
                        title: "two".into(),
                        ..Default::default()
                    },
                ],
                ..decision("duplicate options")
            },
            "decision.options[1].id",
        ),
        (
            Decision {
                title: String::new(),
                ..decision("")
            },
            "decision.title",
        ),
        (
            Decision {
                priority: 0,
                ..decision("no priority")
            },
            "decision.priority",
        ),
        (
            Decision {
                outcome_id: seeded::ACME_BILLING.to_string(),
                hypothesis_id: seeded::ACME_CHECKLIST_HYPOTHESIS.to_string(),
                ..decision("hypothesis of another outcome")
            },
            "decision.hypothesis_id",
        ),
        (
            Decision {
                hypothesis_id: seeded::ACME_CHECKLIST_HYPOTHESIS.to_string(),
                ..decision("hypothesis without outcome")
            },
            "decision.outcome_id",
        ),
        (
            Decision {
                owner_id: ids::ERIN.to_string(),
                ..decision("owner of another tenant")
            },
            "decision.owner_id",
        ),
    ];
    for (bad, field) in cases {
        let result = d
            .app
            .decisions()
            .create_decision(bearer(
                CreateDecisionRequest {
                    decision: Some(bad),
                    ..Default::default()
                },
                &d.alice,
            ))
            .await;
        expect_invalid(result, field);
    }
    assert_unchanged(&before, &snapshot(&d.pool).await);
    // The right outcome for the hypothesis is accepted.
    let linked = d
        .create(Decision {
            outcome_id: seeded::ACME_ACTIVATION.to_string(),
            hypothesis_id: seeded::ACME_CHECKLIST_HYPOTHESIS.to_string(),
            ..decision("linked")
        })
        .await;
    assert_eq!(
        linked.hypothesis_id,
        seeded::ACME_CHECKLIST_HYPOTHESIS.to_string()
    );
    d.app.shutdown().await;
}

#[tokio::test]
async fn resolve_needs_an_option_of_the_decision_and_records_who_and_why() {
    let d = Decisions::spawn().await;
    let created = d.create(decision("pick one")).await;
    let before = snapshot(&d.pool).await;
    let unknown = d
        .app
        .decisions()
        .resolve_decision(bearer(
            ResolveDecisionRequest {
                id: created.id.clone(),
                etag: String::new(),
                selected_option_id: "opt-z".into(),
                rationale: "because".into(),
            },
            &d.alice,
        ))
        .await;
    expect_invalid(unknown, "selected_option_id");
    let no_rationale = d
        .app
        .decisions()
        .resolve_decision(bearer(
            ResolveDecisionRequest {
                id: created.id.clone(),
                selected_option_id: "opt-a".into(),
                ..Default::default()
            },
            &d.alice,
        ))
        .await;
    expect_invalid(no_rationale, "rationale");
    assert_unchanged(&before, &snapshot(&d.pool).await);

    let request_id = new_request_id("resolve");
    let resolved = d
        .app
        .decisions()
        .resolve_decision(call(
            ResolveDecisionRequest {
                id: created.id.clone(),
                etag: created.etag.clone(),
                selected_option_id: "opt-b".into(),
                rationale: "cheaper".into(),
            },
            &d.alice,
            &request_id,
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(resolved.status, DecisionStatus::Decided as i32);
    assert_eq!(resolved.decided_by_id, ids::ALICE.to_string());
    assert!(resolved.decide_time.is_some());
    assert_eq!(resolved.decision_rationale, "cheaper");
    assert_eq!(resolved.selected_option.expect("selected").id, "opt-b");
    let row = the_audit_row(&d.pool, &request_id).await;
    assert_audit(
        &row,
        "DECISION_RESOLVED",
        Some(ids::ALICE),
        "decision",
        uuid_of(&created.id),
    );
    // A stale etag: ABORTED.
    let stale = d
        .app
        .decisions()
        .resolve_decision(bearer(
            ResolveDecisionRequest {
                id: created.id.clone(),
                etag: created.etag.clone(),
                selected_option_id: "opt-a".into(),
                rationale: "again".into(),
            },
            &d.alice,
        ))
        .await;
    let status = expect_code(stale, Code::Aborted);
    assert_eq!(reason(&status), "ETAG_MISMATCH");
    d.app.shutdown().await;
}

#[tokio::test]
async fn a_viewer_can_neither_create_nor_resolve() {
    let d = Decisions::spawn().await;
    let created = d.create(decision("who may")).await;
    let dan = d.app.login_seeded("acme", "dan@acme.test").await;
    let denied = d
        .app
        .decisions()
        .resolve_decision(bearer(
            ResolveDecisionRequest {
                id: created.id.clone(),
                selected_option_id: "opt-a".into(),
                rationale: "x".into(),
                ..Default::default()
            },
            &dan,
        ))
        .await;
    expect_denied(denied, "decision.resolve");
    let denied = d
        .app
        .decisions()
        .create_decision(bearer(
            CreateDecisionRequest {
                decision: Some(decision("viewer")),
                ..Default::default()
            },
            &dan,
        ))
        .await;
    expect_denied(denied, "decision.write");
    d.app.shutdown().await;
}

#[tokio::test]
async fn update_changes_masked_fields_only_and_keeps_status_output_only() {
    let d = Decisions::spawn().await;
    let created = d
        .create(Decision {
            sla_hours: 10,
            ..decision("before")
        })
        .await;
    let request_id = new_request_id("update");
    let updated = d
        .app
        .decisions()
        .update_decision(call(
            UpdateDecisionRequest {
                decision: Some(Decision {
                    id: created.id.clone(),
                    etag: created.etag.clone(),
                    title: "after".into(),
                    description: "ignored: not in the mask".into(),
                    sla_hours: 20,
                    tags: vec!["infra".into()],
                    ..Default::default()
                }),
                update_mask: mask(&["title", "sla_hours", "tags"]),
            },
            &d.alice,
            &request_id,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.title, "after");
    assert_eq!(updated.description, "", "not in the mask: unchanged");
    assert_eq!(updated.sla_hours, 20);
    assert_eq!(updated.tags, ["infra"]);
    assert_eq!(
        time_of(&updated.due_time) - time_of(&updated.create_time),
        chrono::Duration::hours(20),
        "a new SLA moves the deadline"
    );
    let row = the_audit_row(&d.pool, &request_id).await;
    assert_audit(
        &row,
        "UPDATE",
        Some(ids::ALICE),
        "decision",
        uuid_of(&created.id),
    );
    assert_eq!(row.new_json()["title"], "after");

    for paths in [&["status"][..], &["escalation_level"][..], &[][..]] {
        let refused = d
            .app
            .decisions()
            .update_decision(bearer(
                UpdateDecisionRequest {
                    decision: Some(Decision {
                        id: created.id.clone(),
                        status: DecisionStatus::Decided as i32,
                        ..Default::default()
                    }),
                    update_mask: mask(paths),
                },
                &d.alice,
            ))
            .await;
        expect_invalid(refused, "update_mask");
    }
    let stale = d
        .app
        .decisions()
        .update_decision(bearer(
            UpdateDecisionRequest {
                decision: Some(Decision {
                    id: created.id.clone(),
                    etag: created.etag.clone(),
                    title: "stale".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["title"]),
            },
            &d.alice,
        ))
        .await;
    expect_code(stale, Code::Aborted);
    d.app.shutdown().await;
}

#[tokio::test]
async fn assign_audits_decision_assigned_and_refuses_other_tenants_users() {
    let d = Decisions::spawn().await;
    let created = d.create(decision("assign me")).await;
    let request_id = new_request_id("assign");
    let assigned = d
        .app
        .decisions()
        .assign_decision(call(
            AssignDecisionRequest {
                id: created.id.clone(),
                etag: created.etag.clone(),
                assigned_to_id: ids::CAROL.to_string(),
            },
            &d.alice,
            &request_id,
        ))
        .await
        .expect("assign")
        .into_inner();
    assert_eq!(assigned.assigned_to_id, ids::CAROL.to_string());
    assert_ne!(assigned.etag, created.etag);
    let row = the_audit_row(&d.pool, &request_id).await;
    assert_audit(
        &row,
        "DECISION_ASSIGNED",
        Some(ids::ALICE),
        "decision",
        uuid_of(&created.id),
    );
    let other = d
        .app
        .decisions()
        .assign_decision(bearer(
            AssignDecisionRequest {
                id: created.id.clone(),
                etag: String::new(),
                assigned_to_id: ids::FRANK.to_string(),
            },
            &d.alice,
        ))
        .await;
    let status = expect_code(other, Code::InvalidArgument);
    assert_eq!(violation_fields(&status), ["request.assigned_to_id"]);
    d.app.shutdown().await;
}

#[tokio::test]
async fn escalate_climbs_the_management_chain_then_refuses() {
    let d = Decisions::spawn().await;
    let created = d
        .create(Decision {
            owner_id: ids::CAROL.to_string(),
            ..decision("climb")
        })
        .await;
    let escalate = |id: String, reason: &str| {
        let mut client = d.app.decisions();
        let request = bearer(
            EscalateDecisionRequest {
                id,
                etag: String::new(),
                reason: reason.into(),
            },
            &d.alice,
        );
        async move { client.escalate_decision(request).await }
    };
    let first = escalate(created.id.clone(), "stuck")
        .await
        .expect("escalate to carol's manager")
        .into_inner();
    assert_eq!(first.escalated_to_id, ids::BOB.to_string());
    assert_eq!(first.escalation_level, 1);
    assert!(time_of(&first.due_time) > time_of(&created.due_time));
    let second = escalate(created.id.clone(), "still stuck")
        .await
        .expect("escalate to bob's manager")
        .into_inner();
    assert_eq!(second.escalated_to_id, ids::ALICE.to_string());
    assert_eq!(second.escalation_level, 2);
    let before = snapshot(&d.pool).await;
    let top = escalate(created.id.clone(), "nobody above alice").await;
    let status = expect_code(top, Code::FailedPrecondition);
    assert_eq!(reason(&status), "NO_ESCALATION_TARGET");
    let no_reason = escalate(created.id.clone(), "").await;
    expect_invalid(no_reason, "reason");
    let closed = escalate(seeded::ACME_DECIDED.to_string(), "closed").await;
    assert_eq!(
        reason(&expect_code(closed, Code::FailedPrecondition)),
        "DECISION_NOT_OPEN"
    );
    assert_unchanged(&before, &snapshot(&d.pool).await);
    let audits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM core.audit_logs WHERE action = 'DECISION_ESCALATED' AND entity_id = $1",
    )
    .bind(uuid_of(&created.id))
    .fetch_one(&d.pool)
    .await
    .expect("audit count");
    assert_eq!(audits, 2);
    d.app.shutdown().await;
}

async fn list_all(d: &Decisions, request: ListDecisionsRequest) -> Vec<Decision> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = d
            .app
            .decisions()
            .list_decisions(bearer(
                ListDecisionsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..request.clone()
                },
                &d.alice,
            ))
            .await
            .expect("ListDecisions")
            .into_inner();
        assert!(page.decisions.len() <= 2);
        out.extend(page.decisions);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn lists_filter_and_page_in_every_order() {
    let d = Decisions::spawn().await;
    let mut mine = Vec::new();
    for (i, (priority, sla)) in [
        (DecisionPriority::Low, 50),
        (DecisionPriority::Blocking, 40),
        (DecisionPriority::High, 30),
        (DecisionPriority::Normal, 20),
        (DecisionPriority::Blocking, 10),
    ]
    .into_iter()
    .enumerate()
    {
        let created = d
            .create(Decision {
                priority: priority as i32,
                sla_hours: sla,
                tags: vec!["listed".into()],
                team_id: crate::planning::seeded::ACME_TEAM.to_string(),
                ..decision(&format!("listed {i}"))
            })
            .await;
        mine.push(created);
    }
    let filter = ListDecisionsRequest {
        tag: "listed".into(),
        ..Default::default()
    };
    let newest = list_all(&d, filter.clone()).await;
    let ids: Vec<_> = newest.iter().map(|x| x.id.clone()).collect();
    let expected: Vec<_> = mine.iter().rev().map(|x| x.id.clone()).collect();
    assert_eq!(ids, expected, "newest first");

    let by_due = list_all(
        &d,
        ListDecisionsRequest {
            order_by: DecisionOrderBy::DueTime as i32,
            ..filter.clone()
        },
    )
    .await;
    let hours: Vec<_> = by_due.iter().map(|x| x.sla_hours).collect();
    assert_eq!(hours, [10, 20, 30, 40, 50], "soonest due first");

    let by_priority = list_all(
        &d,
        ListDecisionsRequest {
            order_by: DecisionOrderBy::Priority as i32,
            ..filter.clone()
        },
    )
    .await;
    let priorities: Vec<_> = by_priority.iter().map(|x| x.priority).collect();
    let b = DecisionPriority::Blocking as i32;
    assert_eq!(
        priorities,
        [
            b,
            b,
            DecisionPriority::High as i32,
            DecisionPriority::Normal as i32,
            DecisionPriority::Low as i32
        ]
    );
    assert_eq!(
        by_priority[0].id, mine[4].id,
        "newest first within a priority"
    );

    let blocking = list_all(
        &d,
        ListDecisionsRequest {
            priorities: vec![b],
            ..filter.clone()
        },
    )
    .await;
    assert_eq!(blocking.len(), 2);
    let text = list_all(
        &d,
        ListDecisionsRequest {
            query: "LISTED 3".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(text.len(), 1);
    assert_eq!(text[0].id, mine[3].id);

    // Seeded: acme has overdue open decisions; none of globex's show.
    let overdue = list_all(
        &d,
        ListDecisionsRequest {
            overdue_only: true,
            ..Default::default()
        },
    )
    .await;
    assert!(
        overdue
            .iter()
            .any(|x| x.id == seeded::ACME_CHECKLIST.to_string())
    );
    assert!(
        overdue
            .iter()
            .all(|x| x.id != seeded::GLOBEX_OVERDUE.to_string())
    );
    let by_owner = list_all(
        &d,
        ListDecisionsRequest {
            owner_id: ids::CAROL.to_string(),
            assigned_to_id: ids::BOB.to_string(),
            ..Default::default()
        },
    )
    .await;
    assert!(
        by_owner
            .iter()
            .any(|x| x.id == seeded::ACME_CHECKLIST.to_string())
    );

    // A token is bound to its filters and order.
    let first = d
        .app
        .decisions()
        .list_decisions(bearer(
            ListDecisionsRequest {
                page_size: 1,
                ..filter.clone()
            },
            &d.alice,
        ))
        .await
        .expect("page 1")
        .into_inner();
    let replay = d
        .app
        .decisions()
        .list_decisions(bearer(
            ListDecisionsRequest {
                page_size: 1,
                page_token: first.next_page_token,
                order_by: DecisionOrderBy::Priority as i32,
                ..filter.clone()
            },
            &d.alice,
        ))
        .await;
    expect_invalid(replay, "page_token");
    d.app.shutdown().await;
}
