//! Tenant isolation through the planning API: alice (acme OWNER, every
//! permission) calls every planning RPC with globex's ids, then with ids
//! nobody has, and gets answers identical to the byte (code, message,
//! details; or the same empty result) — nothing about globex leaks, and
//! nothing changes.

use codeops_proto::planning::{
    AbandonHypothesisRequest, AbandonOutcomeRequest, BlockHypothesisRequest,
    ConcludeHypothesisRequest, CreateHypothesisRequest, CreateOutcomeRequest,
    DeleteHypothesisRequest, DeleteOutcomeRequest, GetHypothesisRequest, GetOutcomeRequest,
    Hypothesis, InvalidateOutcomeRequest, ListHypothesesRequest, ListOutcomesRequest,
    MarkHypothesisDeployedRequest, MarkHypothesisReadyRequest, Outcome, PlanOutcomeRequest,
    StartBuildingHypothesisRequest, StartMeasuringHypothesisRequest, StartOutcomeRequest,
    SubmitOutcomeForValidationRequest, UnblockHypothesisRequest, UpdateHypothesisRequest,
    UpdateOutcomeRequest, ValidateOutcomeRequest,
};
use prost::Message;
use tonic::{Code, Response, Status};

use super::{Planning, hypothesis, outcome, seeded};
use crate::common::checks::{assert_no_sql, assert_unchanged, id, mask, snapshot};
use crate::common::{bearer, ids, random_id};

/// The ids a call names: an outcome, a hypothesis, a team and a user.
struct Ids {
    outcome: String,
    hypothesis: String,
    team: String,
    user: String,
}

/// What a client sees of an answer.
#[derive(Debug, PartialEq)]
enum Seen {
    Ok(Vec<u8>),
    Err(Code, String, Vec<u8>),
}

fn seen<T: Message>(result: Result<Response<T>, Status>) -> Seen {
    match result {
        Ok(response) => Seen::Ok(response.into_inner().encode_to_vec()),
        Err(status) => {
            assert_no_sql(&status);
            Seen::Err(
                status.code(),
                status.message().to_owned(),
                status.details().to_vec(),
            )
        }
    }
}

