//! RoleService: system roles (read-only) and the tenant's custom roles.

use chrono::{DateTime, Utc};
use codeops_platform::convert::{enum_from_db, enum_to_db, etag, opt_timestamp, timestamp};
use codeops_platform::validate::{SHORT_TEXT, check_etag};
use codeops_platform::{
    ApiError, AuditAction, AuditEntry, Claim, Cursor, Page, RequestKey, TenantTx, Violations,
};
use codeops_proto::identity::role_service_server::RoleService;
use codeops_proto::identity::{
    CreateRoleRequest, DeleteRoleRequest, DeleteRoleResponse, GetRoleRequest,
    ListPermissionsRequest, ListPermissionsResponse, ListRolesRequest, ListRolesResponse,
    Permission as PermissionProto, Role, RoleCategory, RoleLevel, SetRolePermissionsRequest,
    UpdateRoleRequest,
};
use codeops_tenant::{Permission, PermissionSet, RequestExt};
use serde_json::json;
use sqlx::PgConnection;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Svc;
use crate::users::ensure_can_grant;

/// A role with its permission codes, typed as the schema is.
pub(crate) struct RoleRow {
    id: Uuid,
    tenant_id: Option<Uuid>,
    code: String,
    name: String,
    description: Option<String>,
    category: String,
    level: String,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    permissions: Vec<String>,
}

impl RoleRow {
    pub fn permission_set(&self) -> PermissionSet {
        self.permissions
            .iter()
            .filter_map(|c| Permission::from_code(c))
            .collect()
    }

