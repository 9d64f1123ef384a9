//! TenantService: the caller's own tenant, and tenant administration for
//! operators (creation, suspension, reactivation, cancellation). Tenant
//! creation is shared with `codeops tenant create`.

use chrono::{DateTime, Utc};
use codeops_platform::convert::{enum_from_db, etag, json_to_struct, opt_timestamp, timestamp};
use codeops_platform::validate::{SHORT_TEXT, UpdateMask, check_etag, normalize_email};
use codeops_platform::{
    Actor, ApiError, AuditAction, AuditEntry, Claim, Db, RequestKey, TenantTx, Violations,
};
use codeops_proto::identity::tenant_service_server::TenantService;
use codeops_proto::identity::{
    AppointOwnerRequest, CancelTenantRequest, CreateTenantRequest, CreateTenantResponse,
    GetTenantRequest, ReactivateTenantRequest, SlaDefaults, SuspendTenantRequest, Tenant,
    TenantSettings, TenantStatus, UpdateTenantRequest, User,
};
use codeops_tenant::{OperatorContext, RequestExt, RequestMeta};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Svc;
use crate::password::{Hasher, check_new_password};
use crate::users::{self, OWNER_ROLE_ID};

/// Decision SLA defaults when a tenant sets none (product.md).
const DEFAULT_SLA: SlaDefaults = SlaDefaults {
    blocking_hours: 24,
    high_hours: 72,
    normal_hours: 168,
    low_hours: 336,
};
const MAX_SLA_HOURS: i32 = 24 * 365;

struct TenantRow {
    id: Uuid,
    name: String,
    slug: String,
    logo_url: Option<String>,
    settings: Option<String>,
    status: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
}

impl TenantRow {
    fn settings_json(&self) -> Value {
        self.settings
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_else(|| json!({}))
    }

    fn audit_values(&self) -> Value {
        json!({
            "name": self.name, "slug": self.slug, "logo_url": self.logo_url,
            "settings": self.settings_json(), "status": self.status,
        })
    }

