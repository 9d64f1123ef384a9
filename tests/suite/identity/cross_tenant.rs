//! Tenant isolation through the identity API: Erin (globex OWNER, every
//! permission) tries each identity RPC that takes an id with acme's ids and
//! learns nothing; list RPCs never return acme rows.

use std::collections::BTreeSet;

use codeops::suite::Service;
use codeops_proto::identity::{
    AddTeamMemberRequest, AssignRoleRequest, CreateTeamRequest, CreateUserRequest,
    DeactivateUserRequest, DeleteRoleRequest, DeleteTeamRequest, GetRoleRequest, GetTeamRequest,
    GetUserRequest, ListAuditLogsRequest, ListRolesRequest, ListTeamMembersRequest,
    ListTeamsRequest, ListUsersRequest, LogoutRequest, RefreshRequest, RemoveTeamMemberRequest,
    Role, SetRolePermissionsRequest, Team, TeamRole, Tenant, UpdateRoleRequest, UpdateTeamRequest,
    UpdateTenantRequest, UpdateUserRequest, User,
};
use sqlx::PgPool;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::common::{PASSWORD, TestApp, bearer, ids, random_id};
use crate::identity::support::*;

/// Digest of acme's rows in every identity table (the superuser sees all).
async fn acme_state(pool: &PgPool) -> Vec<String> {
    let mut out = Vec::new();
    for (table, filter) in [
        ("tenants", "id = $1"),
        ("users", "tenant_id = $1"),
        ("roles", "tenant_id = $1"),
        (
            "role_permissions",
            "role_id IN (SELECT id FROM core.roles WHERE tenant_id = $1)",
        ),
        ("teams", "tenant_id = $1"),
        ("team_members", "tenant_id = $1"),
        ("refresh_tokens", "tenant_id = $1"),
        ("audit_logs", "tenant_id = $1"),
    ] {
        let digest: String = sqlx::query_scalar(&format!(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM core.{table} t WHERE {filter}"
        ))
        .bind(ids::ACME)
        .fetch_one(pool)
        .await
        .expect("acme digest");
        out.push(format!("{table}:{digest}"));
    }
    out
}

/// NOT_FOUND or INVALID_ARGUMENT, never success or PERMISSION_DENIED.
#[track_caller]
fn expect_nothing<T: std::fmt::Debug>(result: Result<T, Status>, what: &str) -> Status {
    match result {
        Ok(value) => panic!("{what}: another tenant's id was accepted: {value:?}"),
        Err(status) => {
            assert!(
                matches!(status.code(), Code::NotFound | Code::InvalidArgument),
                "{what}: expected NOT_FOUND or INVALID_ARGUMENT, got {:?}: {}",
                status.code(),
                status.message()
            );
            assert_no_sql(&status);
            assert!(
                !status.message().to_lowercase().contains("acme"),
                "{what}: the message names the other tenant: {}",
                status.message()
            );
            status
        }
    }
}

struct Setup {
    app: TestApp,
    pool: PgPool,
    erin: String,
    acme_role: Uuid,
}

/// Alice logs in (so acme has sessions and audit rows) and creates a custom
/// role; Erin logs in.
async fn setup() -> Setup {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let role = create_role(
        app.channel(Service::Identity),
        &alice,
        "ACME_ONLY",
        &["user.read"],
    )
    .await;
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    Setup {
        app,
        pool,
        erin,
        acme_role: Uuid::parse_str(&role.id).expect("role id"),
    }
}

