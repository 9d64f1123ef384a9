//! AuthService: login, refresh, logout, password change, the current user
//! and the public keys, with their audit rows and bad input.

use codeops_proto::identity::{
    ChangePasswordRequest, GetCurrentUserRequest, GetPublicKeysRequest, LoginRequest,
    LogoutRequest, RefreshRequest,
};
use tonic::Code;

use crate::common::{PASSWORD, TestApp, bearer, ids};
use crate::identity::jwt::{segment_json, split};
use crate::identity::support::*;

fn login_request(tenant_slug: &str, email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        tenant_slug: tenant_slug.to_owned(),
        email: email.to_owned(),
        password: password.to_owned(),
    }
}

#[tokio::test]
async fn login_returns_tokens_and_the_user() {
    let app = TestApp::spawn().await;
    let response = app
        .login_response("acme", "alice@acme.test", PASSWORD)
        .await
        .expect("login");
    let tokens = response.tokens.expect("tokens");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(
        tokens.access_token.split('.').count(),
        3,
        "the access token is a compact JWT"
    );
    assert!(!tokens.refresh_token.is_empty());
    assert_ne!(tokens.refresh_token, tokens.access_token);
    let now = chrono::Utc::now().timestamp();
    let access_exp = tokens
        .access_token_expire_time
        .expect("access expiry")
        .seconds;
    let refresh_exp = tokens
        .refresh_token_expire_time
        .expect("refresh expiry")
        .seconds;
    assert!(
        access_exp > now && access_exp <= now + 3600,
        "access token lives minutes: {access_exp} vs {now}"
    );
    assert!(
        refresh_exp > access_exp,
        "the refresh token outlives the access token"
    );

    let user = response.user.expect("user");
    assert_eq!(user.id, ids::ALICE.to_string());
    assert_eq!(user.email, "alice@acme.test");
    assert_eq!(user.role_code, "OWNER");
    assert!(user.is_active);

    let claims = segment_json(&split(&tokens.access_token).1);
    assert_eq!(claims["sub"], ids::ALICE.to_string());
    assert_eq!(claims["tid"], ids::ACME.to_string());
    assert_eq!(claims["role"], "OWNER");
    assert_eq!(
        claims["perms"].as_array().map(Vec::len),
        Some(ALL_PERMISSIONS.len())
    );
    assert_eq!(claims["iss"], "codeops-identity");
    assert_eq!(claims["aud"], "codeops");
    assert!(claims["jti"].is_string());
    let text = claims.to_string();
    assert!(
        !text.contains("$2") && !text.contains("password"),
        "the token carries no secret: {text}"
    );
}

#[tokio::test]
async fn login_sets_last_login_at() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    // Dan has never logged in (seeds).
    let before: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_login_at FROM core.users WHERE id = $1")
            .bind(ids::DAN)
            .fetch_one(&pool)
            .await
            .expect("last_login_at");
    assert!(before.is_none());
    let response = app
        .login_response("acme", "dan@acme.test", PASSWORD)
        .await
        .expect("login");
    let after: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_login_at FROM core.users WHERE id = $1")
            .bind(ids::DAN)
            .fetch_one(&pool)
            .await
            .expect("last_login_at");
    let after = after.expect("last_login_at is set");
    assert!((chrono::Utc::now() - after).num_seconds().abs() < 60);
    assert!(response.user.expect("user").last_login_time.is_some());
}

#[tokio::test]
async fn login_audits_login_with_request_id_ip_and_user_agent() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let rid = new_request_id("login");
    let response = app
        .auth()
        .login(anonymous(
            login_request("acme", "alice@acme.test", PASSWORD),
            &rid,
        ))
        .await
        .expect("login");
    assert_eq!(
        response
            .metadata()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
        Some(rid.as_str()),
        "the response echoes x-request-id"
    );
    let refresh = response.into_inner().tokens.expect("tokens").refresh_token;
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "LOGIN", Some(ids::ALICE), "user", ids::ALICE);
    assert_eq!(row.tenant_id, ids::ACME);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.actor_email.as_deref(), Some("alice@acme.test"));
    assert_audit_has_no_secrets(&pool, &[PASSWORD, &refresh]).await;
}

