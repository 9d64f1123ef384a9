//! UserService: create, get, list (filters, pages), update (mask, etag,
//! manager), deactivate and assign role, with permissions, audit rows, bad
//! input and privilege escalation.

use std::collections::BTreeSet;

use codeops_proto::identity::{
    AssignRoleRequest, CreateUserRequest, DeactivateUserRequest, GetUserRequest, ListUsersRequest,
    RefreshRequest, UpdateUserRequest, User,
};
use tonic::Code;
use uuid::Uuid;

use crate::common::{PASSWORD, TestApp, bearer, ids, random_id};
use crate::identity::support::*;

fn create_request(user: User, password: &str) -> CreateUserRequest {
    CreateUserRequest {
        user: Some(user),
        password: password.to_owned(),
        ..Default::default()
    }
}

async fn get_user(app: &TestApp, token: &str, user: Uuid) -> User {
    app.users()
        .get_user(bearer(GetUserRequest { id: id(user) }, token))
        .await
        .expect("get user")
        .into_inner()
}

async fn list_emails(app: &TestApp, token: &str, request: ListUsersRequest) -> Vec<String> {
    let mut emails: Vec<String> = app
        .users()
        .list_users(bearer(request, token))
        .await
        .expect("list users")
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.email)
        .collect();
    emails.sort();
    emails
}

// ---------------------------------------------------------------------------
// CreateUser

#[tokio::test]
async fn create_user_returns_the_user_and_audits_user_created() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let rid = new_request_id("create-user");
    let user = User {
        email: "Erika@Acme.test".into(),
        first_name: "Erika".into(),
        last_name: "Mustermann".into(),
        title: "Designer".into(),
        department: "UX".into(),
        avatar_url: "https://cdn.acme.test/erika.png".into(),
        role_id: id(roles::ENGINEER),
        manager_id: id(ids::BOB),
        ..Default::default()
    };
    let created = app
        .users()
        .create_user(call(create_request(user, NEW_PASSWORD), &alice, &rid))
        .await
        .expect("create user")
        .into_inner();
    let new_id = Uuid::parse_str(&created.id).expect("id is a UUID");
    assert_eq!(
        created.email, "erika@acme.test",
        "e-mail is stored lowercased"
    );
    assert_eq!(created.role_code, "ENGINEER");
    assert_eq!(created.manager_id, id(ids::BOB));
    assert_eq!(created.title, "Designer");
    assert!(created.is_active);
    assert!(!created.etag.is_empty());
    assert!(created.create_time.is_some());

    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "USER_CREATED", Some(ids::ALICE), "user", new_id);
    assert_eq!(row.tenant_id, ids::ACME);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.new_json()["email"], "erika@acme.test");
    assert_eq!(row.new_json()["role"], "ENGINEER");
    assert_audit_has_no_secrets(&pool, &[NEW_PASSWORD]).await;

    // The new user can log in with the password given.
    app.login("acme", "erika@acme.test", NEW_PASSWORD).await;
}

#[tokio::test]
async fn create_user_accepts_names_of_exactly_255_characters() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let mut user = user_message("long@acme.test", roles::VIEWER);
    user.first_name = "é".repeat(255);
    user.title = "t".repeat(255);
    let created = app
        .users()
        .create_user(bearer(create_request(user, NEW_PASSWORD), &alice))
        .await
        .expect("255 characters fit a VARCHAR(255)")
        .into_inner();
    assert_eq!(created.first_name.chars().count(), 255);
}

