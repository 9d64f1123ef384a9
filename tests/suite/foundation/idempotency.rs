//! Idempotent creates (AIP-155): the nine RPCs that take a `request_id`
//! answer a retry with what the first call created, refuse a key reused for
//! another request, keep keys per tenant and per service, and keep no key
//! for a call that failed.

use std::collections::BTreeMap;

use codeops_platform::ServiceRole;
use codeops_proto::decision::{
    AddCommentRequest, CreateDecisionRequest, CreateStakeholderRequest, Stakeholder,
    StakeholderType,
};
use codeops_proto::identity::{
    CreateRoleRequest, CreateTeamRequest, CreateTenantRequest, CreateUserRequest, Team, Tenant,
    User,
};
use codeops_proto::planning::{
    CreateHypothesisRequest, CreateOutcomeRequest, ExperimentConfig, Outcome, OutcomePriority,
};
use prost::Message;
use sqlx::PgPool;
use tonic::{Code, Status};
use uuid::{Uuid, uuid};

use crate::common::checks::{
    assert_unchanged, audit_rows, call, expect_invalid, new_request_id, operator_call, snapshot,
};
use crate::common::{TestApp, random_id, tenant_tx};
use crate::identity::support::{NEW_PASSWORD, role_message};

/// The system role ENGINEER (migration 10002).
const ENGINEER: Uuid = uuid!("00000000-0000-4000-8002-000000000004");
/// Seeded open decisions and in-progress outcomes, one per tenant.
const ACME_DECISION: Uuid = uuid!("ffffffff-ffff-ffff-ffff-fffffffff001");
const GLOBEX_DECISION: Uuid = uuid!("ffffffff-ffff-ffff-ffff-fffffffff006");
const ACME_OUTCOME: Uuid = uuid!("dddddddd-dddd-dddd-dddd-ddddddddd001");
const GLOBEX_OUTCOME: Uuid = uuid!("dddddddd-dddd-dddd-dddd-ddddddddd004");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    CreateTenant,
    CreateUser,
    CreateRole,
    CreateTeam,
    CreateOutcome,
    CreateHypothesis,
    CreateDecision,
    AddComment,
    CreateStakeholder,
}

const ALL: [Rpc; 9] = [
    Rpc::CreateTenant,
    Rpc::CreateUser,
    Rpc::CreateRole,
    Rpc::CreateTeam,
    Rpc::CreateOutcome,
    Rpc::CreateHypothesis,
    Rpc::CreateDecision,
    Rpc::AddComment,
    Rpc::CreateStakeholder,
];

impl Rpc {
    /// The table the RPC adds a row to.
    fn table(self) -> &'static str {
        match self {
            Rpc::CreateTenant => "tenants",
            Rpc::CreateUser => "users",
            Rpc::CreateRole => "roles",
            Rpc::CreateTeam => "teams",
            Rpc::CreateOutcome => "outcomes",
            Rpc::CreateHypothesis => "hypotheses",
            Rpc::CreateDecision => "decisions",
            Rpc::AddComment => "decision_comments",
            Rpc::CreateStakeholder => "stakeholders",
        }
    }

    /// The audit action of the resource it creates.
    fn audit_action(self) -> &'static str {
        match self {
            Rpc::CreateUser => "USER_CREATED",
            Rpc::AddComment => "DECISION_COMMENTED",
            _ => "CREATE",
        }
    }
}

/// Which request a call sends under its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Payload {
    /// A valid request.
    First,
    /// A valid request differing from `First` in one field.
    Other,
    /// `First` with one value that fails inside the write transaction,
    /// after the key was claimed (a taken slug or e-mail, an unknown id);
    /// CreateRole's fails validation.
    Failing,
}

#[derive(Clone, Copy, Debug)]
enum Who {
    Acme,
    Globex,
}

/// What a call created: the resource's id and the whole answer, encoded.
#[derive(Debug, PartialEq)]
struct Created {
    id: Uuid,
    answer: Vec<u8>,
}

impl Created {
    fn of(id: &str, answer: &impl Message) -> Created {
        Created {
            id: Uuid::parse_str(id).expect("a resource id"),
            answer: answer.encode_to_vec(),
        }
    }
}