#[tokio::test]
async fn another_tenants_users_are_not_found() {
    let Setup {
        app, pool, erin, ..
    } = setup().await;
    let before = acme_state(&pool).await;
    let users = app.users();
    expect_code(
        users
            .clone()
            .get_user(bearer(GetUserRequest { id: id(ids::ALICE) }, &erin))
            .await,
        Code::NotFound,
    );
    expect_code(
        users
            .clone()
            .update_user(bearer(
                UpdateUserRequest {
                    user: Some(User {
                        id: id(ids::ALICE),
                        title: "Pwned".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["title"]),
                },
                &erin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        users
            .clone()
            .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::BOB) }, &erin))
            .await,
        Code::NotFound,
    );
    expect_code(
        users
            .clone()
            .assign_role(bearer(
                AssignRoleRequest {
                    user_id: id(ids::CAROL),
                    role_id: id(roles::VIEWER),
                },
                &erin,
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(before, acme_state(&pool).await, "acme changed");
}

#[tokio::test]
async fn another_tenants_teams_and_memberships_are_not_found() {
    let Setup {
        app, pool, erin, ..
    } = setup().await;
    let before = acme_state(&pool).await;
    let team_client = app.teams();
    expect_code(
        team_client
            .clone()
            .get_team(bearer(
                GetTeamRequest {
                    id: id(teams::GROWTH),
                },
                &erin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        team_client
            .clone()
            .update_team(bearer(
                UpdateTeamRequest {
                    team: Some(Team {
                        id: id(teams::GROWTH),
                        name: "Pwned".into(),
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
        team_client
            .clone()
            .delete_team(bearer(
                DeleteTeamRequest {
                    id: id(teams::PLATFORM),
                },
                &erin,
            ))
            .await,
        Code::NotFound,
    );
    // Erin's user into acme's team, and acme's user into Erin's team.
    for (team, user) in [
        (teams::GROWTH, ids::FRANK),
        (teams::OPERATIONS, ids::ALICE),
        (teams::GROWTH, ids::ALICE),
    ] {
        expect_nothing(
            team_client
                .clone()
                .add_team_member(bearer(
                    AddTeamMemberRequest {
                        team_id: id(team),
                        user_id: id(user),
                        team_role: TeamRole::Member as i32,
                    },
                    &erin,
                ))
                .await,
            "AddTeamMember",
        );
    }
    expect_code(
        team_client
            .clone()
            .remove_team_member(bearer(
                RemoveTeamMemberRequest {
                    team_id: id(teams::GROWTH),
                    user_id: id(ids::BOB),
                },
                &erin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        team_client
            .clone()
            .list_team_members(bearer(
                ListTeamMembersRequest {
                    team_id: id(teams::GROWTH),
                    ..Default::default()
                },
                &erin,
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(before, acme_state(&pool).await, "acme changed");
}

#[tokio::test]
async fn another_tenants_custom_roles_are_not_found_or_refused() {
    let Setup {
        app,
        pool,
        erin,
        acme_role,
    } = setup().await;
    let before = acme_state(&pool).await;
    let roles_client = app.roles();
    expect_code(
        roles_client
            .clone()
            .get_role(bearer(GetRoleRequest { id: id(acme_role) }, &erin))
            .await,
        Code::NotFound,
    );
    expect_code(
        roles_client
            .clone()
            .update_role(bearer(
                UpdateRoleRequest {
                    role: Some(Role {
                        id: id(acme_role),
                        name: "Pwned".into(),
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
        roles_client
            .clone()
            .set_role_permissions(bearer(
                SetRolePermissionsRequest {
                    role_id: id(acme_role),
                    permission_codes: vec!["audit.read".into()],
                },
                &erin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        roles_client
            .clone()
            .delete_role(bearer(DeleteRoleRequest { id: id(acme_role) }, &erin))
            .await,
        Code::NotFound,
    );
    // Granting acme's role to a globex user, or creating one with it.
    expect_nothing(
        app.users()
            .assign_role(bearer(
                AssignRoleRequest {
                    user_id: id(ids::FRANK),
                    role_id: id(acme_role),
                },
                &erin,
            ))
            .await,
        "AssignRole",
    );
    expect_nothing(
        app.users()
            .create_user(bearer(
                CreateUserRequest {
                    user: Some(user_message("spy@globex.test", acme_role)),
                    password: NEW_PASSWORD.into(),
                    ..Default::default()
                },
                &erin,
            ))
            .await,
        "CreateUser",
    );
    assert_eq!(before, acme_state(&pool).await, "acme changed");
    let frank_role: Uuid = sqlx::query_scalar("SELECT role_id FROM core.users WHERE id = $1")
        .bind(ids::FRANK)
        .fetch_one(&pool)
        .await
        .expect("frank");
    assert_eq!(frank_role, roles::ENGINEER);
}

#[tokio::test]
async fn a_manager_or_lead_from_another_tenant_is_rejected() {
    let Setup {
        app, pool, erin, ..
    } = setup().await;
    let before = acme_state(&pool).await;
    let before_globex = snapshot(&pool).await;
    let status = expect_nothing(
        app.users()
            .create_user(bearer(
                CreateUserRequest {
                    user: Some(User {
                        manager_id: id(ids::ALICE),
                        ..user_message("report@globex.test", roles::VIEWER)
                    }),
                    password: NEW_PASSWORD.into(),
                    ..Default::default()
                },
                &erin,
            ))
            .await,
        "CreateUser with an acme manager",
    );
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(violation_fields(&status).contains(&"user.manager_id".to_owned()));
    let status = expect_nothing(
        app.users()
            .update_user(bearer(
                UpdateUserRequest {
                    user: Some(User {
                        id: id(ids::FRANK),
                        manager_id: id(ids::ALICE),
                        ..Default::default()
                    }),
                    update_mask: mask(&["manager_id"]),
                },
                &erin,
            ))
            .await,
        "UpdateUser with an acme manager",
    );
    assert!(violation_fields(&status).contains(&"user.manager_id".to_owned()));
    expect_nothing(
        app.teams()
            .create_team(bearer(
                CreateTeamRequest {
                    team: Some(Team {
                        name: "Spies".into(),
                        slug: "spies".into(),
                        lead_id: id(ids::ALICE),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &erin,
            ))
            .await,
        "CreateTeam with an acme lead",
    );
    expect_nothing(
        app.teams()
            .update_team(bearer(
                UpdateTeamRequest {
                    team: Some(Team {
                        id: id(teams::OPERATIONS),
                        lead_id: id(ids::BOB),
                        ..Default::default()
                    }),
                    update_mask: mask(&["lead_id"]),
                },
                &erin,
            ))
            .await,
        "UpdateTeam with an acme lead",
    );
    assert_eq!(before, acme_state(&pool).await, "acme changed");
    assert_unchanged(&before_globex, &snapshot(&pool).await);
}

#[tokio::test]
async fn update_tenant_with_another_tenants_id_is_not_found() {
    let Setup {
        app, pool, erin, ..
    } = setup().await;
    let before = snapshot(&pool).await;
    expect_code(
        app.tenants()
            .update_tenant(bearer(
                UpdateTenantRequest {
                    tenant: Some(Tenant {
                        id: id(ids::ACME),
                        name: "Pwned".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                },
                &erin,
            ))
            .await,
        Code::NotFound,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

fn message<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String) {
    let status = result.expect_err("refused");
    (status.code(), status.message().to_owned())
}

#[tokio::test]
async fn another_tenants_ids_look_exactly_like_unknown_ids() {
    let Setup {
        app,
        erin,
        acme_role,
        ..
    } = setup().await;
    let users = app.users();
    assert_eq!(
        message(
            users
                .clone()
                .get_user(bearer(GetUserRequest { id: id(ids::ALICE) }, &erin))
                .await
        ),
        message(
            users
                .clone()
                .get_user(bearer(
                    GetUserRequest {
                        id: id(random_id())
                    },
                    &erin
                ))
                .await
        ),
    );
    let team_client = app.teams();
    assert_eq!(
        message(
            team_client
                .clone()
                .get_team(bearer(
                    GetTeamRequest {
                        id: id(teams::GROWTH)
                    },
                    &erin
                ))
                .await
        ),
        message(
            team_client
                .clone()
                .get_team(bearer(
                    GetTeamRequest {
                        id: id(random_id())
                    },
                    &erin
                ))
                .await
        ),
    );
    let roles_client = app.roles();
    assert_eq!(
        message(
            roles_client
                .clone()
                .get_role(bearer(GetRoleRequest { id: id(acme_role) }, &erin))
                .await
        ),
        message(
            roles_client
                .clone()
                .get_role(bearer(
                    GetRoleRequest {
                        id: id(random_id())
                    },
                    &erin
                ))
                .await
        ),
    );
}

#[tokio::test]
async fn list_rpcs_never_return_another_tenants_rows() {
    let Setup {
        app,
        pool,
        erin,
        acme_role,
    } = setup().await;
    let acme_user_ids: BTreeSet<String> =
        sqlx::query_scalar("SELECT id::text FROM core.users WHERE tenant_id = $1")
            .bind(ids::ACME)
            .fetch_all(&pool)
            .await
            .expect("acme users")
            .into_iter()
            .collect();

    let users = app
        .users()
        .list_users(bearer(
            ListUsersRequest {
                page_size: 100,
                ..Default::default()
            },
            &erin,
        ))
        .await
        .expect("list users")
        .into_inner()
        .users;
    let emails: BTreeSet<String> = users.iter().map(|u| u.email.clone()).collect();
    assert_eq!(
        emails,
        ["erin@globex.test", "frank@globex.test"]
            .map(String::from)
            .into()
    );
    assert!(users.iter().all(|u| !acme_user_ids.contains(&u.id)));
    for request in [
        ListUsersRequest {
            team_id: id(teams::GROWTH),
            ..Default::default()
        },
        ListUsersRequest {
            role_id: id(acme_role),
            ..Default::default()
        },
        ListUsersRequest {
            query: "acme".into(),
            ..Default::default()
        },
    ] {
        let found = app
            .users()
            .list_users(bearer(request, &erin))
            .await
            .expect("filtered list")
            .into_inner()
            .users;
        assert!(
            found.is_empty(),
            "acme users leak through a filter: {found:?}"
        );
    }

    let listed_teams = app
        .teams()
        .list_teams(bearer(
            ListTeamsRequest {
                include_archived: true,
                page_size: 100,
                ..Default::default()
            },
            &erin,
        ))
        .await
        .expect("list teams")
        .into_inner()
        .teams;
    assert_eq!(
        listed_teams
            .iter()
            .map(|t| t.id.clone())
            .collect::<Vec<_>>(),
        [id(teams::OPERATIONS)]
    );

    let members = app
        .teams()
        .list_team_members(bearer(
            ListTeamMembersRequest {
                team_id: id(teams::OPERATIONS),
                ..Default::default()
            },
            &erin,
        ))
        .await
        .expect("list members")
        .into_inner()
        .members;
    assert!(members.iter().all(|m| !acme_user_ids.contains(&m.user_id)));

    let roles_listed = app
        .roles()
        .list_roles(bearer(
            ListRolesRequest {
                page_size: 100,
                ..Default::default()
            },
            &erin,
        ))
        .await
        .expect("list roles")
        .into_inner()
        .roles;
    assert!(
        roles_listed
            .iter()
            .all(|r| r.id != id(acme_role) && r.code != "ACME_ONLY")
    );
    assert_eq!(roles_listed.len(), 6, "globex sees the system roles only");

    let acme_audit: i64 =
        sqlx::query_scalar("SELECT count(*) FROM core.audit_logs WHERE tenant_id = $1")
            .bind(ids::ACME)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert!(acme_audit >= 2, "acme has audit rows to leak");
    let globex_ids: BTreeSet<String> =
        sqlx::query_scalar("SELECT id::text FROM core.audit_logs WHERE tenant_id = $1")
            .bind(ids::GLOBEX)
            .fetch_all(&pool)
            .await
            .expect("globex audit ids")
            .into_iter()
            .collect();
    let logs = app
        .audit_logs()
        .list_audit_logs(bearer(
            ListAuditLogsRequest {
                page_size: 100,
                ..Default::default()
            },
            &erin,
        ))
        .await
        .expect("list audit logs")
        .into_inner()
        .audit_logs;
    let listed: BTreeSet<String> = logs.iter().map(|l| l.id.clone()).collect();
    assert_eq!(listed, globex_ids);
    for request in [
        ListAuditLogsRequest {
            entity_id: id(ids::ALICE),
            ..Default::default()
        },
        ListAuditLogsRequest {
            actor_id: id(ids::ALICE),
            ..Default::default()
        },
        ListAuditLogsRequest {
            entity_id: id(acme_role),
            ..Default::default()
        },
    ] {
        let found = app
            .audit_logs()
            .list_audit_logs(bearer(request, &erin))
            .await
            .expect("filtered audit list")
            .into_inner()
            .audit_logs;
        assert!(
            found.is_empty(),
            "acme audit rows leak through a filter: {found:?}"
        );
    }
}

#[tokio::test]
async fn logout_with_another_tenants_refresh_token_revokes_nothing() {
    let app = TestApp::spawn().await;
    let (_, alices_refresh) = login_pair(&app, "acme", "alice@acme.test").await;
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    let response = app
        .auth()
        .logout(bearer(
            LogoutRequest {
                refresh_token: alices_refresh.clone(),
            },
            &erin,
        ))
        .await
        .expect("logout")
        .into_inner();
    assert_eq!(response.revoked_sessions, 0);
    app.auth()
        .refresh(RefreshRequest {
            refresh_token: alices_refresh,
        })
        .await
        .expect("alice's session survives");
}

#[tokio::test]
async fn a_refresh_token_cannot_be_replayed_under_another_tenant() {
    let app = TestApp::spawn().await;
    let (_, refresh) = login_pair(&app, "acme", "alice@acme.test").await;
    let secret = refresh.split_once('.').expect("tenant.secret").1;
    let moved = format!("{}.{secret}", ids::GLOBEX.simple());
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: moved,
            })
            .await,
        Code::Unauthenticated,
    );
    app.auth()
        .refresh(RefreshRequest {
            refresh_token: refresh,
        })
        .await
        .expect("the original still works");
}

#[tokio::test]
async fn login_resolves_the_user_within_the_named_tenant_only() {
    let app = TestApp::spawn().await;
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    // A globex user with an acme user's e-mail and another password.
    let twin = create_user(
        app.channel(Service::Identity),
        &erin,
        "alice@acme.test",
        roles::VIEWER,
    )
    .await;
    let acme = app
        .login_response("acme", "alice@acme.test", PASSWORD)
        .await
        .expect("acme login");
    assert_eq!(acme.user.expect("user").id, id(ids::ALICE));
    let globex = app
        .login_response("globex", "alice@acme.test", NEW_PASSWORD)
        .await
        .expect("globex login");
    assert_eq!(globex.user.expect("user").id, twin.id);
    expect_code(
        app.login_response("globex", "alice@acme.test", PASSWORD)
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.login_response("acme", "alice@acme.test", NEW_PASSWORD)
            .await,
        Code::Unauthenticated,
    );
}
