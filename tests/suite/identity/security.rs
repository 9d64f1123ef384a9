//! Issue 7, findings 3-7, 9, 12 and 13, each pinned over real gRPC and
//! PostgreSQL: access tokens name their session and die with it (at once in
//! identity's writes, within the revocation poll elsewhere, also across
//! processes), nobody edits a superior, a tenant keeps an owner, free-form
//! fields are capped, reserved role codes stay reserved, error details
//! stay small, audit rows say what changed, and text is free of control,
//! bidirectional and look-alike characters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use codeops::suite::{Keys, Service, SuiteConfig};
use codeops_proto::decision::ListDecisionsRequest;
use codeops_proto::decision::decision_service_client::DecisionServiceClient;
use codeops_proto::identity::internal_service_client::InternalServiceClient;
use codeops_proto::identity::{
    AppointOwnerRequest, AssignRoleRequest, ChangePasswordRequest, CreateRoleRequest,
    CreateTeamRequest, CreateUserRequest, DeactivateUserRequest, GetCurrentUserRequest,
    ListRevocationsRequest, ListRevocationsResponse, LogoutRequest, SuspendTenantRequest, Team,
    Tenant, TenantSettings, UpdateTeamRequest, UpdateTenantRequest, UpdateUserRequest, User,
};
use codeops_proto::planning::ListOutcomesRequest;
use codeops_proto::planning::outcome_service_client::OutcomeServiceClient;
use codeops_tenant::KeyPair;
use prost_types::value::Kind;
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::common::{
    OPERATOR_TOKEN, PASSWORD, SERVICE_TOKEN, TestApp, TestDb, bearer, channel, free_port, ids,
    operator, suite_config,
};
use crate::identity::jwt::{Ed25519, sign_eddsa, unix_now};
use crate::identity::support::*;

/// How long a test waits for a revocation to reach a service polling every
/// `REVOCATION_POLL`: a few polls, never a fixed sleep.
const PROPAGATION: Duration = Duration::from_secs(8);

/// The `ErrorInfo.reason` of a status.
fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

#[track_caller]
fn expect_reason<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, want: &str) -> Status {
    let status = expect_code(result, code);
    assert_eq!(reason(&status), want, "{:?}", status.message());
    status
}

async fn list_outcomes(channel: Channel, token: &str) -> Result<usize, Status> {
    OutcomeServiceClient::new(channel)
        .list_outcomes(bearer(ListOutcomesRequest::default(), token))
        .await
        .map(|r| r.into_inner().outcomes.len())
}

async fn list_decisions(channel: Channel, token: &str) -> Result<usize, Status> {
    DecisionServiceClient::new(channel)
        .list_decisions(bearer(ListDecisionsRequest::default(), token))
        .await
        .map(|r| r.into_inner().decisions.len())
}

