//! AuthService: login, refresh-token rotation with reuse detection, logout,
//! password change, the current user and the public keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use codeops_platform::convert::timestamp;
use codeops_platform::validate::{SHORT_TEXT, normalize_email};
use codeops_platform::{
    Actor, ApiError, AuditAction, AuditEntry, Problem, TenantTx, Violations, WriteTx,
};
use codeops_proto::identity::auth_service_server::AuthService;
use codeops_proto::identity::{
    ChangePasswordRequest, ChangePasswordResponse, GetCurrentUserRequest, GetPublicKeysRequest,
    GetPublicKeysResponse, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, PublicKey,
    RefreshRequest, RefreshResponse, TokenPair, User,
};
use codeops_tenant::{RequestExt, RequestMeta, Subject};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Svc;
use crate::password::{Lane, MAX_PASSWORD_BYTES, check_new_password};
use crate::throttle::{Failure, Who};
use crate::users::{self, UserRow, revoke_sessions};

/// Every login failure says exactly this, whatever the cause.
const BAD_CREDENTIALS: Problem =
    Problem::new("BAD_CREDENTIALS", "invalid tenant, e-mail or password");
const BAD_REFRESH: Problem = Problem::new(
    "REFRESH_TOKEN_INVALID",
    "invalid or expired refresh token; log in again",
);
const REFRESH_REUSED: Problem = Problem::new(
    "REFRESH_TOKEN_REUSED",
    "refresh token reuse detected; the session is revoked",
);
const USER_DEACTIVATED: Problem = Problem::new("USER_DEACTIVATED", "user is deactivated");

/// Tenants whose users may log in and refresh.
pub(crate) fn tenant_open(status: Option<&str>) -> bool {
    matches!(status, Some("ACTIVE") | Some("TRIAL") | None)
}

/// Refresh tokens are `<tenant id>.<256 random bits>`: the tenant part
/// routes the lookup (row-level security needs it), the rest is the secret.
/// Only the SHA-256 of the whole token is stored.
fn new_refresh_token(tenant_id: Uuid) -> Result<(String, String), ApiError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    let token = format!("{}.{}", tenant_id.simple(), URL_SAFE_NO_PAD.encode(secret));
    let hash = token_hash(&token);
    Ok((token, hash))
}

struct RefreshTokenRow {
    id: Uuid,
    user_id: Uuid,
    family_id: Uuid,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn refresh_token_tenant(token: &str) -> Option<Uuid> {
    let (tenant, secret) = token.split_once('.')?;
    (secret.len() == 43).then_some(())?;
    Uuid::try_parse(tenant).ok()
}

impl Svc {
    /// Issues an access token and a refresh token of `family`.
    async fn issue_tokens(
        &self,
        tx: &mut WriteTx,
        user: &UserRow,
        family: Uuid,
    ) -> Result<TokenPair, ApiError> {
        let (refresh_token, hash) = new_refresh_token(user.tenant_id)?;
        let refresh_expires: DateTime<Utc> = Utc::now()
            + chrono::Duration::from_std(self.config.refresh_ttl).map_err(ApiError::internal)?;
        sqlx::query!(
            "INSERT INTO core.refresh_tokens (id, tenant_id, user_id, family_id, token_hash, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            Uuid::now_v7(),
            user.tenant_id,
            user.id,
            family,
            hash,
            refresh_expires,
        )
        .execute(&mut **tx)
        .await?;
        let (access_token, exp) = self
            .config
            .signer
            .sign(Subject {
                user_id: user.id,
                tenant_id: user.tenant_id,
                role: &user.role_code,
                permissions: user.permissions.clone(),
                name: user.display_name(),
                email: user.email.clone(),
                session_id: family,
            })
            .map_err(ApiError::internal)?;
        Ok(TokenPair {
            access_token,
            access_token_expire_time: Some(prost_types::Timestamp {
                seconds: exp as i64,
                nanos: 0,
            }),
            refresh_token,
            refresh_token_expire_time: Some(timestamp(refresh_expires)),
            token_type: "Bearer".into(),
        })
    }

    async fn tenant_status(tx: &mut impl TenantTx) -> Result<Option<String>, ApiError> {
        Ok(sqlx::query_scalar!(
            "SELECT status FROM core.tenants WHERE id = $1",
            tx.tenant_id(),
        )
        .fetch_optional(&mut **tx)
        .await?
        .flatten())
    }

