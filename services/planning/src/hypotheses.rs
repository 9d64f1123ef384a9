//! HypothesisService: the caller's tenant's hypotheses, each under one
//! outcome, and their lifecycle moves.

use chrono::{DateTime, Utc};
use codeops_platform::convert::{enum_from_db, enum_to_db, etag, id_string, opt_timestamp};
use codeops_platform::validate::{LONG_TEXT, SHORT_TEXT, TITLE_TEXT, check_etag, contains_pattern};
use codeops_platform::{
    ApiError, AuditAction, AuditEntry, Claim, Cursor, Db, Page, RequestKey, TenantTx, Violations,
};
use codeops_proto::planning::hypothesis_service_server::HypothesisService;
use codeops_proto::planning::{
    AbandonHypothesisRequest, BlockHypothesisRequest, ConcludeHypothesisRequest,
    CreateHypothesisRequest, DeleteHypothesisRequest, GetHypothesisRequest, Hypothesis,
    HypothesisConclusion, HypothesisPriority, HypothesisStatus, ListHypothesesRequest,
    ListHypothesesResponse, MarkHypothesisDeployedRequest, MarkHypothesisReadyRequest,
    OutcomeStatus, StartBuildingHypothesisRequest, StartMeasuringHypothesisRequest,
    UnblockHypothesisRequest, UpdateHypothesisRequest,
};
use codeops_tenant::RequestExt;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::documents::{
    config_from_json, config_to_json, parse, refs_from_json, refs_to_json, results_from_json,
    results_to_json, tags_from_json, tags_to_json,
};
use crate::lifecycle::{
    HYPOTHESIS_LIFECYCLE, HypothesisTarget, OUTCOME_LIFECYCLE, hypothesis_status_db,
    hypothesis_status_from_db, illegal_hypothesis_move, outcome_status_from_db,
};
use crate::{delete_error, write_error};

pub struct Hypotheses {
    db: Db,
}

impl Hypotheses {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// A hypothesis row as the schema types it.
struct HypothesisRow {
    id: Uuid,
    outcome_id: Uuid,
    title: String,
    belief: String,
    expected_result: String,
    measurement_criteria: Option<String>,
    status: String,
    priority: String,
    owner_id: Option<Uuid>,
    experiment_config: Option<String>,
    experiment_results: Option<String>,
    blocked_reason: Option<String>,
    blocked_from: Option<String>,
    conclusion_notes: Option<String>,
    external_refs: Option<String>,
    tags: Option<String>,
    started_at: Option<DateTime<Utc>>,
    deployed_at: Option<DateTime<Utc>>,
    measuring_started_at: Option<DateTime<Utc>>,
    concluded_at: Option<DateTime<Utc>>,
    concluded_by_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    created_by_id: Option<Uuid>,
    abandoned_at: Option<DateTime<Utc>>,
    abandon_reason: Option<String>,
}

impl HypothesisRow {
    fn status(&self) -> HypothesisStatus {
        hypothesis_status_from_db(&self.status)
    }

    /// Where a BLOCKED hypothesis returns: the stored status, or for rows
    /// blocked by the first release (which stored none) the furthest stage
    /// its timestamps show, as migration 20003 back-filled.
    fn blocked_from(&self) -> HypothesisStatus {
        match self.blocked_from.as_deref() {
            Some(stored) => hypothesis_status_from_db(stored),
            None if self.measuring_started_at.is_some() => HypothesisStatus::Measuring,
            None if self.deployed_at.is_some() => HypothesisStatus::Deployed,
            None if self.started_at.is_some() => HypothesisStatus::Building,
            None => HypothesisStatus::Ready,
        }
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            time: self.created_at,
            id: self.id,
        }
    }

    fn audit_values(&self) -> serde_json::Value {
        json!({
            "outcome_id": self.outcome_id,
            "title": self.title,
            "belief": self.belief,
            "expected_result": self.expected_result,
            "measurement_criteria": self.measurement_criteria,
            "status": self.status,
            "priority": self.priority,
            "owner_id": self.owner_id,
            "experiment_config": parse(self.experiment_config.as_deref()),
            "experiment_results": parse(self.experiment_results.as_deref()),
            "blocked_reason": self.blocked_reason,
            "blocked_from": self.blocked_from,
            "conclusion_notes": self.conclusion_notes,
            "external_refs": parse(self.external_refs.as_deref()),
            "tags": parse(self.tags.as_deref()),
            "started_at": self.started_at,
            "deployed_at": self.deployed_at,
            "measuring_started_at": self.measuring_started_at,
            "concluded_at": self.concluded_at,
            "concluded_by_id": self.concluded_by_id,
            "abandoned_at": self.abandoned_at,
            "abandon_reason": self.abandon_reason,
        })
    }

