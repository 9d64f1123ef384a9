//! Access and refresh tokens: forged, expired, tampered, unsigned, wrong
//! algorithm, wrong audience or issuer, revoked, reused; who may log in at
//! all, what failures say, and the failed-login throttle.

use std::time::Duration;

use codeops_proto::identity::{
    CancelTenantRequest, CreateUserRequest, DeactivateUserRequest, GetCurrentUserRequest,
    GetPublicKeysRequest, ListUsersRequest, LogoutRequest, RefreshRequest, SuspendTenantRequest,
};
use codeops_tenant::{KeyPair, Subject, TokenSettings, TokenSigner, TokenVerifier};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use crate::common::{PASSWORD, TestApp, bearer, ids, operator};
use crate::identity::jwt::{
    Ed25519, b64url, json_segment, segment_json, sign_eddsa, sign_hs256, split, unix_now, unsigned,
};
use crate::identity::support::*;

/// Claims the service would issue to alice, valid now.
fn alice_claims() -> Value {
    let now = unix_now();
    json!({
        "sub": ids::ALICE, "tid": ids::ACME, "role": "OWNER", "perms": ALL_PERMISSIONS,
        "name": "Alice Anders", "email": "alice@acme.test",
        "iss": "codeops-identity", "aud": "codeops",
        "exp": now + 600, "nbf": now - 10, "iat": now - 10, "jti": Uuid::new_v4(),
        "sid": Uuid::new_v4(),
    })
}

fn eddsa_header(kid: &str) -> Value {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})
}

fn alice_subject() -> Subject<'static> {
    Subject {
        user_id: ids::ALICE,
        tenant_id: ids::ACME,
        role: "OWNER",
        permissions: ALL_PERMISSIONS.iter().map(|p| (*p).to_owned()).collect(),
        name: "Alice Anders".into(),
        email: "alice@acme.test".into(),
        session_id: Uuid::new_v4(),
    }
}

async fn current_user(
    channel: tonic::transport::Channel,
    token: &str,
) -> Result<String, tonic::Status> {
    codeops_proto::identity::auth_service_client::AuthServiceClient::new(channel)
        .get_current_user(bearer(GetCurrentUserRequest {}, token))
        .await
        .map(|r| r.into_inner().id)
}

async fn list_users(
    channel: tonic::transport::Channel,
    token: &str,
) -> Result<usize, tonic::Status> {
    codeops_proto::identity::user_service_client::UserServiceClient::new(channel)
        .list_users(bearer(ListUsersRequest::default(), token))
        .await
        .map(|r| r.into_inner().users.len())
}

impl KeyedIdentity {
    async fn forge(&self, header: &Value, claims: &Value) -> String {
        sign_eddsa(&Ed25519::from_key_pair(&self.key), header, claims)
    }

    fn kid(&self) -> String {
        self.key.public_key().kid()
    }
}

#[test]
fn the_forging_key_is_the_service_key_pair() {
    let pair = KeyPair::generate().expect("key pair");
    assert_eq!(
        b64url(&Ed25519::from_key_pair(&pair).public_key()),
        pair.public_key().x()
    );
}

#[tokio::test]
async fn a_hand_signed_token_with_valid_claims_is_accepted() {
    // The control for every forged-token test below: the helpers make
    // tokens the service accepts, so a refusal is the service's doing.
    let identity = KeyedIdentity::spawn().await;
    let token = identity
        .forge(&eddsa_header(&identity.kid()), &alice_claims())
        .await;
    assert_eq!(
        current_user(identity.channel(), &token)
            .await
            .expect("accepted"),
        ids::ALICE.to_string()
    );
    assert_eq!(
        list_users(identity.channel(), &token)
            .await
            .expect("accepted"),
        4
    );
}