    async fn login(
        &self,
        req: &LoginRequest,
        meta: &RequestMeta,
    ) -> Result<LoginResponse, ApiError> {
        let mut v = Violations::new();
        // Slugs are lowercase: `ACME` is acme, for the lookup as for the
        // throttle.
        let slug = v
            .required("tenant_slug", &req.tenant_slug, SHORT_TEXT)
            .to_lowercase();
        // Normalised as stored (NFKC, lower case): a full-width or
        // upper-case spelling finds the same account and shares its throttle.
        let email = normalize_email(&v.required("email", &req.email, SHORT_TEXT));
        if req.password.is_empty() {
            v.add("password", "is required");
        } else if req.password.len() > MAX_PASSWORD_BYTES {
            v.add(
                "password",
                format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
            );
        }
        v.finish()?;

        // A refused attempt costs no database round trip and no hashing.
        let who = Who::new(&slug, &email, meta.peer_ip.as_deref());
        let lane = Lane::Client(who.addr());
        let attempt = self
            .throttle
            .attempt(who)
            .map_err(|refusal| ApiError::Status(refusal.into_status()))?;

        // Resolve the tenant through the one narrow cross-tenant path, then
        // scope the rest of the transaction to it.
        let tenant = self.db.tenant_for_login(&slug).await?;
        let mut user = None;
        let mut tenant_ok = false;
        if let Some((tenant_id, status)) = &tenant {
            tenant_ok = tenant_open(status.as_deref());
            let mut tx = self.db.read_as(&Actor::login(*tenant_id, meta)).await?;
            user = users::find_by_email(&mut tx, &email).await?;
            // Hashes of another cost than the configured one (seeded,
            // imported, or made before the cost changed) would let timing
            // tell their accounts apart: every failed check is padded to the
            // costliest hash in the tenant, whichever account is tried.
            let highest = sqlx::query_scalar!(
                r"SELECT max((regexp_match(password_hash, '^\$2[abxy]?\$(\d\d)\$'))[1]::int)
                  FROM core.users WHERE tenant_id = $1",
                tenant_id,
            )
            .fetch_one(&mut *tx)
            .await?;
            if let Some(cost) = highest.and_then(|c| u32::try_from(c).ok()) {
                self.passwords.note_stored_cost(cost);
            }
            // The read ends here: no connection is held while bcrypt runs,
            // so a burst of logins cannot drain the pool other RPCs need.
        }
        let eligible = tenant_ok && user.as_ref().is_some_and(UserRow::active);
        // Unknown account, wrong password, deactivated user and closed
        // tenant all cost the same bcrypt work (see `check_login`).
        let password_ok = self
            .passwords
            .check_login(
                lane,
                req.password.clone(),
                user.as_ref().map(|u| u.password_hash.clone()),
                eligible,
            )
            .await?;
        let user = match user {
            Some(user) if password_ok && eligible => user,
            user => {
                let failure = match (&tenant, user) {
                    (None, _) => Failure::UnknownTenant,
                    (Some(_), None) => Failure::UnknownUser,
                    _ if !password_ok => Failure::WrongPassword,
                    _ if !tenant_ok => Failure::TenantClosed,
                    _ => Failure::UserInactive,
                };
                attempt.failed(failure);
                return Err(ApiError::Unauthenticated(BAD_CREDENTIALS));
            }
        };
        // Re-hashed in the same lane while the attempt still holds its
        // address's place, so re-hashes are bounded per address like checks.
        // Best effort: a busy queue only postpones it to the next login.
        let rehashed = if self.passwords.needs_rehash(&user.password_hash) {
            match self.passwords.hash_in(lane, req.password.clone()).await {
                Ok(hash) => Some(hash),
                Err(error) => {
                    tracing::warn!(%error, "password re-hash skipped");
                    None
                }
            }
        } else {
            None
        };
        attempt.succeeded();

        let mut tx = self.db.write_as(Actor::login(user.tenant_id, meta)).await?;
        tx.authenticated(user.id, user.display_name(), user.email.clone());
        // Deactivated while the password was being checked: refused too.
        let updated = sqlx::query!(
            "UPDATE core.users SET last_login_at = now() \
             WHERE tenant_id = $1 AND id = $2 AND coalesce(is_active, false)",
            user.tenant_id,
            user.id,
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(ApiError::Unauthenticated(BAD_CREDENTIALS));
        }
        if let Some(rehashed) = rehashed {
            // Not an account change: updated_at (and so the etag) stays.
            sqlx::query!(
                "UPDATE core.users SET password_hash = $4 \
                 WHERE tenant_id = $1 AND id = $2 AND password_hash = $3",
                user.tenant_id,
                user.id,
                &user.password_hash,
                rehashed,
            )
            .execute(&mut *tx)
            .await?;
        }
        let tokens = self.issue_tokens(&mut tx, &user, Uuid::now_v7()).await?;
        let user = users::get(&mut tx, user.id).await?;
        tx.commit(AuditEntry::new(AuditAction::Login, "user", user.id).title(&user.email))
            .await?;
        Ok(LoginResponse {
            tokens: Some(tokens),
            user: Some(user.into_proto()),
        })
    }

