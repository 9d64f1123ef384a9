//! StakeholderService over real gRPC and PostgreSQL: CRUD, e-mails unique
//! per tenant (normalised), internal stakeholders linked to a user of the
//! tenant only, filters and keyset pages, permissions, tenant isolation,
//! and counters that always equal a recount from the decisions.

use codeops_proto::decision::{
    AssignDecisionRequest, CreateStakeholderRequest, DeactivateStakeholderRequest,
    EscalateDecisionRequest, GetStakeholderRequest, ListStakeholdersRequest,
    ResolveDecisionRequest, Stakeholder, StakeholderType, UpdateStakeholderRequest,
};
use sqlx::PgPool;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::{Uuid, uuid};

use super::{Decisions, decision};
use crate::common::bearer;
use crate::common::checks::{
    assert_unchanged, call, expect_code, expect_denied, expect_invalid, mask, new_request_id,
    snapshot, the_audit_row,
};
use crate::identity::support::acme_user_with;

const BOB: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002");
const CAROL: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003");
const DAN: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa004");
const ERIN: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005");
/// Seeded stakeholders (`seeds/04_stakeholders.sql`).
const ALICE_STAKEHOLDER: &str = "cccccccc-cccc-cccc-cccc-ccccccccc001";
const PRIYA_STAKEHOLDER: &str = "cccccccc-cccc-cccc-cccc-ccccccccc003";

fn external(name: &str, email: &str) -> Stakeholder {
    Stakeholder {
        name: name.into(),
        email: email.into(),
        stakeholder_type: StakeholderType::External as i32,
        ..Default::default()
    }
}

pub(super) fn internal(user: &str, email: &str) -> Stakeholder {
    Stakeholder {
        user_id: user.into(),
        stakeholder_type: StakeholderType::Internal as i32,
        ..external("Inside", email)
    }
}

