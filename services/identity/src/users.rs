//! UserService, and the user queries login shares.

use chrono::{DateTime, Utc};
use codeops_platform::convert::{etag, id_string, opt_timestamp, timestamp};
use codeops_platform::validate::{SHORT_TEXT, check_etag, contains_pattern};
use codeops_platform::{
    ApiError, AuditAction, AuditEntry, Claim, Cursor, Page, RequestKey, TenantTx, Violations,
};
use codeops_proto::identity::user_service_server::UserService;
use codeops_proto::identity::{
    AssignRoleRequest, CreateUserRequest, DeactivateUserRequest, GetUserRequest, ListUsersRequest,
    ListUsersResponse, UpdateUserRequest, User,
};
use codeops_tenant::{Permission, PermissionSet, RequestExt, TenantContext, permission_denied};
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Svc;
use crate::password::check_new_password;
use crate::roles::load_visible_role;

/// A user row with its role code and permission codes. The password hash
/// stays inside this crate: `into_proto` leaves it out.
pub(crate) struct UserRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub title: Option<String>,
    pub department: Option<String>,
    pub avatar_url: Option<String>,
    pub role_id: Uuid,
    pub role_code: String,
    pub manager_id: Option<Uuid>,
    pub is_active: Option<bool>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub permissions: Vec<String>,
}

impl UserRow {
    pub fn active(&self) -> bool {
        self.is_active.unwrap_or(false)
    }