#[tokio::test]
async fn login_email_is_case_insensitive() {
    let app = TestApp::spawn().await;
    let response = app
        .login_response("acme", "  Alice@ACME.test ", PASSWORD)
        .await
        .expect("login");
    assert_eq!(response.user.expect("user").id, ids::ALICE.to_string());
}

#[tokio::test]
async fn login_rejects_empty_fields_with_field_violations() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let before = snapshot(&pool).await;
    for (request, field) in [
        (
            login_request("", "alice@acme.test", PASSWORD),
            "tenant_slug",
        ),
        (login_request("acme", "", PASSWORD), "email"),
        (login_request("acme", "alice@acme.test", ""), "password"),
    ] {
        expect_invalid(app.auth().login(request).await, field);
    }
    expect_invalid(
        app.auth()
            .login(login_request(&"a".repeat(256), "alice@acme.test", PASSWORD))
            .await,
        "tenant_slug",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn login_rejects_a_password_longer_than_72_bytes_instead_of_truncating() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    // A password whose first 72 bytes are all a truncating bcrypt would read.
    let long = format!("{}-and-more", "0123456789".repeat(8));
    let short: String = long.chars().take(72).collect();
    app.auth()
        .change_password(bearer(
            ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: short.clone(),
            },
            &alice,
        ))
        .await
        .expect("72-byte passwords are allowed");
    expect_invalid(
        app.auth()
            .login(login_request("acme", "alice@acme.test", &long))
            .await,
        "password",
    );
    app.login("acme", "alice@acme.test", &short).await;
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_issues_a_working_access_token() {
    let app = TestApp::spawn().await;
    let (_, refresh) = login_pair(&app, "acme", "carol@acme.test").await;
    let tokens = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: refresh.clone(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .tokens
        .expect("tokens");
    assert_ne!(
        tokens.refresh_token, refresh,
        "refresh rotates the refresh token"
    );
    assert_eq!(tokens.token_type, "Bearer");
    let me = app
        .auth()
        .get_current_user(bearer(GetCurrentUserRequest {}, &tokens.access_token))
        .await
        .expect("the new access token works")
        .into_inner();
    assert_eq!(me.id, ids::CAROL.to_string());
    // The successor refreshes again.
    app.auth()
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token,
        })
        .await
        .expect("the rotated refresh token works once");
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (_, refresh) = login_pair(&app, "acme", "carol@acme.test").await;
    let dump: Vec<String> = sqlx::query_scalar(
        "SELECT t::text FROM core.refresh_tokens t UNION ALL SELECT u::text FROM core.users u",
    )
    .fetch_all(&pool)
    .await
    .expect("dump");
    let secret = refresh.split('.').next_back().expect("secret part");
    assert!(
        dump.iter().all(|row| !row.contains(secret)),
        "the refresh token is stored in clear"
    );
}

#[tokio::test]
async fn refresh_with_a_malformed_or_unknown_token_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let (_, refresh) = login_pair(&app, "acme", "carol@acme.test").await;
    let tenant_part = refresh.split('.').next().expect("tenant part");
    for token in [
        String::new(),
        "garbage".into(),
        format!("{tenant_part}.{}", "A".repeat(43)),
        format!(
            "{}.{}",
            "0".repeat(32),
            refresh.split('.').next_back().unwrap()
        ),
    ] {
        expect_code(
            app.auth()
                .refresh(RefreshRequest {
                    refresh_token: token,
                })
                .await,
            Code::Unauthenticated,
        );
    }
}

#[tokio::test]
async fn logout_revokes_the_session_and_audits_logout() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (access, first) = login_pair(&app, "acme", "bob@acme.test").await;
    // Rotated once: still one session, counted once.
    let refresh = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: first,
        })
        .await
        .expect("refresh")
        .into_inner()
        .tokens
        .expect("tokens")
        .refresh_token;
    let rid = new_request_id("logout");
    let response = app
        .auth()
        .logout(call(
            LogoutRequest {
                refresh_token: refresh.clone(),
            },
            &access,
            &rid,
        ))
        .await
        .expect("logout")
        .into_inner();
    assert_eq!(response.revoked_sessions, 1);
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: refresh.clone(),
            })
            .await,
        Code::Unauthenticated,
    );
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "LOGOUT", Some(ids::BOB), "user", ids::BOB);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_audit_has_no_secrets(&pool, &[&refresh, &access, PASSWORD]).await;
}

