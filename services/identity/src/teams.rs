//! TeamService: teams of the caller's tenant and their members.

use chrono::{DateTime, Utc};
use codeops_platform::convert::{
    enum_from_db, enum_to_db, etag, id_string, json_to_struct, opt_timestamp, timestamp,
};
use codeops_platform::validate::{SHORT_TEXT, check_etag, contains_pattern};
use codeops_platform::{
    ApiError, AuditAction, AuditEntry, Claim, Cursor, Page, RequestKey, TenantTx, Violations,
};
use codeops_proto::identity::team_service_server::TeamService;
use codeops_proto::identity::{
    AddTeamMemberRequest, CreateTeamRequest, DeleteTeamRequest, GetTeamRequest,
    ListTeamMembersRequest, ListTeamMembersResponse, ListTeamsRequest, ListTeamsResponse,
    RemoveTeamMemberRequest, RemoveTeamMemberResponse, Team, TeamMember, TeamRole,
    UpdateTeamRequest,
};
use codeops_tenant::RequestExt;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Svc;
use crate::users::ensure_user_in_tenant;

/// A team as the schema types it.
struct TeamRow {
    id: Uuid,
    name: String,
    slug: String,
    description: Option<String>,
    icon_url: Option<String>,
    color: Option<String>,
    lead_id: Option<Uuid>,
    is_active: Option<bool>,
    settings: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
}

