//! OutcomeService: the caller's tenant's outcomes, their lifecycle moves and
//! their lists (three orderings, each a keyset scan on its own index).

use chrono::{DateTime, NaiveDate, Utc};
use codeops_platform::convert::{enum_from_db, enum_to_db, etag, id_string, opt_timestamp};
use codeops_platform::validate::{LONG_TEXT, SHORT_TEXT, TITLE_TEXT, check_etag, contains_pattern};
use codeops_platform::{
    ApiError, AuditAction, AuditEntry, Claim, Db, Ordering, Page, Position, RequestKey, SortKind,
    SortValue, TenantTx, Violations,
};
use codeops_proto::planning::outcome_service_server::OutcomeService;
use codeops_proto::planning::{
    AbandonOutcomeRequest, CreateOutcomeRequest, DeleteOutcomeRequest, GetOutcomeRequest,
    HypothesisCounts, InvalidateOutcomeRequest, ListOutcomesRequest, ListOutcomesResponse, Outcome,
    OutcomeOrderBy, OutcomePriority, OutcomeStatus, PlanOutcomeRequest, StartOutcomeRequest,
    SubmitOutcomeForValidationRequest, UpdateOutcomeRequest, ValidateOutcomeRequest,
};
use codeops_tenant::RequestExt;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::documents::{
    metrics_from_json, metrics_to_json, parse, refs_from_json, refs_to_json, tags_from_json,
    tags_to_json,
};
use crate::lifecycle::{
    OUTCOME_LIFECYCLE, illegal_outcome_move, outcome_status_db, outcome_status_from_db,
};
use crate::{delete_error, write_error};

pub struct Outcomes {
    db: Db,
}

impl Outcomes {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// An outcome row as the schema types it (NOT NULL columns are plain
/// values), with its hypotheses counted by status in the same query.
pub(crate) struct OutcomeRow {
    id: Uuid,
    title: String,
    description: Option<String>,
    success_criteria: Option<String>,
    target_metrics: Option<String>,
    current_metrics: Option<String>,
    status: String,
    priority: String,
    team_id: Option<Uuid>,
    owner_id: Option<Uuid>,
    target_date: Option<NaiveDate>,
    started_at: Option<DateTime<Utc>>,
    validated_at: Option<DateTime<Utc>>,
    invalidated_at: Option<DateTime<Utc>>,
    validation_notes: Option<String>,
    validated_by_id: Option<Uuid>,
    invalidated_by_id: Option<Uuid>,
    external_refs: Option<String>,
    tags: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    created_by_id: Option<Uuid>,
    abandoned_at: Option<DateTime<Utc>>,
    abandon_reason: Option<String>,
    priority_weight: i16,
    h_total: i64,
    h_draft: i64,
    h_ready: i64,
    h_blocked: i64,
    h_building: i64,
    h_deployed: i64,
    h_measuring: i64,
    h_validated: i64,
    h_invalidated: i64,
    h_abandoned: i64,
}

/// The orderings of ListOutcomes, as their page tokens record them.
const NEWEST_FIRST: Ordering = Ordering {
    name: "outcomes.created_desc",
    keys: &[SortKind::Time],
};
const BY_TARGET_DATE: Ordering = Ordering {
    name: "outcomes.target_date",
    keys: &[SortKind::Date, SortKind::Time],
};
const BY_PRIORITY: Ordering = Ordering {
    name: "outcomes.priority",
    keys: &[SortKind::Int, SortKind::Time],
};

/// A sort key time as PostgreSQL text (exact to the microsecond), or
/// `unset` ('infinity', '-infinity') for page 1.
fn time_text(time: Option<DateTime<Utc>>, unset: &str) -> String {
    time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| unset.to_owned())
}