#[tokio::test]
async fn logout_without_a_token_revokes_every_session_of_the_caller() {
    let app = TestApp::spawn().await;
    let (access, first) = login_pair(&app, "acme", "bob@acme.test").await;
    let (_, second) = login_pair(&app, "acme", "bob@acme.test").await;
    let (_, carols) = login_pair(&app, "acme", "carol@acme.test").await;
    let response = app
        .auth()
        .logout(bearer(LogoutRequest::default(), &access))
        .await
        .expect("logout")
        .into_inner();
    assert_eq!(response.revoked_sessions, 2);
    for token in [first, second] {
        expect_code(
            app.auth()
                .refresh(RefreshRequest {
                    refresh_token: token,
                })
                .await,
            Code::Unauthenticated,
        );
    }
    app.auth()
        .refresh(RefreshRequest {
            refresh_token: carols,
        })
        .await
        .expect("another user's session is untouched");
}

#[tokio::test]
async fn logout_with_another_users_refresh_token_revokes_nothing() {
    let app = TestApp::spawn().await;
    let (bobs_access, _) = login_pair(&app, "acme", "bob@acme.test").await;
    let (_, carols_refresh) = login_pair(&app, "acme", "carol@acme.test").await;
    let response = app
        .auth()
        .logout(bearer(
            LogoutRequest {
                refresh_token: carols_refresh.clone(),
            },
            &bobs_access,
        ))
        .await
        .expect("logout")
        .into_inner();
    assert_eq!(response.revoked_sessions, 0);
    app.auth()
        .refresh(RefreshRequest {
            refresh_token: carols_refresh,
        })
        .await
        .expect("carol's session survives bob's logout");
}

#[tokio::test]
async fn change_password_replaces_the_password_revokes_sessions_and_audits() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (access, refresh) = login_pair(&app, "acme", "carol@acme.test").await;
    let hash_before: String =
        sqlx::query_scalar("SELECT password_hash FROM core.users WHERE id = $1")
            .bind(ids::CAROL)
            .fetch_one(&pool)
            .await
            .expect("hash");
    let rid = new_request_id("chpw");
    let response = app
        .auth()
        .change_password(call(
            ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: NEW_PASSWORD.into(),
            },
            &access,
            &rid,
        ))
        .await
        .expect("change password")
        .into_inner();
    assert_eq!(response.revoked_sessions, 1);
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: refresh.clone(),
            })
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.login_response("acme", "carol@acme.test", PASSWORD)
            .await,
        Code::Unauthenticated,
    );
    app.login("acme", "carol@acme.test", NEW_PASSWORD).await;

    let row = the_audit_row(&pool, &rid).await;
    assert_audit(
        &row,
        "PASSWORD_CHANGED",
        Some(ids::CAROL),
        "user",
        ids::CAROL,
    );
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    let hash_after: String =
        sqlx::query_scalar("SELECT password_hash FROM core.users WHERE id = $1")
            .bind(ids::CAROL)
            .fetch_one(&pool)
            .await
            .expect("hash");
    assert!(hash_after.starts_with("$2"), "stored as bcrypt");
    assert_audit_has_no_secrets(
        &pool,
        &[PASSWORD, NEW_PASSWORD, &refresh, &hash_before, &hash_after],
    )
    .await;
}

#[tokio::test]
async fn change_password_with_a_wrong_current_password_is_invalid_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let carol = app.login_seeded("acme", "carol@acme.test").await;
    let before = snapshot(&pool).await;
    expect_invalid(
        app.auth()
            .change_password(bearer(
                ChangePasswordRequest {
                    current_password: "not-my-password".into(),
                    new_password: NEW_PASSWORD.into(),
                },
                &carol,
            ))
            .await,
        "current_password",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
    app.login("acme", "carol@acme.test", PASSWORD).await;
}

