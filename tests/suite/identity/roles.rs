//! RoleService: system and custom roles, the permission catalogue and role
//! permissions, with permissions, audit rows, bad input and escalation.

use std::collections::BTreeSet;

use codeops::suite::Service;
use codeops_proto::identity::{
    CreateRoleRequest, DeleteRoleRequest, GetRoleRequest, ListPermissionsRequest, ListRolesRequest,
    Role, RoleCategory, RoleLevel, SetRolePermissionsRequest, UpdateRoleRequest,
};
use tonic::Code;
use uuid::Uuid;

use crate::common::{TestApp, bearer, ids, random_id};
use crate::identity::support::*;

async fn alice_role(app: &TestApp, code: &str, permissions: &[&str]) -> (String, Role) {
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let role = create_role(app.channel(Service::Identity), &alice, code, permissions).await;
    (alice, role)
}

fn role_id(role: &Role) -> Uuid {
    Uuid::parse_str(&role.id).expect("role id")
}

// ---------------------------------------------------------------------------
// ListRoles and GetRole

#[tokio::test]
async fn list_roles_returns_the_system_roles_and_the_tenants_own() {
    let app = TestApp::spawn().await;
    let (alice, acme_role) = alice_role(&app, "ACME_ANALYST", &["user.read"]).await;
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    create_role(
        app.channel(Service::Identity),
        &erin,
        "GLOBEX_ANALYST",
        &["user.read"],
    )
    .await;
    let roles = app
        .roles()
        .list_roles(bearer(ListRolesRequest::default(), &alice))
        .await
        .expect("list roles")
        .into_inner()
        .roles;
    let codes: BTreeSet<&str> = roles.iter().map(|r| r.code.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "OWNER",
        "ADMIN",
        "PRODUCT_LEAD",
        "ENGINEER",
        "VIEWER",
        "STAKEHOLDER",
        "ACME_ANALYST",
    ]
    .into();
    assert_eq!(codes, expected);
    assert_eq!(roles.iter().filter(|r| r.is_system_role).count(), 6);
    let custom = roles
        .iter()
        .find(|r| r.id == acme_role.id)
        .expect("the custom role");
    assert!(!custom.is_system_role);
}

#[tokio::test]
async fn list_roles_pages_with_page_tokens() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let first = app
        .roles()
        .list_roles(bearer(
            ListRolesRequest {
                page_size: 4,
                page_token: String::new(),
            },
            &dan,
        ))
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(first.roles.len(), 4);
    assert!(!first.next_page_token.is_empty());
    let second = app
        .roles()
        .list_roles(bearer(
            ListRolesRequest {
                page_size: 4,
                page_token: first.next_page_token,
            },
            &dan,
        ))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.roles.len(), 2);
    assert!(second.next_page_token.is_empty());
    let all: BTreeSet<String> = first
        .roles
        .iter()
        .chain(&second.roles)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(all.len(), 6);
}

#[tokio::test]
async fn get_role_returns_a_system_role_with_its_permissions() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let owner = app
        .roles()
        .get_role(bearer(
            GetRoleRequest {
                id: id(roles::OWNER),
            },
            &dan,
        ))
        .await
        .expect("get role")
        .into_inner();
    assert_eq!(owner.code, "OWNER");
    assert!(owner.is_system_role);
    assert_eq!(owner.category, RoleCategory::System as i32);
    assert_eq!(owner.level, RoleLevel::L9Owner as i32);
    let permissions: BTreeSet<&str> = owner.permissions.iter().map(String::as_str).collect();
    assert_eq!(permissions, ALL_PERMISSIONS.iter().copied().collect());

    let viewer = app
        .roles()
        .get_role(bearer(
            GetRoleRequest {
                id: id(roles::VIEWER),
            },
            &dan,
        ))
        .await
        .expect("get role")
        .into_inner();
    let permissions: BTreeSet<&str> = viewer.permissions.iter().map(String::as_str).collect();
    assert_eq!(permissions, VIEWER_PERMISSIONS.iter().copied().collect());
}

#[tokio::test]
async fn get_role_of_an_unknown_id_is_not_found_and_a_malformed_id_is_invalid() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    expect_code(
        app.roles()
            .get_role(bearer(
                GetRoleRequest {
                    id: id(random_id()),
                },
                &dan,
            ))
            .await,
        Code::NotFound,
    );
    expect_invalid(
        app.roles()
            .get_role(bearer(GetRoleRequest { id: "OWNER".into() }, &dan))
            .await,
        "id",
    );
}