fn count(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl OutcomeRow {
    pub(crate) fn status(&self) -> OutcomeStatus {
        outcome_status_from_db(&self.status)
    }

    fn newest_first(&self) -> Position {
        Position {
            keys: vec![SortValue::Time(self.created_at)],
            id: self.id,
        }
    }

    fn by_target_date(&self) -> Position {
        Position {
            keys: vec![
                SortValue::Date(self.target_date),
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

    /// What the audit trail records of an outcome (JSON documents as JSON).
    fn audit_values(&self) -> serde_json::Value {
        json!({
            "title": self.title,
            "description": self.description,
            "success_criteria": self.success_criteria,
            "target_metrics": parse(self.target_metrics.as_deref()),
            "current_metrics": parse(self.current_metrics.as_deref()),
            "status": self.status,
            "priority": self.priority,
            "team_id": self.team_id,
            "owner_id": self.owner_id,
            "target_date": self.target_date,
            "started_at": self.started_at,
            "validated_at": self.validated_at,
            "invalidated_at": self.invalidated_at,
            "validation_notes": self.validation_notes,
            "validated_by_id": self.validated_by_id,
            "invalidated_by_id": self.invalidated_by_id,
            "external_refs": parse(self.external_refs.as_deref()),
            "tags": parse(self.tags.as_deref()),
            "abandoned_at": self.abandoned_at,
            "abandon_reason": self.abandon_reason,
        })
    }

    pub(crate) fn into_proto(self) -> Outcome {
        let priority = enum_from_db(
            &self.priority,
            "OUTCOME_PRIORITY_",
            OutcomePriority::from_str_name,
        );
        Outcome {
            id: self.id.to_string(),
            status: self.status() as i32,
            priority: priority as i32,
            title: self.title,
            description: self.description.unwrap_or_default(),
            success_criteria: self.success_criteria.unwrap_or_default(),
            team_id: id_string(self.team_id),
            owner_id: id_string(self.owner_id),
            target_date: self.target_date.map(|d| d.to_string()).unwrap_or_default(),
            start_time: opt_timestamp(self.started_at),
            validate_time: opt_timestamp(self.validated_at),
            invalidate_time: opt_timestamp(self.invalidated_at),
            tags: tags_from_json(self.tags.as_deref()),
            create_time: opt_timestamp(Some(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            etag: etag(self.updated_at),
            target_metrics: metrics_from_json(self.target_metrics.as_deref()),
            current_metrics: metrics_from_json(self.current_metrics.as_deref()),
            validation_notes: self.validation_notes.unwrap_or_default(),
            validated_by_id: id_string(self.validated_by_id),
            invalidated_by_id: id_string(self.invalidated_by_id),
            external_refs: refs_from_json(self.external_refs.as_deref()),
            created_by_id: id_string(self.created_by_id),
            hypothesis_counts: Some(HypothesisCounts {
                total: count(self.h_total),
                draft: count(self.h_draft),
                ready: count(self.h_ready),
                blocked: count(self.h_blocked),
                building: count(self.h_building),
                deployed: count(self.h_deployed),
                measuring: count(self.h_measuring),
                validated: count(self.h_validated),
                invalidated: count(self.h_invalidated),
                abandoned: count(self.h_abandoned),
            }),
            abandon_reason: self.abandon_reason.unwrap_or_default(),
            abandon_time: opt_timestamp(self.abandoned_at),
        }
    }
}

/// One outcome of the transaction's tenant, with its hypothesis counts.
pub(crate) async fn get(tx: &mut impl TenantTx, id: Uuid) -> Result<OutcomeRow, ApiError> {
    sqlx::query_as!(
        OutcomeRow,
        r#"SELECT o.id, o.title, o.description, o.success_criteria, o.target_metrics, o.current_metrics,
               o.status, o.priority, o.team_id, o.owner_id, o.target_date, o.started_at, o.validated_at,
               o.invalidated_at, o.validation_notes, o.validated_by_id, o.invalidated_by_id, o.external_refs,
               o.tags, o.created_at, o.updated_at, o.created_by_id, o.abandoned_at, o.abandon_reason,
               o.priority_weight,
               c.total AS "h_total!", c.draft AS "h_draft!", c.ready AS "h_ready!", c.blocked AS "h_blocked!",
               c.building AS "h_building!", c.deployed AS "h_deployed!", c.measuring AS "h_measuring!",
               c.validated AS "h_validated!", c.invalidated AS "h_invalidated!", c.abandoned AS "h_abandoned!"
           FROM core.outcomes o
           CROSS JOIN LATERAL (
               SELECT count(*) AS total,
                      count(*) FILTER (WHERE h.status = 'DRAFT') AS draft,
                      count(*) FILTER (WHERE h.status = 'READY') AS ready,
                      count(*) FILTER (WHERE h.status = 'BLOCKED') AS blocked,
                      count(*) FILTER (WHERE h.status = 'BUILDING') AS building,
                      count(*) FILTER (WHERE h.status = 'DEPLOYED') AS deployed,
                      count(*) FILTER (WHERE h.status = 'MEASURING') AS measuring,
                      count(*) FILTER (WHERE h.status = 'VALIDATED') AS validated,
                      count(*) FILTER (WHERE h.status = 'INVALIDATED') AS invalidated,
                      count(*) FILTER (WHERE h.status = 'ABANDONED') AS abandoned
               FROM core.hypotheses h WHERE h.tenant_id = o.tenant_id AND h.outcome_id = o.id) c
           WHERE o.tenant_id = $1 AND o.id = $2"#,
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("outcome"))
}

/// The validated fields of a create or update (each `None` when an
/// update leaves it alone; `Some(None)` clears it).
#[derive(Default)]
struct Fields {
    title: Option<String>,
    description: Option<Option<String>>,
    success_criteria: Option<Option<String>>,
    priority: Option<String>,
    team_id: Option<Option<Uuid>>,
    owner_id: Option<Option<Uuid>>,
    target_date: Option<Option<NaiveDate>>,
    tags: Option<Option<String>>,
    target_metrics: Option<Option<String>>,
    current_metrics: Option<Option<String>>,
    external_refs: Option<Option<String>>,
}

/// Every path UpdateOutcome takes.
const UPDATABLE: &[&str] = &[
    "title",
    "description",
    "success_criteria",
    "priority",
    "team_id",
    "owner_id",
    "target_date",
    "tags",
    "target_metrics",
    "current_metrics",
    "external_refs",
];

fn priority_db(priority: OutcomePriority) -> String {
    enum_to_db(priority.as_str_name(), "OUTCOME_PRIORITY_").to_owned()
}

/// Validates the fields of `o` that `wanted` selects.
fn fields(o: &Outcome, wanted: impl Fn(&str) -> bool, v: &mut Violations) -> Fields {
    let f = |name: &str| format!("outcome.{name}");
    Fields {
        title: wanted("title").then(|| v.required(&f("title"), &o.title, TITLE_TEXT)),
        description: wanted("description")
            .then(|| v.optional(&f("description"), &o.description, LONG_TEXT)),
        success_criteria: wanted("success_criteria")
            .then(|| v.optional(&f("success_criteria"), &o.success_criteria, LONG_TEXT)),
        priority: wanted("priority").then(|| {
            v.enum_value::<OutcomePriority>(&f("priority"), o.priority)
                .map(priority_db)
                .unwrap_or_default()
        }),
        team_id: wanted("team_id").then(|| v.optional_uuid(&f("team_id"), &o.team_id)),
        owner_id: wanted("owner_id").then(|| v.optional_uuid(&f("owner_id"), &o.owner_id)),
        target_date: wanted("target_date")
            .then(|| v.optional_date(&f("target_date"), &o.target_date)),
        tags: wanted("tags").then(|| tags_to_json(&f("tags"), &o.tags, v)),
        target_metrics: wanted("target_metrics")
            .then(|| metrics_to_json(&f("target_metrics"), &o.target_metrics, v)),
        current_metrics: wanted("current_metrics")
            .then(|| metrics_to_json(&f("current_metrics"), &o.current_metrics, v)),
        external_refs: wanted("external_refs")
            .then(|| refs_to_json(&f("external_refs"), &o.external_refs, v)),
    }
}

/// A lifecycle move: where to, and the move's own fields.
struct Move {
    to: OutcomeStatus,
    notes: Option<String>,
    current_metrics: Option<String>,
    reason: Option<String>,
}

impl Move {
    fn to(to: OutcomeStatus) -> Move {
        Move {
            to,
            notes: None,
            current_metrics: None,
            reason: None,
        }
    }
}

fn audit_action(to: OutcomeStatus) -> AuditAction {
    match to {
        OutcomeStatus::Validated => AuditAction::OutcomeValidated,
        OutcomeStatus::Invalidated => AuditAction::OutcomeInvalidated,
        _ => AuditAction::StatusChange,
    }
}

impl Outcomes {
    /// Applies `mv` to outcome `id` if product.md's table allows it from
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
    ) -> Result<Response<Outcome>, Status> {
        let ctx = request.tenant()?;
        let mut v = v;
        let id = v.uuid("id", id);
        v.finish()?;
        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(given_etag, &etag(before.updated_at))?;
        let from = before.status();
        if !OUTCOME_LIFECYCLE.allows(from, mv.to) {
            return Err(illegal_outcome_move(from, mv.to).into());
        }
        let moved = sqlx::query!(
            "UPDATE core.outcomes SET \
                 status = $5::text, \
                 started_at = CASE WHEN $5 = 'IN_PROGRESS' THEN coalesce(started_at, now()) ELSE started_at END, \
                 validated_at = CASE WHEN $5 = 'VALIDATED' THEN now() ELSE validated_at END, \
                 validated_by_id = CASE WHEN $5 = 'VALIDATED' THEN $6::uuid ELSE validated_by_id END, \
                 invalidated_at = CASE WHEN $5 = 'INVALIDATED' THEN now() ELSE invalidated_at END, \
                 invalidated_by_id = CASE WHEN $5 = 'INVALIDATED' THEN $6 ELSE invalidated_by_id END, \
                 validation_notes = CASE WHEN $5 IN ('VALIDATED', 'INVALIDATED') THEN $7::text ELSE validation_notes END, \
                 current_metrics = CASE WHEN $5 = 'VALIDATED' THEN coalesce($8::text, current_metrics) \
                     ELSE current_metrics END, \
                 abandoned_at = CASE WHEN $5 = 'ABANDONED' THEN now() ELSE abandoned_at END, \
                 abandon_reason = CASE WHEN $5 = 'ABANDONED' THEN $9::text ELSE abandon_reason END, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND status = $3::text AND updated_at IS NOT DISTINCT FROM $4",
            tx.tenant_id(),
            id,
            before.status,
            before.updated_at,
            outcome_status_db(mv.to),
            ctx.user_id,
            mv.notes,
            mv.current_metrics,
            mv.reason,
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("request"))?
        .rows_affected();
        if moved == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(audit_action(mv.to), "outcome", id)
                .title(&after.title)
                .description(format!("{} -> {}", before.status, after.status))
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }
}

#[tonic::async_trait]
impl OutcomeService for Outcomes {
    async fn create_outcome(
        &self,
        request: Request<CreateOutcomeRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let ctx = request.tenant()?;
        let outcome = request.get_ref().outcome.clone().unwrap_or_default();
        let mut v = Violations::new();
        let status = match OutcomeStatus::try_from(outcome.status) {
            Ok(OutcomeStatus::Unspecified | OutcomeStatus::Draft) => OutcomeStatus::Draft,
            Ok(OutcomeStatus::NotStarted) => OutcomeStatus::NotStarted,
            _ => {
                v.add(
                    "outcome.status",
                    "a new outcome is DRAFT or NOT_STARTED; the other statuses are reached by transitions",
                );
                OutcomeStatus::Draft
            }
        };
        let f = fields(&outcome, |_| true, &mut v);
        let key = RequestKey::parse(&mut v, request.get_ref());
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let id = Uuid::now_v7();
        if let Claim::Replay(first) = tx.claim(key.as_ref(), id).await? {
            return Ok(Response::new(get(&mut tx, first).await?.into_proto()));
        }
        sqlx::query!(
            "INSERT INTO core.outcomes (id, tenant_id, title, description, success_criteria, target_metrics, \
                 current_metrics, status, priority, team_id, owner_id, target_date, external_refs, tags, \
                 created_at, updated_at, created_by_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                 clock_timestamp(), clock_timestamp(), $15)",
            id,
            tx.tenant_id(),
            f.title.unwrap_or_default(),
            f.description.flatten(),
            f.success_criteria.flatten(),
            f.target_metrics.flatten(),
            f.current_metrics.flatten(),
            outcome_status_db(status),
            f.priority.unwrap_or_default(),
            f.team_id.flatten(),
            f.owner_id.flatten(),
            f.target_date.flatten(),
            f.external_refs.flatten(),
            f.tags.flatten(),
            ctx.user_id,
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("outcome"))?;
        let created = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Create, "outcome", id)
                .title(&created.title)
                .new_values(created.audit_values()),
        )
        .await?;
        Ok(Response::new(created.into_proto()))
    }

    async fn get_outcome(
        &self,
        request: Request<GetOutcomeRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        let row = get(&mut tx, id).await?;
        Ok(Response::new(row.into_proto()))
    }

    async fn list_outcomes(
        &self,
        request: Request<ListOutcomesRequest>,
    ) -> Result<Response<ListOutcomesResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let mut statuses: Vec<OutcomeStatus> = v.enum_set("statuses", &req.statuses);
        if let Some(status) = v.optional_enum::<OutcomeStatus>("status", req.status)
            && !statuses.contains(&status)
        {
            statuses.push(status);
        }
        let priorities: Vec<OutcomePriority> = v.enum_set("priorities", &req.priorities);
        let team_id = v.optional_uuid("team_id", &req.team_id);
        let owner_id = v.optional_uuid("owner_id", &req.owner_id);
        let date_from = v.optional_date("target_date_from", &req.target_date_from);
        let date_to = v.optional_date("target_date_to", &req.target_date_to);
        let tag = v.optional("tag", &req.tag, SHORT_TEXT);
        let query = v.optional("query", &req.query, SHORT_TEXT);
        let order_by = v
            .optional_enum::<OutcomeOrderBy>("order_by", req.order_by)
            .unwrap_or(OutcomeOrderBy::CreateTimeDesc);
        let ordering = match order_by {
            OutcomeOrderBy::TargetDate => BY_TARGET_DATE,
            OutcomeOrderBy::Priority => BY_PRIORITY,
            OutcomeOrderBy::Unspecified | OutcomeOrderBy::CreateTimeDesc => NEWEST_FIRST,
        };
        let statuses: Option<Vec<String>> = (!statuses.is_empty()).then(|| {
            let mut db: Vec<String> = statuses
                .iter()
                .map(|s| outcome_status_db(*s).to_owned())
                .collect();
            db.sort();
            db
        });
        let priorities: Option<Vec<String>> = (!priorities.is_empty()).then(|| {
            let mut db: Vec<String> = priorities.iter().map(|p| priority_db(*p)).collect();
            db.sort();
            db
        });
        let filters = format!(
            "{statuses:?}|{priorities:?}|{team_id:?}|{owner_id:?}|{date_from:?}|{date_to:?}|{tag:?}|{query:?}"
        );
        let page = Page::parse_ordered(req.page_size, &req.page_token, ordering, &filters, &mut v);
        v.finish()?;

        let pattern = query.as_deref().map(contains_pattern);
        let mut tx = self.db.read(ctx).await?;
        let tenant_id = tx.tenant_id();
        // One query per ordering, each matching its index column for column.
        // Page 1 starts from a position before every row ('infinity' and the
        // extreme ids), so the keyset row comparison is always there, with
        // no OR and no COALESCE around it: PostgreSQL then makes it an index
        // condition, in custom and generic plans alike. Key times travel as
        // text so that position can be 'infinity'.
        let (rows, cursor): (Vec<OutcomeRow>, fn(&OutcomeRow) -> Position) = match order_by {
            OutcomeOrderBy::TargetDate => {
                let after_date: Option<String> = page.date_key(0).map(|d| match d {
                    Some(date) => date.to_string(),
                    None => "infinity".to_owned(),
                });
                let rows = sqlx::query_as!(
                    OutcomeRow,
                    r#"SELECT o.id, o.title, o.description, o.success_criteria, o.target_metrics, o.current_metrics,
                           o.status, o.priority, o.team_id, o.owner_id, o.target_date, o.started_at, o.validated_at,
                           o.invalidated_at, o.validation_notes, o.validated_by_id, o.invalidated_by_id, o.external_refs,
                           o.tags, o.created_at, o.updated_at, o.created_by_id, o.abandoned_at, o.abandon_reason,
                           o.priority_weight,
                           c.total AS "h_total!", c.draft AS "h_draft!", c.ready AS "h_ready!", c.blocked AS "h_blocked!",
                           c.building AS "h_building!", c.deployed AS "h_deployed!", c.measuring AS "h_measuring!",
                           c.validated AS "h_validated!", c.invalidated AS "h_invalidated!", c.abandoned AS "h_abandoned!"
                       FROM core.outcomes o
                       CROSS JOIN LATERAL (
                           SELECT count(*) AS total,
                                  count(*) FILTER (WHERE h.status = 'DRAFT') AS draft,
                                  count(*) FILTER (WHERE h.status = 'READY') AS ready,
                                  count(*) FILTER (WHERE h.status = 'BLOCKED') AS blocked,
                                  count(*) FILTER (WHERE h.status = 'BUILDING') AS building,
                                  count(*) FILTER (WHERE h.status = 'DEPLOYED') AS deployed,
                                  count(*) FILTER (WHERE h.status = 'MEASURING') AS measuring,
                                  count(*) FILTER (WHERE h.status = 'VALIDATED') AS validated,
                                  count(*) FILTER (WHERE h.status = 'INVALIDATED') AS invalidated,
                                  count(*) FILTER (WHERE h.status = 'ABANDONED') AS abandoned
                           FROM core.hypotheses h WHERE h.tenant_id = o.tenant_id AND h.outcome_id = o.id) c
                       WHERE o.tenant_id = $1
                         AND ($2::text[] IS NULL OR o.status = ANY($2))
                         AND ($3::text[] IS NULL OR o.priority = ANY($3))
                         AND ($4::uuid IS NULL OR o.team_id = $4)
                         AND ($5::uuid IS NULL OR o.owner_id = $5)
                         AND ($6::date IS NULL OR o.target_date >= $6)
                         AND ($7::date IS NULL OR o.target_date <= $7)
                         AND ($8::text IS NULL OR o.tags::jsonb @> jsonb_build_array($8::text))
                         AND ($9::text IS NULL OR o.title ILIKE $9 OR o.description ILIKE $9)
                         AND (o.target_date_key, o.created_at, o.id)
                             > ($10::text::date, $11::text::timestamptz, $12::uuid)
                       ORDER BY o.target_date_key, o.created_at, o.id
                       LIMIT $13"#,
                    tenant_id,
                    statuses.as_deref(),
                    priorities.as_deref(),
                    team_id,
                    owner_id,
                    date_from,
                    date_to,
                    tag,
                    pattern,
                    after_date.as_deref().unwrap_or("-infinity"),
                    time_text(page.time_key(1), "-infinity"),
                    page.after_id().unwrap_or(Uuid::nil()),
                    page.limit(),
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(ApiError::from)?;
                (rows, OutcomeRow::by_target_date)
            }
            OutcomeOrderBy::Priority => {
                let after_weight = page.int_key(0).map(|w| w.clamp(0, 32_767) as i16);
                let rows = sqlx::query_as!(
                    OutcomeRow,
                    r#"SELECT o.id, o.title, o.description, o.success_criteria, o.target_metrics, o.current_metrics,
                           o.status, o.priority, o.team_id, o.owner_id, o.target_date, o.started_at, o.validated_at,
                           o.invalidated_at, o.validation_notes, o.validated_by_id, o.invalidated_by_id, o.external_refs,
                           o.tags, o.created_at, o.updated_at, o.created_by_id, o.abandoned_at, o.abandon_reason,
                           o.priority_weight,
                           c.total AS "h_total!", c.draft AS "h_draft!", c.ready AS "h_ready!", c.blocked AS "h_blocked!",
                           c.building AS "h_building!", c.deployed AS "h_deployed!", c.measuring AS "h_measuring!",
                           c.validated AS "h_validated!", c.invalidated AS "h_invalidated!", c.abandoned AS "h_abandoned!"
                       FROM core.outcomes o
                       CROSS JOIN LATERAL (
                           SELECT count(*) AS total,
                                  count(*) FILTER (WHERE h.status = 'DRAFT') AS draft,
                                  count(*) FILTER (WHERE h.status = 'READY') AS ready,
                                  count(*) FILTER (WHERE h.status = 'BLOCKED') AS blocked,
                                  count(*) FILTER (WHERE h.status = 'BUILDING') AS building,
                                  count(*) FILTER (WHERE h.status = 'DEPLOYED') AS deployed,
                                  count(*) FILTER (WHERE h.status = 'MEASURING') AS measuring,
                                  count(*) FILTER (WHERE h.status = 'VALIDATED') AS validated,
                                  count(*) FILTER (WHERE h.status = 'INVALIDATED') AS invalidated,
                                  count(*) FILTER (WHERE h.status = 'ABANDONED') AS abandoned
                           FROM core.hypotheses h WHERE h.tenant_id = o.tenant_id AND h.outcome_id = o.id) c
                       WHERE o.tenant_id = $1
                         AND ($2::text[] IS NULL OR o.status = ANY($2))
                         AND ($3::text[] IS NULL OR o.priority = ANY($3))
                         AND ($4::uuid IS NULL OR o.team_id = $4)
                         AND ($5::uuid IS NULL OR o.owner_id = $5)
                         AND ($6::date IS NULL OR o.target_date >= $6)
                         AND ($7::date IS NULL OR o.target_date <= $7)
                         AND ($8::text IS NULL OR o.tags::jsonb @> jsonb_build_array($8::text))
                         AND ($9::text IS NULL OR o.title ILIKE $9 OR o.description ILIKE $9)
                         AND (o.priority_weight, o.created_at, o.id)
                             < ($10::smallint, $11::text::timestamptz, $12::uuid)
                       ORDER BY o.priority_weight DESC, o.created_at DESC, o.id DESC
                       LIMIT $13"#,
                    tenant_id,
                    statuses.as_deref(),
                    priorities.as_deref(),
                    team_id,
                    owner_id,
                    date_from,
                    date_to,
                    tag,
                    pattern,
                    after_weight.unwrap_or(i16::MAX),
                    time_text(page.time_key(1), "infinity"),
                    page.after_id().unwrap_or(Uuid::max()),
                    page.limit(),
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(ApiError::from)?;
                (rows, OutcomeRow::by_priority)
            }
            OutcomeOrderBy::Unspecified | OutcomeOrderBy::CreateTimeDesc => {
                let rows = sqlx::query_as!(
                    OutcomeRow,
                    r#"SELECT o.id, o.title, o.description, o.success_criteria, o.target_metrics, o.current_metrics,
                           o.status, o.priority, o.team_id, o.owner_id, o.target_date, o.started_at, o.validated_at,
                           o.invalidated_at, o.validation_notes, o.validated_by_id, o.invalidated_by_id, o.external_refs,
                           o.tags, o.created_at, o.updated_at, o.created_by_id, o.abandoned_at, o.abandon_reason,
                           o.priority_weight,
                           c.total AS "h_total!", c.draft AS "h_draft!", c.ready AS "h_ready!", c.blocked AS "h_blocked!",
                           c.building AS "h_building!", c.deployed AS "h_deployed!", c.measuring AS "h_measuring!",
                           c.validated AS "h_validated!", c.invalidated AS "h_invalidated!", c.abandoned AS "h_abandoned!"
                       FROM core.outcomes o
                       CROSS JOIN LATERAL (
                           SELECT count(*) AS total,
                                  count(*) FILTER (WHERE h.status = 'DRAFT') AS draft,
                                  count(*) FILTER (WHERE h.status = 'READY') AS ready,
                                  count(*) FILTER (WHERE h.status = 'BLOCKED') AS blocked,
                                  count(*) FILTER (WHERE h.status = 'BUILDING') AS building,
                                  count(*) FILTER (WHERE h.status = 'DEPLOYED') AS deployed,
                                  count(*) FILTER (WHERE h.status = 'MEASURING') AS measuring,
                                  count(*) FILTER (WHERE h.status = 'VALIDATED') AS validated,
                                  count(*) FILTER (WHERE h.status = 'INVALIDATED') AS invalidated,
                                  count(*) FILTER (WHERE h.status = 'ABANDONED') AS abandoned
                           FROM core.hypotheses h WHERE h.tenant_id = o.tenant_id AND h.outcome_id = o.id) c
                       WHERE o.tenant_id = $1
                         AND ($2::text[] IS NULL OR o.status = ANY($2))
                         AND ($3::text[] IS NULL OR o.priority = ANY($3))
                         AND ($4::uuid IS NULL OR o.team_id = $4)
                         AND ($5::uuid IS NULL OR o.owner_id = $5)
                         AND ($6::date IS NULL OR o.target_date >= $6)
                         AND ($7::date IS NULL OR o.target_date <= $7)
                         AND ($8::text IS NULL OR o.tags::jsonb @> jsonb_build_array($8::text))
                         AND ($9::text IS NULL OR o.title ILIKE $9 OR o.description ILIKE $9)
                         AND (o.created_at, o.id) < ($10::text::timestamptz, $11::uuid)
                       ORDER BY o.created_at DESC, o.id DESC
                       LIMIT $12"#,
                    tenant_id,
                    statuses.as_deref(),
                    priorities.as_deref(),
                    team_id,
                    owner_id,
                    date_from,
                    date_to,
                    tag,
                    pattern,
                    time_text(page.time_key(0), "infinity"),
                    page.after_id().unwrap_or(Uuid::max()),
                    page.limit(),
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(ApiError::from)?;
                (rows, OutcomeRow::newest_first)
            }
        };
        let (outcomes, next_page_token) = page.finish(rows, cursor, OutcomeRow::into_proto);
        Ok(Response::new(ListOutcomesResponse {
            outcomes,
            next_page_token,
        }))
    }

    async fn update_outcome(
        &self,
        request: Request<UpdateOutcomeRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let outcome = req.outcome.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v.uuid("outcome.id", &outcome.id);
        let mask = v.update_mask(req.update_mask.as_ref(), UPDATABLE);
        let f = fields(&outcome, |path| mask.contains(path), &mut v);
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(&outcome.etag, &etag(before.updated_at))?;
        let updated = sqlx::query!(
            "UPDATE core.outcomes SET \
                 title = coalesce($4, title), \
                 description = CASE WHEN $5::bool THEN $6::text ELSE description END, \
                 success_criteria = CASE WHEN $7::bool THEN $8::text ELSE success_criteria END, \
                 priority = coalesce($9, priority), \
                 team_id = CASE WHEN $10::bool THEN $11::uuid ELSE team_id END, \
                 owner_id = CASE WHEN $12::bool THEN $13::uuid ELSE owner_id END, \
                 target_date = CASE WHEN $14::bool THEN $15::date ELSE target_date END, \
                 tags = CASE WHEN $16::bool THEN $17::text ELSE tags END, \
                 target_metrics = CASE WHEN $18::bool THEN $19::text ELSE target_metrics END, \
                 current_metrics = CASE WHEN $20::bool THEN $21::text ELSE current_metrics END, \
                 external_refs = CASE WHEN $22::bool THEN $23::text ELSE external_refs END, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND updated_at IS NOT DISTINCT FROM $3",
            tx.tenant_id(),
            id,
            before.updated_at,
            f.title,
            f.description.is_some(),
            f.description.flatten(),
            f.success_criteria.is_some(),
            f.success_criteria.flatten(),
            f.priority,
            f.team_id.is_some(),
            f.team_id.flatten(),
            f.owner_id.is_some(),
            f.owner_id.flatten(),
            f.target_date.is_some(),
            f.target_date.flatten(),
            f.tags.is_some(),
            f.tags.flatten(),
            f.target_metrics.is_some(),
            f.target_metrics.flatten(),
            f.current_metrics.is_some(),
            f.current_metrics.flatten(),
            f.external_refs.is_some(),
            f.external_refs.flatten(),
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("outcome"))?
        .rows_affected();
        if updated == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "outcome", id)
                .title(&after.title)
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn delete_outcome(
        &self,
        request: Request<DeleteOutcomeRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let id = v.uuid("id", &req.id);
        v.finish()?;
        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(&req.etag, &etag(before.updated_at))?;
        if !matches!(
            before.status(),
            OutcomeStatus::Draft | OutcomeStatus::Abandoned
        ) {
            return Err(ApiError::precondition(
                "OUTCOME_NOT_DELETABLE",
                format!(
                    "only DRAFT or ABANDONED outcomes can be deleted; this one is {}",
                    before.status
                ),
            )
            .into());
        }
        if before.h_total > 0 {
            return Err(ApiError::precondition(
                "OUTCOME_HAS_HYPOTHESES",
                format!(
                    "the outcome has {} hypotheses; delete them first",
                    before.h_total
                ),
            )
            .into());
        }
        let deleted = sqlx::query!(
            "DELETE FROM core.outcomes \
             WHERE tenant_id = $1 AND id = $2 AND status = $3 AND updated_at IS NOT DISTINCT FROM $4",
            tx.tenant_id(),
            id,
            before.status,
            before.updated_at,
        )
        .execute(&mut *tx)
        .await
        .map_err(delete_error("outcome"))?
        .rows_affected();
        if deleted == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        tx.commit(
            AuditEntry::new(AuditAction::Delete, "outcome", id)
                .title(&before.title)
                .old(before.audit_values()),
        )
        .await?;
        Ok(Response::new(()))
    }

    async fn plan_outcome(
        &self,
        request: Request<PlanOutcomeRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let req = request.get_ref();
        let mv = Move::to(OutcomeStatus::NotStarted);
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn start_outcome(
        &self,
        request: Request<StartOutcomeRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let req = request.get_ref();
        let mv = Move::to(OutcomeStatus::InProgress);
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn submit_outcome_for_validation(
        &self,
        request: Request<SubmitOutcomeForValidationRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let req = request.get_ref();
        let mv = Move::to(OutcomeStatus::Validating);
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn validate_outcome(
        &self,
        request: Request<ValidateOutcomeRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let mv = Move {
            notes: v.optional("notes", &req.notes, LONG_TEXT),
            current_metrics: metrics_to_json("current_metrics", &req.current_metrics, &mut v),
            ..Move::to(OutcomeStatus::Validated)
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }

    async fn invalidate_outcome(
        &self,
        request: Request<InvalidateOutcomeRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let mv = Move {
            notes: v.optional("notes", &req.notes, LONG_TEXT),
            ..Move::to(OutcomeStatus::Invalidated)
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }

    async fn abandon_outcome(
        &self,
        request: Request<AbandonOutcomeRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let mv = Move {
            reason: v.optional("reason", &req.reason, LONG_TEXT),
            ..Move::to(OutcomeStatus::Abandoned)
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }
}