#[tokio::test]
async fn change_password_rejects_weak_empty_and_over_long_new_passwords() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let carol = app.login_seeded("acme", "carol@acme.test").await;
    let before = snapshot(&pool).await;
    for weak in [
        String::new(),
        "short1".to_owned(),
        "aaaaaaaaaaaaaaaa".to_owned(),
        "carol@acme.test".to_owned(),
        "x".repeat(73),
        // 73 bytes in 37 characters: bytes count, not characters.
        format!("{}a", "é".repeat(36)),
        // The current password again.
        PASSWORD.to_owned(),
    ] {
        expect_invalid(
            app.auth()
                .change_password(bearer(
                    ChangePasswordRequest {
                        current_password: PASSWORD.into(),
                        new_password: weak.clone(),
                    },
                    &carol,
                ))
                .await,
            "new_password",
        );
    }
    expect_invalid(
        app.auth()
            .change_password(bearer(
                ChangePasswordRequest {
                    current_password: String::new(),
                    new_password: NEW_PASSWORD.into(),
                },
                &carol,
            ))
            .await,
        "current_password",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn get_current_user_returns_the_caller() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let me = app
        .auth()
        .get_current_user(bearer(GetCurrentUserRequest {}, &dan))
        .await
        .expect("current user")
        .into_inner();
    assert_eq!(me.id, ids::DAN.to_string());
    assert_eq!(me.email, "dan@acme.test");
    assert_eq!(me.role_code, "VIEWER");
    assert_eq!(me.manager_id, ids::BOB.to_string());
    assert!(!me.etag.is_empty());
}

#[tokio::test]
async fn authenticated_auth_methods_need_a_token() {
    let app = TestApp::spawn().await;
    expect_code(
        app.auth().get_current_user(GetCurrentUserRequest {}).await,
        Code::Unauthenticated,
    );
    expect_code(
        app.auth().logout(LogoutRequest::default()).await,
        Code::Unauthenticated,
    );
    expect_code(
        app.auth()
            .change_password(ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: NEW_PASSWORD.into(),
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn get_public_keys_publishes_the_key_access_tokens_are_signed_with() {
    let app = TestApp::spawn().await;
    let keys = app
        .auth()
        .get_public_keys(GetPublicKeysRequest {})
        .await
        .expect("public keys need no token")
        .into_inner();
    assert_eq!(keys.issuer, "codeops-identity");
    assert_eq!(keys.audience, "codeops");
    assert_eq!(keys.keys.len(), 1);
    let key = &keys.keys[0];
    assert_eq!(
        (key.kty.as_str(), key.crv.as_str(), key.alg.as_str()),
        ("OKP", "Ed25519", "EdDSA")
    );
    assert_eq!(key.key_use, "sig");
    assert_eq!(key.x.len(), 43, "base64url of 32 bytes");
    assert!(key.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(!key.pem.contains("PRIVATE"));

    let token = app.login_seeded("acme", "alice@acme.test").await;
    let header = segment_json(&split(&token).0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(
        header["kid"],
        key.kid.as_str(),
        "tokens name the published key"
    );
}

#[tokio::test]
async fn a_failed_login_writes_no_audit_row() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let rid = new_request_id("failed-login");
    expect_code(
        app.auth()
            .login(anonymous(
                login_request("acme", "alice@acme.test", "wrong-password"),
                &rid,
            ))
            .await,
        Code::Unauthenticated,
    );
    assert!(audit_rows(&pool, &rid).await.is_empty());
    let last_login: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_login_at FROM core.users WHERE id = $1")
            .bind(ids::ALICE)
            .fetch_one(&pool)
            .await
            .expect("last_login_at");
    assert!(
        last_login.is_some_and(|t| (chrono::Utc::now() - t).num_hours() >= 1),
        "a failed login does not touch last_login_at"
    );
}

#[tokio::test]
async fn repeated_wrong_current_passwords_are_throttled() {
    let app = TestApp::spawn().await;
    let carol = app.login_seeded("acme", "carol@acme.test").await;
    let change = |current: &str| {
        bearer(
            ChangePasswordRequest {
                current_password: current.to_owned(),
                new_password: NEW_PASSWORD.into(),
            },
            &carol,
        )
    };
    for _ in 0..5 {
        expect_invalid(
            app.auth().change_password(change("guess-number-n")).await,
            "current_password",
        );
    }
    expect_code(
        app.auth().change_password(change("guess-number-6")).await,
        Code::ResourceExhausted,
    );
    expect_code(
        app.auth().change_password(change(PASSWORD)).await,
        Code::ResourceExhausted,
    );
    app.login("acme", "carol@acme.test", PASSWORD).await;
}