    fn into_proto(self) -> Tenant {
        let settings = self.settings_json();
        Tenant {
            id: self.id.to_string(),
            settings: Some(TenantSettings {
                sla_defaults: Some(sla_defaults(&settings)),
                timezone: settings["timezone"].as_str().unwrap_or("UTC").to_owned(),
                custom: settings.get("custom").map(json_to_struct),
            }),
            status: enum_from_db(
                self.status.as_deref().unwrap_or("ACTIVE"),
                "TENANT_STATUS_",
                TenantStatus::from_str_name,
            ) as i32,
            name: self.name,
            slug: self.slug,
            logo_url: self.logo_url.unwrap_or_default(),
            create_time: Some(timestamp(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            etag: etag(self.updated_at),
        }
    }
}

/// The decision SLA defaults of a tenant's settings JSON, product.md's
/// where it sets none (or sets something out of range).
pub(crate) fn sla_defaults(settings: &Value) -> SlaDefaults {
    let sla = &settings["sla_defaults"];
    let hours = |key: &str, default: i32| {
        sla[key]
            .as_i64()
            .and_then(|h| i32::try_from(h).ok())
            .filter(|h| (1..=MAX_SLA_HOURS).contains(h))
            .unwrap_or(default)
    };
    SlaDefaults {
        blocking_hours: hours("blocking_hours", DEFAULT_SLA.blocking_hours),
        high_hours: hours("high_hours", DEFAULT_SLA.high_hours),
        normal_hours: hours("normal_hours", DEFAULT_SLA.normal_hours),
        low_hours: hours("low_hours", DEFAULT_SLA.low_hours),
    }
}

/// The transaction's own tenant.
async fn get(tx: &mut impl TenantTx) -> Result<TenantRow, ApiError> {
    sqlx::query_as!(
        TenantRow,
        "SELECT id, name, slug, logo_url, settings, status, created_at, updated_at \
         FROM core.tenants WHERE id = $1",
        tx.tenant_id(),
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("tenant"))
}

async fn get_for_update(tx: &mut impl TenantTx) -> Result<TenantRow, ApiError> {
    sqlx::query_as!(
        TenantRow,
        "SELECT id, name, slug, logo_url, settings, status, created_at, updated_at \
         FROM core.tenants WHERE id = $1 FOR UPDATE",
        tx.tenant_id(),
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("tenant"))
}

fn check_sla(v: &mut Violations, field: &str, hours: i32) {
    if !(1..=MAX_SLA_HOURS).contains(&hours) {
        v.add(
            field,
            format!("must be between 1 and {MAX_SLA_HOURS} hours"),
        );
    }
}

/// Validates settings and merges the masked parts into the stored JSON.
fn merge_settings(
    v: &mut Violations,
    stored: Value,
    given: &TenantSettings,
    mask: &UpdateMask,
) -> Value {
    let mut merged = match stored {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let has = |p: &str| mask.contains(p);
    if has("settings.sla_defaults") {
        let sla = given.sla_defaults.unwrap_or(DEFAULT_SLA);
        check_sla(
            v,
            "tenant.settings.sla_defaults.blocking_hours",
            sla.blocking_hours,
        );
        check_sla(v, "tenant.settings.sla_defaults.high_hours", sla.high_hours);
        check_sla(
            v,
            "tenant.settings.sla_defaults.normal_hours",
            sla.normal_hours,
        );
        check_sla(v, "tenant.settings.sla_defaults.low_hours", sla.low_hours);
        merged.insert(
            "sla_defaults".into(),
            json!({
                "blocking_hours": sla.blocking_hours, "high_hours": sla.high_hours,
                "normal_hours": sla.normal_hours, "low_hours": sla.low_hours,
            }),
        );
    }
    if has("settings.timezone") {
        let tz = given.timezone.trim();
        let valid = tz.is_empty()
            || (tz.len() <= 64
                && tz
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c)));
        if !valid {
            v.add("tenant.settings.timezone", "must be an IANA time zone name");
        }
        merged.insert(
            "timezone".into(),
            json!(if tz.is_empty() { "UTC" } else { tz }),
        );
    }
    if has("settings.custom") {
        // Capped like every free-form field (MAX_JSON_BYTES).
        match v.json_struct("tenant.settings.custom", given.custom.as_ref()) {
            Some(custom) => {
                let custom = serde_json::from_str(&custom).unwrap_or(Value::Null);
                merged.insert("custom".into(), custom);
            }
            None => {
                merged.remove("custom");
            }
        }
    }
    Value::Object(merged)
}

/// Input of tenant creation (RPC and CLI).
pub struct NewTenant {
    pub name: String,
    pub slug: String,
    pub logo_url: String,
    pub owner_email: String,
    pub owner_first_name: String,
    pub owner_last_name: String,
    /// Empty: a random one is generated and returned once.
    pub owner_password: String,
    /// The call's idempotency key (AIP-155), if it has one.
    pub request_key: Option<RequestKey>,
}

pub struct CreatedTenant {
    pub tenant: Tenant,
    pub owner: User,
    /// The generated password, shown to the first call only: a retry
    /// answered from its idempotency key gets none.
    pub generated_password: Option<String>,
}

fn generate_password() -> Result<String, ApiError> {
    use base64::Engine;
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Creates a tenant and its first OWNER in one transaction, audited.
///
/// With an idempotency key the tenant's id is the one the key determines
/// ([`RequestKey::derived_id`]): the key is stored under the new tenant, so
/// a retry (which has no tenant either) opens its transaction in that same
/// tenant as the operator, waits there for a first call still running, and
/// answers the tenant and its first owner as they are now, without a
/// password.
pub async fn create_tenant(
    db: &Db,
    input: NewTenant,
    hasher: &Hasher,
    meta: &RequestMeta,
) -> Result<CreatedTenant, ApiError> {
    let mut v = Violations::new();
    let name = v.required("tenant.name", &input.name, SHORT_TEXT);
    let slug = v.slug("tenant.slug", &input.slug);
    let logo_url = v.optional_url("tenant.logo_url", &input.logo_url);
    let email = v.email("owner_email", &input.owner_email);
    let first_name = v.required("owner_first_name", &input.owner_first_name, SHORT_TEXT);
    let last_name = v.required("owner_last_name", &input.owner_last_name, SHORT_TEXT);
    let generated = input.owner_password.is_empty();
    let password = if generated {
        generate_password()?
    } else {
        input.owner_password
    };
    check_new_password(&mut v, "owner_password", &password, &email);
    v.finish()?;
    let hash = hasher.hash(password.clone()).await?;

    let key = input.request_key;
    let tenant_id = key
        .as_ref()
        .map_or_else(Uuid::now_v7, RequestKey::derived_id);
    let owner_id = Uuid::now_v7();
    // The new tenant's id is the transaction's tenant, so row-level
    // security lets these inserts through and nothing else.
    let mut tx = db.write_as(Actor::operator(tenant_id, meta)).await?;
    if let Claim::Replay(first_owner) = tx.claim(key.as_ref(), owner_id).await? {
        let tenant = get(&mut tx).await?;
        let owner = users::get(&mut tx, first_owner).await?;
        return Ok(CreatedTenant {
            tenant: tenant.into_proto(),
            owner: owner.into_proto(),
            generated_password: None,
        });
    }
    sqlx::query!(
        "INSERT INTO core.tenants (id, name, slug, logo_url, settings, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'ACTIVE', now(), now())",
        tenant_id,
        &name,
        &slug,
        logo_url.as_deref(),
        json!({"sla_defaults": {"blocking_hours": 24, "high_hours": 72, "normal_hours": 168, "low_hours": 336}, "timezone": "UTC"}).to_string(),
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::AlreadyExists { .. } => {
            ApiError::already_exists("tenant", "a tenant with this name or slug already exists")
        }
        other => other,
    })?;
    sqlx::query!(
        "INSERT INTO core.users (id, tenant_id, email, password_hash, first_name, last_name, role_id, is_active, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, true, now(), now())",
        owner_id,
        tenant_id,
        &email,
        &hash,
        &first_name,
        &last_name,
        OWNER_ROLE_ID,
    )
    .execute(&mut *tx)
    .await?;
    let tenant = get(&mut tx).await?;
    tx.audit(
        AuditEntry::new(AuditAction::Create, "tenant", tenant_id)
            .title(&name)
            .new_values(tenant.audit_values()),
    )
    .await?;
    let owner = users::get(&mut tx, owner_id).await?;
    tx.commit(
        AuditEntry::new(AuditAction::UserCreated, "user", owner_id)
            .title(&email)
            .new_values(owner.audit_values()),
    )
    .await?;
    Ok(CreatedTenant {
        tenant: tenant.into_proto(),
        owner: owner.into_proto(),
        generated_password: generated.then_some(password),
    })
}

/// Makes an active user of a tenant its OWNER, as the operator: the way
/// back for a tenant nobody can manage any more (its owner left, forgot
/// their password, or the account was lost). Audited as ROLE_ASSIGNED by
/// the operator. Shared by `TenantService.AppointOwner` and
/// `codeops tenant appoint-owner`.
pub async fn appoint_owner(
    db: &Db,
    tenant_id: Uuid,
    user_id: Uuid,
    meta: &RequestMeta,
) -> Result<User, ApiError> {
    let mut tx = db.write_as(Actor::operator(tenant_id, meta)).await?;
    // NOT_FOUND for an unknown tenant, before anything about its users.
    get(&mut tx).await?;
    let before = users::get_for_update(&mut tx, user_id).await?;
    if !before.active() {
        return Err(ApiError::precondition(
            "USER_DEACTIVATED",
            "a deactivated user cannot be appointed owner",
        ));
    }
    if before.role_id == OWNER_ROLE_ID {
        return Err(ApiError::precondition(
            "ALREADY_OWNER",
            "the user already is an owner of the tenant",
        ));
    }
    sqlx::query!(
        "UPDATE core.users SET role_id = $3, updated_at = clock_timestamp() \
         WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        user_id,
        OWNER_ROLE_ID,
    )
    .execute(&mut *tx)
    .await?;
    let after = users::get(&mut tx, user_id).await?;
    tx.commit(
        AuditEntry::new(AuditAction::RoleAssigned, "user", user_id)
            .title(&after.email)
            .description("appointed owner by the operator")
            .old(json!({"role_id": before.role_id, "role": before.role_code}))
            .new_values(json!({"role_id": after.role_id, "role": after.role_code})),
    )
    .await?;
    Ok(after.into_proto())
}

/// The tenant and user ids behind a tenant slug and an e-mail address, for
/// operators who know people by name (`codeops tenant appoint-owner`).
pub async fn find_user(
    db: &Db,
    tenant_slug: &str,
    email: &str,
    meta: &RequestMeta,
) -> Result<(Uuid, Uuid), ApiError> {
    let (tenant_id, _) = db
        .tenant_for_login(tenant_slug.trim())
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    let mut tx = db.read_as(&Actor::operator(tenant_id, meta)).await?;
    let user = users::find_by_email(&mut tx, &normalize_email(email))
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok((tenant_id, user.id))
}

impl Svc {
    /// Moves a tenant to `to` if allowed from its current status.
    async fn change_status(
        &self,
        operator: &OperatorContext,
        id: &str,
        to: &'static str,
        allowed_from: &[&str],
        reason: &str,
    ) -> Result<Tenant, ApiError> {
        let mut v = Violations::new();
        let id = v.uuid("id", id);
        let reason = v.optional("reason", reason, SHORT_TEXT);
        v.finish()?;
        let mut tx = self
            .db
            .write_as(Actor::operator(id, &operator.meta))
            .await?;
        let before = get_for_update(&mut tx).await?;
        let from = before.status.clone().unwrap_or_else(|| "ACTIVE".into());
        if !allowed_from.contains(&from.as_str()) {
            return Err(ApiError::precondition(
                "ILLEGAL_TRANSITION",
                format!("a {from} tenant cannot become {to}"),
            ));
        }
        sqlx::query!(
            "UPDATE core.tenants SET status = $2, updated_at = clock_timestamp() WHERE id = $1",
            id,
            to,
        )
        .execute(&mut *tx)
        .await?;
        if to != "ACTIVE" {
            // Suspended and cancelled tenants lose every session at once.
            sqlx::query!(
                "UPDATE core.refresh_tokens SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL",
                id,
            )
                .execute(&mut *tx)
                .await?;
        }
        let after = get(&mut tx).await?;
        let mut entry = AuditEntry::new(AuditAction::StatusChange, "tenant", id)
            .title(&after.name)
            .old(json!({"status": from}))
            .new_values(json!({"status": to}));
        if let Some(reason) = reason {
            entry = entry.description(reason);
        }
        tx.commit(entry).await?;
        Ok(after.into_proto())
    }
}

#[tonic::async_trait]
impl TenantService for Svc {
    async fn get_tenant(
        &self,
        request: Request<GetTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let ctx = request.tenant()?;
        let mut tx = self.db.read(ctx).await?;
        let tenant = get(&mut tx).await?;
        Ok(Response::new(tenant.into_proto()))
    }