#[test]
fn the_verifier_refuses_an_expired_token_it_would_otherwise_accept() {
    let pair = KeyPair::generate().expect("key pair");
    let key = Ed25519::from_key_pair(&pair);
    let verifier =
        TokenVerifier::new(&[pair.public_key()], &TokenSettings::default()).expect("verifier");
    let header = eddsa_header(&pair.public_key().kid());
    let valid = sign_eddsa(&key, &header, &alice_claims());
    assert!(
        verifier.verify(&valid).is_ok(),
        "control: a current token verifies"
    );
    let mut claims = alice_claims();
    let now = unix_now();
    claims["exp"] = json!(now - 1000);
    claims["iat"] = json!(now - 2000);
    claims["nbf"] = json!(now - 2000);
    let expired = sign_eddsa(&key, &header, &claims);
    assert!(
        verifier.verify(&expired).is_err(),
        "an expired token verifies"
    );
}

// ---------------------------------------------------------------------------
// Refused access tokens

#[tokio::test]
async fn an_expired_access_token_is_unauthenticated() {
    let identity = KeyedIdentity::spawn().await;
    let mut claims = alice_claims();
    let now = unix_now();
    claims["exp"] = json!(now - 1000);
    claims["iat"] = json!(now - 2000);
    claims["nbf"] = json!(now - 2000);
    let token = identity
        .forge(&eddsa_header(&identity.kid()), &claims)
        .await;
    expect_code(
        current_user(identity.channel(), &token).await,
        Code::Unauthenticated,
    );
    expect_code(
        list_users(identity.channel(), &token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn an_access_token_that_is_not_yet_valid_is_unauthenticated() {
    let identity = KeyedIdentity::spawn().await;
    let mut claims = alice_claims();
    let now = unix_now();
    claims["nbf"] = json!(now + 1000);
    claims["iat"] = json!(now + 1000);
    claims["exp"] = json!(now + 2000);
    let token = identity
        .forge(&eddsa_header(&identity.kid()), &claims)
        .await;
    expect_code(
        list_users(identity.channel(), &token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn an_access_token_for_another_audience_is_unauthenticated() {
    let identity = KeyedIdentity::spawn().await;
    let signer = TokenSigner::new(
        &identity.key,
        TokenSettings {
            audience: "billing".into(),
            ..TokenSettings::default()
        },
    )
    .expect("signer");
    let (token, _) = signer.sign(alice_subject()).expect("sign");
    expect_code(
        current_user(identity.channel(), &token).await,
        Code::Unauthenticated,
    );
    expect_code(
        list_users(identity.channel(), &token).await,
        Code::Unauthenticated,
    );
    // Control: the same key and claims for the right audience pass.
    let (good, _) = TokenSigner::new(&identity.key, TokenSettings::default())
        .expect("signer")
        .sign(alice_subject())
        .expect("sign");
    list_users(identity.channel(), &good)
        .await
        .expect("the right audience is accepted");
}

#[tokio::test]
async fn an_access_token_from_another_issuer_is_unauthenticated() {
    let identity = KeyedIdentity::spawn().await;
    let signer = TokenSigner::new(
        &identity.key,
        TokenSettings {
            issuer: "someone-else".into(),
            ..TokenSettings::default()
        },
    )
    .expect("signer");
    let (token, _) = signer.sign(alice_subject()).expect("sign");
    expect_code(
        list_users(identity.channel(), &token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn an_access_token_missing_a_required_claim_is_unauthenticated() {
    let identity = KeyedIdentity::spawn().await;
    for claim in ["aud", "iss", "exp", "nbf", "sub", "tid", "sid"] {
        let mut claims = alice_claims();
        claims.as_object_mut().expect("object").remove(claim);
        let token = identity
            .forge(&eddsa_header(&identity.kid()), &claims)
            .await;
        let status = expect_code(
            list_users(identity.channel(), &token).await,
            Code::Unauthenticated,
        );
        assert!(!status.message().is_empty(), "without {claim}");
    }
}

#[tokio::test]
async fn a_tampered_payload_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    // Control: the untouched token works for a read.
    list_users(app.channel(codeops::suite::Service::Identity), &dan)
        .await
        .expect("dan reads users");
    let (header, payload, signature) = split(&dan);
    let mut claims = segment_json(&payload);
    claims["role"] = json!("OWNER");
    claims["perms"] = json!(ALL_PERMISSIONS);
    let tampered = format!("{header}.{}.{signature}", json_segment(&claims));
    let channel = app.channel(codeops::suite::Service::Identity);
    expect_code(
        current_user(channel.clone(), &tampered).await,
        Code::Unauthenticated,
    );
    expect_code(
        app.users()
            .create_user(bearer(
                CreateUserRequest {
                    user: Some(user_message("mallory@acme.test", roles::OWNER)),
                    password: NEW_PASSWORD.into(),
                    ..Default::default()
                },
                &tampered,
            ))
            .await,
        Code::Unauthenticated,
    );
    // A one-claim change is enough: another tenant.
    let mut claims = segment_json(&payload);
    claims["tid"] = json!(ids::GLOBEX);
    let tampered = format!("{header}.{}.{signature}", json_segment(&claims));
    expect_code(list_users(channel, &tampered).await, Code::Unauthenticated);
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let other = KeyPair::generate().expect("key pair");
    let (token, _) = TokenSigner::new(&other, TokenSettings::default())
        .expect("signer")
        .sign(alice_subject())
        .expect("sign");
    expect_code(
        list_users(app.channel(codeops::suite::Service::Identity), &token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_the_published_kid_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let kid = app
        .auth()
        .get_public_keys(GetPublicKeysRequest {})
        .await
        .expect("keys")
        .into_inner()
        .keys[0]
        .kid
        .clone();
    let other = Ed25519::from_key_pair(&KeyPair::generate().expect("key pair"));
    let token = sign_eddsa(&other, &eddsa_header(&kid), &alice_claims());
    expect_code(
        list_users(app.channel(codeops::suite::Service::Identity), &token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_unauthenticated() {
    let identity = KeyedIdentity::spawn().await;
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "none", "typ": "JWT", "kid": identity.kid()}),
        json!({"alg": "None", "typ": "JWT", "kid": identity.kid()}),
    ] {
        let token = unsigned(&header, &alice_claims());
        expect_code(
            list_users(identity.channel(), &token).await,
            Code::Unauthenticated,
        );
    }
    // A real signature with the header's alg rewritten to none.
    let real = identity
        .forge(&eddsa_header(&identity.kid()), &alice_claims())
        .await;
    let (_, payload, signature) = split(&real);
    let token = format!(
        "{}.{payload}.{signature}",
        json_segment(&json!({"alg": "none", "kid": identity.kid()}))
    );
    expect_code(
        list_users(identity.channel(), &token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_public_key_is_unauthenticated() {
    // The algorithm-confusion attack: HMAC keyed with the published key.
    let identity = KeyedIdentity::spawn().await;
    let public = identity.key.public_key();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": identity.kid()});
    for secret in [
        public.to_pem().into_bytes(),
        public.x().into_bytes(),
        b"secret".to_vec(),
    ] {
        let token = sign_hs256(&secret, &header, &alice_claims());
        expect_code(
            list_users(identity.channel(), &token).await,
            Code::Unauthenticated,
        );
    }
    let token = sign_hs256(
        b"secret",
        &json!({"alg": "HS256", "typ": "JWT"}),
        &alice_claims(),
    );
    expect_code(
        list_users(identity.channel(), &token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn a_token_carrying_its_own_key_in_the_header_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let attacker = KeyPair::generate().expect("key pair");
    let x = attacker.public_key().x();
    let key = Ed25519::from_key_pair(&attacker);
    for header in [
        json!({"alg": "EdDSA", "typ": "JWT", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}}),
        json!({"alg": "EdDSA", "typ": "JWT", "jku": "https://attacker.test/jwks.json"}),
        json!({"alg": "EdDSA", "typ": "JWT", "kid": attacker.public_key().kid(), "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}}),
    ] {
        let token = sign_eddsa(&key, &header, &alice_claims());
        expect_code(
            list_users(app.channel(codeops::suite::Service::Identity), &token).await,
            Code::Unauthenticated,
        );
    }
}

#[tokio::test]
async fn malformed_authorization_values_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let channel = app.channel(codeops::suite::Service::Identity);
    for value in [
        String::new(),
        alice.clone(),
        format!("Basic {alice}"),
        "Bearer".to_owned(),
        "Bearer garbage".to_owned(),
        "Bearer a.b.c".to_owned(),
        format!("Bearer {alice}x"),
    ] {
        let mut request = tonic::Request::new(ListUsersRequest::default());
        if !value.is_empty() {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii"));
        }
        let result =
            codeops_proto::identity::user_service_client::UserServiceClient::new(channel.clone())
                .list_users(request)
                .await;
        expect_code(result, Code::Unauthenticated);
    }
    // Control: the scheme is case-insensitive and the token itself is good.
    let mut request = tonic::Request::new(ListUsersRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("bearer {alice}").parse().expect("ascii"),
    );
    codeops_proto::identity::user_service_client::UserServiceClient::new(channel)
        .list_users(request)
        .await
        .expect("a good token is accepted");
}

#[tokio::test]
async fn a_deactivated_users_access_token_no_longer_reaches_get_current_user() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    app.users()
        .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::DAN) }, &alice))
        .await
        .expect("deactivate dan");
    expect_code(
        app.auth()
            .get_current_user(bearer(GetCurrentUserRequest {}, &dan))
            .await,
        Code::Unauthenticated,
    );
}

// ---------------------------------------------------------------------------
// Refresh tokens

#[tokio::test]
async fn a_refresh_token_revoked_by_logout_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let (access, refresh) = login_pair(&app, "acme", "carol@acme.test").await;
    app.auth()
        .logout(bearer(
            LogoutRequest {
                refresh_token: refresh.clone(),
            },
            &access,
        ))
        .await
        .expect("logout");
    let status = expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
    );
    assert!(
        !status.message().contains("reuse"),
        "a revoked token is not a reuse: {}",
        status.message()
    );
}

#[tokio::test]
async fn a_reused_refresh_token_is_unauthenticated_and_revokes_its_successor() {
    let app = TestApp::spawn().await;
    let (_, first) = login_pair(&app, "acme", "carol@acme.test").await;
    let (_, other_session) = login_pair(&app, "acme", "carol@acme.test").await;
    let successor = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: first.clone(),
        })
        .await
        .expect("first refresh")
        .into_inner()
        .tokens
        .expect("tokens")
        .refresh_token;
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: first,
            })
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: successor,
            })
            .await,
        Code::Unauthenticated,
    );
    // Only that session ends: another login of the same user still refreshes.
    app.auth()
        .refresh(RefreshRequest {
            refresh_token: other_session,
        })
        .await
        .expect("another session is untouched");
}

#[tokio::test]
async fn a_deactivated_user_cannot_log_in_or_refresh() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let (_, refresh) = login_pair(&app, "acme", "dan@acme.test").await;
    app.users()
        .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::DAN) }, &alice))
        .await
        .expect("deactivate dan");
    expect_code(
        app.login_response("acme", "dan@acme.test", PASSWORD).await,
        Code::Unauthenticated,
    );
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn refresh_checks_that_the_user_is_still_active() {
    // Deactivated behind the service's back: the token was never revoked,
    // so only the check at refresh time stops it.
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (_, refresh) = login_pair(&app, "acme", "dan@acme.test").await;
    sqlx::query("UPDATE core.users SET is_active = false WHERE id = $1")
        .bind(ids::DAN)
        .execute(&pool)
        .await
        .expect("deactivate in SQL");
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn a_suspended_tenant_cannot_log_in_or_refresh() {
    let app = TestApp::spawn().await;
    let (_, refresh) = login_pair(&app, "globex", "frank@globex.test").await;
    app.tenants()
        .suspend_tenant(operator(SuspendTenantRequest {
            id: id(ids::GLOBEX),
            reason: "unpaid".into(),
        }))
        .await
        .expect("suspend globex");
    expect_code(
        app.login_response("globex", "frank@globex.test", PASSWORD)
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.login_response("globex", "erin@globex.test", PASSWORD)
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
    );
    // The other tenant is unaffected.
    app.login_seeded("acme", "alice@acme.test").await;
}

#[tokio::test]
async fn a_cancelled_tenant_cannot_log_in_or_refresh() {
    let app = TestApp::spawn().await;
    let (_, refresh) = login_pair(&app, "globex", "frank@globex.test").await;
    app.tenants()
        .cancel_tenant(operator(CancelTenantRequest {
            id: id(ids::GLOBEX),
            reason: "closed".into(),
        }))
        .await
        .expect("cancel globex");
    expect_code(
        app.login_response("globex", "frank@globex.test", PASSWORD)
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn refresh_checks_that_the_tenant_is_still_open() {
    // Suspended behind the service's back: no token was revoked.
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (_, refresh) = login_pair(&app, "globex", "frank@globex.test").await;
    sqlx::query("UPDATE core.tenants SET status = 'SUSPENDED' WHERE id = $1")
        .bind(ids::GLOBEX)
        .execute(&pool)
        .await
        .expect("suspend in SQL");
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
    );
}

// ---------------------------------------------------------------------------
// Login failures

#[tokio::test]
async fn every_login_failure_gives_the_same_unauthenticated_message() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    app.users()
        .deactivate_user(bearer(DeactivateUserRequest { id: id(ids::DAN) }, &alice))
        .await
        .expect("deactivate dan");
    app.tenants()
        .suspend_tenant(operator(SuspendTenantRequest {
            id: id(ids::GLOBEX),
            reason: String::new(),
        }))
        .await
        .expect("suspend globex");
    let mut messages = Vec::new();
    for (case, slug, email, password) in [
        ("unknown e-mail", "acme", "nobody@acme.test", PASSWORD),
        (
            "wrong password",
            "acme",
            "carol@acme.test",
            "wrong-password",
        ),
        ("deactivated user", "acme", "dan@acme.test", PASSWORD),
        ("suspended tenant", "globex", "frank@globex.test", PASSWORD),
        ("unknown tenant", "initech", "alice@acme.test", PASSWORD),
        (
            "user of another tenant",
            "globex",
            "bob@acme.test",
            PASSWORD,
        ),
    ] {
        let status = expect_code(
            app.login_response(slug, email, password).await,
            Code::Unauthenticated,
        );
        // One ErrorInfo with one reason for every cause: nothing that
        // tells them apart.
        let details = tonic_types::StatusExt::get_error_details_vec(&status);
        assert_eq!(details.len(), 1, "{case}: only the ErrorInfo");
        let info = tonic_types::StatusExt::get_details_error_info(&status).expect("error info");
        assert_eq!(info.reason, "BAD_CREDENTIALS", "{case}");
        assert!(info.metadata.is_empty(), "{case}: no metadata");
        messages.push((case, status.message().to_owned()));
    }
    let first = &messages[0].1;
    for (case, message) in &messages {
        assert_eq!(
            message, first,
            "{case} says something else than unknown e-mail"
        );
    }
}

#[tokio::test]
async fn six_consecutive_wrong_passwords_are_throttled() {
    let app = TestApp::spawn().await;
    for attempt in 1..=5 {
        let status = expect_code(
            app.login_response("acme", "carol@acme.test", "wrong-password")
                .await,
            Code::Unauthenticated,
        );
        assert!(!status.message().is_empty(), "attempt {attempt}");
    }
    expect_code(
        app.login_response("acme", "carol@acme.test", "wrong-password")
            .await,
        Code::ResourceExhausted,
    );
    // While locked, even the right password is refused.
    expect_code(
        app.login_response("acme", "carol@acme.test", PASSWORD)
            .await,
        Code::ResourceExhausted,
    );
    // Other accounts are not locked.
    app.login_seeded("acme", "bob@acme.test").await;
}

#[tokio::test]
async fn wrong_passwords_for_an_unknown_account_are_throttled_too() {
    let app = TestApp::spawn().await;
    for _ in 1..=5 {
        expect_code(
            app.login_response("acme", "ghost@acme.test", "wrong-password")
                .await,
            Code::Unauthenticated,
        );
    }
    expect_code(
        app.login_response("acme", "ghost@acme.test", "wrong-password")
            .await,
        Code::ResourceExhausted,
    );
}

#[tokio::test]
async fn a_successful_login_resets_the_failure_count() {
    let app = TestApp::spawn().await;
    for _ in 0..4 {
        expect_code(
            app.login_response("acme", "carol@acme.test", "wrong-password")
                .await,
            Code::Unauthenticated,
        );
    }
    app.login_seeded("acme", "carol@acme.test").await;
    for _ in 0..4 {
        expect_code(
            app.login_response("acme", "carol@acme.test", "wrong-password")
                .await,
            Code::Unauthenticated,
        );
    }
    app.login_seeded("acme", "carol@acme.test").await;
}

#[tokio::test]
async fn the_throttle_lock_expires() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        expect_code(
            app.login_response("acme", "carol@acme.test", "wrong-password")
                .await,
            Code::Unauthenticated,
        );
    }
    expect_code(
        app.login_response("acme", "carol@acme.test", PASSWORD)
            .await,
        Code::ResourceExhausted,
    );
    // The first lock-out lasts about a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.login_seeded("acme", "carol@acme.test").await;
}