#[tokio::test]
async fn create_user_with_a_taken_email_is_already_exists() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    for email in ["bob@acme.test", "BOB@acme.TEST"] {
        expect_code(
            app.users()
                .create_user(bearer(
                    create_request(user_message(email, roles::VIEWER), NEW_PASSWORD),
                    &alice,
                ))
                .await,
            Code::AlreadyExists,
        );
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn the_same_email_may_exist_in_another_tenant() {
    let app = TestApp::spawn().await;
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    app.users()
        .create_user(bearer(
            create_request(user_message("bob@acme.test", roles::VIEWER), NEW_PASSWORD),
            &erin,
        ))
        .await
        .expect("e-mails are unique per tenant only");
}

#[tokio::test]
async fn create_user_rejects_each_bad_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let good = || user_message("new@acme.test", roles::VIEWER);
    let too_long_password = "0123456789".repeat(8);
    let cases: Vec<(&str, User, &str)> = vec![
        (
            "user.email",
            User {
                email: String::new(),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.email",
            User {
                email: "not-an-email".into(),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.email",
            User {
                email: "a b@acme.test".into(),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.email",
            User {
                email: format!("{}@acme.test", "a".repeat(250)),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.first_name",
            User {
                first_name: String::new(),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.first_name",
            User {
                first_name: "   ".into(),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.first_name",
            User {
                first_name: "x".repeat(256),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.last_name",
            User {
                last_name: "é".repeat(256),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.title",
            User {
                title: "x".repeat(256),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.department",
            User {
                department: "x".repeat(256),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.avatar_url",
            User {
                avatar_url: "javascript:alert(1)".into(),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.role_id",
            User {
                role_id: String::new(),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.role_id",
            User {
                role_id: "not-a-uuid".into(),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.role_id",
            User {
                role_id: id(random_id()),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.manager_id",
            User {
                manager_id: "12345".into(),
                ..good()
            },
            NEW_PASSWORD,
        ),
        (
            "user.manager_id",
            User {
                manager_id: id(random_id()),
                ..good()
            },
            NEW_PASSWORD,
        ),
        ("password", good(), ""),
        ("password", good(), "short"),
        ("password", good(), "zzzzzzzzzzzzzz"),
        ("password", good(), "new@acme.test"),
        ("password", good(), &too_long_password),
    ];
    let before = snapshot(&pool).await;
    for (field, user, password) in cases {
        expect_invalid(
            app.users()
                .create_user(bearer(create_request(user, password), &alice))
                .await,
            field,
        );
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn create_user_reports_every_bad_field_at_once() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let user = User {
        email: "nope".into(),
        first_name: String::new(),
        role_id: "x".into(),
        ..Default::default()
    };
    let status = expect_code(
        app.users()
            .create_user(bearer(create_request(user, ""), &alice))
            .await,
        Code::InvalidArgument,
    );
    let fields: BTreeSet<String> = violation_fields(&status).into_iter().collect();
    for field in [
        "user.email",
        "user.first_name",
        "user.last_name",
        "user.role_id",
        "password",
    ] {
        assert!(fields.contains(field), "{field} missing from {fields:?}");
    }
}

#[tokio::test]
async fn create_user_cannot_grant_a_role_with_permissions_the_caller_lacks() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let mut permissions = VIEWER_PERMISSIONS.to_vec();
    permissions.push("user.manage");
    let (_, admin) = acme_user_with(&app, &permissions).await;
    // A VIEWER is within reach ...
    app.users()
        .create_user(bearer(
            create_request(
                user_message("viewer@acme.test", roles::VIEWER),
                NEW_PASSWORD,
            ),
            &admin,
        ))
        .await
        .expect("granting what one holds");
    // ... an OWNER, an ADMIN or an ENGINEER are not.
    let before = snapshot(&pool).await;
    for (role, missing) in [
        (roles::OWNER, "tenant.manage"),
        (roles::ADMIN, "role.manage"),
        (roles::ENGINEER, "hypothesis.write"),
    ] {
        expect_denied(
            app.users()
                .create_user(bearer(
                    create_request(user_message("up@acme.test", role), NEW_PASSWORD),
                    &admin,
                ))
                .await,
            missing,
        );
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

// ---------------------------------------------------------------------------
// GetUser and ListUsers

#[tokio::test]
async fn get_user_returns_a_user_of_the_callers_tenant() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let carol = get_user(&app, &dan, ids::CAROL).await;
    assert_eq!(carol.email, "carol@acme.test");
    assert_eq!(carol.first_name, "Carol");
    assert_eq!(carol.role_code, "ENGINEER");
    assert_eq!(carol.role_id, id(roles::ENGINEER));
    assert_eq!(carol.manager_id, id(ids::BOB));
    assert!(carol.is_active);
}

#[tokio::test]
async fn get_user_of_an_unknown_id_is_not_found_and_a_malformed_id_is_invalid() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    expect_code(
        app.users()
            .get_user(bearer(
                GetUserRequest {
                    id: id(random_id()),
                },
                &alice,
            ))
            .await,
        Code::NotFound,
    );
    for bad in [
        "",
        "not-a-uuid",
        "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa00Z",
        "00000000-0000-0000-0000-000000000000",
    ] {
        expect_invalid(
            app.users()
                .get_user(bearer(GetUserRequest { id: bad.into() }, &alice))
                .await,
            "id",
        );
    }
}

#[tokio::test]
async fn get_and_list_users_need_user_read() {
    let app = TestApp::spawn().await;
    let (_, token) = acme_user_with(&app, &["team.read"]).await;
    expect_denied(
        app.users()
            .get_user(bearer(GetUserRequest { id: id(ids::ALICE) }, &token))
            .await,
        "user.read",
    );
    expect_denied(
        app.users()
            .list_users(bearer(ListUsersRequest::default(), &token))
            .await,
        "user.read",
    );
}

#[tokio::test]
async fn list_users_returns_the_tenants_users_oldest_first() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let users = app
        .users()
        .list_users(bearer(ListUsersRequest::default(), &dan))
        .await
        .expect("list")
        .into_inner();
    let ids_listed: Vec<String> = users.users.iter().map(|u| u.id.clone()).collect();
    assert_eq!(
        ids_listed,
        [ids::ALICE, ids::BOB, ids::CAROL, ids::DAN]
            .map(id)
            .to_vec()
    );
    assert!(users.next_page_token.is_empty());
}

#[tokio::test]
async fn list_users_filters_by_team() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let emails = list_emails(
        &app,
        &dan,
        ListUsersRequest {
            team_id: id(teams::GROWTH),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        emails,
        ["bob@acme.test", "carol@acme.test", "dan@acme.test"]
    );
    expect_invalid(
        app.users()
            .list_users(bearer(
                ListUsersRequest {
                    team_id: "growth".into(),
                    ..Default::default()
                },
                &dan,
            ))
            .await,
        "team_id",
    );
}

#[tokio::test]
async fn list_users_filters_by_role() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let emails = list_emails(
        &app,
        &dan,
        ListUsersRequest {
            role_id: id(roles::ENGINEER),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(emails, ["carol@acme.test"]);
    expect_invalid(
        app.users()
            .list_users(bearer(
                ListUsersRequest {
                    role_id: "ENGINEER".into(),
                    ..Default::default()
                },
                &dan,
            ))
            .await,
        "role_id",
    );
}

#[tokio::test]
async fn list_users_filters_by_active() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    app.users()
        .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::DAN) }, &alice))
        .await
        .expect("deactivate dan");
    let inactive = list_emails(
        &app,
        &alice,
        ListUsersRequest {
            is_active: Some(false),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(inactive, ["dan@acme.test"]);
    let active = list_emails(
        &app,
        &alice,
        ListUsersRequest {
            is_active: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        active,
        ["alice@acme.test", "bob@acme.test", "carol@acme.test"]
    );
    let all = list_emails(&app, &alice, ListUsersRequest::default()).await;
    assert_eq!(all.len(), 4);
}

#[tokio::test]
async fn list_users_filters_by_text_on_name_and_email() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let query = |q: &str| ListUsersRequest {
        query: q.to_owned(),
        ..Default::default()
    };
    assert_eq!(
        list_emails(&app, &dan, query("CAR")).await,
        ["carol@acme.test"]
    );
    assert_eq!(
        list_emails(&app, &dan, query("brown")).await,
        ["bob@acme.test"]
    );
    assert_eq!(list_emails(&app, &dan, query("@acme.TEST")).await.len(), 4);
    // LIKE wildcards are matched literally.
    assert!(list_emails(&app, &dan, query("%")).await.is_empty());
    assert!(list_emails(&app, &dan, query("_")).await.is_empty());
    expect_invalid(
        app.users()
            .list_users(bearer(query(&"q".repeat(256)), &dan))
            .await,
        "query",
    );
}

#[tokio::test]
async fn list_users_pages_through_every_user_with_page_tokens() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    for i in 0..3 {
        create_user(
            app.channel(codeops::suite::Service::Identity),
            &alice,
            &format!("p{i}@acme.test"),
            roles::VIEWER,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = app
            .users()
            .list_users(bearer(
                ListUsersRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &alice,
            ))
            .await
            .expect("page")
            .into_inner();
        pages.push(page.users.len());
        seen.extend(page.users.into_iter().map(|u| u.email));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(pages, [3, 3, 1]);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 7, "every user exactly once: {seen:?}");
    assert_eq!(
        &seen[..4],
        [
            "alice@acme.test",
            "bob@acme.test",
            "carol@acme.test",
            "dan@acme.test"
        ]
    );
}

#[tokio::test]
async fn list_users_rejects_a_page_token_of_other_filters_or_garbage() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let token = app
        .users()
        .list_users(bearer(
            ListUsersRequest {
                page_size: 1,
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());
    expect_invalid(
        app.users()
            .list_users(bearer(
                ListUsersRequest {
                    page_size: 1,
                    page_token: token,
                    is_active: Some(true),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        "page_token",
    );
    expect_invalid(
        app.users()
            .list_users(bearer(
                ListUsersRequest {
                    page_token: "bm90IGEgdG9rZW4".into(),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        "page_token",
    );
    expect_invalid(
        app.users()
            .list_users(bearer(
                ListUsersRequest {
                    page_size: -1,
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        "page_size",
    );
}

// ---------------------------------------------------------------------------
// UpdateUser

#[tokio::test]
async fn update_user_changes_only_the_masked_fields_and_audits_update() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = get_user(&app, &alice, ids::CAROL).await;
    let rid = new_request_id("update-user");
    let updated = app
        .users()
        .update_user(call(
            UpdateUserRequest {
                user: Some(User {
                    id: id(ids::CAROL),
                    title: "Principal Engineer".into(),
                    department: "Platform".into(),
                    // Not in the mask: ignored.
                    first_name: "Caroline".into(),
                    etag: before.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["title", "department"]),
            },
            &alice,
            &rid,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.title, "Principal Engineer");
    assert_eq!(updated.department, "Platform");
    assert_eq!(updated.first_name, "Carol");
    assert_eq!(updated.last_name, before.last_name);
    assert_eq!(updated.manager_id, before.manager_id);
    assert_ne!(updated.etag, before.etag, "the etag changes with the row");

    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "UPDATE", Some(ids::ALICE), "user", ids::CAROL);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.old_json()["title"], "Senior Software Engineer");
    assert_eq!(row.new_json()["title"], "Principal Engineer");
    assert_audit_has_no_secrets(&pool, &[]).await;
}

#[tokio::test]
async fn update_user_can_clear_an_optional_field() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let updated = app
        .users()
        .update_user(bearer(
            UpdateUserRequest {
                user: Some(User {
                    id: id(ids::CAROL),
                    ..Default::default()
                }),
                update_mask: mask(&["title", "manager_id"]),
            },
            &alice,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.title, "");
    assert_eq!(updated.manager_id, "");
}

#[tokio::test]
async fn update_user_with_a_stale_etag_is_aborted_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let stale = get_user(&app, &alice, ids::CAROL).await.etag;
    let update = |title: &str, etag: &str| UpdateUserRequest {
        user: Some(User {
            id: id(ids::CAROL),
            title: title.to_owned(),
            etag: etag.to_owned(),
            ..Default::default()
        }),
        update_mask: mask(&["title"]),
    };
    app.users()
        .update_user(bearer(update("First", &stale), &alice))
        .await
        .expect("first update with the current etag");
    let before = snapshot(&pool).await;
    expect_code(
        app.users()
            .update_user(bearer(update("Second", &stale), &alice))
            .await,
        Code::Aborted,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
    assert_eq!(get_user(&app, &alice, ids::CAROL).await.title, "First");
}

#[tokio::test]
async fn update_user_rejects_a_missing_or_unknown_mask_and_bad_fields() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let carol = |user: User| User {
        id: id(ids::CAROL),
        ..user
    };
    let cases: Vec<(&str, User, Vec<&str>)> = vec![
        ("update_mask", carol(User::default()), vec![]),
        ("update_mask", carol(User::default()), vec!["email"]),
        ("update_mask", carol(User::default()), vec!["role_id"]),
        ("update_mask", carol(User::default()), vec!["password_hash"]),
        ("user.id", User::default(), vec!["title"]),
        (
            "user.id",
            User {
                id: "carol".into(),
                ..Default::default()
            },
            vec!["title"],
        ),
        (
            "user.first_name",
            carol(User::default()),
            vec!["first_name"],
        ),
        (
            "user.last_name",
            carol(User {
                last_name: "x".repeat(256),
                ..Default::default()
            }),
            vec!["last_name"],
        ),
        (
            "user.title",
            carol(User {
                title: "x".repeat(256),
                ..Default::default()
            }),
            vec!["title"],
        ),
        (
            "user.avatar_url",
            carol(User {
                avatar_url: "not a url".into(),
                ..Default::default()
            }),
            vec!["avatar_url"],
        ),
        (
            "user.manager_id",
            carol(User {
                manager_id: "bob".into(),
                ..Default::default()
            }),
            vec!["manager_id"],
        ),
        (
            "user.manager_id",
            carol(User {
                manager_id: id(random_id()),
                ..Default::default()
            }),
            vec!["manager_id"],
        ),
    ];
    let before = snapshot(&pool).await;
    for (field, user, paths) in cases {
        expect_invalid(
            app.users()
                .update_user(bearer(
                    UpdateUserRequest {
                        user: Some(user),
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

#[tokio::test]
async fn update_user_sets_a_manager_of_the_same_tenant() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let updated = app
        .users()
        .update_user(bearer(
            UpdateUserRequest {
                user: Some(User {
                    id: id(ids::DAN),
                    manager_id: id(ids::CAROL),
                    ..Default::default()
                }),
                update_mask: mask(&["manager_id"]),
            },
            &alice,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.manager_id, id(ids::CAROL));
}

#[tokio::test]
async fn a_manager_cycle_is_failed_precondition_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    // Carol reports to Bob, who reports to Alice.
    for (user, manager) in [
        (ids::ALICE, ids::CAROL),
        (ids::ALICE, ids::BOB),
        (ids::BOB, ids::CAROL),
        (ids::DAN, ids::DAN),
    ] {
        expect_code(
            app.users()
                .update_user(bearer(
                    UpdateUserRequest {
                        user: Some(User {
                            id: id(user),
                            manager_id: id(manager),
                            ..Default::default()
                        }),
                        update_mask: mask(&["manager_id"]),
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
async fn update_user_of_an_unknown_id_is_not_found() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    expect_code(
        app.users()
            .update_user(bearer(
                UpdateUserRequest {
                    user: Some(User {
                        id: id(random_id()),
                        title: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["title"]),
                },
                &alice,
            ))
            .await,
        Code::NotFound,
    );
}

// ---------------------------------------------------------------------------
// DeactivateUser

#[tokio::test]
async fn deactivate_user_deactivates_revokes_sessions_and_audits() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let (_, dans_refresh) = login_pair(&app, "acme", "dan@acme.test").await;
    let rid = new_request_id("deactivate");
    let user = app
        .users()
        .deactivate_user(call(
            DeactivateUserRequest { id: id(ids::DAN) },
            &alice,
            &rid,
        ))
        .await
        .expect("deactivate")
        .into_inner();
    assert!(!user.is_active);
    assert!(!get_user(&app, &alice, ids::DAN).await.is_active);
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: dans_refresh.clone(),
            })
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.login_response("acme", "dan@acme.test", PASSWORD).await,
        Code::Unauthenticated,
    );
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM core.refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(ids::DAN)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(revoked, 0, "no live session remains");

    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "USER_DEACTIVATED", Some(ids::ALICE), "user", ids::DAN);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.new_json()["is_active"], false);
    assert_audit_has_no_secrets(&pool, &[&dans_refresh]).await;
}

#[tokio::test]
async fn deactivating_oneself_or_twice_is_failed_precondition() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    expect_code(
        app.users()
            .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::ALICE) }, &alice))
            .await,
        Code::FailedPrecondition,
    );
    app.users()
        .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::DAN) }, &alice))
        .await
        .expect("first deactivation");
    expect_code(
        app.users()
            .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::DAN) }, &alice))
            .await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn deactivate_user_cannot_disable_someone_holding_permissions_the_caller_lacks() {
    // Deactivating is the strongest demotion: AssignRole refuses to demote
    // a user holding permissions the caller lacks, so must this.
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let mut permissions = VIEWER_PERMISSIONS.to_vec();
    permissions.push("user.manage");
    let (_, admin) = acme_user_with(&app, &permissions).await;
    let before = snapshot(&pool).await;
    expect_denied(
        app.users()
            .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::ALICE) }, &admin))
            .await,
        "tenant.manage",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn deactivate_user_rejects_bad_ids() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    expect_invalid(
        app.users()
            .deactivate_user(bearer(DeactivateUserRequest { id: "dan".into() }, &alice))
            .await,
        "id",
    );
    expect_code(
        app.users()
            .deactivate_user(bearer(
                DeactivateUserRequest {
                    id: id(random_id()),
                },
                &alice,
            ))
            .await,
        Code::NotFound,
    );
}

// ---------------------------------------------------------------------------
// AssignRole

#[tokio::test]
async fn assign_role_changes_the_role_and_audits_role_assigned() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let rid = new_request_id("assign");
    let user = app
        .users()
        .assign_role(call(
            AssignRoleRequest {
                user_id: id(ids::DAN),
                role_id: id(roles::ENGINEER),
            },
            &alice,
            &rid,
        ))
        .await
        .expect("assign")
        .into_inner();
    assert_eq!(user.role_code, "ENGINEER");
    assert_eq!(user.role_id, id(roles::ENGINEER));
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "ROLE_ASSIGNED", Some(ids::ALICE), "user", ids::DAN);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.old_json()["role"], "VIEWER");
    assert_eq!(row.new_json()["role"], "ENGINEER");
    // The next login carries the new role.
    let login = app
        .login_response("acme", "dan@acme.test", PASSWORD)
        .await
        .expect("login");
    assert_eq!(login.user.expect("user").role_code, "ENGINEER");
}

#[tokio::test]
async fn assign_role_cannot_grant_permissions_the_caller_lacks() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let mut permissions = VIEWER_PERMISSIONS.to_vec();
    permissions.push("user.manage");
    let (me, admin) = acme_user_with(&app, &permissions).await;
    let before = snapshot(&pool).await;
    // Not to Dan (a VIEWER), and not to themselves.
    for user in [ids::DAN, Uuid::parse_str(&me.id).expect("id")] {
        for (role, missing) in [
            (roles::OWNER, "tenant.manage"),
            (roles::ADMIN, "audit.read"),
        ] {
            expect_denied(
                app.users()
                    .assign_role(bearer(
                        AssignRoleRequest {
                            user_id: id(user),
                            role_id: id(role),
                        },
                        &admin,
                    ))
                    .await,
                missing,
            );
        }
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn assign_role_cannot_demote_someone_holding_permissions_the_caller_lacks() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let mut permissions = VIEWER_PERMISSIONS.to_vec();
    permissions.push("user.manage");
    let (_, admin) = acme_user_with(&app, &permissions).await;
    let before = snapshot(&pool).await;
    expect_denied(
        app.users()
            .assign_role(bearer(
                AssignRoleRequest {
                    user_id: id(ids::ALICE),
                    role_id: id(roles::VIEWER),
                },
                &admin,
            ))
            .await,
        "tenant.manage",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn a_custom_role_holder_can_assign_a_role_within_their_permissions() {
    let app = TestApp::spawn().await;
    let mut permissions = VIEWER_PERMISSIONS.to_vec();
    permissions.push("user.manage");
    let (_, admin) = acme_user_with(&app, &permissions).await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let viewer = create_user(
        app.channel(codeops::suite::Service::Identity),
        &alice,
        "viewer@acme.test",
        roles::VIEWER,
    )
    .await;
    // VIEWER to VIEWER is within reach.
    app.users()
        .assign_role(bearer(
            AssignRoleRequest {
                user_id: viewer.id,
                role_id: id(roles::VIEWER),
            },
            &admin,
        ))
        .await
        .expect("assign a role the caller covers");
}

#[tokio::test]
async fn assign_role_rejects_bad_and_unknown_ids() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    let assign = |user_id: String, role_id: String| AssignRoleRequest { user_id, role_id };
    expect_invalid(
        app.users()
            .assign_role(bearer(assign("dan".into(), id(roles::VIEWER)), &alice))
            .await,
        "user_id",
    );
    expect_invalid(
        app.users()
            .assign_role(bearer(assign(id(ids::DAN), "VIEWER".into()), &alice))
            .await,
        "role_id",
    );
    expect_invalid(
        app.users()
            .assign_role(bearer(assign(id(ids::DAN), String::new()), &alice))
            .await,
        "role_id",
    );
    expect_invalid(
        app.users()
            .assign_role(bearer(assign(id(ids::DAN), id(random_id())), &alice))
            .await,
        "role_id",
    );
    expect_code(
        app.users()
            .assign_role(bearer(assign(id(random_id()), id(roles::VIEWER)), &alice))
            .await,
        Code::NotFound,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}
