//! Findings of the security review, each pinned by a test: identity's writes
//! re-check the caller, system roles are out of reach even in SQL, an empty
//! operator credential opens nothing, concurrent guesses are throttled, and
//! refresh rotation is audited.

use codeops::suite::Service;
use codeops_proto::identity::{
    AssignRoleRequest, CreateTeamRequest, DeactivateUserRequest, ListRolesRequest, RefreshRequest,
    Team,
};
use tonic::Code;
use uuid::Uuid;

use codeops_platform::ServiceRole;

use crate::common::{PASSWORD, TestApp, bearer, ids, tenant_tx};
use crate::identity::support::*;

const ADMIN_ROLE: &str = "00000000-0000-4000-8002-000000000002";
const VIEWER_ROLE: &str = "00000000-0000-4000-8002-000000000005";
const STAKEHOLDER_ROLE: &str = "00000000-0000-4000-8002-000000000006";

/// An ADMIN created by alice, logged in: (user id, alice's token, admin's token).
async fn admin(app: &TestApp) -> (String, String, String) {
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let email = format!("admin-{}@acme.test", Uuid::new_v4().simple());
    let user = create_user(
        app.channel(Service::Identity),
        &alice,
        &email,
        Uuid::parse_str(ADMIN_ROLE).expect("uuid"),
    )
    .await;
    let token = app.login("acme", &email, NEW_PASSWORD).await;
    (user.id, alice, token)
}

#[tokio::test]
async fn a_deactivated_admins_token_can_no_longer_create_users() {
    let app = TestApp::spawn().await;
    let (admin_id, alice, admin_token) = admin(&app).await;
    app.users()
        .deactivate_user(bearer(DeactivateUserRequest { id: admin_id }, &alice))
        .await
        .expect("deactivate");
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    let result = app
        .users()
        .create_user(bearer(
            codeops_proto::identity::CreateUserRequest {
                user: Some(user_message(
                    "backdoor@acme.test",
                    Uuid::parse_str(ADMIN_ROLE).unwrap(),
                )),
                password: NEW_PASSWORD.into(),
                ..Default::default()
            },
            &admin_token,
        ))
        .await;
    expect_code(result, Code::Unauthenticated);
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn a_demoted_admins_token_cannot_promote_itself_back() {
    let app = TestApp::spawn().await;
    let (admin_id, alice, admin_token) = admin(&app).await;
    app.users()
        .assign_role(bearer(
            AssignRoleRequest {
                user_id: admin_id.clone(),
                role_id: VIEWER_ROLE.into(),
            },
            &alice,
        ))
        .await
        .expect("demote to viewer");
    let result = app
        .users()
        .assign_role(bearer(
            AssignRoleRequest {
                user_id: admin_id,
                role_id: ADMIN_ROLE.into(),
            },
            &admin_token,
        ))
        .await;
    expect_code(result, Code::Unauthenticated);
}

#[tokio::test]
async fn reads_with_a_demoted_token_still_work_until_it_expires() {
    // The documented bound: reads trust the token for its lifetime.
    let app = TestApp::spawn().await;
    let (admin_id, alice, admin_token) = admin(&app).await;
    app.users()
        .assign_role(bearer(
            AssignRoleRequest {
                user_id: admin_id,
                role_id: VIEWER_ROLE.into(),
            },
            &alice,
        ))
        .await
        .expect("demote to viewer");
    app.roles()
        .list_roles(bearer(ListRolesRequest::default(), &admin_token))
        .await
        .expect("reads still allowed");
    let result = app
        .teams()
        .create_team(bearer(
            CreateTeamRequest {
                team: Some(Team {
                    name: "Shadow".into(),
                    slug: "shadow".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &admin_token,
        ))
        .await;
    expect_code(result, Code::Unauthenticated);
}

#[tokio::test]
async fn the_app_role_cannot_change_or_delete_system_roles_in_sql() {
    let app = TestApp::spawn().await;
    let pool = app.db.role_pool(ServiceRole::Identity).await;
    let mut tx = tenant_tx(&pool, ids::GLOBEX).await;
    let deleted_grants = sqlx::query("DELETE FROM core.role_permissions WHERE role_id = $1::uuid")
        .bind(VIEWER_ROLE)
        .execute(&mut *tx)
        .await
        .expect("delete runs")
        .rows_affected();
    let deleted_roles = sqlx::query("DELETE FROM core.roles WHERE id = $1::uuid")
        .bind(STAKEHOLDER_ROLE)
        .execute(&mut *tx)
        .await
        .expect("delete runs")
        .rows_affected();
    let renamed = sqlx::query("UPDATE core.roles SET name = 'pwned' WHERE tenant_id IS NULL")
        .execute(&mut *tx)
        .await
        .expect("update runs")
        .rows_affected();
    let visible: i64 =
        sqlx::query_scalar("SELECT count(*) FROM core.roles WHERE tenant_id IS NULL")
            .fetch_one(&mut *tx)
            .await
            .expect("system roles readable");
    tx.rollback().await.expect("rollback");
    assert_eq!((deleted_grants, deleted_roles, renamed), (0, 0, 0));
    assert_eq!(visible, 6, "system roles stay readable");
}

#[tokio::test]
async fn concurrent_wrong_passwords_are_throttled_after_five() {
    let app = TestApp::spawn().await;
    let attempts = (0..20).map(|_| {
        let channel = app.channel(Service::Identity);
        async move { login(channel, "acme", "dan@acme.test", "wrong-password").await }
    });
    let results = futures_join_all(attempts).await;
    let unauthenticated = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
        .count();
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert_eq!(unauthenticated, 5, "only five guesses may be checked");
    assert_eq!(exhausted, 15);
}

/// Runs futures concurrently on the test runtime.
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn refresh_rotation_and_reuse_are_audited() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (_, refresh) = login_pair(&app, "acme", "carol@acme.test").await;
    let rotated = new_request_id("rotate");
    app.auth()
        .refresh(anonymous(
            RefreshRequest {
                refresh_token: refresh.clone(),
            },
            &rotated,
        ))
        .await
        .expect("rotation");
    let row = the_audit_row(&pool, &rotated).await;
    assert_eq!(
        (row.action.as_str(), row.entity_type.as_str()),
        ("UPDATE", "session")
    );
    assert_eq!(row.actor_id, Some(ids::CAROL));

    let reused = new_request_id("reuse");
    let result = app
        .auth()
        .refresh(anonymous(
            RefreshRequest {
                refresh_token: refresh.clone(),
            },
            &reused,
        ))
        .await;
    expect_code(result, Code::Unauthenticated);
    let row = the_audit_row(&pool, &reused).await;
    assert_eq!(
        (row.action.as_str(), row.entity_type.as_str()),
        ("LOGOUT", "session")
    );
    assert_audit_has_no_secrets(&pool, &[&refresh, PASSWORD]).await;
}