#[tokio::test]
async fn an_expired_refresh_token_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let (_, refresh) = login_pair(&app, "acme", "carol@acme.test").await;
    sqlx::query("UPDATE core.refresh_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1")
        .bind(ids::CAROL)
        .execute(&pool)
        .await
        .expect("expire the refresh token");
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn refresh_issues_a_token_with_the_users_current_role() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let (_, refresh) = login_pair(&app, "acme", "dan@acme.test").await;
    app.users()
        .assign_role(bearer(
            codeops_proto::identity::AssignRoleRequest {
                user_id: id(ids::DAN),
                role_id: id(roles::PRODUCT_LEAD),
            },
            &alice,
        ))
        .await
        .expect("promote dan");
    let tokens = app
        .auth()
        .refresh(RefreshRequest {
            refresh_token: refresh,
        })
        .await
        .expect("refresh")
        .into_inner()
        .tokens
        .expect("tokens");
    let claims = segment_json(&split(&tokens.access_token).1);
    assert_eq!(claims["role"], "PRODUCT_LEAD");
    assert!(
        claims["perms"]
            .as_array()
            .expect("perms")
            .contains(&json!("team.manage"))
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_succeed_at_most_once() {
    let app = TestApp::spawn().await;
    let (_, refresh) = login_pair(&app, "acme", "carol@acme.test").await;
    let calls = (0..6).map(|_| {
        let mut auth = app.auth();
        let refresh_token = refresh.clone();
        tokio::spawn(async move { auth.refresh(RefreshRequest { refresh_token }).await })
    });
    let mut successes = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        match call.await.expect("task") {
            Ok(response) => {
                successes.push(response.into_inner().tokens.expect("tokens").refresh_token)
            }
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        }
    }
    assert_eq!(
        successes.len(),
        1,
        "one refresh token rotated more than once"
    );
    // The others were reuses: the session, successor included, is gone.
    expect_code(
        app.auth()
            .refresh(RefreshRequest {
                refresh_token: successes.remove(0),
            })
            .await,
        Code::Unauthenticated,
    );
}