impl TeamRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            time: self.created_at,
            id: self.id,
        }
    }

    fn audit_values(&self) -> serde_json::Value {
        json!({
            "name": self.name, "slug": self.slug, "description": self.description, "icon_url": self.icon_url,
            "color": self.color, "lead_id": self.lead_id, "is_active": self.is_active,
            "settings": self.settings.as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()),
        })
    }

    fn into_proto(self) -> Team {
        Team {
            id: self.id.to_string(),
            name: self.name,
            slug: self.slug,
            description: self.description.unwrap_or_default(),
            icon_url: self.icon_url.unwrap_or_default(),
            color: self.color.unwrap_or_default(),
            lead_id: id_string(self.lead_id),
            is_active: self.is_active.unwrap_or(false),
            settings: self
                .settings
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .map(|v| json_to_struct(&v)),
            create_time: Some(timestamp(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            etag: etag(self.updated_at),
        }
    }
}

async fn get(tx: &mut impl TenantTx, id: Uuid) -> Result<TeamRow, ApiError> {
    sqlx::query_as!(
        TeamRow,
        "SELECT id, name, slug, description, icon_url, color, lead_id, is_active, settings, created_at, updated_at \
         FROM core.teams WHERE tenant_id = $1 AND id = $2",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
        .await?
        .ok_or(ApiError::NotFound("team"))
}

async fn get_for_update(tx: &mut impl TenantTx, id: Uuid) -> Result<TeamRow, ApiError> {
    sqlx::query_as!(
        TeamRow,
        "SELECT id, name, slug, description, icon_url, color, lead_id, is_active, settings, created_at, updated_at \
         FROM core.teams WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("team"))
}

fn color(v: &mut Violations, value: &str) -> Option<String> {
    let color = v.optional("team.color", value, SHORT_TEXT)?;
    let valid = color.len() == 7
        && color.starts_with('#')
        && color[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        v.add("team.color", "must be #rrggbb");
    }
    Some(color)
}

/// The slug constraint clash, as the client should see it.
fn slug_taken(err: sqlx::Error) -> ApiError {
    match ApiError::from(err) {
        ApiError::AlreadyExists { .. } => {
            ApiError::already_exists("team", "a team with this slug already exists")
        }
        other => other,
    }
}

/// A membership with the member's name and e-mail.
struct MemberRow {
    id: Uuid,
    team_id: Uuid,
    user_id: Uuid,
    team_role: String,
    joined_at: DateTime<Utc>,
    added_by_id: Option<Uuid>,
    email: String,
    first_name: String,
    last_name: String,
}

impl MemberRow {
    fn into_proto(self) -> TeamMember {
        TeamMember {
            id: self.id.to_string(),
            team_id: self.team_id.to_string(),
            user_id: self.user_id.to_string(),
            team_role: enum_from_db(&self.team_role, "TEAM_ROLE_", TeamRole::from_str_name) as i32,
            join_time: Some(timestamp(self.joined_at)),
            added_by_id: id_string(self.added_by_id),
            email: self.email,
            first_name: self.first_name,
            last_name: self.last_name,
        }
    }
}

#[tonic::async_trait]
impl TeamService for Svc {
    async fn create_team(
        &self,
        request: Request<CreateTeamRequest>,
    ) -> Result<Response<Team>, Status> {
        let ctx = request.tenant()?;
        let team = request.get_ref().team.clone().unwrap_or_default();
        let mut v = Violations::new();
        let name = v.required("team.name", &team.name, SHORT_TEXT);
        let slug = v.slug("team.slug", &team.slug);
        let description = v.optional("team.description", &team.description, SHORT_TEXT);
        let icon_url = v.optional_url("team.icon_url", &team.icon_url);
        let color = color(&mut v, &team.color);
        let lead_id = v.optional_uuid("team.lead_id", &team.lead_id);
        let settings = v.json_struct("team.settings", team.settings.as_ref());
        let key = RequestKey::parse(&mut v, request.get_ref());
        v.finish()?;

        let mut tx = self.write_tx(ctx).await?;
        let id = Uuid::now_v7();
        if let Claim::Replay(first) = tx.claim(key.as_ref(), id).await? {
            return Ok(Response::new(get(&mut tx, first).await?.into_proto()));
        }
        if let Some(lead_id) = lead_id {
            ensure_user_in_tenant(&mut tx, lead_id, "team.lead_id").await?;
        }
        sqlx::query!(
            "INSERT INTO core.teams (id, tenant_id, name, slug, description, icon_url, color, lead_id, is_active, \
                 settings, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, true, $9, now(), now())",
            id,
            tx.tenant_id(),
            &name,
            &slug,
            description.as_deref(),
            icon_url.as_deref(),
            color.as_deref(),
            lead_id,
            settings.as_deref(),
        )
        .execute(&mut *tx)
        .await
        .map_err(slug_taken)?;
        let created = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Create, "team", id)
                .title(&created.name)
                .new_values(created.audit_values()),
        )
        .await?;
        Ok(Response::new(created.into_proto()))
    }

    async fn get_team(&self, request: Request<GetTeamRequest>) -> Result<Response<Team>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        let team = get(&mut tx, id).await?;
        Ok(Response::new(team.into_proto()))
    }

    async fn list_teams(
        &self,
        request: Request<ListTeamsRequest>,
    ) -> Result<Response<ListTeamsResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let query = v.optional("query", &req.query, SHORT_TEXT);
        let filters = format!("{}|{query:?}", req.include_archived);
        let page = Page::parse(req.page_size, &req.page_token, &filters, &mut v);
        v.finish()?;
        let pattern = query.as_deref().map(contains_pattern);
        let mut tx = self.db.read(ctx).await?;
        let rows = sqlx::query_as!(
            TeamRow,
            "SELECT id, name, slug, description, icon_url, color, lead_id, is_active, settings, created_at, \
                 updated_at \
             FROM core.teams WHERE tenant_id = $1 \
               AND ($2 OR coalesce(is_active, false)) \
               AND ($3::text IS NULL OR name ILIKE $3 OR slug ILIKE $3) \
               AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5)) \
             ORDER BY created_at, id LIMIT $6",
            tx.tenant_id(),
            req.include_archived,
            pattern,
            page.after_time(),
            page.after_id(),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let (teams, next_page_token) = page.finish(rows, TeamRow::cursor, TeamRow::into_proto);
        Ok(Response::new(ListTeamsResponse {
            teams,
            next_page_token,
        }))
    }

    async fn update_team(
        &self,
        request: Request<UpdateTeamRequest>,
    ) -> Result<Response<Team>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let team = req.team.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v.uuid("team.id", &team.id);
        let mask = v.update_mask(
            req.update_mask.as_ref(),
            &[
                "name",
                "slug",
                "description",
                "icon_url",
                "color",
                "lead_id",
                "settings",
            ],
        );
        let has = |p: &str| mask.contains(p);
        let name = has("name").then(|| v.required("team.name", &team.name, SHORT_TEXT));
        let slug = has("slug").then(|| v.slug("team.slug", &team.slug));
        let description = has("description")
            .then(|| v.optional("team.description", &team.description, SHORT_TEXT));
        let icon_url = has("icon_url").then(|| v.optional_url("team.icon_url", &team.icon_url));
        let color = has("color").then(|| color(&mut v, &team.color));
        let lead_id = has("lead_id").then(|| v.optional_uuid("team.lead_id", &team.lead_id));
        let settings =
            has("settings").then(|| v.json_struct("team.settings", team.settings.as_ref()));
        v.finish()?;

        let mut tx = self.write_tx(ctx).await?;
        let before = get_for_update(&mut tx, id).await?;
        check_etag(&team.etag, &etag(before.updated_at))?;
        if let Some(Some(lead_id)) = lead_id {
            ensure_user_in_tenant(&mut tx, lead_id, "team.lead_id").await?;
        }
        sqlx::query!(
            "UPDATE core.teams SET name = coalesce($3, name), slug = coalesce($4, slug), \
                 description = CASE WHEN $5 THEN $6 ELSE description END, \
                 icon_url = CASE WHEN $7 THEN $8 ELSE icon_url END, \
                 color = CASE WHEN $9 THEN $10 ELSE color END, \
                 lead_id = CASE WHEN $11 THEN $12 ELSE lead_id END, \
                 settings = CASE WHEN $13 THEN $14 ELSE settings END, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            id,
            name,
            slug,
            description.is_some(),
            description.flatten(),
            icon_url.is_some(),
            icon_url.flatten(),
            color.is_some(),
            color.flatten(),
            lead_id.is_some(),
            lead_id.flatten(),
            settings.is_some(),
            settings.flatten(),
        )
        .execute(&mut *tx)
        .await
        .map_err(slug_taken)?;
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "team", id)
                .title(&after.name)
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn delete_team(
        &self,
        request: Request<DeleteTeamRequest>,
    ) -> Result<Response<Team>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.write_tx(ctx).await?;
        let before = get_for_update(&mut tx, id).await?;
        if before.is_active == Some(false) {
            return Err(ApiError::precondition("TEAM_ARCHIVED", "team is already archived").into());
        }
        sqlx::query!(
            "UPDATE core.teams SET is_active = false, updated_at = clock_timestamp() WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            id,
        )
            .execute(&mut *tx)
            .await
            .map_err(ApiError::from)?;
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Delete, "team", id)
                .title(&after.name)
                .description("archived")
                .old(json!({"is_active": true}))
                .new_values(json!({"is_active": false})),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn add_team_member(
        &self,
        request: Request<AddTeamMemberRequest>,
    ) -> Result<Response<TeamMember>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let team_id = v.uuid("team_id", &req.team_id);
        let user_id = v.uuid("user_id", &req.user_id);
        let role = if req.team_role == 0 {
            Some(TeamRole::Member)
        } else {
            v.enum_value::<TeamRole>("team_role", req.team_role)
        };
        v.finish()?;
        let role =
            enum_to_db(role.unwrap_or(TeamRole::Member).as_str_name(), "TEAM_ROLE_").to_owned();

        let mut tx = self.write_tx(ctx).await?;
        let team = get_for_update(&mut tx, team_id).await?;
        if team.is_active == Some(false) {
            return Err(ApiError::precondition("TEAM_ARCHIVED", "team is archived").into());
        }
        let user = crate::users::get(&mut tx, user_id).await?;
        let id = Uuid::now_v7();
        sqlx::query!(
            "INSERT INTO core.team_members (id, tenant_id, team_id, user_id, team_role, joined_at, added_by_id) \
             VALUES ($1, $2, $3, $4, $5, now(), $6)",
            id,
            tx.tenant_id(),
            team_id,
            user_id,
            &role,
            ctx.user_id,
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::AlreadyExists { .. } => {
                ApiError::already_exists("team member", "the user is already a member of this team")
            }
            other => other,
        })?;
        let member = sqlx::query_as!(
            MemberRow,
            "SELECT m.id, m.team_id, m.user_id, m.team_role, m.joined_at, m.added_by_id, \
                 u.email, u.first_name, u.last_name \
             FROM core.team_members m JOIN core.users u ON u.tenant_id = m.tenant_id AND u.id = m.user_id \
             WHERE m.tenant_id = $1 AND m.id = $2",
            tx.tenant_id(),
            id,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        tx.commit(
            AuditEntry::new(AuditAction::TeamMemberAdded, "team", team_id)
                .title(&team.name)
                .description(format!("{} added as {role}", user.email))
                .new_values(json!({"user_id": user_id, "team_role": role})),
        )
        .await?;
        Ok(Response::new(member.into_proto()))
    }

    async fn remove_team_member(
        &self,
        request: Request<RemoveTeamMemberRequest>,
    ) -> Result<Response<RemoveTeamMemberResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let team_id = v.uuid("team_id", &req.team_id);
        let user_id = v.uuid("user_id", &req.user_id);
        v.finish()?;
        let mut tx = self.write_tx(ctx).await?;
        let team = get_for_update(&mut tx, team_id).await?;
        let removed = sqlx::query_scalar!(
            "DELETE FROM core.team_members WHERE tenant_id = $1 AND team_id = $2 AND user_id = $3 RETURNING team_role",
            tx.tenant_id(),
            team_id,
            user_id,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let role = removed.ok_or(ApiError::NotFound("team member"))?;
        tx.commit(
            AuditEntry::new(AuditAction::TeamMemberRemoved, "team", team_id)
                .title(&team.name)
                .old(json!({"user_id": user_id, "team_role": role})),
        )
        .await?;
        Ok(Response::new(RemoveTeamMemberResponse {}))
    }

    async fn list_team_members(
        &self,
        request: Request<ListTeamMembersRequest>,
    ) -> Result<Response<ListTeamMembersResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let team_id = v.uuid("team_id", &req.team_id);
        let page = Page::parse(req.page_size, &req.page_token, &req.team_id, &mut v);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        get(&mut tx, team_id).await?;
        let rows = sqlx::query_as!(
            MemberRow,
            "SELECT m.id, m.team_id, m.user_id, m.team_role, m.joined_at, m.added_by_id, \
                 u.email, u.first_name, u.last_name \
             FROM core.team_members m JOIN core.users u ON u.tenant_id = m.tenant_id AND u.id = m.user_id \
             WHERE m.tenant_id = $1 AND m.team_id = $2 \
               AND ($3::timestamptz IS NULL OR (m.joined_at, m.id) > ($3, $4)) \
             ORDER BY m.joined_at, m.id LIMIT $5",
            tx.tenant_id(),
            team_id,
            page.after_time(),
            page.after_id(),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let cursor = |m: &MemberRow| Cursor {
            time: m.joined_at,
            id: m.id,
        };
        let (members, next_page_token) = page.finish(rows, cursor, MemberRow::into_proto);
        Ok(Response::new(ListTeamMembersResponse {
            members,
            next_page_token,
        }))
    }
}