    pub fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }

    pub fn permission_set(&self) -> PermissionSet {
        self.permissions
            .iter()
            .filter_map(|c| Permission::from_code(c))
            .collect()
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            time: self.created_at,
            id: self.id,
        }
    }

    /// What audit rows record of a user: never the hash.
    pub fn audit_values(&self) -> serde_json::Value {
        json!({
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "title": self.title,
            "department": self.department,
            "avatar_url": self.avatar_url,
            "role": self.role_code,
            "manager_id": self.manager_id,
            "is_active": self.is_active,
        })
    }

    pub fn into_proto(self) -> User {
        User {
            id: self.id.to_string(),
            email: self.email,
            first_name: self.first_name,
            last_name: self.last_name,
            title: self.title.unwrap_or_default(),
            department: self.department.unwrap_or_default(),
            avatar_url: self.avatar_url.unwrap_or_default(),
            role_id: self.role_id.to_string(),
            role_code: self.role_code,
            manager_id: id_string(self.manager_id),
            is_active: self.is_active.unwrap_or(false),
            last_login_time: opt_timestamp(self.last_login_at),
            create_time: Some(timestamp(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            etag: etag(self.updated_at),
        }
    }
}

pub(crate) async fn find_by_id(
    tx: &mut impl TenantTx,
    id: Uuid,
) -> Result<Option<UserRow>, ApiError> {
    Ok(sqlx::query_as!(
        UserRow,
        r#"SELECT u.id, u.tenant_id, u.email, u.password_hash, u.first_name, u.last_name, u.title,
               u.department, u.avatar_url, u.role_id, r.code AS role_code, u.manager_id, u.is_active,
               u.last_login_at, u.created_at, u.updated_at,
               ARRAY(SELECT p.code::text FROM core.role_permissions rp
                     JOIN core.permissions p ON p.id = rp.permission_id
                     WHERE rp.role_id = u.role_id ORDER BY p.code) AS "permissions!"
           FROM core.users u JOIN core.roles r ON r.id = u.role_id
           WHERE u.tenant_id = $1 AND u.id = $2"#,
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?)
}

pub(crate) async fn find_by_email(
    tx: &mut impl TenantTx,
    email: &str,
) -> Result<Option<UserRow>, ApiError> {
    Ok(sqlx::query_as!(
        UserRow,
        r#"SELECT u.id, u.tenant_id, u.email, u.password_hash, u.first_name, u.last_name, u.title,
               u.department, u.avatar_url, u.role_id, r.code AS role_code, u.manager_id, u.is_active,
               u.last_login_at, u.created_at, u.updated_at,
               ARRAY(SELECT p.code::text FROM core.role_permissions rp
                     JOIN core.permissions p ON p.id = rp.permission_id
                     WHERE rp.role_id = u.role_id ORDER BY p.code) AS "permissions!"
           FROM core.users u JOIN core.roles r ON r.id = u.role_id
           WHERE u.tenant_id = $1 AND u.email = $2"#,
        tx.tenant_id(),
        email,
    )
    .fetch_optional(&mut **tx)
    .await?)
}

/// A user of the caller's tenant, or NOT_FOUND (also for other tenants' ids).
pub(crate) async fn get(tx: &mut impl TenantTx, id: Uuid) -> Result<UserRow, ApiError> {
    find_by_id(tx, id).await?.ok_or(ApiError::NotFound("user"))
}

/// The system OWNER role (migration 10002).
pub(crate) const OWNER_ROLE_ID: Uuid = Uuid::from_u128(0x00000000_0000_4000_8002_000000000001);

/// Locks the row for the rest of the transaction, then reads it.
pub(crate) async fn get_for_update(tx: &mut impl TenantTx, id: Uuid) -> Result<UserRow, ApiError> {
    sqlx::query!(
        "SELECT 1 AS locked FROM core.users WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("user"))?;
    get(tx, id).await
}

/// Revokes every live refresh token of a user; returns how many.
pub(crate) async fn revoke_sessions(
    tx: &mut impl TenantTx,
    user_id: Uuid,
) -> Result<u64, ApiError> {
    // A session is a refresh-token family (a login and its rotations), so
    // sessions are counted by family, not by token row.
    let sessions = sqlx::query_scalar!(
        "WITH revoked AS ( \
             UPDATE core.refresh_tokens SET revoked_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL \
             RETURNING family_id) \
         SELECT count(DISTINCT family_id) AS \"sessions!\" FROM revoked",
        tx.tenant_id(),
        user_id,
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(u64::try_from(sessions).unwrap_or(0))
}

/// Nobody grants a role holding a permission they lack themselves.
pub(crate) fn ensure_can_grant(
    ctx: &TenantContext,
    granted: PermissionSet,
) -> Result<(), ApiError> {
    let missing: Vec<Permission> = ctx.permissions.missing_from(granted).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Status(permission_denied(&missing)))
    }
}

/// A tenant must keep an active OWNER, or nobody could manage it (only an
/// OWNER holds tenant.manage, and only someone holding every permission an
/// OWNER holds may make another one). `user` is about to lose the OWNER
/// role or be deactivated: refused when no other active OWNER remains.
/// The other owners' rows are share-locked until commit, so two concurrent
/// demotions cannot each count on the other owner and together remove both
/// (the second waits, then sees the first one's change).
async fn ensure_not_last_owner(tx: &mut impl TenantTx, user: &UserRow) -> Result<(), ApiError> {
    if user.role_id != OWNER_ROLE_ID || !user.active() {
        return Ok(());
    }
    let others: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM core.users \
         WHERE tenant_id = $1 AND role_id = $2 AND coalesce(is_active, false) AND id <> $3 \
         FOR SHARE",
        tx.tenant_id(),
        OWNER_ROLE_ID,
        user.id,
    )
    .fetch_all(&mut **tx)
    .await?;
    if others.is_empty() {
        return Err(ApiError::precondition(
            "LAST_OWNER",
            "this is the tenant's last active owner: appoint another owner first",
        ));
    }
    Ok(())
}

/// An id a request names as a user must be a user of the caller's tenant;
/// otherwise the field is invalid (the same answer for another tenant's user
/// as for no user at all).
pub(crate) async fn ensure_user_in_tenant(
    tx: &mut impl TenantTx,
    user_id: Uuid,
    field: &str,
) -> Result<(), ApiError> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM core.users WHERE tenant_id = $1 AND id = $2) AS "exists!""#,
        tx.tenant_id(),
        user_id,
    )
    .fetch_one(&mut **tx)
    .await?;
    if exists {
        Ok(())
    } else {
        Err(ApiError::field(field, "no such user in this tenant"))
    }
}

