//! OutcomeService: reads of the caller's tenant's outcomes.

use chrono::{DateTime, NaiveDate, Utc};
use codeops_platform::convert::{
    enum_from_db, enum_to_db, etag, id_string, opt_timestamp, timestamp,
};
use codeops_platform::{ApiError, Cursor, Db, Page, TenantTx, Violations};
use codeops_proto::planning::outcome_service_server::OutcomeService;
use codeops_proto::planning::{
    GetOutcomeRequest, ListOutcomesRequest, ListOutcomesResponse, Outcome, OutcomePriority,
    OutcomeStatus,
};
use codeops_tenant::RequestExt;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct Outcomes {
    db: Db,
}

impl Outcomes {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// A row as the schema types it: NOT NULL columns are plain values.
struct OutcomeRow {
    id: Uuid,
    title: String,
    description: Option<String>,
    success_criteria: Option<String>,
    status: String,
    priority: String,
    team_id: Option<Uuid>,
    owner_id: Option<Uuid>,
    target_date: Option<NaiveDate>,
    started_at: Option<DateTime<Utc>>,
    validated_at: Option<DateTime<Utc>>,
    invalidated_at: Option<DateTime<Utc>>,
    tags: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
}

impl OutcomeRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            time: self.created_at,
            id: self.id,
        }
    }

    fn into_proto(self) -> Outcome {
        let status = enum_from_db(
            &self.status,
            "OUTCOME_STATUS_",
            OutcomeStatus::from_str_name,
        );
        let priority = enum_from_db(
            &self.priority,
            "OUTCOME_PRIORITY_",
            OutcomePriority::from_str_name,
        );
        Outcome {
            id: self.id.to_string(),
            title: self.title,
            description: self.description.unwrap_or_default(),
            success_criteria: self.success_criteria.unwrap_or_default(),
            status: status as i32,
            priority: priority as i32,
            team_id: id_string(self.team_id),
            owner_id: id_string(self.owner_id),
            target_date: self.target_date.map(|d| d.to_string()).unwrap_or_default(),
            start_time: opt_timestamp(self.started_at),
            validate_time: opt_timestamp(self.validated_at),
            invalidate_time: opt_timestamp(self.invalidated_at),
            tags: self
                .tags
                .and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok())
                .unwrap_or_default(),
            create_time: Some(timestamp(self.created_at)),
            update_time: self.updated_at.map(timestamp),
            etag: etag(self.updated_at),
        }
    }
}

#[tonic::async_trait]
impl OutcomeService for Outcomes {
    async fn get_outcome(
        &self,
        request: Request<GetOutcomeRequest>,
    ) -> Result<Response<Outcome>, Status> {
        let ctx = request.tenant()?;
        let mut v = Violations::new();
        let id = v.uuid("id", &request.get_ref().id);
        v.finish()?;
        let mut tx = self.db.read(ctx).await?;
        let row = sqlx::query_as!(
            OutcomeRow,
            "SELECT id, title, description, success_criteria, status, priority, team_id, owner_id, \
                 target_date, started_at, validated_at, invalidated_at, tags, created_at, updated_at \
             FROM core.outcomes WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            id,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let row = row.ok_or(ApiError::NotFound("outcome"))?;
        Ok(Response::new(row.into_proto()))
    }

    async fn list_outcomes(
        &self,
        request: Request<ListOutcomesRequest>,
    ) -> Result<Response<ListOutcomesResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let status = if req.status == 0 {
            None
        } else {
            v.enum_value::<OutcomeStatus>("status", req.status)
                .map(|s| enum_to_db(s.as_str_name(), "OUTCOME_STATUS_").to_owned())
        };
        let team_id = v.optional_uuid("team_id", &req.team_id);
        let owner_id = v.optional_uuid("owner_id", &req.owner_id);
        let filters = format!("{status:?}|{team_id:?}|{owner_id:?}");
        let page = Page::parse(req.page_size, &req.page_token, &filters, &mut v);
        v.finish()?;

        let mut tx = self.db.read(ctx).await?;
        let rows = sqlx::query_as!(
            OutcomeRow,
            "SELECT id, title, description, success_criteria, status, priority, team_id, owner_id, \
                 target_date, started_at, validated_at, invalidated_at, tags, created_at, updated_at \
             FROM core.outcomes \
             WHERE tenant_id = $1 \
               AND ($2::text IS NULL OR status = $2) \
               AND ($3::uuid IS NULL OR team_id = $3) \
               AND ($4::uuid IS NULL OR owner_id = $4) \
               AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6)) \
             ORDER BY created_at DESC, id DESC LIMIT $7",
            tx.tenant_id(),
            status,
            team_id,
            owner_id,
            page.after_time(),
            page.after_id(),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let (outcomes, next_page_token) =
            page.finish(rows, OutcomeRow::cursor, OutcomeRow::into_proto);
        Ok(Response::new(ListOutcomesResponse {
            outcomes,
            next_page_token,
        }))
    }
}