    async fn refresh(
        &self,
        req: &RefreshRequest,
        meta: &RequestMeta,
    ) -> Result<RefreshResponse, ApiError> {
        let tenant_id = refresh_token_tenant(&req.refresh_token)
            .ok_or(ApiError::Unauthenticated(BAD_REFRESH))?;
        let mut tx = self.db.write_as(Actor::login(tenant_id, meta)).await?;
        let row = sqlx::query_as!(
            RefreshTokenRow,
            "SELECT id, user_id, family_id, expires_at, used_at, revoked_at FROM core.refresh_tokens \
             WHERE tenant_id = $1 AND token_hash = $2 FOR UPDATE",
            tenant_id,
            token_hash(&req.refresh_token),
        )
        .fetch_optional(&mut *tx)
            .await?;
        let Some(RefreshTokenRow {
            id,
            user_id,
            family_id: family,
            expires_at,
            used_at,
            revoked_at,
        }) = row
        else {
            return Err(ApiError::Unauthenticated(BAD_REFRESH));
        };
        if revoked_at.is_some() || expires_at <= Utc::now() {
            return Err(ApiError::Unauthenticated(BAD_REFRESH));
        }
        if used_at.is_some() {
            // A rotated token came back: it was stolen, or the client is
            // confused. Either way the whole session ends.
            sqlx::query!(
                "UPDATE core.refresh_tokens SET revoked_at = now() \
                 WHERE tenant_id = $1 AND family_id = $2 AND revoked_at IS NULL",
                tenant_id,
                family,
            )
            .execute(&mut *tx)
            .await?;
            if let Some(user) = users::find_by_id(&mut tx, user_id).await? {
                tx.authenticated(user.id, user.display_name(), user.email.clone());
            }
            tx.commit(
                AuditEntry::new(AuditAction::Logout, "session", family)
                    .description("refresh token presented twice: the session is revoked"),
            )
            .await?;
            tracing::warn!(%tenant_id, %user_id, "refresh token reuse: session revoked");
            return Err(ApiError::Unauthenticated(REFRESH_REUSED));
        }
        let user = users::find_by_id(&mut tx, user_id).await?;
        let tenant_ok = tenant_open(Self::tenant_status(&mut tx).await?.as_deref());
        let Some(user) = user.filter(|u| u.active() && tenant_ok) else {
            return Err(ApiError::Unauthenticated(BAD_REFRESH));
        };
        sqlx::query!(
            "UPDATE core.refresh_tokens SET used_at = now() WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            id,
        )
        .execute(&mut *tx)
        .await?;
        let tokens = self.issue_tokens(&mut tx, &user, family).await?;
        tx.authenticated(user.id, user.display_name(), user.email.clone());
        tx.commit(
            AuditEntry::new(AuditAction::Update, "session", family)
                .title(&user.email)
                .description("refresh token rotated"),
        )
        .await?;
        Ok(RefreshResponse {
            tokens: Some(tokens),
        })
    }
}

#[tonic::async_trait]
impl AuthService for Svc {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let meta = request.meta();
        Ok(Response::new(
            Svc::login(self, request.get_ref(), &meta).await?,
        ))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let meta = request.meta();
        Ok(Response::new(
            Svc::refresh(self, request.get_ref(), &meta).await?,
        ))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let ctx = request.tenant()?;
        let token = &request.get_ref().refresh_token;
        let mut tx = self.db.write(ctx).await?;
        let revoked = if token.is_empty() {
            revoke_sessions(&mut tx, ctx.user_id).await?
        } else {
            // Only a session of the caller; anything else is not found.
            // One family is one session, however often it was rotated.
            let sessions = sqlx::query_scalar!(
                "WITH revoked AS ( \
                     UPDATE core.refresh_tokens SET revoked_at = now() \
                     WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL AND family_id = ( \
                         SELECT family_id FROM core.refresh_tokens \
                         WHERE tenant_id = $1 AND user_id = $2 AND token_hash = $3) \
                     RETURNING family_id) \
                 SELECT count(DISTINCT family_id) AS \"sessions!\" FROM revoked",
                tx.tenant_id(),
                ctx.user_id,
                token_hash(token),
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(ApiError::from)?;
            u64::try_from(sessions).unwrap_or(0)
        };
        tx.commit(
            AuditEntry::new(AuditAction::Logout, "user", ctx.user_id)
                .title(&ctx.email)
                .description(format!("{revoked} session(s) revoked")),
        )
        .await?;
        Ok(Response::new(LogoutResponse {
            revoked_sessions: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        if req.current_password.is_empty() {
            v.add("current_password", "is required");
        }
        check_new_password(&mut v, "new_password", &req.new_password, &ctx.email);
        if req.new_password == req.current_password {
            v.add("new_password", "must differ from the current password");
        }
        v.finish()?;
        // Keyed by tenant id, not slug: counted apart from logins, so a
        // stolen access token guessing here cannot lock the owner's login.
        let who = Who::new(
            &ctx.tenant_id.to_string(),
            &ctx.email,
            ctx.meta.peer_ip.as_deref(),
        );
        let attempt = self
            .throttle
            .attempt(who)
            .map_err(|refusal| ApiError::Status(refusal.into_status()))?;
        // The caller re-checked (write_tx), then let go: no connection is
        // held while bcrypt runs, and nothing was written to commit.
        let user = {
            let mut tx = self.write_tx(ctx).await?;
            users::get(&mut tx, ctx.user_id).await?
        };
        let ok = self
            .passwords
            .verify(
                req.current_password.clone(),
                Some(user.password_hash.clone()),
            )
            .await?;
        if !ok {
            attempt.failed(Failure::WrongPassword);
            return Err(ApiError::field("current_password", "is not the current password").into());
        }
        attempt.succeeded();
        let hash = self.passwords.hash(req.new_password.clone()).await?;
        let mut tx = self.db.write(ctx).await?;
        // Only over the hash that was verified: a concurrent change wins.
        let updated = sqlx::query!(
            "UPDATE core.users SET password_hash = $4, updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND password_hash = $3",
            tx.tenant_id(),
            ctx.user_id,
            &user.password_hash,
            hash,
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        if updated.rows_affected() == 0 {
            return Err(ApiError::Aborted {
                reason: "CONCURRENT_UPDATE",
                message: "the password changed meanwhile; retry with the current password".into(),
            }
            .into());
        }
        let revoked = revoke_sessions(&mut tx, ctx.user_id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::PasswordChanged, "user", ctx.user_id)
                .title(&ctx.email)
                .description(format!("{revoked} session(s) revoked")),
        )
        .await?;
        Ok(Response::new(ChangePasswordResponse {
            revoked_sessions: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }

    async fn get_current_user(
        &self,
        request: Request<GetCurrentUserRequest>,
    ) -> Result<Response<User>, Status> {
        let ctx = request.tenant()?;
        let mut tx = self.db.read(ctx).await?;
        let user = users::find_by_id(&mut tx, ctx.user_id).await?;
        // A deactivated user's token still verifies until it expires; here,
        // at the source, they are refused at once.
        let user = user
            .filter(UserRow::active)
            .ok_or(ApiError::Unauthenticated(USER_DEACTIVATED))?;
        Ok(Response::new(user.into_proto()))
    }

    async fn get_public_keys(
        &self,
        _request: Request<GetPublicKeysRequest>,
    ) -> Result<Response<GetPublicKeysResponse>, Status> {
        let settings = self.config.signer.settings();
        Ok(Response::new(GetPublicKeysResponse {
            keys: self
                .config
                .public_keys
                .iter()
                .map(|k| PublicKey {
                    kid: k.kid(),
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    alg: "EdDSA".into(),
                    x: k.x(),
                    key_use: "sig".into(),
                    pem: k.to_pem(),
                })
                .collect(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }))
    }
}
