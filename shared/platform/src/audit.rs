//! The audit writer: one row per change, in the change's own transaction.

use codeops_tenant::{RequestMeta, TenantContext};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;

/// Who did it, from where.
pub struct Actor<'a> {
    pub tenant_id: Uuid,
    pub user_id: Option<Uuid>,
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub meta: &'a RequestMeta,
}

impl<'a> Actor<'a> {
    /// The operator credential acting on `tenant_id` (no user of its own).
    pub fn operator(tenant_id: Uuid, meta: &'a RequestMeta) -> Self {
        Actor {
            tenant_id,
            user_id: None,
            name: Some("operator"),
            email: None,
            meta,
        }
    }
}

impl<'a> From<&'a TenantContext> for Actor<'a> {
    fn from(ctx: &'a TenantContext) -> Self {
        Actor {
            tenant_id: ctx.tenant_id,
            user_id: Some(ctx.user_id),
            name: Some(&ctx.name),
            email: Some(&ctx.email),
            meta: &ctx.meta,
        }
    }
}

/// What happened. Values are JSON without secrets: callers pass the
/// public projection of a row, never hashes or tokens.
pub struct AuditEntry<'a> {
    pub action: &'static str,
    pub entity_type: &'static str,
    pub entity_id: Uuid,
    pub entity_title: Option<&'a str>,
    pub description: Option<String>,
    pub old_values: Option<serde_json::Value>,
    pub new_values: Option<serde_json::Value>,
}

impl<'a> AuditEntry<'a> {
    pub fn new(action: &'static str, entity_type: &'static str, entity_id: Uuid) -> Self {
        Self {
            action,
            entity_type,
            entity_id,
            entity_title: None,
            description: None,
            old_values: None,
            new_values: None,
        }
    }

    pub fn title(mut self, title: &'a str) -> Self {
        self.entity_title = Some(title);
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    pub fn old(mut self, values: serde_json::Value) -> Self {
        self.old_values = Some(values);
        self
    }

    pub fn new_values(mut self, values: serde_json::Value) -> Self {
        self.new_values = Some(values);
        self
    }
}

fn clip(value: Option<&str>) -> Option<String> {
    value.map(|v| v.chars().take(255).collect())
}

pub async fn record(
    conn: &mut PgConnection,
    actor: &Actor<'_>,
    entry: AuditEntry<'_>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO core.audit_logs (id, tenant_id, actor_id, actor_name, actor_email, action, entity_type, \
             entity_id, entity_title, description, old_values, new_values, ip_address, user_agent, request_id, timestamp) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, clock_timestamp())",
    )
    .bind(Uuid::now_v7())
    .bind(actor.tenant_id)
    .bind(actor.user_id)
    .bind(clip(actor.name))
    .bind(clip(actor.email))
    .bind(entry.action)
    .bind(entry.entity_type)
    .bind(entry.entity_id)
    .bind(clip(entry.entity_title))
    .bind(entry.description)
    .bind(entry.old_values.map(|v| v.to_string()))
    .bind(entry.new_values.map(|v| v.to_string()))
    .bind(clip(actor.meta.peer_ip.as_deref()))
    .bind(clip(actor.meta.user_agent.as_deref()))
    .bind(clip(Some(&actor.meta.request_id)))
    .execute(conn)
    .await?;
    Ok(())
}