struct Env {
    app: TestApp,
    pool: PgPool,
    acme: String,
    globex: String,
}

impl Env {
    async fn spawn() -> Env {
        let app = TestApp::spawn().await;
        let pool = app.admin_pool().await;
        let acme = app.login_seeded("acme", "alice@acme.test").await;
        let globex = app.login_seeded("globex", "erin@globex.test").await;
        Env {
            app,
            pool,
            acme,
            globex,
        }
    }

    /// Calls `rpc` as `who`'s owner (CreateTenant: as the operator) with
    /// `request_id`; `tag` (lowercase letters and digits) makes its names,
    /// slugs and e-mails unique.
    async fn call(
        &self,
        rpc: Rpc,
        who: Who,
        tag: &str,
        payload: Payload,
        request_id: &str,
    ) -> Result<Created, Status> {
        self.call_traced(rpc, who, tag, payload, request_id, &new_request_id("idem"))
            .await
    }

    /// `call` with the call's `x-request-id` (its audit rows carry it).
    async fn call_traced(
        &self,
        rpc: Rpc,
        who: Who,
        tag: &str,
        payload: Payload,
        request_id: &str,
        trace: &str,
    ) -> Result<Created, Status> {
        let token = match who {
            Who::Acme => &self.acme,
            Who::Globex => &self.globex,
        };
        let (decision, outcome) = match who {
            Who::Acme => (ACME_DECISION, ACME_OUTCOME),
            Who::Globex => (GLOBEX_DECISION, GLOBEX_OUTCOME),
        };
        let failing = payload == Payload::Failing;
        let varied = |text: &str| match payload {
            Payload::Other => format!("{text} (other)"),
            _ => text.to_owned(),
        };
        let request_id = request_id.to_owned();
        match rpc {
            Rpc::CreateTenant => {
                let request = CreateTenantRequest {
                    tenant: Some(Tenant {
                        name: format!("Tenant {tag}"),
                        slug: if failing { "acme".into() } else { tag.into() },
                        ..Default::default()
                    }),
                    owner_email: format!("owner@{tag}.test"),
                    owner_first_name: "Olga".into(),
                    owner_last_name: varied("Owner"),
                    owner_password: NEW_PASSWORD.into(),
                    request_id,
                };
                let answer = self
                    .app
                    .tenants()
                    .create_tenant(operator_call(request, trace))
                    .await?
                    .into_inner();
                Ok(Created::of(
                    &answer.tenant.as_ref().expect("tenant").id,
                    &answer,
                ))
            }
            Rpc::CreateUser => {
                let request = CreateUserRequest {
                    user: Some(User {
                        email: if failing {
                            "alice@acme.test".into()
                        } else {
                            format!("{tag}@example.test")
                        },
                        first_name: "Test".into(),
                        last_name: varied("User"),
                        role_id: ENGINEER.to_string(),
                        ..Default::default()
                    }),
                    password: NEW_PASSWORD.into(),
                    request_id,
                };
                let answer = self
                    .app
                    .users()
                    .create_user(call(request, token, trace))
                    .await?
                    .into_inner();
                Ok(Created::of(&answer.id, &answer))
            }
            Rpc::CreateRole => {
                let code = if failing {
                    "OWNER".to_owned()
                } else {
                    tag.to_uppercase()
                };
                let mut role = role_message(&code, &["user.read"]);
                role.description = varied("made by a test");
                let request = CreateRoleRequest {
                    role: Some(role),
                    request_id,
                };
                let answer = self
                    .app
                    .roles()
                    .create_role(call(request, token, trace))
                    .await?
                    .into_inner();
                Ok(Created::of(&answer.id, &answer))
            }
            Rpc::CreateTeam => {
                let request = CreateTeamRequest {
                    team: Some(Team {
                        name: format!("Team {tag}"),
                        // growth: a seeded team of acme's
                        slug: if failing { "growth".into() } else { tag.into() },
                        description: varied("made by a test"),
                        ..Default::default()
                    }),
                    request_id,
                };
                let answer = self
                    .app
                    .teams()
                    .create_team(call(request, token, trace))
                    .await?
                    .into_inner();
                Ok(Created::of(&answer.id, &answer))
            }
            Rpc::CreateOutcome => {
                let request = CreateOutcomeRequest {
                    outcome: Some(Outcome {
                        title: varied(&format!("Outcome {tag}")),
                        priority: OutcomePriority::Medium as i32,
                        team_id: if failing {
                            random_id().to_string()
                        } else {
                            String::new()
                        },
                        ..Default::default()
                    }),
                    request_id,
                };
                let answer = self
                    .app
                    .outcomes()
                    .create_outcome(call(request, token, trace))
                    .await?
                    .into_inner();
                Ok(Created::of(&answer.id, &answer))
            }
            Rpc::CreateHypothesis => {
                let outcome_id = if failing { random_id() } else { outcome };
                let mut hypothesis =
                    crate::planning::hypothesis(&outcome_id.to_string(), &varied("Hypothesis"));
                // A map: its order on the wire differs from call to call.
                hypothesis.experiment_config = Some(ExperimentConfig {
                    split: (0..10).map(|i| (format!("variant{i}"), 10.0)).collect(),
                    ..Default::default()
                });
                let request = CreateHypothesisRequest {
                    hypothesis: Some(hypothesis),
                    request_id,
                };
                let mut answer = self
                    .app
                    .hypotheses()
                    .create_hypothesis(call(request, token, trace))
                    .await?
                    .into_inner();
                // A map encodes in no fixed order: compared in key order.
                let split: BTreeMap<String, f64> = answer
                    .experiment_config
                    .as_mut()
                    .map(|c| c.split.drain().collect())
                    .unwrap_or_default();
                let mut created = Created::of(&answer.id, &answer);
                created
                    .answer
                    .extend_from_slice(format!("{split:?}").as_bytes());
                Ok(created)
            }
            Rpc::CreateDecision => {
                let mut decision = crate::decision::decision(&varied(&format!("Decision {tag}")));
                if failing {
                    decision.owner_id = random_id().to_string();
                }
                let request = CreateDecisionRequest {
                    decision: Some(decision),
                    request_id,
                };
                let answer = self
                    .app
                    .decisions()
                    .create_decision(call(request, token, trace))
                    .await?
                    .into_inner();
                Ok(Created::of(&answer.id, &answer))
            }
            Rpc::AddComment => {
                let decision_id = if failing { random_id() } else { decision };
                let request = AddCommentRequest {
                    decision_id: decision_id.to_string(),
                    content: varied(&format!("Comment {tag}")),
                    request_id,
                    ..Default::default()
                };
                let answer = self
                    .app
                    .comments()
                    .add_comment(call(request, token, trace))
                    .await?
                    .into_inner();
                Ok(Created::of(&answer.id, &answer))
            }
            Rpc::CreateStakeholder => {
                let (kind, user_id) = if failing {
                    (StakeholderType::Internal, random_id().to_string())
                } else {
                    (StakeholderType::External, String::new())
                };
                let request = CreateStakeholderRequest {
                    stakeholder: Some(Stakeholder {
                        name: format!("Stakeholder {tag}"),
                        email: format!("{tag}@stake.test"),
                        title: varied("Advisor"),
                        stakeholder_type: kind as i32,
                        user_id,
                        ..Default::default()
                    }),
                    request_id,
                };
                let answer = self
                    .app
                    .stakeholders()
                    .create_stakeholder(call(request, token, trace))
                    .await?
                    .into_inner();
                Ok(Created::of(&answer.id, &answer))
            }
        }
    }

