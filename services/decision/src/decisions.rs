//! DecisionService: reads of the caller's tenant's decisions.

use chrono::{DateTime, Utc};
use codeops_platform::convert::{
    enum_from_db, enum_to_db, etag, id_string, opt_timestamp, timestamp,
};
use codeops_platform::{ApiError, Cursor, Db, Page, TenantTx, Violations};
use codeops_proto::decision::decision_service_server::DecisionService;
use codeops_proto::decision::{
    Decision, DecisionPriority, DecisionStatus, GetDecisionRequest, ListDecisionsRequest,
    ListDecisionsResponse,
};
use codeops_tenant::RequestExt;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct Decisions {
    db: Db,
}

impl Decisions {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// A row as the schema types it: NOT NULL columns are plain values.
struct DecisionRow {
    id: Uuid,
    title: String,
    description: Option<String>,
    context: Option<String>,
    status: String,
    priority: String,
    owner_id: Option<Uuid>,
    assigned_to_id: Option<Uuid>,
    outcome_id: Option<Uuid>,
    hypothesis_id: Option<Uuid>,
    team_id: Option<Uuid>,
    sla_hours: Option<i32>,
    due_at: Option<DateTime<Utc>>,
    escalation_level: Option<i32>,
    escalated_at: Option<DateTime<Utc>>,
    escalated_to_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
}

impl DecisionRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            time: self.created_at,
            id: self.id,
        }
    }

    fn into_proto(self) -> Decision {
        let status = enum_from_db(
            &self.status,
            "DECISION_STATUS_",
            DecisionStatus::from_str_name,
        );
        let priority = enum_from_db(
            &self.priority,
            "DECISION_PRIORITY_",
            DecisionPriority::from_str_name,
        );
        Decision {
            id: self.id.to_string(),
            title: self.title,
            description: self.description.unwrap_or_default(),
            context: self.context.unwrap_or_default(),
            status: status as i32,
            priority: priority as i32,
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
            create_time: Some(timestamp(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            etag: etag(self.updated_at),
        }
    }
}

#[tonic::async_trait]
impl DecisionService for Decisions {
    async fn get_decision(
        &self,
        request: Request<GetDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        let row = sqlx::query_as!(
            DecisionRow,
            "SELECT id, title, description, context, status, priority, owner_id, assigned_to_id, outcome_id, \
                 hypothesis_id, team_id, sla_hours, due_at, escalation_level, escalated_at, escalated_to_id, \
                 created_at, updated_at \
             FROM core.decisions WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            id,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let row = row.ok_or(ApiError::NotFound("decision"))?;
        Ok(Response::new(row.into_proto()))
    }

    async fn list_decisions(
        &self,
        request: Request<ListDecisionsRequest>,
    ) -> Result<Response<ListDecisionsResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let status = if req.status == 0 {
            None
        } else {
            v.enum_value::<DecisionStatus>("status", req.status)
                .map(|s| enum_to_db(s.as_str_name(), "DECISION_STATUS_").to_owned())
        };
        let filters = format!("{status:?}|{}", req.overdue_only);
        let page = Page::parse(req.page_size, &req.page_token, &filters, &mut v);
        v.finish()?;

        let mut tx = self.db.read(ctx).await?;
        let rows = sqlx::query_as!(
            DecisionRow,
            "SELECT id, title, description, context, status, priority, owner_id, assigned_to_id, outcome_id, \
                 hypothesis_id, team_id, sla_hours, due_at, escalation_level, escalated_at, escalated_to_id, \
                 created_at, updated_at \
             FROM core.decisions \
             WHERE tenant_id = $1 \
               AND ($2::text IS NULL OR status = $2) \
               AND (NOT $3 OR (status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') AND due_at < now())) \
               AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5)) \
             ORDER BY created_at DESC, id DESC LIMIT $6",
            tx.tenant_id(),
            status,
            req.overdue_only,
            page.after_time(),
            page.after_id(),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let (decisions, next_page_token) =
            page.finish(rows, DecisionRow::cursor, DecisionRow::into_proto);
        Ok(Response::new(ListDecisionsResponse {
            decisions,
            next_page_token,
        }))
    }
}