    async fn update_tenant(
        &self,
        request: Request<UpdateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let given = req.tenant.clone().unwrap_or_default();
        let mut v = Violations::new();
        if !given.id.is_empty() && given.id != ctx.tenant_id.to_string() {
            // Another tenant's id: not found, never a hint that it exists.
            return Err(ApiError::NotFound("tenant").into());
        }
        let mask = v.update_mask(
            req.update_mask.as_ref(),
            &[
                "name",
                "logo_url",
                "settings",
                "settings.sla_defaults",
                "settings.timezone",
                "settings.custom",
            ],
        );
        let has = |p: &str| mask.contains(p);
        let name = has("name").then(|| v.required("tenant.name", &given.name, SHORT_TEXT));
        let logo_url = has("logo_url").then(|| v.optional_url("tenant.logo_url", &given.logo_url));
        let touches_settings = mask.touches("settings");

        let mut tx = self.write_tx(ctx).await?;
        let before = get_for_update(&mut tx).await?;
        let settings = touches_settings.then(|| {
            merge_settings(
                &mut v,
                before.settings_json(),
                &given.settings.clone().unwrap_or_default(),
                &mask,
            )
        });
        v.finish()?;
        check_etag(&given.etag, &etag(before.updated_at))?;
        sqlx::query!(
            "UPDATE core.tenants SET name = coalesce($2, name), \
                 logo_url = CASE WHEN $3 THEN $4 ELSE logo_url END, \
                 settings = coalesce($5, settings), updated_at = clock_timestamp() \
             WHERE id = $1",
            tx.tenant_id(),
            name,
            logo_url.is_some(),
            logo_url.flatten(),
            settings.map(|s| s.to_string()),
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let after = get(&mut tx).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "tenant", ctx.tenant_id)
                .title(&after.name)
                .old(before.audit_values())
                .new_values(after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<CreateTenantResponse>, Status> {
        let operator = request.operator()?;
        let req = request.get_ref();
        let tenant = req.tenant.clone().unwrap_or_default();
        let mut v = Violations::new();
        let request_key = RequestKey::parse(&mut v, req);
        v.finish()?;
        let created = create_tenant(
            &self.db,
            NewTenant {
                name: tenant.name,
                slug: tenant.slug,
                logo_url: tenant.logo_url,
                owner_email: req.owner_email.clone(),
                owner_first_name: req.owner_first_name.clone(),
                owner_last_name: req.owner_last_name.clone(),
                owner_password: req.owner_password.clone(),
                request_key,
            },
            &self.passwords,
            &operator.meta,
        )
        .await?;
        Ok(Response::new(CreateTenantResponse {
            tenant: Some(created.tenant),
            owner: Some(created.owner),
            generated_password: created.generated_password.unwrap_or_default(),
        }))
    }

    async fn suspend_tenant(
        &self,
        request: Request<SuspendTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let operator = request.operator()?;
        let req = request.get_ref();
        let tenant = self
            .change_status(
                operator,
                &req.id,
                "SUSPENDED",
                &["ACTIVE", "TRIAL"],
                &req.reason,
            )
            .await?;
        Ok(Response::new(tenant))
    }

    async fn reactivate_tenant(
        &self,
        request: Request<ReactivateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let operator = request.operator()?;
        let tenant = self
            .change_status(
                operator,
                &request.get_ref().id,
                "ACTIVE",
                &["SUSPENDED"],
                "",
            )
            .await?;
        Ok(Response::new(tenant))
    }

    async fn appoint_owner(
        &self,
        request: Request<AppointOwnerRequest>,
    ) -> Result<Response<User>, Status> {
        let operator = request.operator()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let tenant_id = v.uuid("tenant_id", &req.tenant_id);
        let user_id = v.uuid("user_id", &req.user_id);
        v.finish()?;
        let user = appoint_owner(&self.db, tenant_id, user_id, &operator.meta).await?;
        Ok(Response::new(user))
    }

    async fn cancel_tenant(
        &self,
        request: Request<CancelTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let operator = request.operator()?;
        let req = request.get_ref();
        let tenant = self
            .change_status(
                operator,
                &req.id,
                "CANCELLED",
                &["ACTIVE", "TRIAL", "SUSPENDED"],
                &req.reason,
            )
            .await?;
        Ok(Response::new(tenant))
    }
}
