//! TenantService: the caller's tenant, and tenant administration with the
//! operator credential.

use codeops_proto::identity::{
    CancelTenantRequest, CreateTenantRequest, GetTenantRequest, ReactivateTenantRequest,
    SlaDefaults, SuspendTenantRequest, Tenant, TenantSettings, TenantStatus, UpdateTenantRequest,
};
use prost_types::value::Kind;
use tonic::Code;
use uuid::Uuid;

use crate::common::{PASSWORD, TestApp, bearer, ids, operator, random_id};
use crate::identity::support::*;
use crate::identity::teams::settings as proto_struct;

async fn get_tenant(app: &TestApp, token: &str) -> Tenant {
    app.tenants()
        .get_tenant(bearer(GetTenantRequest {}, token))
        .await
        .expect("get tenant")
        .into_inner()
}

fn create_request(slug: &str, email: &str, password: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(Tenant {
            name: format!("Tenant {slug}"),
            slug: slug.to_owned(),
            ..Default::default()
        }),
        owner_email: email.to_owned(),
        owner_first_name: "Olga".into(),
        owner_last_name: "Owner".into(),
        owner_password: password.to_owned(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// GetTenant and UpdateTenant

#[tokio::test]
async fn get_tenant_returns_the_callers_own_tenant() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let acme = get_tenant(&app, &dan).await;
    assert_eq!(acme.id, id(ids::ACME));
    assert_eq!(acme.slug, "acme");
    assert_eq!(acme.name, "Acme Corp");
    assert_eq!(acme.status, TenantStatus::Active as i32);
    let settings = acme.settings.expect("settings");
    assert_eq!(settings.timezone, "UTC");
    assert_eq!(
        settings.sla_defaults,
        Some(SlaDefaults {
            blocking_hours: 24,
            high_hours: 72,
            normal_hours: 168,
            low_hours: 336
        })
    );
    assert!(!acme.etag.is_empty());
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    let globex = get_tenant(&app, &erin).await;
    assert_eq!(globex.id, id(ids::GLOBEX));
    assert_eq!(globex.settings.expect("settings").timezone, "Europe/Berlin");
}

#[tokio::test]
async fn update_tenant_changes_the_masked_fields_and_audits_update() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = get_tenant(&app, &alice).await;
    let rid = new_request_id("update-tenant");
    let updated = app
        .tenants()
        .update_tenant(call(
            UpdateTenantRequest {
                tenant: Some(Tenant {
                    name: "Acme Corporation".into(),
                    logo_url: "https://cdn.acme.test/logo.png".into(),
                    settings: Some(TenantSettings {
                        sla_defaults: Some(SlaDefaults {
                            blocking_hours: 12,
                            high_hours: 48,
                            normal_hours: 120,
                            low_hours: 240,
                        }),
                        // Not in the mask: kept.
                        timezone: "Asia/Tokyo".into(),
                        custom: Some(proto_struct(&[("theme", Kind::StringValue("dark".into()))])),
                    }),
                    // Not in the mask: ignored.
                    slug: "acme-2".into(),
                    etag: before.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&[
                    "name",
                    "logo_url",
                    "settings.sla_defaults",
                    "settings.custom",
                ]),
            },
            &alice,
            &rid,
        ))
        .await
        .expect("update tenant")
        .into_inner();
    assert_eq!(updated.name, "Acme Corporation");
    assert_eq!(updated.logo_url, "https://cdn.acme.test/logo.png");
    assert_eq!(updated.slug, "acme");
    let settings = updated.settings.expect("settings");
    assert_eq!(settings.sla_defaults.expect("sla").blocking_hours, 12);
    assert_eq!(settings.timezone, "UTC");
    assert_eq!(
        settings.custom.expect("custom").fields["theme"].kind,
        Some(Kind::StringValue("dark".into()))
    );
    assert_ne!(updated.etag, before.etag);

    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "UPDATE", Some(ids::ALICE), "tenant", ids::ACME);
    assert_eq!(row.tenant_id, ids::ACME);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.old_json()["name"], "Acme Corp");
    assert_eq!(row.new_json()["name"], "Acme Corporation");
    assert_eq!(
        row.new_json()["settings"]["sla_defaults"]["blocking_hours"],
        12
    );
}

#[tokio::test]
async fn update_tenant_with_a_stale_etag_is_aborted_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let stale = get_tenant(&app, &alice).await.etag;
    let update = |name: &str| UpdateTenantRequest {
        tenant: Some(Tenant {
            name: name.to_owned(),
            etag: stale.clone(),
            ..Default::default()
        }),
        update_mask: mask(&["name"]),
    };
    app.tenants()
        .update_tenant(bearer(update("First"), &alice))
        .await
        .expect("first update");
    let before = snapshot(&pool).await;
    expect_code(
        app.tenants()
            .update_tenant(bearer(update("Second"), &alice))
            .await,
        Code::Aborted,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
    assert_eq!(get_tenant(&app, &alice).await.name, "First");
}

