//! AuditService: the tenant's audit trail, newest first, whichever service
//! wrote it.

use chrono::{DateTime, Utc};
use codeops_platform::convert::{
    enum_from_db, enum_to_db, from_timestamp, json_to_struct, timestamp,
};
use codeops_platform::validate::SHORT_TEXT;
use codeops_platform::{ApiError, Cursor, Page, TenantTx, Violations};
use codeops_proto::identity::audit_service_server::AuditService;
use codeops_proto::identity::{AuditAction, AuditLog, ListAuditLogsRequest, ListAuditLogsResponse};
use codeops_tenant::RequestExt;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Svc;

struct AuditRow {
    id: Uuid,
    actor_id: Option<Uuid>,
    actor_name: Option<String>,
    actor_email: Option<String>,
    action: String,
    entity_type: String,
    entity_id: Uuid,
    entity_title: Option<String>,
    description: Option<String>,
    old_values: Option<String>,
    new_values: Option<String>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    timestamp: DateTime<Utc>,
}

fn values(text: Option<String>) -> Option<prost_types::Struct> {
    let value: serde_json::Value = serde_json::from_str(&text?).ok()?;
    Some(json_to_struct(&value))
}

impl AuditRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            time: self.timestamp,
            id: self.id,
        }
    }

    fn into_proto(self) -> AuditLog {
        AuditLog {
            id: self.id.to_string(),
            actor_id: self.actor_id.map(|id| id.to_string()).unwrap_or_default(),
            actor_name: self.actor_name.unwrap_or_default(),
            actor_email: self.actor_email.unwrap_or_default(),
            action: enum_from_db(&self.action, "AUDIT_ACTION_", AuditAction::from_str_name) as i32,
            entity_type: self.entity_type,
            entity_id: self.entity_id.to_string(),
            entity_title: self.entity_title.unwrap_or_default(),
            description: self.description.unwrap_or_default(),
            old_values: values(self.old_values),
            new_values: values(self.new_values),
            ip_address: self.ip_address.unwrap_or_default(),
            user_agent: self.user_agent.unwrap_or_default(),
            request_id: self.request_id.unwrap_or_default(),
            create_time: Some(timestamp(self.timestamp)),
        }
    }
}

#[tonic::async_trait]
impl AuditService for Svc {
    async fn list_audit_logs(
        &self,
        request: Request<ListAuditLogsRequest>,
    ) -> Result<Response<ListAuditLogsResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let entity_type = v.optional("entity_type", &req.entity_type, SHORT_TEXT);
        let entity_id = v.optional_uuid("entity_id", &req.entity_id);
        let actor_id = v.optional_uuid("actor_id", &req.actor_id);
        let action = if req.action == 0 {
            None
        } else {
            v.enum_value::<AuditAction>("action", req.action)
                .map(|a| enum_to_db(a.as_str_name(), "AUDIT_ACTION_").to_owned())
        };
        let start = req.start_time.as_ref().map(|t| {
            from_timestamp(t).unwrap_or_else(|| {
                v.add("start_time", "is not a valid timestamp");
                DateTime::<Utc>::MIN_UTC
            })
        });
        let end = req.end_time.as_ref().map(|t| {
            from_timestamp(t).unwrap_or_else(|| {
                v.add("end_time", "is not a valid timestamp");
                DateTime::<Utc>::MAX_UTC
            })
        });
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            v.add("end_time", "must not be before start_time");
        }
        let filters =
            format!("{entity_type:?}|{entity_id:?}|{actor_id:?}|{action:?}|{start:?}|{end:?}");
        let page = Page::parse(req.page_size, &req.page_token, &filters, &mut v);
        v.finish()?;

        let mut tx = self.db.read(ctx).await?;
        let rows = sqlx::query_as!(
            AuditRow,
            "SELECT id, actor_id, actor_name, actor_email, action, entity_type, entity_id, entity_title, description, \
                 old_values, new_values, ip_address, user_agent, request_id, timestamp \
             FROM core.audit_logs WHERE tenant_id = $1 \
               AND ($2::text IS NULL OR entity_type = $2) \
               AND ($3::uuid IS NULL OR entity_id = $3) \
               AND ($4::uuid IS NULL OR actor_id = $4) \
               AND ($5::text IS NULL OR action = $5) \
               AND ($6::timestamptz IS NULL OR timestamp >= $6) \
               AND ($7::timestamptz IS NULL OR timestamp < $7) \
               AND ($8::timestamptz IS NULL OR (timestamp, id) < ($8, $9)) \
             ORDER BY timestamp DESC, id DESC LIMIT $10",
            tx.tenant_id(),
            entity_type,
            entity_id,
            actor_id,
            action,
            start,
            end,
            page.after_time(),
            page.after_id(),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let (audit_logs, next_page_token) =
            page.finish(rows, AuditRow::cursor, AuditRow::into_proto);
        Ok(Response::new(ListAuditLogsResponse {
            audit_logs,
            next_page_token,
        }))
    }
}