/// Calls `attempt` until it answers UNAUTHENTICATED, for at most
/// `PROPAGATION`; returns how long that took. Any other error fails.
async fn refused_within<F, Fut>(what: &str, mut attempt: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, Status>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Err(status) if status.code() == Code::Unauthenticated => return start.elapsed(),
            Err(status) => panic!("{what}: expected UNAUTHENTICATED, got {status:?}"),
            Ok(_) if start.elapsed() > PROPAGATION => {
                panic!("{what}: the revoked token still works after {PROPAGATION:?}")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn create_user_request(email: &str, role: Uuid) -> CreateUserRequest {
    CreateUserRequest {
        user: Some(user_message(email, role)),
        password: NEW_PASSWORD.into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// 3. Access tokens name their session

#[tokio::test]
async fn after_a_password_change_another_session_cannot_write_at_once_nor_read_elsewhere_within_the_poll()
 {
    let app = TestApp::spawn().await;
    let first = app.login_seeded("acme", "alice@acme.test").await;
    let second = app.login_seeded("acme", "alice@acme.test").await;
    let planning = app.channel(Service::Planning);
    let decision = app.channel(Service::Decision);
    list_outcomes(planning.clone(), &second)
        .await
        .expect("control: the second token reads outcomes");
    list_decisions(decision.clone(), &second)
        .await
        .expect("control: the second token reads decisions");

    let changed = app
        .auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: NEW_PASSWORD.into(),
            },
            &first,
        ))
        .await
        .expect("alice changes her password")
        .into_inner();
    assert!(changed.revoked_sessions >= 2, "{changed:?}");

    // Identity's writes: refused at once, nothing planted.
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    let result = app
        .users()
        .create_user(bearer(
            create_user_request("planted@acme.test", roles::OWNER),
            &second,
        ))
        .await;
    expect_reason(result, Code::Unauthenticated, "SESSION_REVOKED");
    assert_unchanged(&before, &snapshot(&pool).await);

    // Planning and decision: within the poll interval.
    let waited = refused_within("planning ListOutcomes", || {
        list_outcomes(planning.clone(), &second)
    })
    .await;
    assert!(waited < PROPAGATION, "{waited:?}");
    refused_within("decision ListDecisions", || {
        list_decisions(decision.clone(), &second)
    })
    .await;
}

#[tokio::test]
async fn logout_of_one_session_ends_its_writes_and_leaves_the_other_session_working() {
    let app = TestApp::spawn().await;
    let (ended, ended_refresh) = login_pair(&app, "acme", "alice@acme.test").await;
    let kept = app.login_seeded("acme", "alice@acme.test").await;
    app.auth()
        .logout(bearer(
            LogoutRequest {
                refresh_token: ended_refresh,
            },
            &kept,
        ))
        .await
        .expect("logout of the first session");
    let team = |slug: &str| CreateTeamRequest {
        team: Some(Team {
            name: format!("Team {slug}"),
            slug: slug.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    expect_reason(
        app.teams().create_team(bearer(team("ended"), &ended)).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    app.teams()
        .create_team(bearer(team("kept"), &kept))
        .await
        .expect("the other session still writes");
    let planning = app.channel(Service::Planning);
    refused_within("planning with the ended session", || {
        list_outcomes(planning.clone(), &ended)
    })
    .await;
    list_outcomes(planning, &kept)
        .await
        .expect("the other session still reads");
}

#[tokio::test]
async fn a_deactivated_users_token_is_refused_by_planning_within_the_poll() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let carol = app.login_seeded("acme", "carol@acme.test").await;
    let planning = app.channel(Service::Planning);
    list_outcomes(planning.clone(), &carol)
        .await
        .expect("control: carol reads outcomes");
    app.users()
        .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::CAROL) }, &alice))
        .await
        .expect("deactivate carol");
    refused_within("planning with carol's token", || {
        list_outcomes(planning.clone(), &carol)
    })
    .await;
}

#[tokio::test]
async fn a_suspended_tenants_tokens_are_refused_by_decision_within_the_poll() {
    let app = TestApp::spawn().await;
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let decision = app.channel(Service::Decision);
    list_decisions(decision.clone(), &erin)
        .await
        .expect("control: erin reads decisions");
    app.tenants()
        .suspend_tenant(operator(SuspendTenantRequest {
            id: id(ids::GLOBEX),
            reason: "unpaid".into(),
        }))
        .await
        .expect("the operator suspends globex");
    refused_within("decision with a suspended tenant's token", || {
        list_decisions(decision.clone(), &erin)
    })
    .await;
    list_decisions(decision, &alice)
        .await
        .expect("another tenant is untouched");
}

#[tokio::test]
async fn the_revocation_feed_answers_only_the_service_credential() {
    let app = TestApp::spawn().await;
    let (alice, refresh) = login_pair(&app, "acme", "alice@acme.test").await;
    let feed = || InternalServiceClient::new(app.channel(Service::Identity));
    for credential in [
        alice.as_str(),
        OPERATOR_TOKEN,
        "",
        "test-service-credentiaX",
    ] {
        let result = feed()
            .list_revocations(bearer(ListRevocationsRequest::default(), credential))
            .await;
        expect_code(result, Code::Unauthenticated);
    }
    let first = feed()
        .list_revocations(bearer(ListRevocationsRequest::default(), SERVICE_TOKEN))
        .await
        .expect("the service credential reads the feed")
        .into_inner();
    assert!(!first.next_cursor.is_empty());
    app.auth()
        .logout(bearer(
            LogoutRequest {
                refresh_token: refresh,
            },
            &alice,
        ))
        .await
        .expect("logout");
    let next = feed()
        .list_revocations(bearer(
            ListRevocationsRequest {
                cursor: first.next_cursor.clone(),
            },
            SERVICE_TOKEN,
        ))
        .await
        .expect("the next page of the feed")
        .into_inner();
    let revoked = revoked_session_of(&next, ids::ALICE);
    assert!(
        revoked.is_some(),
        "alice's session is in the feed: {next:?}"
    );
    expect_invalid(
        feed()
            .list_revocations(bearer(
                ListRevocationsRequest {
                    cursor: "not-a-cursor".into(),
                },
                SERVICE_TOKEN,
            ))
            .await,
        "cursor",
    );
}

