//! AuditService: the tenant's trail, newest first, with filters, keyset
//! pages and its permission; and what the trail must never hold.

use std::collections::BTreeSet;

use codeops_proto::identity::{
    AddTeamMemberRequest, AuditAction, AuditLog, ChangePasswordRequest, CreateTeamRequest,
    CreateUserRequest, ListAuditLogsRequest, LogoutRequest, RefreshRequest, Team, TeamRole,
    UpdateTeamRequest,
};
use prost_types::Timestamp;
use uuid::Uuid;

use crate::common::{PASSWORD, TestApp, bearer, ids};
use crate::identity::support::*;

async fn list(app: &TestApp, token: &str, request: ListAuditLogsRequest) -> Vec<AuditLog> {
    app.audit_logs()
        .list_audit_logs(bearer(request, token))
        .await
        .expect("list audit logs")
        .into_inner()
        .audit_logs
}

/// Alice creates a team, renames it and adds Dan: three audit rows (after
/// her LOGIN). Returns alice's token, the team id and the request ids.
async fn some_history(app: &TestApp) -> (String, Uuid, Vec<String>) {
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let rids: Vec<String> = ["create", "rename", "add"]
        .iter()
        .map(|t| new_request_id(t))
        .collect();
    let team = app
        .teams()
        .create_team(call(
            CreateTeamRequest {
                team: Some(Team {
                    name: "Audit".into(),
                    slug: "audit".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &alice,
            &rids[0],
        ))
        .await
        .expect("create team")
        .into_inner();
    app.teams()
        .update_team(call(
            UpdateTeamRequest {
                team: Some(Team {
                    id: team.id.clone(),
                    name: "Audit & Compliance".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name"]),
            },
            &alice,
            &rids[1],
        ))
        .await
        .expect("rename team");
    app.teams()
        .add_team_member(call(
            AddTeamMemberRequest {
                team_id: team.id.clone(),
                user_id: id(ids::DAN),
                team_role: TeamRole::Member as i32,
            },
            &alice,
            &rids[2],
        ))
        .await
        .expect("add member");
    (alice, Uuid::parse_str(&team.id).expect("team id"), rids)
}

fn time_of(log: &AuditLog) -> (i64, i32) {
    let t = log.create_time.as_ref().expect("create_time");
    (t.seconds, t.nanos)
}

#[tokio::test]
async fn list_audit_logs_returns_the_trail_newest_first() {
    let app = TestApp::spawn().await;
    let (alice, team, rids) = some_history(&app).await;
    let logs = list(&app, &alice, ListAuditLogsRequest::default()).await;
    let newest: Vec<&str> = logs.iter().take(3).map(|l| l.request_id.as_str()).collect();
    assert_eq!(
        newest,
        [rids[2].as_str(), rids[1].as_str(), rids[0].as_str()]
    );
    assert_eq!(logs[0].action, AuditAction::TeamMemberAdded as i32);
    assert_eq!(logs[1].action, AuditAction::Update as i32);
    assert_eq!(logs[2].action, AuditAction::Create as i32);
    assert_eq!(logs[3].action, AuditAction::Login as i32);
    for pair in logs.windows(2) {
        assert!(
            time_of(&pair[0]) >= time_of(&pair[1]),
            "not newest first: {pair:#?}"
        );
    }
    let update = &logs[1];
    assert_eq!(update.entity_type, "team");
    assert_eq!(update.entity_id, team.to_string());
    assert_eq!(update.actor_id, id(ids::ALICE));
    assert_eq!(update.actor_email, "alice@acme.test");
    assert_eq!(update.ip_address, "127.0.0.1");
    assert!(!update.user_agent.is_empty());
    let old = update.old_values.as_ref().expect("old values");
    let new = update.new_values.as_ref().expect("new values");
    assert_eq!(
        old.fields["name"].kind,
        Some(prost_types::value::Kind::StringValue("Audit".into()))
    );
    assert_eq!(
        new.fields["name"].kind,
        Some(prost_types::value::Kind::StringValue(
            "Audit & Compliance".into()
        ))
    );
}

#[tokio::test]
async fn list_audit_logs_filters_by_action() {
    let app = TestApp::spawn().await;
    let (alice, _, rids) = some_history(&app).await;
    let logs = list(
        &app,
        &alice,
        ListAuditLogsRequest {
            action: AuditAction::TeamMemberAdded as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].request_id, rids[2]);
}

#[tokio::test]
async fn list_audit_logs_filters_by_entity() {
    let app = TestApp::spawn().await;
    let (alice, team, rids) = some_history(&app).await;
    let logs = list(
        &app,
        &alice,
        ListAuditLogsRequest {
            entity_type: "team".into(),
            entity_id: team.to_string(),
            ..Default::default()
        },
    )
    .await;
    let got: Vec<&str> = logs.iter().map(|l| l.request_id.as_str()).collect();
    assert_eq!(got, [rids[2].as_str(), rids[1].as_str(), rids[0].as_str()]);
    let users = list(
        &app,
        &alice,
        ListAuditLogsRequest {
            entity_type: "user".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(!users.is_empty());
    assert!(users.iter().all(|l| l.entity_type == "user"));
}

#[tokio::test]
async fn list_audit_logs_filters_by_actor() {
    let app = TestApp::spawn().await;
    let (alice, _, _) = some_history(&app).await;
    app.login_seeded("acme", "bob@acme.test").await;
    let bobs = list(
        &app,
        &alice,
        ListAuditLogsRequest {
            actor_id: id(ids::BOB),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].action, AuditAction::Login as i32);
    let alices = list(
        &app,
        &alice,
        ListAuditLogsRequest {
            actor_id: id(ids::ALICE),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(alices.len(), 4);
    assert!(alices.iter().all(|l| l.actor_id == id(ids::ALICE)));
}

#[tokio::test]
async fn list_audit_logs_filters_by_time_range() {
    let app = TestApp::spawn().await;
    let (alice, _, rids) = some_history(&app).await;
    let all = list(&app, &alice, ListAuditLogsRequest::default()).await;
    let rename = all
        .iter()
        .find(|l| l.request_id == rids[1])
        .expect("rename row");
    let add = all
        .iter()
        .find(|l| l.request_id == rids[2])
        .expect("add row");
    // [rename, add): the rename only.
    let logs = list(
        &app,
        &alice,
        ListAuditLogsRequest {
            start_time: rename.create_time,
            end_time: add.create_time,
            ..Default::default()
        },
    )
    .await;
    let got: Vec<&str> = logs.iter().map(|l| l.request_id.as_str()).collect();
    assert_eq!(got, [rids[1].as_str()]);
    // From the rename on: rename and add.
    let logs = list(
        &app,
        &alice,
        ListAuditLogsRequest {
            start_time: rename.create_time,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(logs.len(), 2);
}

#[tokio::test]
async fn list_audit_logs_pages_newest_first_with_page_tokens() {
    let app = TestApp::spawn().await;
    let (alice, _, _) = some_history(&app).await;
    for _ in 0..2 {
        app.login_seeded("acme", "carol@acme.test").await;
    }
    let everything = list(&app, &alice, ListAuditLogsRequest::default()).await;
    assert_eq!(everything.len(), 6);
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let page = app
            .audit_logs()
            .list_audit_logs(bearer(
                ListAuditLogsRequest {
                    page_size: 4,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &alice,
            ))
            .await
            .expect("page")
            .into_inner();
        sizes.push(page.audit_logs.len());
        paged.extend(page.audit_logs.into_iter().map(|l| l.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(sizes.len() < 10);
    }
    assert_eq!(sizes, [4, 2]);
    let expected: Vec<String> = everything.into_iter().map(|l| l.id).collect();
    assert_eq!(paged, expected);
}

#[tokio::test]
async fn list_audit_logs_rejects_bad_filters() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(&str, ListAuditLogsRequest)> = vec![
        (
            "entity_id",
            ListAuditLogsRequest {
                entity_id: "team".into(),
                ..Default::default()
            },
        ),
        (
            "actor_id",
            ListAuditLogsRequest {
                actor_id: "alice".into(),
                ..Default::default()
            },
        ),
        (
            "action",
            ListAuditLogsRequest {
                action: 99,
                ..Default::default()
            },
        ),
        (
            "entity_type",
            ListAuditLogsRequest {
                entity_type: "t".repeat(256),
                ..Default::default()
            },
        ),
        (
            "end_time",
            ListAuditLogsRequest {
                start_time: Some(Timestamp {
                    seconds: now,
                    nanos: 0,
                }),
                end_time: Some(Timestamp {
                    seconds: now - 60,
                    nanos: 0,
                }),
                ..Default::default()
            },
        ),
        (
            "start_time",
            ListAuditLogsRequest {
                start_time: Some(Timestamp {
                    seconds: now,
                    nanos: -1,
                }),
                ..Default::default()
            },
        ),
        (
            "page_token",
            ListAuditLogsRequest {
                page_token: "%%%".into(),
                ..Default::default()
            },
        ),
        (
            "page_size",
            ListAuditLogsRequest {
                page_size: -5,
                ..Default::default()
            },
        ),
    ];
    for (field, request) in cases {
        expect_invalid(
            app.audit_logs()
                .list_audit_logs(bearer(request, &alice))
                .await,
            field,
        );
    }
}

#[tokio::test]
async fn list_audit_logs_includes_rows_written_by_other_services() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let decision = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO core.audit_logs (id, tenant_id, actor_id, action, entity_type, entity_id, request_id, timestamp) \
         VALUES ($1, $2, $3, 'DECISION_RESOLVED', 'decision', $4, 'from-decision', now())",
    )
    .bind(Uuid::new_v4())
    .bind(ids::ACME)
    .bind(ids::BOB)
    .bind(decision)
    .execute(&pool)
    .await
    .expect("a decision service row");
    let logs = list(
        &app,
        &alice,
        ListAuditLogsRequest {
            entity_type: "decision".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].action, AuditAction::DecisionResolved as i32);
    assert_eq!(logs[0].entity_id, decision.to_string());
}

#[tokio::test]
async fn no_audit_row_holds_a_secret_after_a_full_session() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (access, refresh) = login_pair(&app, "acme", "alice@acme.test").await;
    let rotated = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: refresh.clone(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .tokens
        .expect("tokens");
    app.users()
        .create_user(bearer(
            CreateUserRequest {
                user: Some(user_message("secret-keeper@acme.test", roles::VIEWER)),
                password: NEW_PASSWORD.into(),
                ..Default::default()
            },
            &rotated.access_token,
        ))
        .await
        .expect("create user");
    app.auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "another-long-secret-7".into(),
            },
            &access,
        ))
        .await
        .expect("change password");
    let (access2, refresh2) = {
        let r = app
            .login_response("acme", "alice@acme.test", "another-long-secret-7")
            .await
            .expect("login")
            .tokens
            .expect("tokens");
        (r.access_token, r.refresh_token)
    };
    app.auth()
        .logout(bearer(
            LogoutRequest {
                refresh_token: refresh2.clone(),
            },
            &access2,
        ))
        .await
        .expect("logout");
    let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM core.users")
        .fetch_all(&pool)
        .await
        .expect("hashes");
    let token_hashes: Vec<String> =
        sqlx::query_scalar("SELECT token_hash FROM core.refresh_tokens")
            .fetch_all(&pool)
            .await
            .expect("token hashes");
    let mut secrets: Vec<&str> = vec![
        PASSWORD,
        NEW_PASSWORD,
        "another-long-secret-7",
        &refresh,
        &rotated.refresh_token,
        &refresh2,
        &access,
        &access2,
    ];
    secrets.extend(hashes.iter().map(String::as_str));
    secrets.extend(token_hashes.iter().map(String::as_str));
    assert_audit_has_no_secrets(&pool, &secrets).await;
    let actions: BTreeSet<String> = sqlx::query_scalar("SELECT action FROM core.audit_logs")
        .fetch_all(&pool)
        .await
        .expect("actions")
        .into_iter()
        .collect();
    for action in ["LOGIN", "USER_CREATED", "PASSWORD_CHANGED", "LOGOUT"] {
        assert!(
            actions.contains(action),
            "{action} is missing from {actions:?}"
        );
    }
}