impl Decisions {
    pub(super) async fn create_stakeholder(
        &self,
        s: Stakeholder,
    ) -> Result<Stakeholder, tonic::Status> {
        self.app
            .stakeholders()
            .create_stakeholder(bearer(
                CreateStakeholderRequest {
                    stakeholder: Some(s),
                    ..Default::default()
                },
                &self.alice,
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn list_all(&self, request: ListStakeholdersRequest) -> Vec<Stakeholder> {
        let mut out = Vec::new();
        let mut request = request;
        loop {
            let page = self
                .app
                .stakeholders()
                .list_stakeholders(bearer(request.clone(), &self.alice))
                .await
                .expect("ListStakeholders")
                .into_inner();
            if request.page_size > 0 {
                assert!(page.stakeholders.len() <= request.page_size as usize);
            }
            out.extend(page.stakeholders);
            if page.next_page_token.is_empty() {
                return out;
            }
            request.page_token = page.next_page_token;
        }
    }
}

/// Every stakeholder's counters against a recount from the decisions
/// (stakeholder.proto's definitions), as the schema owner.
pub(super) async fn assert_counters_match_a_recount(pool: &PgPool) {
    let wrong = counters_differing_from_a_recount(pool).await;
    assert!(
        wrong.is_empty(),
        "counters differ from a recount: {wrong:#?}"
    );
}

/// The stakeholders whose counters differ from a recount from the
/// decisions: name, stored and recounted values.
pub(super) async fn counters_differing_from_a_recount(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT s.name::text, format('stored %s/%s/%s/%s/%s, recounted %s/%s/%s/%s/%s', \
                s.decisions_pending, s.decisions_completed, s.decisions_escalated, \
                round(s.avg_response_time_hours::numeric, 3), s.last_decision_at, \
                c.pending, c.completed, c.escalated, round(c.avg_hours::numeric, 3), c.last_at) \
         FROM core.stakeholders s \
         CROSS JOIN LATERAL (SELECT \
             count(*) FILTER (WHERE s.user_id IS NOT NULL \
                 AND d.status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') \
                 AND coalesce(d.escalated_to_id, d.assigned_to_id) = s.user_id)::int AS pending, \
             count(*) FILTER (WHERE d.decided_by_id = s.user_id)::int AS completed, \
             count(*) FILTER (WHERE d.escalated_to_id = s.user_id)::int AS escalated, \
             (avg(extract(epoch FROM d.decided_at - d.created_at) / 3600) \
                 FILTER (WHERE d.decided_by_id = s.user_id))::float8 AS avg_hours, \
             max(d.decided_at) FILTER (WHERE d.decided_by_id = s.user_id) AS last_at \
             FROM core.decisions d WHERE d.tenant_id = s.tenant_id) c \
         WHERE s.decisions_pending IS DISTINCT FROM c.pending \
            OR s.decisions_completed IS DISTINCT FROM c.completed \
            OR s.decisions_escalated IS DISTINCT FROM c.escalated \
            OR round(s.avg_response_time_hours::numeric, 3) IS DISTINCT FROM round(c.avg_hours::numeric, 3) \
            OR date_trunc('second', s.last_decision_at) IS DISTINCT FROM date_trunc('second', c.last_at)",
    )
    .fetch_all(pool)
    .await
    .expect("recount")
}

#[tokio::test]
async fn stakeholders_are_created_read_updated_and_deactivated() {
    let d = Decisions::spawn().await;
    let request_id = new_request_id("create-stakeholder");
    let created = d
        .app
        .stakeholders()
        .create_stakeholder(call(
            CreateStakeholderRequest {
                stakeholder: Some(Stakeholder {
                    name: "Quinn Quill".into(),
                    email: "  Quinn@Example.TEST ".into(),
                    title: "Counsel".into(),
                    organization: "Quill LLP".into(),
                    avatar_url: "https://img.test/q.png".into(),
                    expertise: vec!["Legal".into(), "privacy".into(), "Legal".into()],
                    timezone: "Europe/Paris".into(),
                    stakeholder_type: StakeholderType::Regulatory as i32,
                    // Output only: ignored.
                    decisions_pending: 7,
                    active: false,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &d.alice,
            &request_id,
        ))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.email, "quinn@example.test", "stored normalised");
    assert_eq!(created.expertise, ["Legal", "privacy"]);
    assert!(created.active);
    assert_eq!(created.decisions_pending, 0);
    assert!(!created.etag.is_empty());
    assert_eq!(the_audit_row(&d.pool, &request_id).await.action, "CREATE");

    let mut s = d.app.stakeholders();
    let got = s
        .get_stakeholder(bearer(
            GetStakeholderRequest {
                id: created.id.clone(),
            },
            &d.alice,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, created);

    let change = |etag: &str| UpdateStakeholderRequest {
        stakeholder: Some(Stakeholder {
            id: created.id.clone(),
            title: "General Counsel".into(),
            organization: String::new(),
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: mask(&["title", "organization"]),
    };
    expect_code(
        s.update_stakeholder(bearer(change("W/\"1\""), &d.alice))
            .await,
        Code::Aborted,
    );
    expect_invalid(
        s.update_stakeholder(bearer(
            UpdateStakeholderRequest {
                update_mask: mask(&["decisions_pending"]),
                ..change("")
            },
            &d.alice,
        ))
        .await,
        "update_mask",
    );
    let updated = s
        .update_stakeholder(bearer(change(&created.etag), &d.alice))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.title, "General Counsel");
    assert_eq!(updated.organization, "");
    assert_eq!(updated.name, "Quinn Quill", "outside the mask: untouched");
    assert_ne!(updated.etag, created.etag);

    let deactivated = s
        .deactivate_stakeholder(bearer(
            DeactivateStakeholderRequest {
                id: created.id.clone(),
                etag: updated.etag.clone(),
            },
            &d.alice,
        ))
        .await
        .expect("deactivate")
        .into_inner();
    assert!(!deactivated.active);
    let again = expect_code(
        s.deactivate_stakeholder(bearer(
            DeactivateStakeholderRequest {
                id: created.id.clone(),
                etag: String::new(),
            },
            &d.alice,
        ))
        .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        again.get_details_error_info().expect("info").reason,
        "ALREADY_DEACTIVATED"
    );
    expect_code(
        s.get_stakeholder(bearer(
            GetStakeholderRequest {
                id: Uuid::new_v4().to_string(),
            },
            &d.alice,
        ))
        .await,
        Code::NotFound,
    );
    d.app.shutdown().await;
}

#[tokio::test]
async fn emails_are_unique_per_tenant_and_internal_ones_link_a_user_of_the_tenant() {
    let d = Decisions::spawn().await;
    d.create_stakeholder(external("Ann", "ann@partner.test"))
        .await
        .expect("first");
    let before = snapshot(&d.pool).await;
    // The same address, spelled differently: taken.
    expect_code(
        d.create_stakeholder(external("Ann again", "ANN@partner.test"))
            .await,
        Code::AlreadyExists,
    );
    // A seeded address (priya's) too.
    expect_code(
        d.create_stakeholder(external("P", "priya.patel@initech.test"))
            .await,
        Code::AlreadyExists,
    );
    // Internal without a user, with another tenant's user, with an unknown
    // user; a user who already is a stakeholder.
    let mail = "inside@acme.test";
    expect_invalid(
        d.create_stakeholder(internal("", mail)).await,
        "stakeholder.user_id",
    );
    expect_invalid(
        d.create_stakeholder(internal(&ERIN.to_string(), mail))
            .await,
        "stakeholder.user_id",
    );
    expect_invalid(
        d.create_stakeholder(internal(&Uuid::new_v4().to_string(), mail))
            .await,
        "stakeholder.user_id",
    );
    expect_code(
        d.create_stakeholder(internal(&BOB.to_string(), mail)).await,
        Code::AlreadyExists,
    );
    // Bad input, every violation at once.
    let bad = expect_code(
        d.create_stakeholder(Stakeholder {
            name: String::new(),
            email: "not-an-email".into(),
            avatar_url: "ftp://x".into(),
            stakeholder_type: 99,
            expertise: vec!["x".repeat(65)],
            notes: "bell \u{7}".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    let fields = crate::common::checks::violation_fields(&bad);
    for field in [
        "stakeholder.name",
        "stakeholder.email",
        "stakeholder.avatar_url",
        "stakeholder.stakeholder_type",
        "stakeholder.expertise[0]",
        "stakeholder.notes",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    assert_unchanged(&before, &snapshot(&d.pool).await);

    // Another tenant may use the same address.
    let erin = d.app.login_seeded("globex", "erin@globex.test").await;
    d.app
        .stakeholders()
        .create_stakeholder(bearer(
            CreateStakeholderRequest {
                stakeholder: Some(external("Ann at globex", "ann@partner.test")),
                ..Default::default()
            },
            &erin,
        ))
        .await
        .expect("same e-mail, other tenant");
    // An internal stakeholder of a user of the tenant.
    let dan = d
        .create_stakeholder(internal(&DAN.to_string(), mail))
        .await
        .expect("dan");
    assert_eq!(dan.user_id, DAN.to_string());
    // Updating to a taken e-mail, to another tenant's user, to no user.
    let mut s = d.app.stakeholders();
    let update = |stakeholder: Stakeholder, path: &str| UpdateStakeholderRequest {
        stakeholder: Some(Stakeholder {
            id: dan.id.clone(),
            ..stakeholder
        }),
        update_mask: mask(&[path]),
    };
    let before = snapshot(&d.pool).await;
    expect_code(
        s.update_stakeholder(bearer(
            update(
                Stakeholder {
                    email: "ann@partner.test".into(),
                    ..Default::default()
                },
                "email",
            ),
            &d.alice,
        ))
        .await,
        Code::AlreadyExists,
    );
    expect_invalid(
        s.update_stakeholder(bearer(
            update(
                Stakeholder {
                    user_id: ERIN.to_string(),
                    ..Default::default()
                },
                "user_id",
            ),
            &d.alice,
        ))
        .await,
        "stakeholder.user_id",
    );
    expect_invalid(
        s.update_stakeholder(bearer(update(Stakeholder::default(), "user_id"), &d.alice))
            .await,
        "stakeholder.user_id",
    );
    assert_unchanged(&before, &snapshot(&d.pool).await);
    d.app.shutdown().await;
}

#[tokio::test]
async fn lists_filter_and_page() {
    let d = Decisions::spawn().await;
    let mut mine = Vec::new();
    for i in 0..7 {
        let s = d
            .create_stakeholder(Stakeholder {
                expertise: if i % 2 == 0 {
                    vec!["Pricing".into()]
                } else {
                    vec!["logistics".into()]
                },
                organization: format!("Zeta {i}"),
                stakeholder_type: if i < 3 {
                    StakeholderType::Customer as i32
                } else {
                    StakeholderType::Technical as i32
                },
                ..external(&format!("Person {i}"), &format!("p{i}@zeta.test"))
            })
            .await
            .expect("create");
        mine.push(s);
    }
    d.app
        .stakeholders()
        .deactivate_stakeholder(bearer(
            DeactivateStakeholderRequest {
                id: mine[6].id.clone(),
                etag: String::new(),
            },
            &d.alice,
        ))
        .await
        .expect("deactivate");
    let ids = |list: &[Stakeholder]| list.iter().map(|s| s.id.clone()).collect::<Vec<_>>();

    // Everything, newest first, in pages of 2: the 7 new, then the 3 seeded.
    let all = d
        .list_all(ListStakeholdersRequest {
            page_size: 2,
            ..Default::default()
        })
        .await;
    assert_eq!(all.len(), 10);
    let newest: Vec<String> = mine.iter().rev().map(|s| s.id.clone()).collect();
    assert_eq!(ids(&all[..7]), newest);

    let customers = d
        .list_all(ListStakeholdersRequest {
            page_size: 1,
            stakeholder_type: StakeholderType::Customer as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(customers.len(), 3);
    let pricing = d
        .list_all(ListStakeholdersRequest {
            expertise: "pricing".into(),
            ..Default::default()
        })
        .await;
    // Persons 0, 2, 4, 6 and the seeded alice ("pricing").
    assert_eq!(pricing.len(), 5);
    let inactive = d
        .list_all(ListStakeholdersRequest {
            active: Some(false),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(&inactive), [mine[6].id.clone()]);
    let active_zeta = d
        .list_all(ListStakeholdersRequest {
            active: Some(true),
            query: "zeta".into(),
            page_size: 4,
            ..Default::default()
        })
        .await;
    assert_eq!(active_zeta.len(), 6);
    let none = d
        .list_all(ListStakeholdersRequest {
            query: "100%_".into(),
            ..Default::default()
        })
        .await;
    assert!(none.is_empty(), "pattern characters are literal");

    // A token is bound to its filters.
    let first = d
        .app
        .stakeholders()
        .list_stakeholders(bearer(
            ListStakeholdersRequest {
                page_size: 1,
                ..Default::default()
            },
            &d.alice,
        ))
        .await
        .expect("list")
        .into_inner();
    expect_invalid(
        d.app
            .stakeholders()
            .list_stakeholders(bearer(
                ListStakeholdersRequest {
                    page_size: 1,
                    page_token: first.next_page_token,
                    active: Some(true),
                    ..Default::default()
                },
                &d.alice,
            ))
            .await,
        "page_token",
    );
    d.app.shutdown().await;
}

#[tokio::test]
async fn stakeholders_need_their_permissions_and_stay_in_their_tenant() {
    let d = Decisions::spawn().await;
    let (_, reader) = acme_user_with(&d.app, &["stakeholder.read"]).await;
    let (_, nobody) = acme_user_with(&d.app, &[]).await;
    let erin = d.app.login_seeded("globex", "erin@globex.test").await;
    let priya = PRIYA_STAKEHOLDER.to_string();
    let mut s = d.app.stakeholders();
    let before = snapshot(&d.pool).await;
    expect_denied(
        s.create_stakeholder(bearer(
            CreateStakeholderRequest {
                stakeholder: Some(external("x", "x@x.test")),
                ..Default::default()
            },
            &reader,
        ))
        .await,
        "stakeholder.manage",
    );
    expect_denied(
        s.deactivate_stakeholder(bearer(
            DeactivateStakeholderRequest {
                id: priya.clone(),
                etag: String::new(),
            },
            &reader,
        ))
        .await,
        "stakeholder.manage",
    );
    expect_denied(
        s.list_stakeholders(bearer(ListStakeholdersRequest::default(), &nobody))
            .await,
        "stakeholder.read",
    );
    // Another tenant's stakeholder: like an unknown one.
    expect_code(
        s.get_stakeholder(bearer(GetStakeholderRequest { id: priya.clone() }, &erin))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.update_stakeholder(bearer(
            UpdateStakeholderRequest {
                stakeholder: Some(Stakeholder {
                    id: priya.clone(),
                    name: "mine".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name"]),
            },
            &erin,
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        s.deactivate_stakeholder(bearer(
            DeactivateStakeholderRequest {
                id: priya.clone(),
                etag: String::new(),
            },
            &erin,
        ))
        .await,
        Code::NotFound,
    );
    let globex = s
        .list_stakeholders(bearer(ListStakeholdersRequest::default(), &erin))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(globex.stakeholders.len(), 1, "globex sees only erin");
    assert_unchanged(&before, &snapshot(&d.pool).await);
    let read = s
        .get_stakeholder(bearer(GetStakeholderRequest { id: priya }, &reader))
        .await
        .expect("a reader reads")
        .into_inner();
    assert_eq!(read.stakeholder_type, StakeholderType::External as i32);
    d.app.shutdown().await;
}

#[tokio::test]
async fn counters_equal_a_recount_as_decisions_move() {
    let d = Decisions::spawn().await;
    assert_counters_match_a_recount(&d.pool).await;
    // Carol and dan become stakeholders (counted on create).
    for (user, email) in [(CAROL, "carol@acme.test"), (DAN, "dan@acme.test")] {
        d.create_stakeholder(internal(&user.to_string(), email))
            .await
            .expect("internal stakeholder");
    }
    assert_counters_match_a_recount(&d.pool).await;
    let mut c = d.app.decisions();
    for (i, assignee) in [BOB, CAROL, DAN, CAROL].iter().enumerate() {
        let id = d.create(decision(&format!("counted {i}"))).await.id;
        c.assign_decision(bearer(
            AssignDecisionRequest {
                id: id.clone(),
                etag: String::new(),
                assigned_to_id: assignee.to_string(),
            },
            &d.alice,
        ))
        .await
        .expect("assign");
        assert_counters_match_a_recount(&d.pool).await;
        if i % 2 == 0 {
            c.resolve_decision(bearer(
                ResolveDecisionRequest {
                    id: id.clone(),
                    selected_option_id: "opt-a".into(),
                    rationale: "because".into(),
                    ..Default::default()
                },
                &d.alice,
            ))
            .await
            .expect("resolve");
        } else {
            // Escalated to the holder's manager (the seeded chain), or
            // refused when there is none: either way the counters hold.
            let _ = c
                .escalate_decision(bearer(
                    EscalateDecisionRequest {
                        id: id.clone(),
                        reason: "slow".into(),
                        ..Default::default()
                    },
                    &d.alice,
                ))
                .await;
        }
        assert_counters_match_a_recount(&d.pool).await;
        // A refused move (an unknown option) changes nothing.
        let _ = c
            .resolve_decision(bearer(
                ResolveDecisionRequest {
                    id: id.clone(),
                    selected_option_id: "nope".into(),
                    rationale: "x".into(),
                    ..Default::default()
                },
                &d.alice,
            ))
            .await;
        assert_counters_match_a_recount(&d.pool).await;
    }
    // The sweeper escalates every overdue decision (a moved clock).
    let sweeper = d.sweeper(None).await;
    sweeper
        .sweep(chrono::Utc::now() + chrono::Duration::days(400))
        .await
        .expect("sweep");
    assert_counters_match_a_recount(&d.pool).await;
    // Alice resolved the seeded one and two here.
    let alice = d
        .app
        .stakeholders()
        .get_stakeholder(bearer(
            GetStakeholderRequest {
                id: ALICE_STAKEHOLDER.into(),
            },
            &d.alice,
        ))
        .await
        .expect("alice")
        .into_inner();
    assert_eq!(alice.decisions_completed, 3);
    d.app.shutdown().await;
}

#[tokio::test]
async fn concurrent_moves_on_one_stakeholder_keep_the_counters_true() {
    let d = Decisions::spawn().await;
    d.create_stakeholder(internal(&CAROL.to_string(), "carol@acme.test"))
        .await
        .expect("carol");
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(d.create(decision(&format!("race {i}"))).await.id);
    }
    // Every decision assigned to carol at once, then half of them resolved
    // at once while the others are handed to dan.
    let assign = |id: String, to: Uuid| {
        let mut c = d.app.decisions();
        let token = d.alice.clone();
        tokio::spawn(async move {
            c.assign_decision(bearer(
                AssignDecisionRequest {
                    id,
                    etag: String::new(),
                    assigned_to_id: to.to_string(),
                },
                &token,
            ))
            .await
            .expect("assign");
        })
    };
    let resolve = |id: String| {
        let mut c = d.app.decisions();
        let token = d.alice.clone();
        tokio::spawn(async move {
            c.resolve_decision(bearer(
                ResolveDecisionRequest {
                    id,
                    selected_option_id: "opt-b".into(),
                    rationale: "race".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("resolve");
        })
    };
    let tasks: Vec<_> = ids.iter().map(|id| assign(id.clone(), CAROL)).collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_counters_match_a_recount(&d.pool).await;
    let (first, second) = ids.split_at(4);
    let mut tasks: Vec<_> = first.iter().map(|id| resolve(id.clone())).collect();
    tasks.extend(second.iter().map(|id| assign(id.clone(), DAN)));
    for task in tasks {
        task.await.expect("task");
    }
    assert_counters_match_a_recount(&d.pool).await;
    d.app.shutdown().await;
}