fn revoked_session_of(feed: &ListRevocationsResponse, user: Uuid) -> Option<String> {
    feed.sessions
        .iter()
        .find(|s| s.user_id == user.to_string() && s.tenant_id == ids::ACME.to_string())
        .map(|s| s.session_id.clone())
}

/// Identity and planning as two processes would run them: planning knows
/// identity only by `identity_url`, the public key and the service
/// credential.
struct SplitSuite {
    identity: codeops::suite::Suite,
    planning: codeops::suite::Suite,
    identity_addr: SocketAddr,
    planning_addr: SocketAddr,
    _db: TestDb,
}

impl SplitSuite {
    async fn spawn(identity_url: Option<String>) -> anyhow::Result<SplitSuite> {
        let db = TestDb::seeded().await;
        let pair = KeyPair::generate().expect("key pair");
        let config = |keys: Keys, identity_url: Option<String>| SuiteConfig {
            keys,
            identity_url,
            refresh_ttl: Duration::from_secs(3600),
            ..suite_config(&db)
        };
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback");
        let identity = codeops::suite::start(
            &config(
                Keys {
                    signing: Some(pair.clone()),
                    public: pair.public_key(),
                },
                None,
            ),
            &[(Service::Identity, loopback)],
            loopback,
        )
        .await?;
        let identity_addr = identity.addr(Service::Identity).expect("identity address");
        let url = identity_url.unwrap_or_else(|| format!("http://{identity_addr}"));
        let planning = codeops::suite::start(
            &config(
                Keys {
                    signing: None,
                    public: pair.public_key(),
                },
                Some(url),
            ),
            &[(Service::Planning, loopback)],
            loopback,
        )
        .await?;
        let planning_addr = planning.addr(Service::Planning).expect("planning address");
        Ok(SplitSuite {
            identity,
            planning,
            identity_addr,
            planning_addr,
            _db: db,
        })
    }

    async fn shutdown(self) {
        self.planning.shutdown().await.expect("planning shutdown");
        self.identity.shutdown().await.expect("identity shutdown");
    }
}