    async fn rows(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM core.{table}"))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// Rows of `core.request_ids` holding `key`, in any tenant.
    async fn keys(&self, key: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM core.request_ids WHERE request_id = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .expect("count keys")
    }

    /// Moves `key`'s row back past the 24-hour window.
    async fn age(&self, key: Uuid) {
        sqlx::query(
            "UPDATE core.request_ids SET created_at = now() - interval '25 hours' WHERE request_id = $1",
        )
        .bind(key)
        .execute(&self.pool)
        .await
        .expect("age a key");
    }
}

fn new_key() -> Uuid {
    Uuid::new_v4()
}

/// A tag for names and slugs: lowercase letters and digits.
fn tag(prefix: &str, rpc: Rpc) -> String {
    format!(
        "{prefix}{}",
        ALL.iter().position(|r| *r == rpc).expect("rpc")
    )
}

#[tokio::test]
async fn a_retry_answers_the_first_result_and_writes_nothing() {
    let env = Env::spawn().await;
    for rpc in ALL {
        let key = new_key().to_string();
        let tag = tag("retry", rpc);
        let before = env.rows(rpc.table()).await;
        let first_trace = new_request_id("first");
        let first = env
            .call_traced(rpc, Who::Acme, &tag, Payload::First, &key, &first_trace)
            .await
            .unwrap_or_else(|s| panic!("{rpc:?}: {s:?}"));
        assert_eq!(env.rows(rpc.table()).await, before + 1, "{rpc:?}");
        let audited = audit_rows(&env.pool, &first_trace)
            .await
            .into_iter()
            .filter(|row| row.action == rpc.audit_action())
            .count();
        assert_eq!(audited, 1, "{rpc:?}: one audit row of the creation");

        let unchanged = snapshot(&env.pool).await;
        let retry_trace = new_request_id("retry");
        let retry = env
            .call_traced(rpc, Who::Acme, &tag, Payload::First, &key, &retry_trace)
            .await
            .unwrap_or_else(|s| panic!("{rpc:?} retried: {s:?}"));
        assert_eq!(retry, first, "{rpc:?}: the retry answers the first result");
        assert_unchanged(&unchanged, &snapshot(&env.pool).await);
        assert!(
            audit_rows(&env.pool, &retry_trace).await.is_empty(),
            "{rpc:?}: a retry is not audited"
        );
    }
}

#[tokio::test]
async fn a_retried_create_tenant_answers_without_the_generated_password() {
    let env = Env::spawn().await;
    let request = CreateTenantRequest {
        tenant: Some(Tenant {
            name: "Initech".into(),
            slug: "initech".into(),
            ..Default::default()
        }),
        owner_email: "bill@initech.test".into(),
        owner_first_name: "Bill".into(),
        owner_last_name: "Lumbergh".into(),
        owner_password: String::new(),
        request_id: new_key().to_string(),
    };
    let first = env
        .app
        .tenants()
        .create_tenant(operator_call(request.clone(), &new_request_id("tenant")))
        .await
        .expect("CreateTenant")
        .into_inner();
    assert!(!first.generated_password.is_empty());
    let retry = env
        .app
        .tenants()
        .create_tenant(operator_call(request, &new_request_id("tenant")))
        .await
        .expect("CreateTenant retried")
        .into_inner();
    assert_eq!(retry.tenant, first.tenant);
    assert_eq!(retry.owner, first.owner);
    assert_eq!(
        retry.generated_password, "",
        "the generated password is shown once"
    );
    // The password of the first answer is the owner's.
    env.app
        .login("initech", "bill@initech.test", &first.generated_password)
        .await;
}

#[tokio::test]
async fn a_request_id_reused_for_a_different_request_is_invalid_argument() {
    let env = Env::spawn().await;
    for rpc in ALL {
        let key = new_key().to_string();
        let tag = tag("reuse", rpc);
        env.call(rpc, Who::Acme, &tag, Payload::First, &key)
            .await
            .unwrap_or_else(|s| panic!("{rpc:?}: {s:?}"));
        let unchanged = snapshot(&env.pool).await;
        let status = expect_invalid(
            env.call(rpc, Who::Acme, &tag, Payload::Other, &key).await,
            "request_id",
        );
        assert!(
            status.message().contains("different request"),
            "{rpc:?}: {status:?}"
        );
        assert_unchanged(&unchanged, &snapshot(&env.pool).await);
    }
}

#[tokio::test]
async fn a_request_id_used_by_another_method_is_invalid_argument() {
    let env = Env::spawn().await;
    let key = new_key().to_string();
    env.call(
        Rpc::CreateOutcome,
        Who::Acme,
        "other1",
        Payload::First,
        &key,
    )
    .await
    .expect("CreateOutcome");
    let unchanged = snapshot(&env.pool).await;
    // Another method of the same service, then of other services, whose
    // roles cannot even see the key.
    for rpc in [Rpc::CreateHypothesis, Rpc::CreateTeam, Rpc::CreateDecision] {
        expect_invalid(
            env.call(rpc, Who::Acme, "other2", Payload::First, &key)
                .await,
            "request_id",
        );
    }
    assert_unchanged(&unchanged, &snapshot(&env.pool).await);
}

#[tokio::test]
async fn a_malformed_request_id_is_invalid_argument() {
    let env = Env::spawn().await;
    let unchanged = snapshot(&env.pool).await;
    for rpc in ALL {
        for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000", "1234"] {
            expect_invalid(
                env.call(rpc, Who::Acme, &tag("bad", rpc), Payload::First, bad)
                    .await,
                "request_id",
            );
        }
    }
    assert_unchanged(&unchanged, &snapshot(&env.pool).await);
}

