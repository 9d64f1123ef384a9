//! DecisionService: the caller's tenant's decisions, their lifecycle moves,
//! assignment, escalation and lists (three orderings, each a keyset scan on
//! its own index).

use chrono::{DateTime, Utc};
use codeops_platform::convert::{
    enum_from_db, enum_to_db, etag, from_timestamp, id_string, opt_timestamp,
};
use codeops_platform::validate::{LONG_TEXT, SHORT_TEXT, TITLE_TEXT, check_etag, contains_pattern};
use codeops_platform::{
    ApiError, AuditAction, AuditEntry, Claim, Db, Ordering, Page, Position, RequestKey, SortKind,
    SortValue, TenantTx, Violations,
};
use codeops_proto::decision::decision_service_server::DecisionService;
use codeops_proto::decision::{
    AssignDecisionRequest, CancelDecisionRequest, CreateDecisionRequest, Decision,
    DecisionEventType, DecisionOrderBy, DecisionPriority, DecisionStatus, DecisionType,
    DeferDecisionRequest, DiscussDecisionRequest, EscalateDecisionRequest, GetDecisionRequest,
    ListDecisionsRequest, ListDecisionsResponse, MarkDecisionImplementedRequest,
    ReopenDecisionRequest, RequestDecisionInputRequest, ResolveDecisionRequest,
    UpdateDecisionRequest, WatchDecisionsRequest,
};
use codeops_tenant::RequestExt;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::documents::{
    option_from_json, option_to_value, options_from_json, options_to_json, parse, tags_from_json,
    tags_to_json,
};
use crate::identity::{IdentityClient, identity_unavailable};
use crate::lifecycle::{DECISION_LIFECYCLE, DecisionMove, illegal_move, is_open, status_db};
use crate::stakeholders::recount_moved;
use crate::watch::{EventKind, Filter, MAX_WATCHED_IDS, WatchHub, WatchStream, notify};
use crate::write_error;

/// Largest sla_hours: one year.
pub const MAX_SLA_HOURS: i32 = 8760;

pub struct Decisions {
    db: Db,
    identity: IdentityClient,
    hub: WatchHub,
}

impl Decisions {
    pub fn new(db: Db, identity: IdentityClient, hub: WatchHub) -> Self {
        Self { db, identity, hub }
    }
}

/// A decision row as the schema types it (NOT NULL columns are plain values).
pub(crate) struct DecisionRow {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub context: Option<String>,
    pub options: Option<String>,
    pub status: String,
    pub priority: String,
    pub decision_type: Option<String>,
    pub owner_id: Option<Uuid>,
    pub assigned_to_id: Option<Uuid>,
    pub outcome_id: Option<Uuid>,
    pub hypothesis_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub sla_hours: Option<i32>,
    pub due_at: Option<DateTime<Utc>>,
    pub escalation_level: Option<i32>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub escalated_to_id: Option<Uuid>,
    pub decided_by_id: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_rationale: Option<String>,
    pub selected_option: Option<String>,
    pub tags: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub created_by_id: Option<Uuid>,
    pub unescalated_due_at: Option<DateTime<Utc>>,
    pub priority_weight: i16,
}

/// The orderings of ListDecisions, as their page tokens record them.
const NEWEST_FIRST: Ordering = Ordering {
    name: "decisions.created_desc",
    keys: &[SortKind::Time],
};
/// The due time as microseconds (i64::MAX: none), then the creation time.
const BY_DUE_TIME: Ordering = Ordering {
    name: "decisions.due",
    keys: &[SortKind::Int, SortKind::Time],
};
const BY_PRIORITY: Ordering = Ordering {
    name: "decisions.priority",
    keys: &[SortKind::Int, SortKind::Time],
};

/// A sort key time as PostgreSQL text (exact to the microsecond), or
/// `unset` ('infinity', '-infinity').
pub(crate) fn time_text(time: Option<DateTime<Utc>>, unset: &str) -> String {
    time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| unset.to_owned())
}

impl DecisionRow {
    pub(crate) fn status(&self) -> DecisionStatus {
        crate::lifecycle::status_from_db(&self.status)
    }

    /// Whoever holds the decision now: whom it was escalated to, else its
    /// assignee, else its owner.
    pub(crate) fn holder(&self) -> Option<Uuid> {
        self.escalated_to_id
            .or(self.assigned_to_id)
            .or(self.owner_id)
    }

    fn newest_first(&self) -> Position {
        Position {
            keys: vec![SortValue::Time(self.created_at)],
            id: self.id,
        }
    }

    fn by_due_time(&self) -> Position {
        Position {
            keys: vec![
                SortValue::Int(self.due_at.map_or(i64::MAX, |t| t.timestamp_micros())),
                SortValue::Time(self.created_at),
            ],
            id: self.id,
        }
    }