#[tokio::test]
async fn update_tenant_rejects_each_bad_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let with_settings = |s: TenantSettings| Tenant {
        settings: Some(s),
        ..Default::default()
    };
    let sla = |blocking_hours: i32| TenantSettings {
        sla_defaults: Some(SlaDefaults {
            blocking_hours,
            high_hours: 72,
            normal_hours: 168,
            low_hours: 336,
        }),
        ..Default::default()
    };
    let cases: Vec<(&str, Tenant, Vec<&str>)> = vec![
        ("update_mask", Tenant::default(), vec![]),
        ("update_mask", Tenant::default(), vec!["slug"]),
        ("update_mask", Tenant::default(), vec!["status"]),
        ("tenant.name", Tenant::default(), vec!["name"]),
        (
            "tenant.name",
            Tenant {
                name: "n".repeat(256),
                ..Default::default()
            },
            vec!["name"],
        ),
        (
            "tenant.logo_url",
            Tenant {
                logo_url: "logo.png".into(),
                ..Default::default()
            },
            vec!["logo_url"],
        ),
        (
            "tenant.logo_url",
            Tenant {
                logo_url: format!("https://{}", "x".repeat(250)),
                ..Default::default()
            },
            vec!["logo_url"],
        ),
        (
            "tenant.settings.sla_defaults.blocking_hours",
            with_settings(sla(0)),
            vec!["settings.sla_defaults"],
        ),
        (
            "tenant.settings.sla_defaults.blocking_hours",
            with_settings(sla(-5)),
            vec!["settings.sla_defaults"],
        ),
        (
            "tenant.settings.timezone",
            with_settings(TenantSettings {
                timezone: "Mars/Olympus Mons".into(),
                ..Default::default()
            }),
            vec!["settings.timezone"],
        ),
        (
            "tenant.settings.custom",
            with_settings(TenantSettings {
                custom: Some(proto_struct(&[("ratio", Kind::NumberValue(f64::NAN))])),
                ..Default::default()
            }),
            vec!["settings.custom"],
        ),
        (
            "tenant.settings.custom",
            with_settings(TenantSettings {
                custom: Some(proto_struct(&[(
                    "nested",
                    Kind::StructValue(proto_struct(&[(
                        "inf",
                        Kind::NumberValue(f64::NEG_INFINITY),
                    )])),
                )])),
                ..Default::default()
            }),
            vec!["settings"],
        ),
    ];
    let before = snapshot(&pool).await;
    for (field, tenant, paths) in cases {
        expect_invalid(
            app.tenants()
                .update_tenant(bearer(
                    UpdateTenantRequest {
                        tenant: Some(tenant),
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
// Operator methods

#[tokio::test]
async fn create_tenant_creates_the_tenant_and_its_owner_and_audits_both() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let rid = new_request_id("create-tenant");
    let response = app
        .tenants()
        .create_tenant(operator_call(
            create_request("initech", "Olga@Initech.test", NEW_PASSWORD),
            &rid,
        ))
        .await
        .expect("create tenant")
        .into_inner();
    let tenant = response.tenant.expect("tenant");
    let owner = response.owner.expect("owner");
    assert_eq!(tenant.slug, "initech");
    assert_eq!(tenant.status, TenantStatus::Active as i32);
    assert_eq!(owner.email, "olga@initech.test");
    assert_eq!(owner.role_code, "OWNER");
    assert!(
        response.generated_password.is_empty(),
        "no password is generated when one is given"
    );
    let tenant_id = Uuid::parse_str(&tenant.id).expect("tenant id");
    let owner_id = Uuid::parse_str(&owner.id).expect("owner id");

    let rows = audit_rows(&pool, &rid).await;
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["CREATE", "USER_CREATED"]);
    assert_audit(&rows[0], "CREATE", None, "tenant", tenant_id);
    assert_audit(&rows[1], "USER_CREATED", None, "user", owner_id);
    assert!(
        rows.iter()
            .all(|r| r.tenant_id == tenant_id && r.request_id.as_deref() == Some(rid.as_str()))
    );
    assert_audit_has_no_secrets(&pool, &[NEW_PASSWORD]).await;

    // The owner logs in and manages the new tenant.
    let token = app
        .login("initech", "olga@initech.test", NEW_PASSWORD)
        .await;
    let own = get_tenant(&app, &token).await;
    assert_eq!(own.id, tenant.id);
}

#[tokio::test]
async fn create_tenant_without_a_password_returns_a_generated_one_that_works() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let response = app
        .tenants()
        .create_tenant(operator(create_request("hooli", "gavin@hooli.test", "")))
        .await
        .expect("create tenant")
        .into_inner();
    let password = response.generated_password;
    assert!(
        password.len() >= 16,
        "a strong one-time password: {password:?}"
    );
    app.login("hooli", "gavin@hooli.test", &password).await;
    assert_audit_has_no_secrets(&pool, &[&password]).await;
}

#[tokio::test]
async fn operator_methods_need_the_operator_credential() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    for token in [alice.as_str(), "wrong-operator-token", ""] {
        let with = |r| {
            if token.is_empty() {
                tonic::Request::new(r)
            } else {
                bearer(r, token)
            }
        };
        expect_code(
            app.tenants()
                .create_tenant(with(create_request(
                    "initech",
                    "o@initech.test",
                    NEW_PASSWORD,
                )))
                .await,
            Code::Unauthenticated,
        );
        let with = |r| {
            if token.is_empty() {
                tonic::Request::new(r)
            } else {
                bearer(r, token)
            }
        };
        expect_code(
            app.tenants()
                .suspend_tenant(with(SuspendTenantRequest {
                    id: id(ids::GLOBEX),
                    reason: String::new(),
                }))
                .await,
            Code::Unauthenticated,
        );
        let with = |r| {
            if token.is_empty() {
                tonic::Request::new(r)
            } else {
                bearer(r, token)
            }
        };
        expect_code(
            app.tenants()
                .reactivate_tenant(with(ReactivateTenantRequest {
                    id: id(ids::GLOBEX),
                }))
                .await,
            Code::Unauthenticated,
        );
        let with = |r| {
            if token.is_empty() {
                tonic::Request::new(r)
            } else {
                bearer(r, token)
            }
        };
        expect_code(
            app.tenants()
                .cancel_tenant(with(CancelTenantRequest {
                    id: id(ids::GLOBEX),
                    reason: String::new(),
                }))
                .await,
            Code::Unauthenticated,
        );
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn the_operator_credential_is_not_a_user_token() {
    let app = TestApp::spawn().await;
    expect_code(
        app.tenants()
            .get_tenant(operator(GetTenantRequest {}))
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn create_tenant_with_a_taken_slug_or_name_is_already_exists() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    expect_code(
        app.tenants()
            .create_tenant(operator(create_request(
                "acme",
                "o@acme2.test",
                NEW_PASSWORD,
            )))
            .await,
        Code::AlreadyExists,
    );
    let mut same_name = create_request("acme-two", "o@acme2.test", NEW_PASSWORD);
    same_name.tenant.as_mut().expect("tenant").name = "Acme Corp".into();
    expect_code(
        app.tenants().create_tenant(operator(same_name)).await,
        Code::AlreadyExists,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn create_tenant_rejects_each_bad_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let good = || create_request("initech", "o@initech.test", NEW_PASSWORD);
    let with_tenant = |f: &dyn Fn(&mut Tenant)| {
        let mut r = good();
        f(r.tenant.as_mut().expect("tenant"));
        r
    };
    let cases: Vec<(&str, CreateTenantRequest)> = vec![
        ("tenant.name", with_tenant(&|t| t.name = String::new())),
        ("tenant.name", with_tenant(&|t| t.name = "n".repeat(256))),
        ("tenant.slug", with_tenant(&|t| t.slug = String::new())),
        (
            "tenant.slug",
            with_tenant(&|t| t.slug = "Initech Inc".into()),
        ),
        ("tenant.slug", with_tenant(&|t| t.slug = "s".repeat(256))),
        (
            "tenant.logo_url",
            with_tenant(&|t| t.logo_url = "file:///etc/passwd".into()),
        ),
        (
            "owner_email",
            CreateTenantRequest {
                owner_email: String::new(),
                ..good()
            },
        ),
        (
            "owner_email",
            CreateTenantRequest {
                owner_email: "owner-at-initech".into(),
                ..good()
            },
        ),
        (
            "owner_first_name",
            CreateTenantRequest {
                owner_first_name: String::new(),
                ..good()
            },
        ),
        (
            "owner_last_name",
            CreateTenantRequest {
                owner_last_name: "l".repeat(256),
                ..good()
            },
        ),
        (
            "owner_password",
            CreateTenantRequest {
                owner_password: "short".into(),
                ..good()
            },
        ),
        (
            "owner_password",
            CreateTenantRequest {
                owner_password: "0123456789".repeat(8),
                ..good()
            },
        ),
    ];
    let before = snapshot(&pool).await;
    for (field, request) in cases {
        expect_invalid(app.tenants().create_tenant(operator(request)).await, field);
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn suspend_tenant_suspends_revokes_sessions_and_audits_status_change() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (_, refresh) = login_pair(&app, "globex", "frank@globex.test").await;
    let rid = new_request_id("suspend");
    let tenant = app
        .tenants()
        .suspend_tenant(operator_call(
            SuspendTenantRequest {
                id: id(ids::GLOBEX),
                reason: "invoice overdue".into(),
            },
            &rid,
        ))
        .await
        .expect("suspend")
        .into_inner();
    assert_eq!(tenant.status, TenantStatus::Suspended as i32);
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM core.refresh_tokens WHERE tenant_id = $1 AND revoked_at IS NULL",
    )
    .bind(ids::GLOBEX)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(live, 0, "every session of the tenant is revoked");
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "STATUS_CHANGE", None, "tenant", ids::GLOBEX);
    assert_eq!(row.tenant_id, ids::GLOBEX);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.old_json()["status"], "ACTIVE");
    assert_eq!(row.new_json()["status"], "SUSPENDED");
    assert_eq!(row.description.as_deref(), Some("invoice overdue"));
    assert_audit_has_no_secrets(&pool, &[&refresh]).await;
}

#[tokio::test]
async fn reactivate_tenant_lets_its_users_log_in_again_and_audits_status_change() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    app.tenants()
        .suspend_tenant(operator(SuspendTenantRequest {
            id: id(ids::GLOBEX),
            reason: String::new(),
        }))
        .await
        .expect("suspend");
    expect_code(
        app.login_response("globex", "erin@globex.test", PASSWORD)
            .await,
        Code::Unauthenticated,
    );
    let rid = new_request_id("reactivate");
    let tenant = app
        .tenants()
        .reactivate_tenant(operator_call(
            ReactivateTenantRequest {
                id: id(ids::GLOBEX),
            },
            &rid,
        ))
        .await
        .expect("reactivate")
        .into_inner();
    assert_eq!(tenant.status, TenantStatus::Active as i32);
    app.login_seeded("globex", "erin@globex.test").await;
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "STATUS_CHANGE", None, "tenant", ids::GLOBEX);
    assert_eq!(row.old_json()["status"], "SUSPENDED");
    assert_eq!(row.new_json()["status"], "ACTIVE");
}

#[tokio::test]
async fn cancel_tenant_is_final_and_audits_status_change() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let rid = new_request_id("cancel");
    let tenant = app
        .tenants()
        .cancel_tenant(operator_call(
            CancelTenantRequest {
                id: id(ids::GLOBEX),
                reason: "contract ended".into(),
            },
            &rid,
        ))
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(tenant.status, TenantStatus::Cancelled as i32);
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "STATUS_CHANGE", None, "tenant", ids::GLOBEX);
    assert_eq!(row.new_json()["status"], "CANCELLED");
    let before = snapshot(&pool).await;
    expect_code(
        app.tenants()
            .reactivate_tenant(operator(ReactivateTenantRequest {
                id: id(ids::GLOBEX),
            }))
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        app.tenants()
            .suspend_tenant(operator(SuspendTenantRequest {
                id: id(ids::GLOBEX),
                reason: String::new(),
            }))
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        app.tenants()
            .cancel_tenant(operator(CancelTenantRequest {
                id: id(ids::GLOBEX),
                reason: String::new(),
            }))
            .await,
        Code::FailedPrecondition,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn reactivating_an_active_tenant_is_failed_precondition() {
    let app = TestApp::spawn().await;
    expect_code(
        app.tenants()
            .reactivate_tenant(operator(ReactivateTenantRequest { id: id(ids::ACME) }))
            .await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn status_changes_reject_bad_and_unknown_ids() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    expect_invalid(
        app.tenants()
            .suspend_tenant(operator(SuspendTenantRequest {
                id: "acme".into(),
                reason: String::new(),
            }))
            .await,
        "id",
    );
    expect_invalid(
        app.tenants()
            .suspend_tenant(operator(SuspendTenantRequest {
                id: id(ids::ACME),
                reason: "r".repeat(256),
            }))
            .await,
        "reason",
    );
    expect_invalid(
        app.tenants()
            .reactivate_tenant(operator(ReactivateTenantRequest { id: String::new() }))
            .await,
        "id",
    );
    expect_code(
        app.tenants()
            .cancel_tenant(operator(CancelTenantRequest {
                id: id(random_id()),
                reason: String::new(),
            }))
            .await,
        Code::NotFound,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}