#[tokio::test]
async fn role_reads_need_role_read() {
    let app = TestApp::spawn().await;
    let (_, token) = acme_user_with(&app, &["team.read", "user.read"]).await;
    expect_denied(
        app.roles()
            .list_roles(bearer(ListRolesRequest::default(), &token))
            .await,
        "role.read",
    );
    expect_denied(
        app.roles()
            .get_role(bearer(
                GetRoleRequest {
                    id: id(roles::OWNER),
                },
                &token,
            ))
            .await,
        "role.read",
    );
    expect_denied(
        app.roles()
            .list_permissions(bearer(ListPermissionsRequest {}, &token))
            .await,
        "role.read",
    );
}

// ---------------------------------------------------------------------------
// CreateRole

#[tokio::test]
async fn create_role_returns_the_role_and_audits_create() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let rid = new_request_id("create-role");
    let created = app
        .roles()
        .create_role(call(
            CreateRoleRequest {
                role: Some(Role {
                    code: "QA_LEAD".into(),
                    name: "QA lead".into(),
                    description: "Owns test plans".into(),
                    category: RoleCategory::Qa as i32,
                    level: RoleLevel::L3Lead as i32,
                    permissions: vec![
                        "hypothesis.read".into(),
                        "hypothesis.write".into(),
                        "team.read".into(),
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &alice,
            &rid,
        ))
        .await
        .expect("create role")
        .into_inner();
    assert_eq!(created.code, "QA_LEAD");
    assert!(!created.is_system_role);
    assert_eq!(created.category, RoleCategory::Qa as i32);
    assert_eq!(created.level, RoleLevel::L3Lead as i32);
    let permissions: BTreeSet<&str> = created.permissions.iter().map(String::as_str).collect();
    assert_eq!(
        permissions,
        ["hypothesis.read", "hypothesis.write", "team.read"].into()
    );
    assert!(!created.etag.is_empty());

    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "CREATE", Some(ids::ALICE), "role", role_id(&created));
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.new_json()["code"], "QA_LEAD");
    let tenant: Option<Uuid> = sqlx::query_scalar("SELECT tenant_id FROM core.roles WHERE id = $1")
        .bind(role_id(&created))
        .fetch_one(&pool)
        .await
        .expect("role row");
    assert_eq!(
        tenant,
        Some(ids::ACME),
        "the role belongs to the caller's tenant"
    );
}

#[tokio::test]
async fn create_role_with_a_taken_code_is_already_exists() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (alice, _) = alice_role(&app, "ANALYST", &["user.read"]).await;
    let before = snapshot(&pool).await;
    expect_code(
        app.roles()
            .create_role(bearer(
                CreateRoleRequest {
                    role: Some(role_message("ANALYST", &["team.read"])),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
    // Another tenant may use the same code.
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    create_role(
        app.channel(Service::Identity),
        &erin,
        "ANALYST",
        &["user.read"],
    )
    .await;
}

#[tokio::test]
async fn create_role_rejects_each_bad_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let good = || role_message("GOOD_CODE", &["user.read"]);
    let cases: Vec<(&str, Role)> = vec![
        (
            "role.code",
            Role {
                code: String::new(),
                ..good()
            },
        ),
        (
            "role.code",
            Role {
                code: "lower_case".into(),
                ..good()
            },
        ),
        (
            "role.code",
            Role {
                code: "WITH SPACE".into(),
                ..good()
            },
        ),
        (
            "role.code",
            Role {
                code: "X".repeat(256),
                ..good()
            },
        ),
        (
            "role.name",
            Role {
                name: String::new(),
                ..good()
            },
        ),
        (
            "role.name",
            Role {
                name: "n".repeat(256),
                ..good()
            },
        ),
        (
            "role.description",
            Role {
                description: "d".repeat(256),
                ..good()
            },
        ),
        (
            "role.category",
            Role {
                category: 0,
                ..good()
            },
        ),
        (
            "role.category",
            Role {
                category: 99,
                ..good()
            },
        ),
        (
            "role.category",
            Role {
                category: -1,
                ..good()
            },
        ),
        ("role.level", Role { level: 0, ..good() }),
        (
            "role.level",
            Role {
                level: 99,
                ..good()
            },
        ),
        (
            "role.permissions[0]",
            Role {
                permissions: vec!["root.all".into()],
                ..good()
            },
        ),
        (
            "role.permissions[1]",
            Role {
                permissions: vec!["user.read".into(), "USER.READ".into()],
                ..good()
            },
        ),
    ];
    let before = snapshot(&pool).await;
    for (field, role) in cases {
        expect_invalid(
            app.roles()
                .create_role(bearer(
                    CreateRoleRequest {
                        role: Some(role),
                        ..Default::default()
                    },
                    &alice,
                ))
                .await,
            field,
        );
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn create_role_cannot_hold_permissions_the_caller_lacks() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (_, role_admin) = acme_user_with(&app, &["role.read", "role.manage", "user.read"]).await;
    // Within reach:
    app.roles()
        .create_role(bearer(
            CreateRoleRequest {
                role: Some(role_message("READER", &["user.read"])),
                ..Default::default()
            },
            &role_admin,
        ))
        .await
        .expect("a role with the caller's own permissions");
    let before = snapshot(&pool).await;
    let status = expect_denied(
        app.roles()
            .create_role(bearer(
                CreateRoleRequest {
                    role: Some(role_message(
                        "AUDITOR",
                        &["user.read", "audit.read", "tenant.manage"],
                    )),
                    ..Default::default()
                },
                &role_admin,
            ))
            .await,
        "audit.read",
    );
    assert!(missing_permissions(&status).contains(&"tenant.manage".to_owned()));
    assert!(!missing_permissions(&status).contains(&"user.read".to_owned()));
    assert_unchanged(&before, &snapshot(&pool).await);
}

// ---------------------------------------------------------------------------
// UpdateRole

#[tokio::test]
async fn update_role_changes_the_masked_fields_and_audits_update() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (alice, role) = alice_role(&app, "ANALYST", &["user.read"]).await;
    let rid = new_request_id("update-role");
    let updated = app
        .roles()
        .update_role(call(
            UpdateRoleRequest {
                role: Some(Role {
                    id: role.id.clone(),
                    name: "Senior analyst".into(),
                    level: RoleLevel::L2Senior as i32,
                    description: "ignored: not in the mask".into(),
                    etag: role.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["name", "level"]),
            },
            &alice,
            &rid,
        ))
        .await
        .expect("update role")
        .into_inner();
    assert_eq!(updated.name, "Senior analyst");
    assert_eq!(updated.level, RoleLevel::L2Senior as i32);
    assert_eq!(updated.description, role.description);
    assert_eq!(updated.code, "ANALYST");
    assert_eq!(updated.permissions, role.permissions);
    assert_ne!(updated.etag, role.etag);
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "UPDATE", Some(ids::ALICE), "role", role_id(&role));
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.old_json()["name"], role.name.as_str());
    assert_eq!(row.new_json()["name"], "Senior analyst");
}

#[tokio::test]
async fn update_role_with_a_stale_etag_is_aborted_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (alice, role) = alice_role(&app, "ANALYST", &["user.read"]).await;
    let update = |name: &str| UpdateRoleRequest {
        role: Some(Role {
            id: role.id.clone(),
            name: name.to_owned(),
            etag: role.etag.clone(),
            ..Default::default()
        }),
        update_mask: mask(&["name"]),
    };
    app.roles()
        .update_role(bearer(update("First"), &alice))
        .await
        .expect("first update");
    let before = snapshot(&pool).await;
    expect_code(
        app.roles()
            .update_role(bearer(update("Second"), &alice))
            .await,
        Code::Aborted,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn updating_a_system_role_is_failed_precondition() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    for role in [roles::OWNER, roles::VIEWER] {
        expect_code(
            app.roles()
                .update_role(bearer(
                    UpdateRoleRequest {
                        role: Some(Role {
                            id: id(role),
                            name: "Renamed".into(),
                            ..Default::default()
                        }),
                        update_mask: mask(&["name"]),
                    },
                    &alice,
                ))
                .await,
            Code::FailedPrecondition,
        );
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn update_role_rejects_bad_fields_and_masks() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (alice, role) = alice_role(&app, "ANALYST", &["user.read"]).await;
    let with = |r: Role| Role {
        id: role.id.clone(),
        ..r
    };
    let cases: Vec<(&str, Role, Vec<&str>)> = vec![
        ("update_mask", with(Role::default()), vec![]),
        (
            "update_mask",
            with(Role {
                code: "NEW".into(),
                ..Default::default()
            }),
            vec!["code"],
        ),
        ("update_mask", with(Role::default()), vec!["permissions"]),
        ("update_mask", with(Role::default()), vec!["is_system_role"]),
        (
            "role.id",
            Role {
                name: "x".into(),
                ..Default::default()
            },
            vec!["name"],
        ),
        (
            "role.id",
            Role {
                id: "ANALYST".into(),
                name: "x".into(),
                ..Default::default()
            },
            vec!["name"],
        ),
        ("role.name", with(Role::default()), vec!["name"]),
        (
            "role.name",
            with(Role {
                name: "n".repeat(256),
                ..Default::default()
            }),
            vec!["name"],
        ),
        (
            "role.description",
            with(Role {
                description: "d".repeat(256),
                ..Default::default()
            }),
            vec!["description"],
        ),
        (
            "role.category",
            with(Role {
                category: 99,
                ..Default::default()
            }),
            vec!["category"],
        ),
        (
            "role.level",
            with(Role {
                level: 42,
                ..Default::default()
            }),
            vec!["level"],
        ),
    ];
    let before = snapshot(&pool).await;
    for (field, r, paths) in cases {
        expect_invalid(
            app.roles()
                .update_role(bearer(
                    UpdateRoleRequest {
                        role: Some(r),
                        update_mask: mask(&paths),
                    },
                    &alice,
                ))
                .await,
            field,
        );
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

// ---------------------------------------------------------------------------
// DeleteRole

#[tokio::test]
async fn delete_role_removes_an_unused_custom_role_and_audits_delete() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (alice, role) = alice_role(&app, "TEMPORARY", &["user.read", "team.read"]).await;
    let rid = new_request_id("delete-role");
    app.roles()
        .delete_role(call(
            DeleteRoleRequest {
                id: role.id.clone(),
            },
            &alice,
            &rid,
        ))
        .await
        .expect("delete role");
    expect_code(
        app.roles()
            .get_role(bearer(
                GetRoleRequest {
                    id: role.id.clone(),
                },
                &alice,
            ))
            .await,
        Code::NotFound,
    );
    let grants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM core.role_permissions WHERE role_id = $1")
            .bind(role_id(&role))
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(grants, 0);
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "DELETE", Some(ids::ALICE), "role", role_id(&role));
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.old_json()["code"], "TEMPORARY");
}

#[tokio::test]
async fn deleting_a_role_in_use_is_failed_precondition_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (alice, role) = alice_role(&app, "HELD", &["user.read"]).await;
    create_user(
        app.channel(Service::Identity),
        &alice,
        "holder@acme.test",
        role_id(&role),
    )
    .await;
    let before = snapshot(&pool).await;
    expect_code(
        app.roles()
            .delete_role(bearer(
                DeleteRoleRequest {
                    id: role.id.clone(),
                },
                &alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn deleting_a_system_role_is_failed_precondition() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    expect_code(
        app.roles()
            .delete_role(bearer(
                DeleteRoleRequest {
                    id: id(roles::STAKEHOLDER),
                },
                &alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn delete_role_rejects_bad_and_unknown_ids() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    expect_invalid(
        app.roles()
            .delete_role(bearer(DeleteRoleRequest { id: "x".into() }, &alice))
            .await,
        "id",
    );
    expect_code(
        app.roles()
            .delete_role(bearer(
                DeleteRoleRequest {
                    id: id(random_id()),
                },
                &alice,
            ))
            .await,
        Code::NotFound,
    );
}

// ---------------------------------------------------------------------------
// ListPermissions and SetRolePermissions

#[tokio::test]
async fn list_permissions_returns_the_catalogue() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let permissions = app
        .roles()
        .list_permissions(bearer(ListPermissionsRequest {}, &dan))
        .await
        .expect("list permissions")
        .into_inner()
        .permissions;
    let codes: BTreeSet<&str> = permissions.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(codes, ALL_PERMISSIONS.iter().copied().collect());
    assert_eq!(permissions.len(), ALL_PERMISSIONS.len());
    for p in &permissions {
        assert!(!p.name.is_empty() && !p.category.is_empty(), "{p:?}");
        Uuid::parse_str(&p.id).expect("permission id");
    }
}

#[tokio::test]
async fn set_role_permissions_replaces_them_and_audits_update() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (alice, role) = alice_role(&app, "ANALYST", &["user.read", "team.read"]).await;
    let holder = create_user(
        app.channel(Service::Identity),
        &alice,
        "analyst@acme.test",
        role_id(&role),
    )
    .await;
    let rid = new_request_id("set-perms");
    let updated = app
        .roles()
        .set_role_permissions(call(
            SetRolePermissionsRequest {
                role_id: role.id.clone(),
                permission_codes: vec!["decision.read".into(), "team.read".into()],
            },
            &alice,
            &rid,
        ))
        .await
        .expect("set permissions")
        .into_inner();
    let permissions: BTreeSet<&str> = updated.permissions.iter().map(String::as_str).collect();
    assert_eq!(permissions, ["decision.read", "team.read"].into());
    assert_ne!(updated.etag, role.etag);

    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "UPDATE", Some(ids::ALICE), "role", role_id(&role));
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(
        row.old_json()["permissions"],
        serde_json::json!(["team.read", "user.read"])
    );
    assert_eq!(
        row.new_json()["permissions"],
        serde_json::json!(["decision.read", "team.read"])
    );

    // The holder's next token carries the new set.
    let token = app.login("acme", &holder.email, NEW_PASSWORD).await;
    let claims = crate::identity::jwt::segment_json(&crate::identity::jwt::split(&token).1);
    assert_eq!(
        claims["perms"],
        serde_json::json!(["decision.read", "team.read"])
    );
}

#[tokio::test]
async fn set_role_permissions_on_a_system_role_is_failed_precondition() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    expect_code(
        app.roles()
            .set_role_permissions(bearer(
                SetRolePermissionsRequest {
                    role_id: id(roles::VIEWER),
                    permission_codes: ALL_PERMISSIONS.iter().map(|p| (*p).to_owned()).collect(),
                },
                &alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn set_role_permissions_rejects_unknown_codes_and_bad_ids() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (alice, role) = alice_role(&app, "ANALYST", &["user.read"]).await;
    let before = snapshot(&pool).await;
    expect_invalid(
        app.roles()
            .set_role_permissions(bearer(
                SetRolePermissionsRequest {
                    role_id: role.id.clone(),
                    permission_codes: vec!["user.read".into(), "everything".into()],
                },
                &alice,
            ))
            .await,
        "permission_codes[1]",
    );
    expect_invalid(
        app.roles()
            .set_role_permissions(bearer(
                SetRolePermissionsRequest {
                    role_id: "ANALYST".into(),
                    permission_codes: vec![],
                },
                &alice,
            ))
            .await,
        "role_id",
    );
    expect_code(
        app.roles()
            .set_role_permissions(bearer(
                SetRolePermissionsRequest {
                    role_id: id(random_id()),
                    permission_codes: vec![],
                },
                &alice,
            ))
            .await,
        Code::NotFound,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn set_role_permissions_cannot_grant_permissions_the_caller_lacks() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (_, role) = alice_role(&app, "ANALYST", &["user.read"]).await;
    let (_, role_admin) = acme_user_with(&app, &["role.read", "role.manage", "user.read"]).await;
    let before = snapshot(&pool).await;
    expect_denied(
        app.roles()
            .set_role_permissions(bearer(
                SetRolePermissionsRequest {
                    role_id: role.id,
                    permission_codes: vec!["user.read".into(), "user.manage".into()],
                },
                &role_admin,
            ))
            .await,
        "user.manage",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn set_role_permissions_cannot_strip_permissions_the_caller_lacks() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (_, role) = alice_role(&app, "AUDITOR", &["audit.read", "user.read"]).await;
    let (_, role_admin) = acme_user_with(&app, &["role.read", "role.manage", "user.read"]).await;
    let before = snapshot(&pool).await;
    expect_denied(
        app.roles()
            .set_role_permissions(bearer(
                SetRolePermissionsRequest {
                    role_id: role.id,
                    permission_codes: vec!["user.read".into()],
                },
                &role_admin,
            ))
            .await,
        "audit.read",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}