    fn is_system(&self) -> bool {
        self.tenant_id.is_none()
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            time: self.created_at,
            id: self.id,
        }
    }

    fn audit_values(&self) -> serde_json::Value {
        json!({
            "code": self.code, "name": self.name, "description": self.description,
            "category": self.category, "level": self.level, "permissions": self.permissions,
        })
    }

    fn into_proto(self) -> Role {
        Role {
            id: self.id.to_string(),
            is_system_role: self.is_system(),
            code: self.code,
            name: self.name,
            description: self.description.unwrap_or_default(),
            category: enum_from_db(
                &self.category,
                "ROLE_CATEGORY_",
                RoleCategory::from_str_name,
            ) as i32,
            level: enum_from_db(&self.level, "ROLE_LEVEL_", RoleLevel::from_str_name) as i32,
            permissions: self.permissions,
            create_time: Some(timestamp(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            etag: etag(self.updated_at),
        }
    }
}

/// A system role or one of the tenant's own roles.
pub(crate) async fn load_visible_role(
    tx: &mut impl TenantTx,
    id: Uuid,
) -> Result<Option<RoleRow>, ApiError> {
    Ok(sqlx::query_as!(
        RoleRow,
        r#"SELECT r.id, r.tenant_id, r.code, r.name, r.description, r.category, r.level,
               r.created_at, r.updated_at,
               ARRAY(SELECT p.code::text FROM core.role_permissions rp
                     JOIN core.permissions p ON p.id = rp.permission_id
                     WHERE rp.role_id = r.id ORDER BY p.code) AS "permissions!"
           FROM core.roles r
           WHERE r.id = $2 AND (r.tenant_id IS NULL OR r.tenant_id = $1)"#,
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?)
}

async fn get(tx: &mut impl TenantTx, id: Uuid) -> Result<RoleRow, ApiError> {
    load_visible_role(tx, id)
        .await?
        .ok_or(ApiError::NotFound("role"))
}

/// A custom role of the tenant, locked; system roles are read-only.
async fn get_custom_for_update(tx: &mut impl TenantTx, id: Uuid) -> Result<RoleRow, ApiError> {
    let role = get(tx, id).await?;
    if role.is_system() {
        return Err(ApiError::precondition(
            "SYSTEM_ROLE_READ_ONLY",
            "system roles are read-only",
        ));
    }
    sqlx::query!(
        "SELECT 1 AS locked FROM core.roles WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?;
    get(tx, id).await
}

fn parse_permission_codes(v: &mut Violations, field: &str, codes: &[String]) -> PermissionSet {
    let mut set = PermissionSet::default();
    for (i, code) in codes.iter().enumerate() {
        match Permission::from_code(code) {
            Some(p) => set.insert(p),
            None => v.add(
                format!("{field}[{i}]"),
                format!("unknown permission {code:?}"),
            ),
        }
    }
    set
}

async fn replace_permissions(
    conn: &mut PgConnection,
    role_id: Uuid,
    set: PermissionSet,
) -> Result<(), ApiError> {
    sqlx::query!(
        "DELETE FROM core.role_permissions WHERE role_id = $1",
        role_id
    )
    .execute(&mut *conn)
    .await?;
    let codes = set.codes();
    sqlx::query!(
        "INSERT INTO core.role_permissions (role_id, permission_id) \
         SELECT $1, p.id FROM core.permissions p WHERE p.code = ANY($2)",
        role_id,
        &codes,
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn role_code(v: &mut Violations, value: &str) -> String {
    let code = v.required("role.code", value, SHORT_TEXT);
    if !code.is_empty()
        && !code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        v.add(
            "role.code",
            "must be uppercase letters, digits and underscores",
        );
    }
    // A custom role named like a system role would show as `role: OWNER`
    // in tokens and responses while holding something else entirely.
    if SYSTEM_ROLE_CODES.contains(&code.as_str()) {
        v.add(
            "role.code",
            format!("{code} is reserved for the system role"),
        );
    }
    code
}

/// Codes of the system roles migration 10002 ships; no tenant may reuse them.
const SYSTEM_ROLE_CODES: &[&str] = &[
    "OWNER",
    "ADMIN",
    "PRODUCT_LEAD",
    "ENGINEER",
    "VIEWER",
    "STAKEHOLDER",
];

#[tonic::async_trait]
impl RoleService for Svc {
    async fn list_roles(
        &self,
        request: Request<ListRolesRequest>,
    ) -> Result<Response<ListRolesResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let page = Page::parse(req.page_size, &req.page_token, "", &mut v);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        let rows = sqlx::query_as!(
            RoleRow,
            r#"SELECT r.id, r.tenant_id, r.code, r.name, r.description, r.category, r.level,
                   r.created_at, r.updated_at,
                   ARRAY(SELECT p.code::text FROM core.role_permissions rp
                         JOIN core.permissions p ON p.id = rp.permission_id
                         WHERE rp.role_id = r.id ORDER BY p.code) AS "permissions!"
               FROM core.roles r
               WHERE (r.tenant_id IS NULL OR r.tenant_id = $1)
                 AND ($2::timestamptz IS NULL OR (r.created_at, r.id) > ($2, $3))
               ORDER BY r.created_at, r.id LIMIT $4"#,
            tx.tenant_id(),
            page.after_time(),
            page.after_id(),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let (roles, next_page_token) = page.finish(rows, RoleRow::cursor, RoleRow::into_proto);
        Ok(Response::new(ListRolesResponse {
            roles,
            next_page_token,
        }))
    }

    async fn get_role(&self, request: Request<GetRoleRequest>) -> Result<Response<Role>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        let role = get(&mut tx, id).await?;
        Ok(Response::new(role.into_proto()))
    }

    async fn create_role(
        &self,
        request: Request<CreateRoleRequest>,
    ) -> Result<Response<Role>, Status> {
        let ctx = request.tenant()?;
        let role = request.get_ref().role.clone().unwrap_or_default();
        let mut v = Violations::new();
        let code = role_code(&mut v, &role.code);
        let name = v.required("role.name", &role.name, SHORT_TEXT);
        let description = v.optional("role.description", &role.description, SHORT_TEXT);
        let category = v.enum_value::<RoleCategory>("role.category", role.category);
        let level = v.enum_value::<RoleLevel>("role.level", role.level);
        let permissions = parse_permission_codes(&mut v, "role.permissions", &role.permissions);
        let key = RequestKey::parse(&mut v, request.get_ref());
        v.finish()?;
        ensure_can_grant(ctx, permissions)?;
        let category =
            enum_to_db(category.unwrap_or_default().as_str_name(), "ROLE_CATEGORY_").to_owned();
        let level = enum_to_db(level.unwrap_or_default().as_str_name(), "ROLE_LEVEL_").to_owned();

        let mut tx = self.write_tx(ctx).await?;
        let id = Uuid::now_v7();
        if let Claim::Replay(first) = tx.claim(key.as_ref(), id).await? {
            return Ok(Response::new(get(&mut tx, first).await?.into_proto()));
        }
        sqlx::query!(
            "INSERT INTO core.roles (id, tenant_id, code, name, description, category, level, is_system_role, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, false, now(), now())",
            id,
            tx.tenant_id(),
            code,
            name,
            description,
            category,
            level,
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        replace_permissions(&mut tx, id, permissions).await?;
        let created = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Create, "role", id)
                .title(&created.code)
                .new_values(created.audit_values()),
        )
        .await?;
        Ok(Response::new(created.into_proto()))
    }

    async fn update_role(
        &self,
        request: Request<UpdateRoleRequest>,
    ) -> Result<Response<Role>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let role = req.role.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v.uuid("role.id", &role.id);
        let mask = v.update_mask(
            req.update_mask.as_ref(),
            &["name", "description", "category", "level"],
        );
        let has = |p: &str| mask.contains(p);
        let name = has("name").then(|| v.required("role.name", &role.name, SHORT_TEXT));
        let description = has("description")
            .then(|| v.optional("role.description", &role.description, SHORT_TEXT));
        let category = has("category")
            .then(|| v.enum_value::<RoleCategory>("role.category", role.category))
            .flatten()
            .map(|c| enum_to_db(c.as_str_name(), "ROLE_CATEGORY_").to_owned());
        let level = has("level")
            .then(|| v.enum_value::<RoleLevel>("role.level", role.level))
            .flatten()
            .map(|l| enum_to_db(l.as_str_name(), "ROLE_LEVEL_").to_owned());
        v.finish()?;

        let mut tx = self.write_tx(ctx).await?;
        let before = get_custom_for_update(&mut tx, id).await?;
        check_etag(&role.etag, &etag(before.updated_at))?;
        sqlx::query!(
            "UPDATE core.roles SET name = coalesce($3, name), \
                 description = CASE WHEN $4 THEN $5 ELSE description END, \
                 category = coalesce($6, category), level = coalesce($7, level), updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            id,
            name,
            description.is_some(),
            description.flatten(),
            category,
            level,
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "role", id)
                .title(&after.code)
                .old(before.audit_values())
                .new_values(after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn delete_role(
        &self,
        request: Request<DeleteRoleRequest>,
    ) -> Result<Response<DeleteRoleResponse>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.write_tx(ctx).await?;
        let before = get_custom_for_update(&mut tx, id).await?;
        let holders = sqlx::query_scalar!(
            r#"SELECT count(*) AS "holders!" FROM core.users WHERE tenant_id = $1 AND role_id = $2"#,
            tx.tenant_id(),
            id,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        if holders > 0 {
            return Err(ApiError::precondition(
                "ROLE_IN_USE",
                format!("role is held by {holders} user(s)"),
            )
            .into());
        }
        sqlx::query!(
            "DELETE FROM core.roles WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            id,
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        tx.commit(
            AuditEntry::new(AuditAction::Delete, "role", id)
                .title(&before.code)
                .old(before.audit_values()),
        )
        .await?;
        Ok(Response::new(DeleteRoleResponse {}))
    }

    async fn list_permissions(
        &self,
        request: Request<ListPermissionsRequest>,
    ) -> Result<Response<ListPermissionsResponse>, Status> {
        let ctx = request.tenant()?;
        let mut tx = self.db.read(ctx).await?;
        let rows = sqlx::query!(
            "SELECT id, code, name, description, category FROM core.permissions ORDER BY code"
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        Ok(Response::new(ListPermissionsResponse {
            permissions: rows
                .into_iter()
                .map(|row| PermissionProto {
                    id: row.id.to_string(),
                    code: row.code,
                    name: row.name,
                    description: row.description.unwrap_or_default(),
                    category: row.category,
                })
                .collect(),
        }))
    }

    async fn set_role_permissions(
        &self,
        request: Request<SetRolePermissionsRequest>,
    ) -> Result<Response<Role>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let id = v.uuid("role_id", &req.role_id);
        let permissions = parse_permission_codes(&mut v, "permission_codes", &req.permission_codes);
        v.finish()?;
        ensure_can_grant(ctx, permissions)?;
        let mut tx = self.write_tx(ctx).await?;
        let before = get_custom_for_update(&mut tx, id).await?;
        // Removing permissions from a role demotes its holders: the caller
        // must hold what is taken away too.
        ensure_can_grant(ctx, before.permission_set())?;
        replace_permissions(&mut tx, id, permissions).await?;
        sqlx::query!(
            "UPDATE core.roles SET updated_at = clock_timestamp() WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            id,
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "role", id)
                .title(&after.code)
                .description("permissions replaced")
                .old(json!({"permissions": before.permissions}))
                .new_values(json!({"permissions": after.permissions})),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }
}