#[tokio::test]
async fn concurrent_calls_with_one_request_id_create_one_resource() {
    let env = Env::spawn().await;
    for rpc in ALL {
        let key = new_key();
        let tag = tag("race", rpc);
        let before = env.rows(rpc.table()).await;
        let key_text = key.to_string();
        let call = || env.call(rpc, Who::Acme, &tag, Payload::First, &key_text);
        let (a, b, c, d) = tokio::join!(call(), call(), call(), call());
        let results: Vec<Created> = [a, b, c, d]
            .into_iter()
            .map(|r| r.unwrap_or_else(|s| panic!("{rpc:?}: {s:?}")))
            .collect();
        assert!(
            results.iter().all(|r| *r == results[0]),
            "{rpc:?}: every call answers the one resource"
        );
        assert_eq!(env.rows(rpc.table()).await, before + 1, "{rpc:?}");
        assert_eq!(env.keys(key).await, 1, "{rpc:?}");
    }
}

#[tokio::test]
async fn request_ids_are_per_tenant() {
    let env = Env::spawn().await;
    // CreateTenant has no tenant of its caller to keep a key per.
    for rpc in ALL.into_iter().filter(|r| *r != Rpc::CreateTenant) {
        let key = new_key();
        let tag = tag("tenant", rpc);
        let acme = env
            .call(rpc, Who::Acme, &tag, Payload::First, &key.to_string())
            .await
            .unwrap_or_else(|s| panic!("{rpc:?} in acme: {s:?}"));
        let globex = env
            .call(rpc, Who::Globex, &tag, Payload::First, &key.to_string())
            .await
            .unwrap_or_else(|s| panic!("{rpc:?} in globex: {s:?}"));
        assert_ne!(acme.id, globex.id, "{rpc:?}: each tenant gets its own");
        for (created, tenant) in [
            (&acme, crate::common::ids::ACME),
            (&globex, crate::common::ids::GLOBEX),
        ] {
            let owner: Uuid = sqlx::query_scalar(&format!(
                "SELECT tenant_id FROM core.{} WHERE id = $1",
                rpc.table()
            ))
            .bind(created.id)
            .fetch_one(&env.pool)
            .await
            .expect("the created row");
            assert_eq!(owner, tenant, "{rpc:?}");
        }
        assert_eq!(env.keys(key).await, 2, "{rpc:?}");
    }
}