    fn into_proto(self) -> Hypothesis {
        let status = self.status();
        let blocked_from = if status == HypothesisStatus::Blocked || self.blocked_from.is_some() {
            self.blocked_from()
        } else {
            HypothesisStatus::Unspecified
        };
        let priority = enum_from_db(
            &self.priority,
            "HYPOTHESIS_PRIORITY_",
            HypothesisPriority::from_str_name,
        );
        Hypothesis {
            id: self.id.to_string(),
            outcome_id: self.outcome_id.to_string(),
            title: self.title,
            belief: self.belief,
            expected_result: self.expected_result,
            measurement_criteria: self.measurement_criteria.unwrap_or_default(),
            status: status as i32,
            priority: priority as i32,
            owner_id: id_string(self.owner_id),
            experiment_config: config_from_json(self.experiment_config.as_deref()),
            experiment_results: results_from_json(self.experiment_results.as_deref()),
            blocked_reason: self.blocked_reason.unwrap_or_default(),
            blocked_from: blocked_from as i32,
            conclusion_notes: self.conclusion_notes.unwrap_or_default(),
            external_refs: refs_from_json(self.external_refs.as_deref()),
            tags: tags_from_json(self.tags.as_deref()),
            start_time: opt_timestamp(self.started_at),
            deploy_time: opt_timestamp(self.deployed_at),
            measure_start_time: opt_timestamp(self.measuring_started_at),
            conclude_time: opt_timestamp(self.concluded_at),
            concluded_by_id: id_string(self.concluded_by_id),
            create_time: opt_timestamp(Some(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            created_by_id: id_string(self.created_by_id),
            etag: etag(self.updated_at),
            abandon_reason: self.abandon_reason.unwrap_or_default(),
            abandon_time: opt_timestamp(self.abandoned_at),
        }
    }
}

async fn get(tx: &mut impl TenantTx, id: Uuid) -> Result<HypothesisRow, ApiError> {
    sqlx::query_as!(
        HypothesisRow,
        "SELECT id, outcome_id, title, belief, expected_result, measurement_criteria, status, priority, owner_id, \
             experiment_config, experiment_results, blocked_reason, blocked_from, conclusion_notes, external_refs, \
             tags, started_at, deployed_at, measuring_started_at, concluded_at, concluded_by_id, created_at, \
             updated_at, created_by_id, abandoned_at, abandon_reason \
         FROM core.hypotheses WHERE tenant_id = $1 AND id = $2",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("hypothesis"))
}

/// The status of outcome `id`, share-locked until the transaction ends so
/// it cannot close while a hypothesis under it is added or advanced.
async fn lock_outcome(tx: &mut impl TenantTx, id: Uuid) -> Result<Option<OutcomeStatus>, ApiError> {
    let status = sqlx::query_scalar!(
        "SELECT status FROM core.outcomes WHERE tenant_id = $1 AND id = $2 FOR SHARE",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(status.as_deref().map(outcome_status_from_db))
}

fn outcome_closed(status: OutcomeStatus) -> ApiError {
    ApiError::precondition(
        "OUTCOME_CLOSED",
        format!(
            "the outcome is {}: hypotheses cannot be added or advanced under it",
            enum_to_db(status.as_str_name(), "OUTCOME_STATUS_")
        ),
    )
}

#[derive(Default)]
struct Fields {
    title: Option<String>,
    belief: Option<String>,
    expected_result: Option<String>,
    measurement_criteria: Option<Option<String>>,
    priority: Option<String>,
    owner_id: Option<Option<Uuid>>,
    experiment_config: Option<Option<String>>,
    external_refs: Option<Option<String>>,
    tags: Option<Option<String>>,
}

/// Every path UpdateHypothesis takes.
const UPDATABLE: &[&str] = &[
    "title",
    "belief",
    "expected_result",
    "measurement_criteria",
    "priority",
    "owner_id",
    "experiment_config",
    "external_refs",
    "tags",
];

fn priority_db(priority: HypothesisPriority) -> String {
    enum_to_db(priority.as_str_name(), "HYPOTHESIS_PRIORITY_").to_owned()
}

fn fields(h: &Hypothesis, wanted: impl Fn(&str) -> bool, v: &mut Violations) -> Fields {
    let f = |name: &str| format!("hypothesis.{name}");
    Fields {
        title: wanted("title").then(|| v.required(&f("title"), &h.title, TITLE_TEXT)),
        belief: wanted("belief").then(|| v.required(&f("belief"), &h.belief, LONG_TEXT)),
        expected_result: wanted("expected_result")
            .then(|| v.required(&f("expected_result"), &h.expected_result, LONG_TEXT)),
        measurement_criteria: wanted("measurement_criteria").then(|| {
            v.optional(
                &f("measurement_criteria"),
                &h.measurement_criteria,
                LONG_TEXT,
            )
        }),
        priority: wanted("priority").then(|| {
            v.enum_value::<HypothesisPriority>(&f("priority"), h.priority)
                .map(priority_db)
                .unwrap_or_default()
        }),
        owner_id: wanted("owner_id").then(|| v.optional_uuid(&f("owner_id"), &h.owner_id)),
        experiment_config: wanted("experiment_config")
            .then(|| config_to_json(&f("experiment_config"), h.experiment_config.as_ref(), v)),
        external_refs: wanted("external_refs")
            .then(|| refs_to_json(&f("external_refs"), &h.external_refs, v)),
        tags: wanted("tags").then(|| tags_to_json(&f("tags"), &h.tags, v)),
    }
}

/// A lifecycle move: where to, what it sets (`effect`, read by the one
/// UPDATE of every move) and the move's own fields.
struct Move {
    target: HypothesisTarget,
    effect: &'static str,
    action: AuditAction,
    notes: Option<String>,
    results: Option<String>,
    reason: Option<String>,
}

impl Move {
    fn new(target: HypothesisTarget, effect: &'static str, action: AuditAction) -> Move {
        Move {
            target,
            effect,
            action,
            notes: None,
            results: None,
            reason: None,
        }
    }

    fn to(status: HypothesisStatus, effect: &'static str) -> Move {
        Move::new(
            HypothesisTarget::To(status),
            effect,
            AuditAction::HypothesisTransitioned,
        )
    }
}

impl Hypotheses {
    /// Applies `mv` to hypothesis `id` if product.md's table allows it from
    /// the status read (and, unless abandoning, its outcome is not
    /// terminal), with one conditional UPDATE on that status and version:
    /// of two concurrent moves exactly one wins, the other is ABORTED.
    async fn transition(
        &self,
        request: &Request<impl Sized>,
        id: &str,
        given_etag: &str,
        mv: Move,
        mut v: Violations,
    ) -> Result<Response<Hypothesis>, Status> {
        let ctx = request.tenant()?;
        let id = v.uuid("id", id);
        v.finish()?;
        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(given_etag, &etag(before.updated_at))?;
        let from = before.status();
        let blocked_from = before.blocked_from();
        if !HYPOTHESIS_LIFECYCLE.allows(from, mv.target) {
            return Err(illegal_hypothesis_move(from, mv.target, blocked_from).into());
        }
        if mv.target != HypothesisTarget::To(HypothesisStatus::Abandoned) {
            let outcome = lock_outcome(&mut tx, before.outcome_id)
                .await?
                .unwrap_or_default();
            if OUTCOME_LIFECYCLE.is_terminal(outcome) {
                return Err(outcome_closed(outcome).into());
            }
        }
        let to = match mv.target {
            HypothesisTarget::To(status) => status,
            HypothesisTarget::BlockedFrom => blocked_from,
        };
        let moved = sqlx::query!(
            "UPDATE core.hypotheses SET \
                 status = $5::text, \
                 started_at = CASE WHEN $6::text = 'BUILD' THEN coalesce(started_at, now()) ELSE started_at END, \
                 deployed_at = CASE WHEN $6 = 'DEPLOY' THEN now() ELSE deployed_at END, \
                 measuring_started_at = CASE WHEN $6 = 'MEASURE' THEN now() ELSE measuring_started_at END, \
                 concluded_at = CASE WHEN $6 = 'CONCLUDE' THEN now() ELSE concluded_at END, \
                 concluded_by_id = CASE WHEN $6 = 'CONCLUDE' THEN $7::uuid ELSE concluded_by_id END, \
                 conclusion_notes = CASE WHEN $6 = 'CONCLUDE' THEN $8::text ELSE conclusion_notes END, \
                 experiment_results = CASE WHEN $6 = 'CONCLUDE' THEN coalesce($9::text, experiment_results) \
                     ELSE experiment_results END, \
                 blocked_reason = CASE $6 WHEN 'BLOCK' THEN $10::text WHEN 'UNBLOCK' THEN NULL ELSE blocked_reason END, \
                 blocked_from = CASE $6 WHEN 'BLOCK' THEN $3 WHEN 'UNBLOCK' THEN NULL ELSE blocked_from END, \
                 abandoned_at = CASE WHEN $6 = 'ABANDON' THEN now() ELSE abandoned_at END, \
                 abandon_reason = CASE WHEN $6 = 'ABANDON' THEN $10::text ELSE abandon_reason END, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND status = $3::text AND updated_at IS NOT DISTINCT FROM $4",
            tx.tenant_id(),
            id,
            before.status,
            before.updated_at,
            hypothesis_status_db(to),
            mv.effect,
            ctx.user_id,
            mv.notes,
            mv.results,
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
            AuditEntry::new(mv.action, "hypothesis", id)
                .title(&after.title)
                .description(format!("{} -> {}", before.status, after.status))
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }
}

#[tonic::async_trait]
impl HypothesisService for Hypotheses {
    async fn create_hypothesis(
        &self,
        request: Request<CreateHypothesisRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let ctx = request.tenant()?;
        let hypothesis = request.get_ref().hypothesis.clone().unwrap_or_default();
        let mut v = Violations::new();
        let outcome_id = v.uuid("hypothesis.outcome_id", &hypothesis.outcome_id);
        let f = fields(&hypothesis, |_| true, &mut v);
        let key = RequestKey::parse(&mut v, request.get_ref());
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let id = Uuid::now_v7();
        if let Claim::Replay(first) = tx.claim(key.as_ref(), id).await? {
            return Ok(Response::new(get(&mut tx, first).await?.into_proto()));
        }
        let Some(outcome) = lock_outcome(&mut tx, outcome_id).await? else {
            return Err(ApiError::field(
                "hypothesis.outcome_id",
                "refers to a record that does not exist",
            )
            .into());
        };
        if OUTCOME_LIFECYCLE.is_terminal(outcome) {
            return Err(outcome_closed(outcome).into());
        }
        sqlx::query!(
            "INSERT INTO core.hypotheses (id, tenant_id, outcome_id, title, belief, expected_result, \
                 measurement_criteria, status, priority, owner_id, experiment_config, external_refs, tags, \
                 created_at, updated_at, created_by_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'DRAFT', $8, $9, $10, $11, $12, \
                 clock_timestamp(), clock_timestamp(), $13)",
            id,
            tx.tenant_id(),
            outcome_id,
            f.title.unwrap_or_default(),
            f.belief.unwrap_or_default(),
            f.expected_result.unwrap_or_default(),
            f.measurement_criteria.flatten(),
            f.priority.unwrap_or_default(),
            f.owner_id.flatten(),
            f.experiment_config.flatten(),
            f.external_refs.flatten(),
            f.tags.flatten(),
            ctx.user_id,
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("hypothesis"))?;
        let created = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Create, "hypothesis", id)
                .title(&created.title)
                .new_values(created.audit_values()),
        )
        .await?;
        Ok(Response::new(created.into_proto()))
    }

    async fn get_hypothesis(
        &self,
        request: Request<GetHypothesisRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        let row = get(&mut tx, id).await?;
        Ok(Response::new(row.into_proto()))
    }

    async fn list_hypotheses(
        &self,
        request: Request<ListHypothesesRequest>,
    ) -> Result<Response<ListHypothesesResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let outcome_id = v.optional_uuid("outcome_id", &req.outcome_id);
        let statuses: Vec<HypothesisStatus> = v.enum_set("statuses", &req.statuses);
        let priorities: Vec<HypothesisPriority> = v.enum_set("priorities", &req.priorities);
        let owner_id = v.optional_uuid("owner_id", &req.owner_id);
        let tag = v.optional("tag", &req.tag, SHORT_TEXT);
        let query = v.optional("query", &req.query, SHORT_TEXT);
        let statuses: Option<Vec<String>> = (!statuses.is_empty()).then(|| {
            let mut db: Vec<String> = statuses
                .iter()
                .map(|s| hypothesis_status_db(*s).to_owned())
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
            "hypotheses|{outcome_id:?}|{statuses:?}|{priorities:?}|{owner_id:?}|{tag:?}|{query:?}"
        );
        let page = Page::parse(req.page_size, &req.page_token, &filters, &mut v);
        v.finish()?;

        let pattern = query.as_deref().map(contains_pattern);
        let mut tx = self.db.read(ctx).await?;
        let rows = sqlx::query_as!(
            HypothesisRow,
            "SELECT id, outcome_id, title, belief, expected_result, measurement_criteria, status, priority, \
                 owner_id, experiment_config, experiment_results, blocked_reason, blocked_from, conclusion_notes, \
                 external_refs, tags, started_at, deployed_at, measuring_started_at, concluded_at, concluded_by_id, \
                 created_at, updated_at, created_by_id, abandoned_at, abandon_reason \
             FROM core.hypotheses \
             WHERE tenant_id = $1 \
               AND ($2::uuid IS NULL OR outcome_id = $2) \
               AND ($3::text[] IS NULL OR status = ANY($3)) \
               AND ($4::text[] IS NULL OR priority = ANY($4)) \
               AND ($5::uuid IS NULL OR owner_id = $5) \
               AND ($6::text IS NULL OR tags::jsonb @> jsonb_build_array($6::text)) \
               AND ($7::text IS NULL OR title ILIKE $7 OR belief ILIKE $7 OR expected_result ILIKE $7) \
               AND (created_at, id) < ($8::text::timestamptz, $9::uuid) \
             ORDER BY created_at DESC, id DESC LIMIT $10",
            tx.tenant_id(),
            outcome_id,
            statuses.as_deref(),
            priorities.as_deref(),
            owner_id,
            tag,
            pattern,
            // Page 1 starts after 'infinity': no OR or COALESCE keeps the
            // keyset comparison from being an index condition.
            page.after_time()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .unwrap_or_else(|| "infinity".to_owned()),
            page.after_id().unwrap_or(Uuid::max()),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let (hypotheses, next_page_token) =
            page.finish(rows, HypothesisRow::cursor, HypothesisRow::into_proto);
        Ok(Response::new(ListHypothesesResponse {
            hypotheses,
            next_page_token,
        }))
    }

    async fn update_hypothesis(
        &self,
        request: Request<UpdateHypothesisRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let hypothesis = req.hypothesis.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v.uuid("hypothesis.id", &hypothesis.id);
        let mask = v.update_mask(req.update_mask.as_ref(), UPDATABLE);
        let f = fields(&hypothesis, |path| mask.contains(path), &mut v);
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let before = get(&mut tx, id).await?;
        check_etag(&hypothesis.etag, &etag(before.updated_at))?;
        let updated = sqlx::query!(
            "UPDATE core.hypotheses SET \
                 title = coalesce($4, title), \
                 belief = coalesce($5, belief), \
                 expected_result = coalesce($6, expected_result), \
                 measurement_criteria = CASE WHEN $7::bool THEN $8::text ELSE measurement_criteria END, \
                 priority = coalesce($9, priority), \
                 owner_id = CASE WHEN $10::bool THEN $11::uuid ELSE owner_id END, \
                 experiment_config = CASE WHEN $12::bool THEN $13::text ELSE experiment_config END, \
                 external_refs = CASE WHEN $14::bool THEN $15::text ELSE external_refs END, \
                 tags = CASE WHEN $16::bool THEN $17::text ELSE tags END, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND updated_at IS NOT DISTINCT FROM $3",
            tx.tenant_id(),
            id,
            before.updated_at,
            f.title,
            f.belief,
            f.expected_result,
            f.measurement_criteria.is_some(),
            f.measurement_criteria.flatten(),
            f.priority,
            f.owner_id.is_some(),
            f.owner_id.flatten(),
            f.experiment_config.is_some(),
            f.experiment_config.flatten(),
            f.external_refs.is_some(),
            f.external_refs.flatten(),
            f.tags.is_some(),
            f.tags.flatten(),
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("hypothesis"))?
        .rows_affected();
        if updated == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "hypothesis", id)
                .title(&after.title)
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn delete_hypothesis(
        &self,
        request: Request<DeleteHypothesisRequest>,
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
            HypothesisStatus::Draft | HypothesisStatus::Abandoned
        ) {
            return Err(ApiError::precondition(
                "HYPOTHESIS_NOT_DELETABLE",
                format!(
                    "only DRAFT or ABANDONED hypotheses can be deleted; this one is {}",
                    before.status
                ),
            )
            .into());
        }
        let deleted = sqlx::query!(
            "DELETE FROM core.hypotheses \
             WHERE tenant_id = $1 AND id = $2 AND status = $3 AND updated_at IS NOT DISTINCT FROM $4",
            tx.tenant_id(),
            id,
            before.status,
            before.updated_at,
        )
        .execute(&mut *tx)
        .await
        .map_err(delete_error("hypothesis"))?
        .rows_affected();
        if deleted == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        tx.commit(
            AuditEntry::new(AuditAction::Delete, "hypothesis", id)
                .title(&before.title)
                .old(before.audit_values()),
        )
        .await?;
        Ok(Response::new(()))
    }

    async fn mark_hypothesis_ready(
        &self,
        request: Request<MarkHypothesisReadyRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let req = request.get_ref();
        let mv = Move::to(HypothesisStatus::Ready, "READY");
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn start_building_hypothesis(
        &self,
        request: Request<StartBuildingHypothesisRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let req = request.get_ref();
        let mv = Move::to(HypothesisStatus::Building, "BUILD");
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn mark_hypothesis_deployed(
        &self,
        request: Request<MarkHypothesisDeployedRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let req = request.get_ref();
        let mv = Move::to(HypothesisStatus::Deployed, "DEPLOY");
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn start_measuring_hypothesis(
        &self,
        request: Request<StartMeasuringHypothesisRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let req = request.get_ref();
        let mv = Move::to(HypothesisStatus::Measuring, "MEASURE");
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn block_hypothesis(
        &self,
        request: Request<BlockHypothesisRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let mv = Move {
            reason: Some(v.required("reason", &req.reason, LONG_TEXT)),
            ..Move::new(
                HypothesisTarget::To(HypothesisStatus::Blocked),
                "BLOCK",
                AuditAction::HypothesisBlocked,
            )
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }

    async fn unblock_hypothesis(
        &self,
        request: Request<UnblockHypothesisRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let req = request.get_ref();
        let mv = Move::new(
            HypothesisTarget::BlockedFrom,
            "UNBLOCK",
            AuditAction::HypothesisUnblocked,
        );
        self.transition(&request, &req.id, &req.etag, mv, Violations::new())
            .await
    }

    async fn conclude_hypothesis(
        &self,
        request: Request<ConcludeHypothesisRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let to = match v.enum_value::<HypothesisConclusion>("result", req.result) {
            Some(HypothesisConclusion::Invalidated) => HypothesisStatus::Invalidated,
            _ => HypothesisStatus::Validated,
        };
        let mv = Move {
            notes: v.optional("notes", &req.notes, LONG_TEXT),
            results: results_to_json(
                "experiment_results",
                req.experiment_results.as_ref(),
                &mut v,
            ),
            ..Move::new(
                HypothesisTarget::To(to),
                "CONCLUDE",
                AuditAction::HypothesisConcluded,
            )
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }

    async fn abandon_hypothesis(
        &self,
        request: Request<AbandonHypothesisRequest>,
    ) -> Result<Response<Hypothesis>, Status> {
        let req = request.get_ref();
        let mut v = Violations::new();
        let mv = Move {
            reason: v.optional("reason", &req.reason, LONG_TEXT),
            ..Move::to(HypothesisStatus::Abandoned, "ABANDON")
        };
        self.transition(&request, &req.id, &req.etag, mv, v).await
    }
}