#[tokio::test]
async fn planning_in_its_own_process_learns_revocations_from_identity_url() {
    let split = SplitSuite::spawn(None).await.expect("two processes");
    let identity = channel(split.identity_addr);
    let planning = channel(split.planning_addr);
    let response = login(identity.clone(), "acme", "bob@acme.test", PASSWORD)
        .await
        .expect("bob logs in");
    let tokens = response.tokens.expect("tokens");
    list_outcomes(planning.clone(), &tokens.access_token)
        .await
        .expect("control: planning accepts bob's token");
    codeops_proto::identity::auth_service_client::AuthServiceClient::new(identity)
        .logout(bearer(LogoutRequest::default(), &tokens.access_token))
        .await
        .expect("bob logs out everywhere");
    refused_within("planning in its own process", || {
        list_outcomes(planning.clone(), &tokens.access_token)
    })
    .await;
    split.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_identity_never_blocks_planning() {
    let dead_identity = format!("http://127.0.0.1:{}", free_port());
    let split = SplitSuite::spawn(Some(dead_identity))
        .await
        .expect("planning starts without identity answering");
    let identity = channel(split.identity_addr);
    let planning = channel(split.planning_addr);
    let token = login(identity, "acme", "bob@acme.test", PASSWORD)
        .await
        .expect("bob logs in")
        .tokens
        .expect("tokens")
        .access_token;
    let start = Instant::now();
    for _ in 0..3 {
        list_outcomes(planning.clone(), &token)
            .await
            .expect("reads go on while the feed is down");
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "requests waited for the feed: {:?}",
        start.elapsed()
    );
    split.shutdown().await;
}

#[tokio::test]
async fn planning_alone_without_identity_url_refuses_to_start() {
    let db = TestDb::seeded().await;
    let pair = KeyPair::generate().expect("key pair");
    let config = SuiteConfig {
        keys: Keys {
            signing: None,
            public: pair.public_key(),
        },
        refresh_ttl: Duration::from_secs(3600),
        operator_token: None,
        ..suite_config(&db)
    };
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback");
    let error =
        match codeops::suite::start(&config, &[(Service::Planning, loopback)], loopback).await {
            Ok(_) => panic!("planning started with no way to learn of revocations"),
            Err(error) => format!("{error:#}"),
        };
    assert!(error.contains("CODEOPS_IDENTITY_URL"), "{error}");
}

#[tokio::test]
async fn an_access_token_living_longer_than_the_maximum_is_unauthenticated() {
    let identity = KeyedIdentity::spawn().await;
    let now = unix_now();
    let claims = |lifetime: u64| {
        json!({
            "sub": ids::ALICE, "tid": ids::ACME, "role": "OWNER", "perms": ALL_PERMISSIONS,
            "name": "Alice Anders", "email": "alice@acme.test",
            "iss": "codeops-identity", "aud": "codeops",
            "iat": now - 10, "nbf": now - 10, "exp": now - 10 + lifetime,
            "jti": Uuid::new_v4(), "sid": Uuid::new_v4(),
        })
    };
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": identity.key.public_key().kid()});
    let key = Ed25519::from_key_pair(&identity.key);
    let current_user = |token: String| {
        let mut auth = identity.auth();
        async move {
            auth.get_current_user(bearer(GetCurrentUserRequest {}, &token))
                .await
                .map(|r| r.into_inner().id)
        }
    };
    current_user(sign_eddsa(&key, &header, &claims(3600)))
        .await
        .expect("control: a token living the maximum is accepted");
    expect_code(
        current_user(sign_eddsa(&key, &header, &claims(2 * 3600))).await,
        Code::Unauthenticated,
    );
    identity.shutdown().await;
}

// ---------------------------------------------------------------------------
// 5. Every write on another user needs what they hold

#[tokio::test]
async fn an_admin_can_neither_update_the_owner_nor_become_their_manager() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let admin_email = format!("admin-{}@acme.test", Uuid::new_v4().simple());
    let admin = create_user(
        app.channel(Service::Identity),
        &alice,
        &admin_email,
        roles::ADMIN,
    )
    .await;
    let admin_token = app.login("acme", &admin_email, NEW_PASSWORD).await;
    let update = |user: User, paths: &[&str]| UpdateUserRequest {
        user: Some(user),
        update_mask: mask(paths),
    };
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    expect_denied(
        app.users()
            .update_user(bearer(
                update(
                    User {
                        id: id(ids::ALICE),
                        first_name: "Mallory".into(),
                        ..Default::default()
                    },
                    &["first_name"],
                ),
                &admin_token,
            ))
            .await,
        "tenant.manage",
    );
    expect_denied(
        app.users()
            .update_user(bearer(
                update(
                    User {
                        id: id(ids::ALICE),
                        manager_id: admin.id.clone(),
                        ..Default::default()
                    },
                    &["manager_id"],
                ),
                &admin_token,
            ))
            .await,
        "tenant.manage",
    );
    assert_unchanged(&before, &snapshot(&pool).await);

    // Control: the admin still edits people below them, and themselves.
    app.users()
        .update_user(bearer(
            update(
                User {
                    id: id(ids::CAROL),
                    title: "Staff Engineer".into(),
                    ..Default::default()
                },
                &["title"],
            ),
            &admin_token,
        ))
        .await
        .expect("an admin updates an engineer");
    app.users()
        .update_user(bearer(
            update(
                User {
                    id: admin.id.clone(),
                    title: "Admin".into(),
                    ..Default::default()
                },
                &["title"],
            ),
            &admin_token,
        ))
        .await
        .expect("an admin updates themselves");
}

// ---------------------------------------------------------------------------
// 7. A tenant keeps an owner

fn assign(user: Uuid, role: Uuid) -> AssignRoleRequest {
    AssignRoleRequest {
        user_id: id(user),
        role_id: id(role),
    }
}

