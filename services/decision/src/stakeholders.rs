//! StakeholderService: the people who decide, internal (a user of the
//! tenant, through the composite key `stakeholders_user_fkey`) or
//! external, with counters recounted from the decisions.

use chrono::{DateTime, Utc};
use codeops_platform::convert::{enum_from_db, enum_to_db, etag, id_string, opt_timestamp};
use codeops_platform::validate::{LONG_TEXT, SHORT_TEXT, TAG_TEXT, check_etag, contains_pattern};
use codeops_platform::{
    ApiError, AuditAction, AuditEntry, Claim, Cursor, Db, Page, RequestKey, TenantTx, Violations,
};
use codeops_proto::decision::stakeholder_service_server::StakeholderService;
use codeops_proto::decision::{
    CreateStakeholderRequest, DeactivateStakeholderRequest, GetStakeholderRequest,
    ListStakeholdersRequest, ListStakeholdersResponse, Stakeholder, StakeholderType,
    UpdateStakeholderRequest,
};
use codeops_tenant::RequestExt;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::decisions::{DecisionRow, time_text};
use crate::documents::{parse, tags_from_json};

pub struct Stakeholders {
    db: Db,
}

impl Stakeholders {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

struct StakeholderRow {
    id: Uuid,
    name: String,
    email: String,
    title: Option<String>,
    organization: Option<String>,
    phone: Option<String>,
    avatar_url: Option<String>,
    r#type: String,
    user_id: Option<Uuid>,
    expertise: Option<String>,
    preferred_contact_method: Option<String>,
    availability_notes: Option<String>,
    timezone: Option<String>,
    decisions_pending: Option<i32>,
    decisions_completed: Option<i32>,
    decisions_escalated: Option<i32>,
    avg_response_time_hours: Option<f64>,
    last_decision_at: Option<DateTime<Utc>>,
    is_active: Option<bool>,
    notes: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    created_by_id: Option<Uuid>,
}

impl StakeholderRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            time: self.created_at,
            id: self.id,
        }
    }

    fn active(&self) -> bool {
        self.is_active.unwrap_or(true)
    }

    fn audit_values(&self) -> Value {
        json!({
            "name": self.name,
            "email": self.email,
            "title": self.title,
            "organization": self.organization,
            "phone": self.phone,
            "avatar_url": self.avatar_url,
            "type": self.r#type,
            "user_id": self.user_id,
            "expertise": parse(self.expertise.as_deref()),
            "preferred_contact_method": self.preferred_contact_method,
            "availability_notes": self.availability_notes,
            "timezone": self.timezone,
            "is_active": self.is_active,
            "notes": self.notes,
        })
    }

    fn into_proto(self) -> Stakeholder {
        let stakeholder_type = enum_from_db(
            &self.r#type,
            "STAKEHOLDER_TYPE_",
            StakeholderType::from_str_name,
        );
        Stakeholder {
            id: self.id.to_string(),
            active: self.active(),
            expertise: tags_from_json(self.expertise.as_deref()),
            name: self.name,
            email: self.email,
            title: self.title.unwrap_or_default(),
            organization: self.organization.unwrap_or_default(),
            phone: self.phone.unwrap_or_default(),
            avatar_url: self.avatar_url.unwrap_or_default(),
            stakeholder_type: stakeholder_type as i32,
            user_id: id_string(self.user_id),
            preferred_contact_method: self.preferred_contact_method.unwrap_or_default(),
            availability_notes: self.availability_notes.unwrap_or_default(),
            timezone: self.timezone.unwrap_or_default(),
            decisions_pending: self.decisions_pending.unwrap_or_default(),
            decisions_completed: self.decisions_completed.unwrap_or_default(),
            decisions_escalated: self.decisions_escalated.unwrap_or_default(),
            avg_response_time_hours: self.avg_response_time_hours.unwrap_or_default(),
            last_decision_time: opt_timestamp(self.last_decision_at),
            notes: self.notes.unwrap_or_default(),
            create_time: opt_timestamp(Some(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            created_by_id: id_string(self.created_by_id),
            etag: etag(self.updated_at),
        }
    }
}

async fn get(tx: &mut impl TenantTx, id: Uuid) -> Result<StakeholderRow, ApiError> {
    sqlx::query_as!(
        StakeholderRow,
        "SELECT id, name, email, title, organization, phone, avatar_url, type, user_id, expertise, \
             preferred_contact_method, availability_notes, timezone, decisions_pending, decisions_completed, \
             decisions_escalated, avg_response_time_hours, last_decision_at, is_active, notes, created_at, \
             updated_at, created_by_id \
         FROM core.stakeholders WHERE tenant_id = $1 AND id = $2",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("stakeholder"))
}

/// Recounts the counters of the stakeholders of `users` from the
/// tenant's decisions (the definitions are stakeholder.proto's service
/// comment). Run in the transaction that moves a decision, with every user
/// the move may concern, before and after.
pub(crate) async fn recount(
    tx: &mut impl TenantTx,
    users: &[Option<Uuid>],
) -> Result<(), ApiError> {
    let mut users: Vec<Uuid> = users.iter().flatten().copied().collect();
    users.sort();
    users.dedup();
    if users.is_empty() {
        return Ok(());
    }
    // Serialise recounts per user first (in id order, so concurrent ones
    // never deadlock), then recount in a statement of its own: its
    // snapshot starts once the lock is held, so it sees every decision
    // move committed by whoever held it before, and a stale recount never
    // overwrites a newer one. A transaction-scoped advisory lock rather
    // than the stakeholder rows' locks: it also covers a stakeholder being
    // created for the user while a decision moves.
    sqlx::query_scalar!(
        "SELECT count(*) AS \"locked!\" FROM (SELECT pg_advisory_xact_lock(hashtextextended('stakeholder:' || u.id::text, 0)) \
         FROM unnest($1::uuid[]) AS u(id)) l",
        &users,
    )
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query!(
        "UPDATE core.stakeholders s SET \
             decisions_pending = c.pending, \
             decisions_completed = c.completed, \
             decisions_escalated = c.escalated, \
             avg_response_time_hours = c.avg_hours, \
             last_decision_at = c.last_at \
         FROM (SELECT u.id AS user_id, \
                 (SELECT count(*) FROM core.decisions d WHERE d.tenant_id = $1 \
                    AND d.status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') \
                    AND (d.escalated_to_id = u.id OR (d.escalated_to_id IS NULL AND d.assigned_to_id = u.id)))::int \
                    AS pending, \
                 (SELECT count(*) FROM core.decisions d WHERE d.tenant_id = $1 AND d.decided_by_id = u.id)::int \
                    AS completed, \
                 (SELECT count(*) FROM core.decisions d WHERE d.tenant_id = $1 AND d.escalated_to_id = u.id)::int \
                    AS escalated, \
                 (SELECT avg(extract(epoch FROM d.decided_at - d.created_at) / 3600) FROM core.decisions d \
                    WHERE d.tenant_id = $1 AND d.decided_by_id = u.id AND d.decided_at IS NOT NULL)::float8 \
                    AS avg_hours, \
                 (SELECT max(d.decided_at) FROM core.decisions d WHERE d.tenant_id = $1 AND d.decided_by_id = u.id) \
                    AS last_at \
               FROM unnest($2::uuid[]) AS u(id)) c \
         WHERE s.tenant_id = $1 AND s.user_id = c.user_id",
        tx.tenant_id(),
        &users,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The validated fields of a create or update (`None`: left alone;
/// `Some(None)`: cleared).
#[derive(Default)]
struct Fields {
    name: Option<String>,
    email: Option<String>,
    title: Option<Option<String>>,
    organization: Option<Option<String>>,
    phone: Option<Option<String>>,
    avatar_url: Option<Option<String>>,
    r#type: Option<String>,
    user_id: Option<Option<Uuid>>,
    expertise: Option<Option<String>>,
    preferred_contact_method: Option<Option<String>>,
    availability_notes: Option<Option<String>>,
    timezone: Option<Option<String>>,
    notes: Option<Option<String>>,
}

const UPDATABLE: &[&str] = &[
    "name",
    "email",
    "title",
    "organization",
    "phone",
    "avatar_url",
    "stakeholder_type",
    "user_id",
    "expertise",
    "preferred_contact_method",
    "availability_notes",
    "timezone",
    "notes",
];

fn type_db(t: StakeholderType) -> String {
    enum_to_db(t.as_str_name(), "STAKEHOLDER_TYPE_").to_owned()
}

fn fields(s: &Stakeholder, wanted: impl Fn(&str) -> bool, v: &mut Violations) -> Fields {
    let f = |name: &str| format!("stakeholder.{name}");
    let short = |v: &mut Violations, name: &str, value: &str| {
        wanted(name).then(|| v.optional(&f(name), value, SHORT_TEXT))
    };
    Fields {
        name: wanted("name").then(|| v.required(&f("name"), &s.name, SHORT_TEXT)),
        email: wanted("email").then(|| v.email(&f("email"), &s.email)),
        title: short(v, "title", &s.title),
        organization: short(v, "organization", &s.organization),
        phone: short(v, "phone", &s.phone),
        avatar_url: wanted("avatar_url").then(|| v.optional_url(&f("avatar_url"), &s.avatar_url)),
        r#type: wanted("stakeholder_type").then(|| {
            v.enum_value::<StakeholderType>(&f("stakeholder_type"), s.stakeholder_type)
                .map(type_db)
                .unwrap_or_default()
        }),
        user_id: wanted("user_id").then(|| v.optional_uuid(&f("user_id"), &s.user_id)),
        expertise: wanted("expertise").then(|| {
            let topics = v.tags(&f("expertise"), &s.expertise);
            (!topics.is_empty()).then(|| Value::from(topics).to_string())
        }),
        preferred_contact_method: short(v, "preferred_contact_method", &s.preferred_contact_method),
        availability_notes: wanted("availability_notes")
            .then(|| v.optional(&f("availability_notes"), &s.availability_notes, LONG_TEXT)),
        timezone: short(v, "timezone", &s.timezone),
        notes: wanted("notes").then(|| v.optional(&f("notes"), &s.notes, LONG_TEXT)),
    }
}

/// Constraint errors of a stakeholder write, with the request's paths: a
/// taken e-mail or user is ALREADY_EXISTS, an INTERNAL stakeholder without
/// a user a violation on user_id.
fn write_error(err: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &err
        && db.constraint() == Some("stakeholders_internal_user_check")
    {
        return ApiError::field(
            "stakeholder.user_id",
            "is required for an INTERNAL stakeholder",
        );
    }
    match crate::write_error("stakeholder")(err) {
        ApiError::AlreadyExists { message, .. } => ApiError::already_exists("stakeholder", message),
        other => other,
    }
}

#[tonic::async_trait]
impl StakeholderService for Stakeholders {
    async fn create_stakeholder(
        &self,
        request: Request<CreateStakeholderRequest>,
    ) -> Result<Response<Stakeholder>, Status> {
        let ctx = request.tenant()?;
        let s = request.get_ref().stakeholder.clone().unwrap_or_default();
        let mut v = Violations::new();
        let f = fields(&s, |_| true, &mut v);
        if f.r#type.as_deref() == Some("INTERNAL") && f.user_id.flatten().is_none() {
            v.add(
                "stakeholder.user_id",
                "is required for an INTERNAL stakeholder",
            );
        }
        let key = RequestKey::parse(&mut v, request.get_ref());
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let id = Uuid::now_v7();
        if let Claim::Replay(first) = tx.claim(key.as_ref(), id).await? {
            return Ok(Response::new(get(&mut tx, first).await?.into_proto()));
        }
        let user_id = f.user_id.flatten();
        sqlx::query!(
            "INSERT INTO core.stakeholders (id, tenant_id, name, email, title, organization, phone, avatar_url, \
                 type, user_id, expertise, preferred_contact_method, availability_notes, timezone, \
                 decisions_pending, decisions_completed, decisions_escalated, is_active, notes, created_at, \
                 updated_at, created_by_id) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0, 0, 0, true, $15, t.at, t.at, $16 \
             FROM (SELECT clock_timestamp() AS at) t",
            id,
            tx.tenant_id(),
            f.name.unwrap_or_default(),
            f.email.unwrap_or_default(),
            f.title.flatten(),
            f.organization.flatten(),
            f.phone.flatten(),
            f.avatar_url.flatten(),
            f.r#type.unwrap_or_default(),
            user_id,
            f.expertise.flatten(),
            f.preferred_contact_method.flatten(),
            f.availability_notes.flatten(),
            f.timezone.flatten(),
            f.notes.flatten(),
            ctx.user_id,
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
        recount(&mut tx, &[user_id]).await?;
        let created = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Create, "stakeholder", id)
                .title(&created.name)
                .new_values(created.audit_values()),
        )
        .await?;
        Ok(Response::new(created.into_proto()))
    }

    async fn get_stakeholder(
        &self,
        request: Request<GetStakeholderRequest>,
    ) -> Result<Response<Stakeholder>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        Ok(Response::new(get(&mut tx, id).await?.into_proto()))
    }

    async fn list_stakeholders(
        &self,
        request: Request<ListStakeholdersRequest>,
    ) -> Result<Response<ListStakeholdersResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let stakeholder_type = v
            .optional_enum::<StakeholderType>("stakeholder_type", req.stakeholder_type)
            .map(type_db);
        let expertise = v.optional("expertise", &req.expertise, TAG_TEXT);
        let query = v.optional("query", &req.query, SHORT_TEXT);
        let filters = format!(
            "stakeholders|{stakeholder_type:?}|{:?}|{expertise:?}|{query:?}",
            req.active
        );
        let page = Page::parse(req.page_size, &req.page_token, &filters, &mut v);
        v.finish()?;

        let pattern = query.as_deref().map(contains_pattern);
        let mut tx = self.db.read(ctx).await?;
        let rows = sqlx::query_as!(
            StakeholderRow,
            "SELECT id, name, email, title, organization, phone, avatar_url, type, user_id, expertise, \
                 preferred_contact_method, availability_notes, timezone, decisions_pending, decisions_completed, \
                 decisions_escalated, avg_response_time_hours, last_decision_at, is_active, notes, created_at, \
                 updated_at, created_by_id \
             FROM core.stakeholders \
             WHERE tenant_id = $1 \
               AND ($2::text IS NULL OR type = $2) \
               AND ($3::bool IS NULL OR coalesce(is_active, true) = $3) \
               AND ($4::text IS NULL OR EXISTS ( \
                     SELECT 1 FROM jsonb_array_elements_text(coalesce(expertise, '[]')::jsonb) e \
                     WHERE lower(e) = lower($4))) \
               AND ($5::text IS NULL OR name ILIKE $5 OR email ILIKE $5 OR title ILIKE $5 \
                    OR organization ILIKE $5) \
               AND (created_at, id) < ($6::text::timestamptz, $7::uuid) \
             ORDER BY created_at DESC, id DESC \
             LIMIT $8",
            tx.tenant_id(),
            stakeholder_type,
            req.active,
            expertise,
            pattern,
            time_text(page.after_time(), "infinity"),
            page.after_id().unwrap_or(Uuid::max()),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let (stakeholders, next_page_token) =
            page.finish(rows, StakeholderRow::cursor, StakeholderRow::into_proto);
        Ok(Response::new(ListStakeholdersResponse {
            stakeholders,
            next_page_token,
        }))
    }

    async fn update_stakeholder(
        &self,
        request: Request<UpdateStakeholderRequest>,
    ) -> Result<Response<Stakeholder>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let s = req.stakeholder.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v.uuid("stakeholder.id", &s.id);
        let mask = v.update_mask(req.update_mask.as_ref(), UPDATABLE);
        let f = fields(&s, |path| mask.contains(path), &mut v);
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(&s.etag, &etag(before.updated_at))?;
        let updated = sqlx::query!(
            "UPDATE core.stakeholders SET \
                 name = coalesce($4, name), \
                 email = coalesce($5, email), \
                 title = CASE WHEN $6::bool THEN $7::text ELSE title END, \
                 organization = CASE WHEN $8::bool THEN $9::text ELSE organization END, \
                 phone = CASE WHEN $10::bool THEN $11::text ELSE phone END, \
                 avatar_url = CASE WHEN $12::bool THEN $13::text ELSE avatar_url END, \
                 type = coalesce($14, type), \
                 user_id = CASE WHEN $15::bool THEN $16::uuid ELSE user_id END, \
                 expertise = CASE WHEN $17::bool THEN $18::text ELSE expertise END, \
                 preferred_contact_method = CASE WHEN $19::bool THEN $20::text ELSE preferred_contact_method END, \
                 availability_notes = CASE WHEN $21::bool THEN $22::text ELSE availability_notes END, \
                 timezone = CASE WHEN $23::bool THEN $24::text ELSE timezone END, \
                 notes = CASE WHEN $25::bool THEN $26::text ELSE notes END, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND updated_at IS NOT DISTINCT FROM $3",
            tx.tenant_id(),
            id,
            before.updated_at,
            f.name,
            f.email,
            f.title.is_some(),
            f.title.flatten(),
            f.organization.is_some(),
            f.organization.flatten(),
            f.phone.is_some(),
            f.phone.flatten(),
            f.avatar_url.is_some(),
            f.avatar_url.flatten(),
            f.r#type,
            f.user_id.is_some(),
            f.user_id.flatten(),
            f.expertise.is_some(),
            f.expertise.flatten(),
            f.preferred_contact_method.is_some(),
            f.preferred_contact_method.flatten(),
            f.availability_notes.is_some(),
            f.availability_notes.flatten(),
            f.timezone.is_some(),
            f.timezone.flatten(),
            f.notes.is_some(),
            f.notes.flatten(),
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error)?
        .rows_affected();
        if updated == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        if let Some(user_id) = f.user_id
            && user_id != before.user_id
        {
            // A stakeholder without a user has zero counters.
            sqlx::query!(
                "UPDATE core.stakeholders SET decisions_pending = 0, decisions_completed = 0, \
                     decisions_escalated = 0, avg_response_time_hours = NULL, last_decision_at = NULL \
                 WHERE tenant_id = $1 AND id = $2",
                tx.tenant_id(),
                id,
            )
            .execute(&mut *tx)
            .await
            .map_err(ApiError::from)?;
            recount(&mut tx, &[user_id]).await?;
        }
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "stakeholder", id)
                .title(&after.name)
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn deactivate_stakeholder(
        &self,
        request: Request<DeactivateStakeholderRequest>,
    ) -> Result<Response<Stakeholder>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let id = v.uuid("id", &req.id);
        v.finish()?;
        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(&req.etag, &etag(before.updated_at))?;
        if !before.active() {
            return Err(ApiError::precondition(
                "ALREADY_DEACTIVATED",
                "the stakeholder is already inactive",
            )
            .into());
        }
        let updated = sqlx::query!(
            "UPDATE core.stakeholders SET is_active = false, updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND updated_at IS NOT DISTINCT FROM $3",
            tx.tenant_id(),
            id,
            before.updated_at,
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?
        .rows_affected();
        if updated == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::StatusChange, "stakeholder", id)
                .title(&after.name)
                .description("ACTIVE -> INACTIVE")
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }
}

/// Recounts the stakeholders a decision's move may concern: whoever held,
/// resolved or was escalated it before and after.
pub(crate) async fn recount_moved(
    tx: &mut impl TenantTx,
    before: &DecisionRow,
    after: &DecisionRow,
) -> Result<(), ApiError> {
    recount(
        tx,
        &[
            before.escalated_to_id,
            before.assigned_to_id,
            before.decided_by_id,
            after.escalated_to_id,
            after.assigned_to_id,
            after.decided_by_id,
        ],
    )
    .await
}