/// A manager must be in the caller's tenant (the composite key enforces
/// it too) and must not be the user or one of the user's reports.
async fn check_manager(
    tx: &mut impl TenantTx,
    user_id: Uuid,
    manager_id: Uuid,
) -> Result<(), ApiError> {
    ensure_user_in_tenant(tx, manager_id, "user.manager_id").await?;
    let tenant_id = tx.tenant_id();
    // Two concurrent manager changes could each pass the cycle check and
    // together close a loop: they take turns per tenant.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('codeops.managers:' || $1::uuid::text, 0))",
        tenant_id,
    )
    .execute(&mut **tx)
    .await?;
    let cycle = sqlx::query_scalar!(
        r#"WITH RECURSIVE chain(id, depth) AS (
               SELECT $2::uuid, 0
               UNION ALL
               SELECT u.manager_id, c.depth + 1 FROM core.users u JOIN chain c ON u.id = c.id
               WHERE u.tenant_id = $1 AND u.manager_id IS NOT NULL AND c.depth < 1000)
           SELECT EXISTS (SELECT 1 FROM chain WHERE id = $3) AS "cycle!""#,
        tenant_id,
        manager_id,
        user_id,
    )
    .fetch_one(&mut **tx)
    .await?;
    if cycle {
        return Err(ApiError::precondition(
            "MANAGEMENT_CYCLE",
            "manager_id would make a management cycle",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl UserService for Svc {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let user = req.user.clone().unwrap_or_default();
        let mut v = Violations::new();
        let email = v.email("user.email", &user.email);
        let first_name = v.required("user.first_name", &user.first_name, SHORT_TEXT);
        let last_name = v.required("user.last_name", &user.last_name, SHORT_TEXT);
        let title = v.optional("user.title", &user.title, SHORT_TEXT);
        let department = v.optional("user.department", &user.department, SHORT_TEXT);
        let avatar_url = v.optional_url("user.avatar_url", &user.avatar_url);
        let role_id = v.uuid("user.role_id", &user.role_id);
        let manager_id = v.optional_uuid("user.manager_id", &user.manager_id);
        check_new_password(&mut v, "password", &req.password, &email);
        let key = RequestKey::parse(&mut v, req);
        v.finish()?;
        // Hashed before the transaction: no connection is held while bcrypt runs.
        let password_hash = self.passwords.hash(req.password.clone()).await?;

        let mut tx = self.write_tx(ctx).await?;
        let id = Uuid::now_v7();
        if let Claim::Replay(first) = tx.claim(key.as_ref(), id).await? {
            return Ok(Response::new(get(&mut tx, first).await?.into_proto()));
        }
        let role = load_visible_role(&mut tx, role_id)
            .await?
            .ok_or_else(|| ApiError::field("user.role_id", "no such role"))?;
        ensure_can_grant(ctx, role.permission_set())?;
        if let Some(manager_id) = manager_id {
            check_manager(&mut tx, Uuid::nil(), manager_id).await?;
        }
        sqlx::query!(
            "INSERT INTO core.users (id, tenant_id, email, password_hash, first_name, last_name, title, department, \
                 avatar_url, role_id, manager_id, is_active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, true, now(), now())",
            id,
            tx.tenant_id(),
            &email,
            &password_hash,
            &first_name,
            &last_name,
            title.as_deref(),
            department.as_deref(),
            avatar_url.as_deref(),
            role_id,
            manager_id,
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let created = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::UserCreated, "user", id)
                .title(&created.email)
                .new_values(created.audit_values()),
        )
        .await?;
        Ok(Response::new(created.into_proto()))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        let user = get(&mut tx, id).await?;
        Ok(Response::new(user.into_proto()))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let team_id = v.optional_uuid("team_id", &req.team_id);
        let role_id = v.optional_uuid("role_id", &req.role_id);
        let query = v.optional("query", &req.query, SHORT_TEXT);
        let filters = format!("{team_id:?}|{role_id:?}|{:?}|{query:?}", req.is_active);
        let page = Page::parse(req.page_size, &req.page_token, &filters, &mut v);
        v.finish()?;
        let pattern = query.as_deref().map(contains_pattern);

        let mut tx = self.db.read(ctx).await?;
        let rows = sqlx::query_as!(
            UserRow,
            r#"SELECT u.id, u.tenant_id, u.email, u.password_hash, u.first_name, u.last_name, u.title,
               u.department, u.avatar_url, u.role_id, r.code AS role_code, u.manager_id, u.is_active,
               u.last_login_at, u.created_at, u.updated_at,
               ARRAY(SELECT p.code::text FROM core.role_permissions rp
                     JOIN core.permissions p ON p.id = rp.permission_id
                     WHERE rp.role_id = u.role_id ORDER BY p.code) AS "permissions!"
           FROM core.users u JOIN core.roles r ON r.id = u.role_id
               WHERE u.tenant_id = $1
                 AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM core.team_members m
                      WHERE m.tenant_id = $1 AND m.team_id = $2 AND m.user_id = u.id))
                 AND ($3::uuid IS NULL OR u.role_id = $3)
                 AND ($4::bool IS NULL OR coalesce(u.is_active, false) = $4)
                 AND ($5::text IS NULL OR u.email ILIKE $5 OR u.first_name ILIKE $5 OR u.last_name ILIKE $5)
                 AND ($6::timestamptz IS NULL OR (u.created_at, u.id) > ($6, $7))
               ORDER BY u.created_at, u.id LIMIT $8"#,
            tx.tenant_id(),
            team_id,
            role_id,
            req.is_active,
            pattern,
            page.after_time(),
            page.after_id(),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let (users, next_page_token) = page.finish(rows, UserRow::cursor, UserRow::into_proto);
        Ok(Response::new(ListUsersResponse {
            users,
            next_page_token,
        }))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let user = req.user.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v.uuid("user.id", &user.id);
        let mask = v.update_mask(
            req.update_mask.as_ref(),
            &[
                "first_name",
                "last_name",
                "title",
                "department",
                "avatar_url",
                "manager_id",
            ],
        );
        let has = |p: &str| mask.contains(p);
        let first_name =
            has("first_name").then(|| v.required("user.first_name", &user.first_name, SHORT_TEXT));
        let last_name =
            has("last_name").then(|| v.required("user.last_name", &user.last_name, SHORT_TEXT));
        let title = has("title").then(|| v.optional("user.title", &user.title, SHORT_TEXT));
        let department =
            has("department").then(|| v.optional("user.department", &user.department, SHORT_TEXT));
        let avatar_url =
            has("avatar_url").then(|| v.optional_url("user.avatar_url", &user.avatar_url));
        let manager_id =
            has("manager_id").then(|| v.optional_uuid("user.manager_id", &user.manager_id));
        v.finish()?;

        let mut tx = self.write_tx(ctx).await?;
        let before = get_for_update(&mut tx, id).await?;
        // The rule of AssignRole and DeactivateUser holds for every write on
        // another user: only someone holding everything they hold may change
        // them (or, say, become their manager).
        if id != ctx.user_id {
            ensure_can_grant(ctx, before.permission_set())?;
        }
        check_etag(&user.etag, &etag(before.updated_at))?;
        if let Some(Some(manager_id)) = manager_id {
            check_manager(&mut tx, id, manager_id).await?;
        }
        sqlx::query!(
            "UPDATE core.users SET \
                 first_name = CASE WHEN $3 THEN $4 ELSE first_name END, \
                 last_name = CASE WHEN $5 THEN $6 ELSE last_name END, \
                 title = CASE WHEN $7 THEN $8 ELSE title END, \
                 department = CASE WHEN $9 THEN $10 ELSE department END, \
                 avatar_url = CASE WHEN $11 THEN $12 ELSE avatar_url END, \
                 manager_id = CASE WHEN $13 THEN $14 ELSE manager_id END, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            id,
            first_name.is_some(),
            first_name.unwrap_or_default(),
            last_name.is_some(),
            last_name.unwrap_or_default(),
            title.is_some(),
            title.flatten(),
            department.is_some(),
            department.flatten(),
            avatar_url.is_some(),
            avatar_url.flatten(),
            manager_id.is_some(),
            manager_id.flatten(),
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "user", id)
                .title(&after.email)
                .old(before.audit_values())
                .new_values(after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn deactivate_user(
        &self,
        request: Request<DeactivateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        if id == ctx.user_id {
            return Err(ApiError::precondition(
                "SELF_DEACTIVATION",
                "you cannot deactivate yourself",
            )
            .into());
        }
        let mut tx = self.write_tx(ctx).await?;
        let before = get_for_update(&mut tx, id).await?;
        // Deactivating is the strongest demotion: only someone holding
        // everything the user holds may do it.
        ensure_can_grant(ctx, before.permission_set())?;
        if !before.active() {
            return Err(ApiError::precondition(
                "ALREADY_DEACTIVATED",
                "user is already deactivated",
            )
            .into());
        }
        ensure_not_last_owner(&mut tx, &before).await?;
        sqlx::query!(
            "UPDATE core.users SET is_active = false, updated_at = clock_timestamp() WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            id,
        )
            .execute(&mut *tx)
            .await
            .map_err(ApiError::from)?;
        let revoked = revoke_sessions(&mut tx, id).await?;
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::UserDeactivated, "user", id)
                .title(&after.email)
                .description(format!("{revoked} session(s) revoked"))
                .old(json!({"is_active": true}))
                .new_values(json!({"is_active": false})),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn assign_role(
        &self,
        request: Request<AssignRoleRequest>,
    ) -> Result<Response<User>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let user_id = v.uuid("user_id", &req.user_id);
        let role_id = v.uuid("role_id", &req.role_id);
        v.finish()?;
        let mut tx = self.write_tx(ctx).await?;
        let before = get_for_update(&mut tx, user_id).await?;
        let role = load_visible_role(&mut tx, role_id)
            .await?
            .ok_or_else(|| ApiError::field("role_id", "no such role"))?;
        ensure_can_grant(ctx, role.permission_set())?;
        // Taking a role away is also a grant decision: the caller must hold
        // everything the user held, or they could demote a superior.
        ensure_can_grant(ctx, before.permission_set())?;
        if role_id != OWNER_ROLE_ID {
            ensure_not_last_owner(&mut tx, &before).await?;
        }
        sqlx::query!(
            "UPDATE core.users SET role_id = $3, updated_at = clock_timestamp() WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            user_id,
            role_id,
        )
            .execute(&mut *tx)
            .await
            .map_err(ApiError::from)?;
        let after = get(&mut tx, user_id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::RoleAssigned, "user", user_id)
                .title(&after.email)
                .old(json!({"role_id": before.role_id, "role": before.role_code}))
                .new_values(json!({"role_id": after.role_id, "role": after.role_code})),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }
}
