//! Another tenant's decisions answer exactly like missing ones, on every
//! decision RPC, and change nothing.

use codeops_proto::decision::{
    AssignDecisionRequest, CancelDecisionRequest, Decision, DeferDecisionRequest,
    DiscussDecisionRequest, EscalateDecisionRequest, GetDecisionRequest, ListDecisionsRequest,
    MarkDecisionImplementedRequest, ReopenDecisionRequest, RequestDecisionInputRequest,
    ResolveDecisionRequest, UpdateDecisionRequest,
};
use tonic::Code;

use super::{Decisions, decision, seeded};
use crate::common::bearer;
use crate::common::checks::{assert_unchanged, expect_code, mask, snapshot};

#[tokio::test]
async fn every_decision_rpc_treats_another_tenants_decision_as_missing() {
    let d = Decisions::spawn().await;
    let erin = d.app.login_seeded("globex", "erin@globex.test").await;
    let acme_open = d.create(decision("acme only")).await.id;
    let acme_decided = seeded::ACME_DECIDED.to_string();
    let before = snapshot(&d.pool).await;
    let mut c = d.app.decisions();
    let t = &erin;
    let id = || acme_open.clone();
    let nf = Code::NotFound;
    expect_code(
        c.get_decision(bearer(GetDecisionRequest { id: id() }, t))
            .await,
        nf,
    );
    expect_code(
        c.update_decision(bearer(
            UpdateDecisionRequest {
                decision: Some(Decision {
                    id: id(),
                    title: "mine now".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["title"]),
            },
            t,
        ))
        .await,
        nf,
    );
    expect_code(
        c.assign_decision(bearer(
            AssignDecisionRequest {
                id: id(),
                ..Default::default()
            },
            t,
        ))
        .await,
        nf,
    );
    expect_code(
        c.discuss_decision(bearer(
            DiscussDecisionRequest {
                id: id(),
                etag: String::new(),
            },
            t,
        ))
        .await,
        nf,
    );
    expect_code(
        c.request_decision_input(bearer(
            RequestDecisionInputRequest {
                id: id(),
                etag: String::new(),
            },
            t,
        ))
        .await,
        nf,
    );
    expect_code(
        c.resolve_decision(bearer(
            ResolveDecisionRequest {
                id: id(),
                selected_option_id: "opt-a".into(),
                rationale: "x".into(),
                ..Default::default()
            },
            t,
        ))
        .await,
        nf,
    );
    expect_code(
        c.defer_decision(bearer(
            DeferDecisionRequest {
                id: id(),
                ..Default::default()
            },
            t,
        ))
        .await,
        nf,
    );
    expect_code(
        c.cancel_decision(bearer(
            CancelDecisionRequest {
                id: id(),
                ..Default::default()
            },
            t,
        ))
        .await,
        nf,
    );
    expect_code(
        c.mark_decision_implemented(bearer(
            MarkDecisionImplementedRequest {
                id: acme_decided.clone(),
                etag: String::new(),
            },
            t,
        ))
        .await,
        nf,
    );
    expect_code(
        c.reopen_decision(bearer(
            ReopenDecisionRequest {
                id: acme_decided.clone(),
                ..Default::default()
            },
            t,
        ))
        .await,
        nf,
    );
    expect_code(
        c.escalate_decision(bearer(
            EscalateDecisionRequest {
                id: id(),
                reason: "x".into(),
                ..Default::default()
            },
            t,
        ))
        .await,
        nf,
    );
    let listed = c
        .list_decisions(bearer(
            ListDecisionsRequest {
                page_size: 100,
                ..Default::default()
            },
            t,
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(!listed.decisions.is_empty(), "globex sees its own");
    assert!(
        listed
            .decisions
            .iter()
            .all(|x| x.id != acme_open && x.id != acme_decided)
    );
    assert_unchanged(&before, &snapshot(&d.pool).await);
    d.app.shutdown().await;
}