    fn by_priority(&self) -> Position {
        Position {
            keys: vec![
                SortValue::Int(i64::from(self.priority_weight)),
                SortValue::Time(self.created_at),
            ],
            id: self.id,
        }
    }

    /// What the audit trail records of a decision (JSON documents as JSON).
    pub(crate) fn audit_values(&self) -> serde_json::Value {
        json!({
            "title": self.title,
            "description": self.description,
            "context": self.context,
            "options": parse(self.options.as_deref()),
            "status": self.status,
            "priority": self.priority,
            "decision_type": self.decision_type,
            "owner_id": self.owner_id,
            "assigned_to_id": self.assigned_to_id,
            "outcome_id": self.outcome_id,
            "hypothesis_id": self.hypothesis_id,
            "team_id": self.team_id,
            "sla_hours": self.sla_hours,
            "due_at": self.due_at,
            "escalation_level": self.escalation_level,
            "escalated_at": self.escalated_at,
            "escalated_to_id": self.escalated_to_id,
            "decided_by_id": self.decided_by_id,
            "decided_at": self.decided_at,
            "decision_rationale": self.decision_rationale,
            "selected_option": parse(self.selected_option.as_deref()),
            "tags": parse(self.tags.as_deref()),
            "unescalated_due_at": self.unescalated_due_at,
        })
    }