/// Calls every planning RPC with `ids`, as alice.
async fn every_rpc(p: &Planning, ids: &Ids) -> Vec<(&'static str, Seen)> {
    let o = p.app.outcomes();
    let h = p.app.hypotheses();
    let t = &p.alice;
    let oid = || ids.outcome.clone();
    let hid = || ids.hypothesis.clone();
    let mut out = Vec::new();
    let mut o1 = o.clone();
    out.push((
        "CreateOutcome team",
        seen(
            o1.create_outcome(bearer(
                CreateOutcomeRequest {
                    outcome: Some(Outcome {
                        team_id: ids.team.clone(),
                        ..outcome("x")
                    }),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "CreateOutcome owner",
        seen(
            o1.create_outcome(bearer(
                CreateOutcomeRequest {
                    outcome: Some(Outcome {
                        owner_id: ids.user.clone(),
                        ..outcome("x")
                    }),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "GetOutcome",
        seen(
            o1.get_outcome(bearer(GetOutcomeRequest { id: oid() }, t))
                .await,
        ),
    ));
    out.push((
        "ListOutcomes team",
        seen(
            o1.list_outcomes(bearer(
                ListOutcomesRequest {
                    team_id: ids.team.clone(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "ListOutcomes owner",
        seen(
            o1.list_outcomes(bearer(
                ListOutcomesRequest {
                    owner_id: ids.user.clone(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "UpdateOutcome",
        seen(
            o1.update_outcome(bearer(
                UpdateOutcomeRequest {
                    outcome: Some(Outcome {
                        id: oid(),
                        title: "mine".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["title"]),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "UpdateOutcome owner",
        seen(
            o1.update_outcome(bearer(
                UpdateOutcomeRequest {
                    outcome: Some(Outcome {
                        id: id(seeded::ACME_BILLING),
                        owner_id: ids.user.clone(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["owner_id"]),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "DeleteOutcome",
        seen(
            o1.delete_outcome(bearer(
                DeleteOutcomeRequest {
                    id: oid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "PlanOutcome",
        seen(
            o1.plan_outcome(bearer(
                PlanOutcomeRequest {
                    id: oid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "StartOutcome",
        seen(
            o1.start_outcome(bearer(
                StartOutcomeRequest {
                    id: oid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "SubmitOutcomeForValidation",
        seen(
            o1.submit_outcome_for_validation(bearer(
                SubmitOutcomeForValidationRequest {
                    id: oid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "ValidateOutcome",
        seen(
            o1.validate_outcome(bearer(
                ValidateOutcomeRequest {
                    id: oid(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "InvalidateOutcome",
        seen(
            o1.invalidate_outcome(bearer(
                InvalidateOutcomeRequest {
                    id: oid(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "AbandonOutcome",
        seen(
            o1.abandon_outcome(bearer(
                AbandonOutcomeRequest {
                    id: oid(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));

    let mut h1 = h.clone();
    out.push((
        "CreateHypothesis outcome",
        seen(
            h1.create_hypothesis(bearer(
                CreateHypothesisRequest {
                    hypothesis: Some(hypothesis(&oid(), "x")),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "CreateHypothesis owner",
        seen(
            h1.create_hypothesis(bearer(
                CreateHypothesisRequest {
                    hypothesis: Some(Hypothesis {
                        owner_id: ids.user.clone(),
                        ..hypothesis(&id(seeded::ACME_ACTIVATION), "x")
                    }),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "GetHypothesis",
        seen(
            h1.get_hypothesis(bearer(GetHypothesisRequest { id: hid() }, t))
                .await,
        ),
    ));
    out.push((
        "ListHypotheses outcome",
        seen(
            h1.list_hypotheses(bearer(
                ListHypothesesRequest {
                    outcome_id: oid(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "ListHypotheses owner",
        seen(
            h1.list_hypotheses(bearer(
                ListHypothesesRequest {
                    owner_id: ids.user.clone(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "UpdateHypothesis",
        seen(
            h1.update_hypothesis(bearer(
                UpdateHypothesisRequest {
                    hypothesis: Some(Hypothesis {
                        id: hid(),
                        title: "mine".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["title"]),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "UpdateHypothesis owner",
        seen(
            h1.update_hypothesis(bearer(
                UpdateHypothesisRequest {
                    hypothesis: Some(Hypothesis {
                        id: id(seeded::ACME_CHECKLIST),
                        owner_id: ids.user.clone(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["owner_id"]),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "DeleteHypothesis",
        seen(
            h1.delete_hypothesis(bearer(
                DeleteHypothesisRequest {
                    id: hid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "MarkHypothesisReady",
        seen(
            h1.mark_hypothesis_ready(bearer(
                MarkHypothesisReadyRequest {
                    id: hid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "StartBuildingHypothesis",
        seen(
            h1.start_building_hypothesis(bearer(
                StartBuildingHypothesisRequest {
                    id: hid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "MarkHypothesisDeployed",
        seen(
            h1.mark_hypothesis_deployed(bearer(
                MarkHypothesisDeployedRequest {
                    id: hid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "StartMeasuringHypothesis",
        seen(
            h1.start_measuring_hypothesis(bearer(
                StartMeasuringHypothesisRequest {
                    id: hid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "BlockHypothesis",
        seen(
            h1.block_hypothesis(bearer(
                BlockHypothesisRequest {
                    id: hid(),
                    etag: String::new(),
                    reason: "r".into(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "UnblockHypothesis",
        seen(
            h1.unblock_hypothesis(bearer(
                UnblockHypothesisRequest {
                    id: hid(),
                    etag: String::new(),
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "ConcludeHypothesis",
        seen(
            h1.conclude_hypothesis(bearer(
                ConcludeHypothesisRequest {
                    id: hid(),
                    result: 1,
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out.push((
        "AbandonHypothesis",
        seen(
            h1.abandon_hypothesis(bearer(
                AbandonHypothesisRequest {
                    id: hid(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
    ));
    out
}

#[tokio::test]
async fn every_planning_rpc_answers_another_tenants_ids_as_unknown_ones() {
    let p = Planning::spawn().await;
    let globex = Ids {
        outcome: id(seeded::GLOBEX_PICKS),
        hypothesis: id(seeded::GLOBEX_LIGHTS),
        team: id(seeded::GLOBEX_TEAM),
        user: id(ids::ERIN),
    };
    let unknown = Ids {
        outcome: id(random_id()),
        hypothesis: id(random_id()),
        team: id(random_id()),
        user: id(random_id()),
    };
    let before = snapshot(&p.pool).await;
    let foreign = every_rpc(&p, &globex).await;
    let nobody = every_rpc(&p, &unknown).await;
    assert_unchanged(&before, &snapshot(&p.pool).await);

    let services = codeops_planning::ACCESS.len();
    let named: std::collections::BTreeSet<&str> = foreign
        .iter()
        .map(|(name, _)| name.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        named.len(),
        services,
        "every planning RPC is tried: {named:?}"
    );
    for ((name, a), (_, b)) in foreign.iter().zip(&nobody) {
        assert_eq!(
            a, b,
            "{name}: globex's ids answer differently from unknown ones"
        );
        match a {
            Seen::Err(code, message, _) => {
                assert!(
                    matches!(code, Code::NotFound | Code::InvalidArgument),
                    "{name}: {code:?} {message}"
                );
                assert!(
                    !message.to_lowercase().contains("globex"),
                    "{name}: {message}"
                );
            }
            Seen::Ok(bytes) => assert!(
                name.starts_with("List"),
                "{name} accepted another tenant's id ({} bytes)",
                bytes.len()
            ),
        }
    }
    // Globex still sees its own rows, unchanged.
    let erin = p.app.login_seeded("globex", "erin@globex.test").await;
    let picks = p
        .app
        .outcomes()
        .get_outcome(bearer(
            GetOutcomeRequest {
                id: id(seeded::GLOBEX_PICKS),
            },
            &erin,
        ))
        .await
        .expect("erin reads her outcome")
        .into_inner();
    assert_eq!(picks.hypothesis_counts.unwrap_or_default().building, 1);
}