#[tokio::test]
async fn the_last_owner_cannot_demote_themselves() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    expect_reason(
        app.users()
            .assign_role(bearer(assign(ids::ALICE, roles::ADMIN), &alice))
            .await,
        Code::FailedPrecondition,
        "LAST_OWNER",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn nobody_can_demote_or_deactivate_the_last_owner() {
    let app = TestApp::spawn().await;
    // Someone holding every permission an OWNER holds, without being one.
    let (_, peer) = acme_user_with(&app, ALL_PERMISSIONS).await;
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    expect_reason(
        app.users()
            .assign_role(bearer(assign(ids::ALICE, roles::VIEWER), &peer))
            .await,
        Code::FailedPrecondition,
        "LAST_OWNER",
    );
    expect_reason(
        app.users()
            .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::ALICE) }, &peer))
            .await,
        Code::FailedPrecondition,
        "LAST_OWNER",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn with_a_second_owner_the_first_may_step_down_and_the_second_is_then_the_last() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    app.users()
        .assign_role(bearer(assign(ids::BOB, roles::OWNER), &alice))
        .await
        .expect("alice makes bob an owner");
    app.users()
        .assign_role(bearer(assign(ids::ALICE, roles::ADMIN), &alice))
        .await
        .expect("alice steps down: bob remains");
    let bob = app.login_seeded("acme", "bob@acme.test").await;
    expect_reason(
        app.users()
            .assign_role(bearer(assign(ids::BOB, roles::ENGINEER), &bob))
            .await,
        Code::FailedPrecondition,
        "LAST_OWNER",
    );
}

#[tokio::test]
async fn removing_both_owners_at_once_leaves_one() {
    // Two concurrent requests, each taking away one of two owners: each
    // alone is fine, together they would leave nobody.
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    app.users()
        .assign_role(bearer(assign(ids::BOB, roles::OWNER), &alice))
        .await
        .expect("alice makes bob an owner");
    let (_, peer) = acme_user_with(&app, ALL_PERMISSIONS).await;
    let (mut demote, mut deactivate) = (app.users(), app.users());
    let (demoted, deactivated) = tokio::join!(
        demote.assign_role(bearer(assign(ids::ALICE, roles::VIEWER), &peer)),
        deactivate.deactivate_user(bearer(DeactivateUserRequest { id: id(ids::BOB) }, &peer)),
    );
    assert!(
        demoted.is_err() || deactivated.is_err(),
        "both owners were removed"
    );
    for status in [demoted.err(), deactivated.err()].into_iter().flatten() {
        // The loser either saw the other change (LAST_OWNER) or was chosen
        // by PostgreSQL's deadlock detection (ABORTED, retry).
        assert!(
            matches!(status.code(), Code::FailedPrecondition | Code::Aborted),
            "{status:?}"
        );
    }
    let pool = app.admin_pool().await;
    let owners: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM core.users WHERE tenant_id = $1 AND role_id = $2 AND is_active",
    )
    .bind(ids::ACME)
    .bind(roles::OWNER)
    .fetch_one(&pool)
    .await
    .expect("count owners");
    assert_eq!(owners, 1, "acme keeps exactly one owner");
}