    pub(crate) fn into_proto(self) -> Decision {
        let priority = enum_from_db(
            &self.priority,
            "DECISION_PRIORITY_",
            DecisionPriority::from_str_name,
        );
        let decision_type = self
            .decision_type
            .as_deref()
            .map(|t| enum_from_db(t, "DECISION_TYPE_", DecisionType::from_str_name))
            .unwrap_or_default();
        Decision {
            id: self.id.to_string(),
            status: self.status() as i32,
            escalation_flagged: self.unescalated_due_at.is_some()
                && self.unescalated_due_at == self.due_at,
            priority: priority as i32,
            decision_type: decision_type as i32,
            options: options_from_json(self.options.as_deref()),
            selected_option: option_from_json(self.selected_option.as_deref()),
            tags: tags_from_json(self.tags.as_deref()),
            title: self.title,
            description: self.description.unwrap_or_default(),
            context: self.context.unwrap_or_default(),
            owner_id: id_string(self.owner_id),
            assigned_to_id: id_string(self.assigned_to_id),
            outcome_id: id_string(self.outcome_id),
            hypothesis_id: id_string(self.hypothesis_id),
            team_id: id_string(self.team_id),
            sla_hours: self.sla_hours.unwrap_or_default(),
            due_time: opt_timestamp(self.due_at),
            escalation_level: self.escalation_level.unwrap_or_default(),
            escalate_time: opt_timestamp(self.escalated_at),
            escalated_to_id: id_string(self.escalated_to_id),
            decided_by_id: id_string(self.decided_by_id),
            decide_time: opt_timestamp(self.decided_at),
            decision_rationale: self.decision_rationale.unwrap_or_default(),
            created_by_id: id_string(self.created_by_id),
            create_time: opt_timestamp(Some(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            etag: etag(self.updated_at),
        }
    }
}

/// One decision of the transaction's tenant.
pub(crate) async fn get(tx: &mut impl TenantTx, id: Uuid) -> Result<DecisionRow, ApiError> {
    sqlx::query_as!(
        DecisionRow,
        "SELECT id, title, description, context, options, status, priority, decision_type, owner_id, \
             assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at, escalation_level, \
             escalated_at, escalated_to_id, decided_by_id, decided_at, decision_rationale, selected_option, \
             tags, created_at, updated_at, created_by_id, unescalated_due_at, priority_weight \
         FROM core.decisions WHERE tenant_id = $1 AND id = $2",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("decision"))
}

/// Escalates an open decision to `to` at `at` (the database's clock when
/// `None`): level + 1, a new deadline of sla_hours from then. Conditional on
/// the version read, so a concurrent write makes it a no-op (false).
pub(crate) async fn escalate(
    tx: &mut impl TenantTx,
    before: &DecisionRow,
    to: Uuid,
    at: Option<DateTime<Utc>>,
) -> Result<bool, ApiError> {
    let moved = sqlx::query!(
        "UPDATE core.decisions SET \
             escalation_level = coalesce(escalation_level, 0) + 1, \
             escalated_at = coalesce($4::timestamptz, clock_timestamp()), \
             escalated_to_id = $5, \
             due_at = coalesce($4::timestamptz, clock_timestamp()) + make_interval(hours => coalesce(sla_hours, 168)), \
             updated_at = clock_timestamp() \
         WHERE tenant_id = $1 AND id = $2 AND updated_at IS NOT DISTINCT FROM $3 \
           AND status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION')",
        tx.tenant_id(),
        before.id,
        before.updated_at,
        at,
        to,
    )
    .execute(&mut **tx)
    .await
    .map_err(write_error("decision"))?
    .rows_affected();
    Ok(moved == 1)
}

/// The validated fields of a create or update (each `None` when an update
/// leaves it alone; `Some(None)` clears it).
#[derive(Default)]
struct Fields {
    title: Option<String>,
    description: Option<Option<String>>,
    context: Option<Option<String>>,
    priority: Option<String>,
    decision_type: Option<Option<String>>,
    options: Option<Option<String>>,
    owner_id: Option<Option<Uuid>>,
    team_id: Option<Option<Uuid>>,
    outcome_id: Option<Option<Uuid>>,
    hypothesis_id: Option<Option<Uuid>>,
    sla_hours: Option<i32>,
    tags: Option<Option<String>>,
}

/// Every path UpdateDecision takes.
const UPDATABLE: &[&str] = &[
    "title",
    "description",
    "context",
    "priority",
    "decision_type",
    "options",
    "owner_id",
    "team_id",
    "outcome_id",
    "hypothesis_id",
    "sla_hours",
    "tags",
];

fn priority_db(priority: DecisionPriority) -> String {
    enum_to_db(priority.as_str_name(), "DECISION_PRIORITY_").to_owned()
}

fn type_db(t: DecisionType) -> String {
    enum_to_db(t.as_str_name(), "DECISION_TYPE_").to_owned()
}

fn check_sla(v: &mut Violations, field: &str, hours: i32) {
    if !(1..=MAX_SLA_HOURS).contains(&hours) {
        v.add(
            field,
            format!("must be between 1 and {MAX_SLA_HOURS} hours"),
        );
    }
}

/// Validates the fields of `d` that `wanted` selects.
fn fields(d: &Decision, wanted: impl Fn(&str) -> bool, v: &mut Violations) -> Fields {
    let f = |name: &str| format!("decision.{name}");
    Fields {
        title: wanted("title").then(|| v.required(&f("title"), &d.title, TITLE_TEXT)),
        description: wanted("description")
            .then(|| v.optional(&f("description"), &d.description, LONG_TEXT)),
        context: wanted("context").then(|| v.optional(&f("context"), &d.context, LONG_TEXT)),
        priority: wanted("priority").then(|| {
            v.enum_value::<DecisionPriority>(&f("priority"), d.priority)
                .map(priority_db)
                .unwrap_or_default()
        }),
        decision_type: wanted("decision_type").then(|| {
            v.optional_enum::<DecisionType>(&f("decision_type"), d.decision_type)
                .map(type_db)
        }),
        options: wanted("options").then(|| options_to_json(&f("options"), &d.options, v)),
        owner_id: wanted("owner_id").then(|| v.optional_uuid(&f("owner_id"), &d.owner_id)),
        team_id: wanted("team_id").then(|| v.optional_uuid(&f("team_id"), &d.team_id)),
        outcome_id: wanted("outcome_id").then(|| v.optional_uuid(&f("outcome_id"), &d.outcome_id)),
        hypothesis_id: wanted("hypothesis_id")
            .then(|| v.optional_uuid(&f("hypothesis_id"), &d.hypothesis_id)),
        sla_hours: wanted("sla_hours").then_some(d.sla_hours),
        tags: wanted("tags").then(|| tags_to_json(&f("tags"), &d.tags, v)),
    }
}

/// A lifecycle move with its own fields.
struct Move {
    mv: DecisionMove,
    selected_option_id: Option<String>,
    rationale: Option<String>,
    reason: Option<String>,
}

impl Move {
    fn of(mv: DecisionMove) -> Move {
        Move {
            mv,
            selected_option_id: None,
            rationale: None,
            reason: None,
        }
    }
}

impl Decisions {
    /// Applies `mv` to decision `id` if product.md's table allows it from
    /// the status read, with one conditional UPDATE on that status and
    /// version, so of two concurrent moves exactly one wins (the other is
    /// ABORTED); audited in the same transaction.
    async fn transition(
        &self,
        request: &Request<impl Sized>,
        id: &str,
        given_etag: &str,
        mv: Move,
        v: Violations,
    ) -> Result<Response<Decision>, Status> {
        let ctx = request.tenant()?;
        let mut v = v;
        let id = v.uuid("id", id);
        v.finish()?;
        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(given_etag, &etag(before.updated_at))?;
        let from = before.status();
        if !DECISION_LIFECYCLE.allows(from, mv.mv) {
            return Err(illegal_move(from, mv.mv).into());
        }
        let selected = match &mv.selected_option_id {
            Some(option_id) => {
                let options = options_from_json(before.options.as_deref());
                let Some(option) = options.iter().find(|o| &o.id == option_id) else {
                    return Err(ApiError::field(
                        "selected_option_id",
                        "is not an option of the decision",
                    )
                    .into());
                };
                Some(option_to_value(option).to_string())
            }
            None => None,
        };
        let moved = sqlx::query!(
            "UPDATE core.decisions SET \
                 status = $5::text, \
                 decided_by_id = CASE WHEN $5 = 'DECIDED' THEN $6::uuid WHEN $7::bool THEN NULL ELSE decided_by_id END, \
                 decided_at = CASE WHEN $5 = 'DECIDED' THEN clock_timestamp() WHEN $7 THEN NULL ELSE decided_at END, \
                 decision_rationale = CASE WHEN $5 = 'DECIDED' THEN $8::text WHEN $7 THEN NULL \
                     ELSE decision_rationale END, \
                 selected_option = CASE WHEN $5 = 'DECIDED' THEN $9::text WHEN $7 THEN NULL ELSE selected_option END, \
                 due_at = CASE WHEN $5 IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') \
                               AND status NOT IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') \
                          THEN clock_timestamp() + make_interval(hours => coalesce(sla_hours, 168)) \
                          ELSE due_at END, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND status = $3::text AND updated_at IS NOT DISTINCT FROM $4",
            tx.tenant_id(),
            id,
            before.status,
            before.updated_at,
            status_db(mv.mv.target()),
            ctx.user_id,
            mv.mv == DecisionMove::Reopen,
            mv.rationale,
            selected,
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("request"))?
        .rows_affected();
        if moved == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        recount_moved(&mut tx, &before, &after).await?;
        let (action, event) = if mv.mv == DecisionMove::Resolve {
            (AuditAction::DecisionResolved, EventKind::Resolved)
        } else {
            (AuditAction::StatusChange, EventKind::StatusChanged)
        };
        notify(&mut tx, id, event, &after.status).await?;
        let mut description = format!("{} -> {}", before.status, after.status);
        if let Some(reason) = &mv.reason {
            description.push_str(": ");
            description.push_str(reason);
        }
        tx.commit(
            AuditEntry::new(action, "decision", id)
                .title(&after.title)
                .description(description)
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }
}

/// ids of the statuses and priorities of a list filter, sorted (so the
/// page-token fingerprint does not depend on their order).
fn sorted<T>(values: &[T], db: impl Fn(&T) -> String) -> Option<Vec<String>> {
    (!values.is_empty()).then(|| {
        let mut v: Vec<String> = values.iter().map(db).collect();
        v.sort();
        v
    })
}

#[tonic::async_trait]
impl DecisionService for Decisions {
    async fn create_decision(
        &self,
        request: Request<CreateDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let ctx = request.tenant()?;
        let decision = request.get_ref().decision.clone().unwrap_or_default();
        let mut v = Violations::new();
        let f = fields(&decision, |_| true, &mut v);
        if decision.sla_hours != 0 {
            check_sla(&mut v, "decision.sla_hours", decision.sla_hours);
        }
        if f.hypothesis_id.flatten().is_some() && f.outcome_id.flatten().is_none() {
            v.add(
                "decision.outcome_id",
                "is required with a hypothesis: the hypothesis's outcome",
            );
        }
        let key = RequestKey::parse(&mut v, request.get_ref());
        v.finish()?;
        let sla_hours = if decision.sla_hours == 0 {
            let priority = DecisionPriority::try_from(decision.priority).unwrap_or_default();
            self.identity
                .sla_hours(ctx.tenant_id, priority)
                .await
                .map_err(|e| identity_unavailable(&e, "the tenant's SLA defaults"))?
        } else {
            decision.sla_hours
        };

        let mut tx = self.db.write(ctx).await?;
        let id = Uuid::now_v7();
        if let Claim::Replay(first) = tx.claim(key.as_ref(), id).await? {
            return Ok(Response::new(get(&mut tx, first).await?.into_proto()));
        }
        sqlx::query!(
            "WITH t AS (SELECT clock_timestamp() AS at) \
             INSERT INTO core.decisions (id, tenant_id, title, description, context, options, status, priority, \
                 decision_type, owner_id, team_id, outcome_id, hypothesis_id, sla_hours, due_at, \
                 escalation_level, tags, created_at, updated_at, created_by_id) \
             SELECT $1, $2, $3, $4, $5, $6, 'NEEDS_INPUT', $7, $8, $9, $10, $11, $12, $13, \
                 t.at + make_interval(hours => $13), 0, $14, t.at, t.at, $15 FROM t",
            id,
            tx.tenant_id(),
            f.title.unwrap_or_default(),
            f.description.flatten(),
            f.context.flatten(),
            f.options.flatten(),
            f.priority.unwrap_or_default(),
            f.decision_type.flatten(),
            f.owner_id.flatten().unwrap_or(ctx.user_id),
            f.team_id.flatten(),
            f.outcome_id.flatten(),
            f.hypothesis_id.flatten(),
            sla_hours,
            f.tags.flatten(),
            ctx.user_id,
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("decision"))?;
        let created = get(&mut tx, id).await?;
        notify(&mut tx, id, EventKind::Created, &created.status).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Create, "decision", id)
                .title(&created.title)
                .new_values(created.audit_values()),
        )
        .await?;
        Ok(Response::new(created.into_proto()))
    }

    async fn get_decision(
        &self,
        request: Request<GetDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        let row = get(&mut tx, id).await?;
        Ok(Response::new(row.into_proto()))
    }

    async fn list_decisions(
        &self,
        request: Request<ListDecisionsRequest>,
    ) -> Result<Response<ListDecisionsResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let mut statuses: Vec<DecisionStatus> = v.enum_set("statuses", &req.statuses);
        if let Some(status) = v.optional_enum::<DecisionStatus>("status", req.status)
            && !statuses.contains(&status)
        {
            statuses.push(status);
        }
        let priorities: Vec<DecisionPriority> = v.enum_set("priorities", &req.priorities);
        let decision_type = v
            .optional_enum::<DecisionType>("decision_type", req.decision_type)
            .map(type_db);
        let owner_id = v.optional_uuid("owner_id", &req.owner_id);
        let assigned_to_id = v.optional_uuid("assigned_to_id", &req.assigned_to_id);
        let team_id = v.optional_uuid("team_id", &req.team_id);
        let outcome_id = v.optional_uuid("outcome_id", &req.outcome_id);
        let hypothesis_id = v.optional_uuid("hypothesis_id", &req.hypothesis_id);
        let escalated_to_id = v.optional_uuid("escalated_to_id", &req.escalated_to_id);
        let tag = v.optional("tag", &req.tag, SHORT_TEXT);
        let query = v.optional("query", &req.query, SHORT_TEXT);
        let due_before = match &req.due_before {
            Some(ts) => {
                let time = from_timestamp(ts);
                if time.is_none() {
                    v.add("due_before", "is not a valid time");
                }
                time
            }
            None => None,
        };
        let order_by = v
            .optional_enum::<DecisionOrderBy>("order_by", req.order_by)
            .unwrap_or(DecisionOrderBy::CreateTimeDesc);
        let ordering = match order_by {
            DecisionOrderBy::DueTime => BY_DUE_TIME,
            DecisionOrderBy::Priority => BY_PRIORITY,
            DecisionOrderBy::Unspecified | DecisionOrderBy::CreateTimeDesc => NEWEST_FIRST,
        };
        let statuses = sorted(&statuses, |s| status_db(*s).to_owned());
        let priorities = sorted(&priorities, |p| priority_db(*p));
        let filters = format!(
            "{statuses:?}|{priorities:?}|{decision_type:?}|{owner_id:?}|{assigned_to_id:?}|{team_id:?}|\
             {outcome_id:?}|{hypothesis_id:?}|{escalated_to_id:?}|{tag:?}|{query:?}|{}|{due_before:?}",
            req.overdue_only
        );
        let page = Page::parse_ordered(req.page_size, &req.page_token, ordering, &filters, &mut v);
        v.finish()?;

        let pattern = query.as_deref().map(contains_pattern);
        let mut tx = self.db.read(ctx).await?;
        let tenant_id = tx.tenant_id();
        // One query per ordering, each matching its index column for
        // column; page 1 starts from a position before every row, so the
        // keyset row comparison is always there (see planning's outcomes).
        let (rows, cursor): (Vec<DecisionRow>, fn(&DecisionRow) -> Position) = match order_by {
            DecisionOrderBy::DueTime => {
                let after_due = match page.int_key(0) {
                    None => "-infinity".to_owned(),
                    Some(i64::MAX) => "infinity".to_owned(),
                    Some(micros) => time_text(DateTime::from_timestamp_micros(micros), "infinity"),
                };
                let rows = sqlx::query_as!(
                    DecisionRow,
                    "SELECT id, title, description, context, options, status, priority, decision_type, owner_id, \
                         assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at, escalation_level, \
                         escalated_at, escalated_to_id, decided_by_id, decided_at, decision_rationale, selected_option, \
                         tags, created_at, updated_at, created_by_id, unescalated_due_at, priority_weight \
                     FROM core.decisions \
                     WHERE tenant_id = $1 \
                       AND ($2::text[] IS NULL OR status = ANY($2)) \
                       AND ($3::text[] IS NULL OR priority = ANY($3)) \
                       AND ($4::text IS NULL OR decision_type = $4) \
                       AND ($5::uuid IS NULL OR owner_id = $5) \
                       AND ($6::uuid IS NULL OR assigned_to_id = $6) \
                       AND ($7::uuid IS NULL OR team_id = $7) \
                       AND ($8::uuid IS NULL OR outcome_id = $8) \
                       AND ($9::uuid IS NULL OR hypothesis_id = $9) \
                       AND ($10::uuid IS NULL OR escalated_to_id = $10) \
                       AND ($11::text IS NULL OR tags::jsonb @> jsonb_build_array($11::text)) \
                       AND ($12::text IS NULL OR title ILIKE $12 OR description ILIKE $12 OR context ILIKE $12) \
                       AND (NOT $13::bool OR (status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') AND due_at < now())) \
                       AND ($14::timestamptz IS NULL OR due_at < $14) \
                       AND (due_key, created_at, id) > ($15::text::timestamptz, $16::text::timestamptz, $17::uuid) \
                     ORDER BY due_key, created_at, id \
                     LIMIT $18",
                    tenant_id,
                    statuses.as_deref(),
                    priorities.as_deref(),
                    decision_type,
                    owner_id,
                    assigned_to_id,
                    team_id,
                    outcome_id,
                    hypothesis_id,
                    escalated_to_id,
                    tag,
                    pattern,
                    req.overdue_only,
                    due_before,
                    after_due,
                    time_text(page.time_key(1), "-infinity"),
                    page.after_id().unwrap_or(Uuid::nil()),
                    page.limit(),
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(ApiError::from)?;
                (rows, DecisionRow::by_due_time)
            }
            DecisionOrderBy::Priority => {
                let after_weight = page.int_key(0).map(|w| w.clamp(0, 32_767) as i16);
                let rows = sqlx::query_as!(
                    DecisionRow,
                    "SELECT id, title, description, context, options, status, priority, decision_type, owner_id, \
                         assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at, escalation_level, \
                         escalated_at, escalated_to_id, decided_by_id, decided_at, decision_rationale, selected_option, \
                         tags, created_at, updated_at, created_by_id, unescalated_due_at, priority_weight \
                     FROM core.decisions \
                     WHERE tenant_id = $1 \
                       AND ($2::text[] IS NULL OR status = ANY($2)) \
                       AND ($3::text[] IS NULL OR priority = ANY($3)) \
                       AND ($4::text IS NULL OR decision_type = $4) \
                       AND ($5::uuid IS NULL OR owner_id = $5) \
                       AND ($6::uuid IS NULL OR assigned_to_id = $6) \
                       AND ($7::uuid IS NULL OR team_id = $7) \
                       AND ($8::uuid IS NULL OR outcome_id = $8) \
                       AND ($9::uuid IS NULL OR hypothesis_id = $9) \
                       AND ($10::uuid IS NULL OR escalated_to_id = $10) \
                       AND ($11::text IS NULL OR tags::jsonb @> jsonb_build_array($11::text)) \
                       AND ($12::text IS NULL OR title ILIKE $12 OR description ILIKE $12 OR context ILIKE $12) \
                       AND (NOT $13::bool OR (status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') AND due_at < now())) \
                       AND ($14::timestamptz IS NULL OR due_at < $14) \
                       AND (priority_weight, created_at, id) < ($15::smallint, $16::text::timestamptz, $17::uuid) \
                     ORDER BY priority_weight DESC, created_at DESC, id DESC \
                     LIMIT $18",
                    tenant_id,
                    statuses.as_deref(),
                    priorities.as_deref(),
                    decision_type,
                    owner_id,
                    assigned_to_id,
                    team_id,
                    outcome_id,
                    hypothesis_id,
                    escalated_to_id,
                    tag,
                    pattern,
                    req.overdue_only,
                    due_before,
                    after_weight.unwrap_or(i16::MAX),
                    time_text(page.time_key(1), "infinity"),
                    page.after_id().unwrap_or(Uuid::max()),
                    page.limit(),
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(ApiError::from)?;
                (rows, DecisionRow::by_priority)
            }
            DecisionOrderBy::Unspecified | DecisionOrderBy::CreateTimeDesc => {
                let rows = sqlx::query_as!(
                    DecisionRow,
                    "SELECT id, title, description, context, options, status, priority, decision_type, owner_id, \
                         assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at, escalation_level, \
                         escalated_at, escalated_to_id, decided_by_id, decided_at, decision_rationale, selected_option, \
                         tags, created_at, updated_at, created_by_id, unescalated_due_at, priority_weight \
                     FROM core.decisions \
                     WHERE tenant_id = $1 \
                       AND ($2::text[] IS NULL OR status = ANY($2)) \
                       AND ($3::text[] IS NULL OR priority = ANY($3)) \
                       AND ($4::text IS NULL OR decision_type = $4) \
                       AND ($5::uuid IS NULL OR owner_id = $5) \
                       AND ($6::uuid IS NULL OR assigned_to_id = $6) \
                       AND ($7::uuid IS NULL OR team_id = $7) \
                       AND ($8::uuid IS NULL OR outcome_id = $8) \
                       AND ($9::uuid IS NULL OR hypothesis_id = $9) \
                       AND ($10::uuid IS NULL OR escalated_to_id = $10) \
                       AND ($11::text IS NULL OR tags::jsonb @> jsonb_build_array($11::text)) \
                       AND ($12::text IS NULL OR title ILIKE $12 OR description ILIKE $12 OR context ILIKE $12) \
                       AND (NOT $13::bool OR (status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') AND due_at < now())) \
                       AND ($14::timestamptz IS NULL OR due_at < $14) \
                       AND (created_at, id) < ($15::text::timestamptz, $16::uuid) \
                     ORDER BY created_at DESC, id DESC \
                     LIMIT $17",
                    tenant_id,
                    statuses.as_deref(),
                    priorities.as_deref(),
                    decision_type,
                    owner_id,
                    assigned_to_id,
                    team_id,
                    outcome_id,
                    hypothesis_id,
                    escalated_to_id,
                    tag,
                    pattern,
                    req.overdue_only,
                    due_before,
                    time_text(page.time_key(0), "infinity"),
                    page.after_id().unwrap_or(Uuid::max()),
                    page.limit(),
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(ApiError::from)?;
                (rows, DecisionRow::newest_first)
            }
        };
        let (decisions, next_page_token) = page.finish(rows, cursor, DecisionRow::into_proto);
        Ok(Response::new(ListDecisionsResponse {
            decisions,
            next_page_token,
        }))
    }

    async fn update_decision(
        &self,
        request: Request<UpdateDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let decision = req.decision.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v.uuid("decision.id", &decision.id);
        let mask = v.update_mask(req.update_mask.as_ref(), UPDATABLE);
        let f = fields(&decision, |path| mask.contains(path), &mut v);
        if let Some(hours) = f.sla_hours {
            check_sla(&mut v, "decision.sla_hours", hours);
        }
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(&decision.etag, &etag(before.updated_at))?;
        let updated = sqlx::query!(
            "UPDATE core.decisions SET \
                 title = coalesce($4, title), \
                 description = CASE WHEN $5::bool THEN $6::text ELSE description END, \
                 context = CASE WHEN $7::bool THEN $8::text ELSE context END, \
                 priority = coalesce($9, priority), \
                 decision_type = CASE WHEN $10::bool THEN $11::text ELSE decision_type END, \
                 options = CASE WHEN $12::bool THEN $13::text ELSE options END, \
                 owner_id = CASE WHEN $14::bool THEN $15::uuid ELSE owner_id END, \
                 team_id = CASE WHEN $16::bool THEN $17::uuid ELSE team_id END, \
                 outcome_id = CASE WHEN $18::bool THEN $19::uuid ELSE outcome_id END, \
                 hypothesis_id = CASE WHEN $20::bool THEN $21::uuid ELSE hypothesis_id END, \
                 due_at = CASE WHEN $22::int IS NOT NULL AND status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') \
                     THEN due_at + make_interval(hours => $22 - coalesce(sla_hours, $22)) ELSE due_at END, \
                 sla_hours = coalesce($22, sla_hours), \
                 tags = CASE WHEN $23::bool THEN $24::text ELSE tags END, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND updated_at IS NOT DISTINCT FROM $3",
            tx.tenant_id(),
            id,
            before.updated_at,
            f.title,
            f.description.is_some(),
            f.description.flatten(),
            f.context.is_some(),
            f.context.flatten(),
            f.priority,
            f.decision_type.is_some(),
            f.decision_type.flatten(),
            f.options.is_some(),
            f.options.flatten(),
            f.owner_id.is_some(),
            f.owner_id.flatten(),
            f.team_id.is_some(),
            f.team_id.flatten(),
            f.outcome_id.is_some(),
            f.outcome_id.flatten(),
            f.hypothesis_id.is_some(),
            f.hypothesis_id.flatten(),
            f.sla_hours,
            f.tags.is_some(),
            f.tags.flatten(),
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("decision"))?
        .rows_affected();
        if updated == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        notify(&mut tx, id, EventKind::Updated, &after.status).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "decision", id)
                .title(&after.title)
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn assign_decision(
        &self,
        request: Request<AssignDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let id = v.uuid("id", &req.id);
        let assignee = v.optional_uuid("assigned_to_id", &req.assigned_to_id);
        v.finish()?;
        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(&req.etag, &etag(before.updated_at))?;
        if DECISION_LIFECYCLE.is_terminal(before.status()) {
            return Err(ApiError::precondition(
                "DECISION_CLOSED",
                format!("the decision is {}; it cannot be assigned", before.status),
            )
            .into());
        }
        // A new holder may have a manager: the sweeper looks again.
        let updated = sqlx::query!(
            "UPDATE core.decisions SET assigned_to_id = $4, unescalated_due_at = NULL, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND updated_at IS NOT DISTINCT FROM $3",
            tx.tenant_id(),
            id,
            before.updated_at,
            assignee,
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("request"))?
        .rows_affected();
        if updated == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        recount_moved(&mut tx, &before, &after).await?;
        notify(&mut tx, id, EventKind::Assigned, &after.status).await?;
        tx.commit(
            AuditEntry::new(AuditAction::DecisionAssigned, "decision", id)
                .title(&after.title)
                .changes(
                    json!({"assigned_to_id": before.assigned_to_id}),
                    json!({"assigned_to_id": after.assigned_to_id}),
                ),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn discuss_decision(
        &self,
        request: Request<DiscussDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let req = request.get_ref();
        let mv = Move::of(DecisionMove::Discuss);
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn request_decision_input(
        &self,
        request: Request<RequestDecisionInputRequest>,
    ) -> Result<Response<Decision>, Status> {
        let req = request.get_ref();
        let mv = Move::of(DecisionMove::RequestInput);
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn resolve_decision(
        &self,
        request: Request<ResolveDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let mv = Move {
            selected_option_id: Some(v.required(
                "selected_option_id",
                &req.selected_option_id,
                SHORT_TEXT,
            )),
            rationale: Some(v.required("rationale", &req.rationale, LONG_TEXT)),
            ..Move::of(DecisionMove::Resolve)
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }

    async fn defer_decision(
        &self,
        request: Request<DeferDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let mv = Move {
            reason: v.optional("reason", &req.reason, LONG_TEXT),
            ..Move::of(DecisionMove::Defer)
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }

    async fn cancel_decision(
        &self,
        request: Request<CancelDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let mv = Move {
            reason: v.optional("reason", &req.reason, LONG_TEXT),
            ..Move::of(DecisionMove::Cancel)
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }

    async fn mark_decision_implemented(
        &self,
        request: Request<MarkDecisionImplementedRequest>,
    ) -> Result<Response<Decision>, Status> {
        let req = request.get_ref();
        let mv = Move::of(DecisionMove::Implement);
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn reopen_decision(
        &self,
        request: Request<ReopenDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let mv = Move {
            reason: v.optional("reason", &req.reason, LONG_TEXT),
            ..Move::of(DecisionMove::Reopen)
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }

    async fn escalate_decision(
        &self,
        request: Request<EscalateDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let id = v.uuid("id", &req.id);
        let reason = v.required("reason", &req.reason, LONG_TEXT);
        v.finish()?;
        // Read, ask identity with no transaction open, then write only if
        // the decision is still the version read.
        let before = {
            let mut tx = self.db.read(ctx).await?;
            get(&mut tx, id).await?
        };
        check_etag(&req.etag, &etag(before.updated_at))?;
        if !is_open(before.status()) {
            return Err(ApiError::precondition(
                "DECISION_NOT_OPEN",
                format!(
                    "only NEEDS_INPUT or UNDER_DISCUSSION decisions are escalated; this one is {}",
                    before.status
                ),
            )
            .into());
        }
        let manager = match before.holder() {
            Some(holder) => self
                .identity
                .manager(ctx.tenant_id, holder)
                .await
                .map_err(|e| identity_unavailable(&e, "the holder's manager"))?,
            None => None,
        };
        let Some(manager) = manager else {
            return Err(ApiError::precondition(
                "NO_ESCALATION_TARGET",
                "whoever holds the decision has no active manager to escalate to",
            )
            .into());
        };
        let mut tx = self.db.write(ctx).await?;
        if !escalate(&mut tx, &before, manager, None).await? {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        recount_moved(&mut tx, &before, &after).await?;
        notify(&mut tx, id, EventKind::Escalated, &after.status).await?;
        tx.commit(
            AuditEntry::new(AuditAction::DecisionEscalated, "decision", id)
                .title(&after.title)
                .description(reason)
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    type WatchDecisionsStream = WatchStream;

    async fn watch_decisions(
        &self,
        request: Request<WatchDecisionsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        if req.decision_ids.len() > MAX_WATCHED_IDS {
            v.add(
                "decision_ids",
                format!("at most {MAX_WATCHED_IDS} decision ids"),
            );
        }
        let mut decision_ids = Vec::new();
        for (i, id) in req.decision_ids.iter().enumerate() {
            let id = v.uuid(&format!("decision_ids[{i}]"), id).to_string();
            if !decision_ids.contains(&id) {
                decision_ids.push(id);
            }
        }
        let event_types: Vec<i32> = v
            .enum_set::<DecisionEventType>("event_types", &req.event_types)
            .into_iter()
            .map(|t| t as i32)
            .collect();
        v.finish()?;
        let stream = self
            .hub
            .subscribe(
                ctx.tenant_id,
                Filter {
                    decision_ids,
                    event_types,
                },
            )
            .await?;
        Ok(Response::new(stream))
    }
}