#[tokio::test]
async fn a_failed_call_leaves_no_key_and_its_retry_creates() {
    let env = Env::spawn().await;
    for rpc in ALL {
        let key = new_key();
        let tag = tag("fail", rpc);
        let failed = env
            .call(rpc, Who::Acme, &tag, Payload::Failing, &key.to_string())
            .await
            .expect_err("the failing request fails");
        assert_ne!(failed.code(), Code::Internal, "{rpc:?}: {failed:?}");
        assert_eq!(env.keys(key).await, 0, "{rpc:?}: no key of a failed call");
        let before = env.rows(rpc.table()).await;
        env.call(rpc, Who::Acme, &tag, Payload::First, &key.to_string())
            .await
            .unwrap_or_else(|s| panic!("{rpc:?} after a failure: {s:?}"));
        assert_eq!(env.rows(rpc.table()).await, before + 1, "{rpc:?}");
        assert_eq!(env.keys(key).await, 1, "{rpc:?}");
    }
}

#[tokio::test]
async fn a_key_past_24_hours_is_replaced_and_claims_prune_their_services_expired_keys() {
    let env = Env::spawn().await;
    let key = new_key();
    let first = env
        .call(
            Rpc::CreateOutcome,
            Who::Acme,
            "old1",
            Payload::First,
            &key.to_string(),
        )
        .await
        .expect("CreateOutcome");
    env.age(key).await;
    let again = env
        .call(
            Rpc::CreateOutcome,
            Who::Acme,
            "old1",
            Payload::First,
            &key.to_string(),
        )
        .await
        .expect("CreateOutcome after 24 hours");
    assert_ne!(again.id, first.id, "an expired key creates anew");
    let resource: Uuid =
        sqlx::query_scalar("SELECT resource_id FROM core.request_ids WHERE request_id = $1")
            .bind(key)
            .fetch_one(&env.pool)
            .await
            .expect("the key");
    assert_eq!(resource, again.id);

    // Expired keys of planning and of decision; a claim of planning's in
    // the same tenant prunes planning's only.
    let planning_key = new_key();
    env.call(
        Rpc::CreateOutcome,
        Who::Acme,
        "old2",
        Payload::First,
        &planning_key.to_string(),
    )
    .await
    .expect("CreateOutcome");
    let decision_key = new_key();
    env.call(
        Rpc::CreateDecision,
        Who::Acme,
        "old3",
        Payload::First,
        &decision_key.to_string(),
    )
    .await
    .expect("CreateDecision");
    env.age(planning_key).await;
    env.age(decision_key).await;
    env.call(
        Rpc::CreateHypothesis,
        Who::Acme,
        "old4",
        Payload::First,
        &new_key().to_string(),
    )
    .await
    .expect("CreateHypothesis");
    assert_eq!(
        env.keys(planning_key).await,
        0,
        "pruned by planning's claim"
    );
    assert_eq!(
        env.keys(decision_key).await,
        1,
        "decision's key is decision's to prune"
    );
}