#[tokio::test]
async fn the_operator_appoints_an_owner_and_the_audit_trail_says_so() {
    let app = TestApp::spawn().await;
    let bob = app.login_seeded("acme", "bob@acme.test").await;
    expect_code(
        app.tenants()
            .appoint_owner(bearer(
                AppointOwnerRequest {
                    tenant_id: id(ids::ACME),
                    user_id: id(ids::BOB),
                },
                &bob,
            ))
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.tenants()
            .appoint_owner(operator(AppointOwnerRequest {
                tenant_id: id(ids::ACME),
                user_id: id(ids::ERIN),
            }))
            .await,
        Code::NotFound,
    );
    let request_id = new_request_id("appoint");
    let appointed = app
        .tenants()
        .appoint_owner(operator_call(
            AppointOwnerRequest {
                tenant_id: id(ids::ACME),
                user_id: id(ids::BOB),
            },
            &request_id,
        ))
        .await
        .expect("the operator appoints bob")
        .into_inner();
    assert_eq!(appointed.role_code, "OWNER");
    let pool = app.admin_pool().await;
    let row = the_audit_row(&pool, &request_id).await;
    assert_audit(&row, "ROLE_ASSIGNED", None, "user", ids::BOB);
    assert_eq!(row.tenant_id, ids::ACME);
    assert_eq!(row.actor_name.as_deref(), Some("operator"));
    assert_eq!(row.old_json()["role"], "PRODUCT_LEAD");
    assert_eq!(row.new_json()["role"], "OWNER");

    // Bob, now an owner, manages the tenant after logging in again.
    let bob = app.login_seeded("acme", "bob@acme.test").await;
    app.tenants()
        .update_tenant(bearer(
            UpdateTenantRequest {
                tenant: Some(Tenant {
                    name: "Acme Renamed".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name"]),
            },
            &bob,
        ))
        .await
        .expect("the appointed owner manages the tenant");
}

// ---------------------------------------------------------------------------
// 4, 6, 9, 12: landed with the service kit

fn struct_of(fields: &[(&str, Kind)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    prost_types::Value {
                        kind: Some(v.clone()),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A Struct whose JSON is just over 16 KiB.
fn oversized_struct() -> prost_types::Struct {
    struct_of(&[("blob", Kind::StringValue("x".repeat(16 * 1024 + 1)))])
}

#[tokio::test]
async fn team_settings_and_tenant_custom_settings_over_16_kib_are_invalid() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    expect_invalid(
        app.teams()
            .create_team(bearer(
                CreateTeamRequest {
                    team: Some(Team {
                        name: "Big".into(),
                        slug: "big".into(),
                        settings: Some(oversized_struct()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        "team.settings",
    );
    expect_invalid(
        app.teams()
            .update_team(bearer(
                UpdateTeamRequest {
                    team: Some(Team {
                        id: id(teams::GROWTH),
                        settings: Some(oversized_struct()),
                        ..Default::default()
                    }),
                    update_mask: mask(&["settings"]),
                },
                &alice,
            ))
            .await,
        "team.settings",
    );
    expect_invalid(
        app.tenants()
            .update_tenant(bearer(
                UpdateTenantRequest {
                    tenant: Some(Tenant {
                        settings: Some(TenantSettings {
                            custom: Some(oversized_struct()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    update_mask: mask(&["settings.custom"]),
                },
                &alice,
            ))
            .await,
        "tenant.settings.custom",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn a_custom_role_cannot_take_a_system_role_code() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    for code in ["OWNER", "ADMIN", "VIEWER"] {
        expect_invalid(
            app.roles()
                .create_role(bearer(
                    CreateRoleRequest {
                        role: Some(role_message(code, &["user.read"])),
                        ..Default::default()
                    },
                    &alice,
                ))
                .await,
            "role.code",
        );
    }
}

#[tokio::test]
async fn twenty_thousand_unknown_permissions_give_a_small_capped_error() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let codes: Vec<String> = (0..20_000).map(|i| format!("bogus.{i}")).collect();
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    let status = expect_code(
        app.roles()
            .create_role(bearer(
                CreateRoleRequest {
                    role: Some(role_message("MANY", &codes)),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        Code::InvalidArgument,
    );
    let violations = status
        .get_details_bad_request()
        .expect("a BadRequest detail")
        .field_violations;
    assert!(violations.len() <= 51, "{} violations", violations.len());
    let last = violations.last().expect("violations");
    assert!(
        last.description.contains("19950") && last.description.contains("left out"),
        "the last violation says how many were left out: {last:?}"
    );
    let trailer = status.message().len() + status.details().len();
    assert!(trailer < 16 * 1024, "error trailer of {trailer} bytes");
}

#[tokio::test]
async fn updating_team_settings_audits_the_settings_that_changed_and_nothing_else() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let created = app
        .teams()
        .create_team(bearer(
            CreateTeamRequest {
                team: Some(Team {
                    name: "Audited".into(),
                    slug: "audited".into(),
                    settings: Some(struct_of(&[
                        ("cadence", Kind::StringValue("weekly".into())),
                        ("public", Kind::BoolValue(true)),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect("create team")
        .into_inner();
    let request_id = new_request_id("settings");
    app.teams()
        .update_team(call(
            UpdateTeamRequest {
                team: Some(Team {
                    id: created.id.clone(),
                    settings: Some(struct_of(&[
                        ("cadence", Kind::StringValue("daily".into())),
                        ("public", Kind::BoolValue(true)),
                    ])),
                    ..Default::default()
                }),
                update_mask: mask(&["settings"]),
            },
            &alice,
            &request_id,
        ))
        .await
        .expect("update settings");
    let pool = app.admin_pool().await;
    let row = the_audit_row(&pool, &request_id).await;
    let (old, new) = (row.old_json(), row.new_json());
    assert_eq!(
        old,
        json!({"settings": {"cadence": "weekly", "public": true}})
    );
    assert_eq!(
        new,
        json!({"settings": {"cadence": "daily", "public": true}})
    );
}

// ---------------------------------------------------------------------------
// 13. Control, bidirectional and look-alike characters

#[tokio::test]
async fn a_look_alike_of_an_existing_address_cannot_be_registered() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    // A Cyrillic "а" in the local part, then in the domain.
    for lookalike in ["\u{0430}lice@acme.test", "alice@\u{0430}cme.test"] {
        expect_invalid(
            app.users()
                .create_user(bearer(
                    create_user_request(lookalike, roles::VIEWER),
                    &alice,
                ))
                .await,
            "user.email",
        );
    }
    // Full-width letters normalise to the address that already exists.
    expect_code(
        app.users()
            .create_user(bearer(
                create_user_request(
                    "\u{FF41}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}@acme.test",
                    roles::VIEWER,
                ),
                &alice,
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
    let created = app
        .users()
        .create_user(bearer(
            create_user_request("\u{FF2E}\u{FF25}\u{FF37}@Acme.Test", roles::VIEWER),
            &alice,
        ))
        .await
        .expect("a new full-width address is stored normalised")
        .into_inner();
    assert_eq!(created.email, "new@acme.test");
}

#[tokio::test]
async fn login_normalises_the_email_like_registration() {
    let app = TestApp::spawn().await;
    app.login(
        "acme",
        "\u{FF21}\u{FF2C}\u{FF29}\u{FF23}\u{FF25}@ACME.TEST",
        PASSWORD,
    )
    .await;
}

#[tokio::test]
async fn names_with_control_or_bidirectional_characters_are_invalid() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    for (first_name, last_name) in [
        ("Eve\u{202E}nimda", "Ok"),
        ("Ok", "Bell\u{0007}"),
        ("Is\u{2066}olate", "Ok"),
        ("Ok", "Mark\u{200F}"),
    ] {
        let mut user = user_message("eve@acme.test", roles::VIEWER);
        user.first_name = first_name.into();
        user.last_name = last_name.into();
        let status = expect_code(
            app.users()
                .create_user(bearer(
                    CreateUserRequest {
                        user: Some(user),
                        password: NEW_PASSWORD.into(),
                        ..Default::default()
                    },
                    &alice,
                ))
                .await,
            Code::InvalidArgument,
        );
        let fields = violation_fields(&status);
        assert!(
            fields
                .iter()
                .any(|f| f == "user.first_name" || f == "user.last_name"),
            "{fields:?}"
        );
    }
    expect_invalid(
        app.teams()
            .create_team(bearer(
                CreateTeamRequest {
                    team: Some(Team {
                        name: "Team\u{202D}".into(),
                        slug: "bidi".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        "team.name",
    );
    expect_invalid(
        app.tenants()
            .update_tenant(bearer(
                UpdateTenantRequest {
                    tenant: Some(Tenant {
                        name: "Acme\nCorp".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                },
                &alice,
            ))
            .await,
        "tenant.name",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

// ---------------------------------------------------------------------------
// Configuration of the service credential

#[tokio::test]
async fn planning_as_its_own_process_needs_a_proper_service_credential() {
    let db = TestDb::empty().await;
    let public = KeyPair::generate().expect("key pair").public_key().to_pem();
    for (token, why) in [(None, "unset"), (Some("short-secret"), "too short")] {
        let mut command = crate::common::process::codeops(["serve", "planning"]);
        command
            .env("DATABASE_URL", &db.url)
            .env("CODEOPS_HOST", "127.0.0.1")
            .env("CODEOPS_PLANNING_PORT", free_port().to_string())
            .env("CODEOPS_JWT_PUBLIC_KEY", &public)
            .env("CODEOPS_IDENTITY_URL", "http://127.0.0.1:1");
        if let Some(token) = token {
            command.env("CODEOPS_SERVICE_TOKEN", token);
        }
        let output = crate::common::process::output(command, Duration::from_secs(60)).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            !output.status.success(),
            "started with a service token {why}"
        );
        assert_eq!(lines.len(), 1, "{why}: {lines:#?}");
        assert!(
            lines[0].contains("CODEOPS_SERVICE_TOKEN"),
            "{why}: {}",
            lines[0]
        );
    }
}