#[tokio::test]
async fn each_service_role_sees_and_writes_only_its_own_keys() {
    let env = Env::spawn().await;
    for rpc in [Rpc::CreateTeam, Rpc::CreateOutcome, Rpc::CreateStakeholder] {
        env.call(
            rpc,
            Who::Acme,
            &tag("role", rpc),
            Payload::First,
            &new_key().to_string(),
        )
        .await
        .unwrap_or_else(|s| panic!("{rpc:?}: {s:?}"));
    }
    for (role, prefix) in [
        (ServiceRole::Identity, "/codeops.identity.v1."),
        (ServiceRole::Planning, "/codeops.planning.v1."),
        (ServiceRole::Decision, "/codeops.decision.v1."),
    ] {
        let pool = env.app.db.role_pool(role).await;
        let mut tx = tenant_tx(&pool, crate::common::ids::ACME).await;
        let methods: Vec<String> = sqlx::query_scalar("SELECT method FROM core.request_ids")
            .fetch_all(&mut *tx)
            .await
            .expect("read keys");
        assert_eq!(methods.len(), 1, "{role:?} sees {methods:?}");
        assert!(methods[0].starts_with(prefix), "{role:?} sees {methods:?}");
        // Writing a key of another service's method is refused.
        let foreign = if prefix.contains("identity") {
            "/codeops.planning.v1.OutcomeService/CreateOutcome"
        } else {
            "/codeops.identity.v1.TeamService/CreateTeam"
        };
        let refused = sqlx::query(
            "INSERT INTO core.request_ids (tenant_id, request_id, method, request_digest, resource_id) \
             VALUES (core.current_tenant_id(), gen_random_uuid(), $1, sha256('x'), gen_random_uuid())",
        )
        .bind(foreign)
        .execute(&mut *tx)
        .await
        .expect_err("another service's key is refused");
        assert_eq!(
            refused
                .as_database_error()
                .and_then(|e| e.code())
                .as_deref(),
            Some("42501"),
            "{role:?}"
        );
        drop(tx);
        pool.close().await;
    }
    // Without a tenant, no role sees any key.
    let pool = env.app.db.role_pool(ServiceRole::Planning).await;
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM core.request_ids")
        .fetch_one(&pool)
        .await
        .expect("count keys");
    assert_eq!(seen, 0);
    pool.close().await;
}
