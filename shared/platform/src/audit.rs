//! The audit trail: who did what, written by [`crate::db::WriteTx`] in the
//! change's own transaction. Actions are a closed enum (the proto's
//! `AuditAction`, and the database's CHECK list), never free strings.

use codeops_tenant::{RequestMeta, TenantContext};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;

/// One value per audited action of product.md; the same names as
/// `codeops.identity.v1.AuditAction` without its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    Create,
    Update,
    Delete,
    StatusChange,
    DecisionResolved,
    DecisionEscalated,
    DecisionAssigned,
    DecisionCommented,
    OutcomeValidated,
    OutcomeInvalidated,
    HypothesisTransitioned,
    HypothesisConcluded,
    HypothesisBlocked,
    HypothesisUnblocked,
    Login,
    Logout,
    PasswordChanged,
    UserCreated,
    UserDeactivated,
    RoleAssigned,
    TeamMemberAdded,
    TeamMemberRemoved,
}

impl AuditAction {
    pub const ALL: [AuditAction; 22] = [
        AuditAction::Create,
        AuditAction::Update,
        AuditAction::Delete,
        AuditAction::StatusChange,
        AuditAction::DecisionResolved,
        AuditAction::DecisionEscalated,
        AuditAction::DecisionAssigned,
        AuditAction::DecisionCommented,
        AuditAction::OutcomeValidated,
        AuditAction::OutcomeInvalidated,
        AuditAction::HypothesisTransitioned,
        AuditAction::HypothesisConcluded,
        AuditAction::HypothesisBlocked,
        AuditAction::HypothesisUnblocked,
        AuditAction::Login,
        AuditAction::Logout,
        AuditAction::PasswordChanged,
        AuditAction::UserCreated,
        AuditAction::UserDeactivated,
        AuditAction::RoleAssigned,
        AuditAction::TeamMemberAdded,
        AuditAction::TeamMemberRemoved,
    ];

    /// The text stored in `audit_logs.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "CREATE",
            AuditAction::Update => "UPDATE",
            AuditAction::Delete => "DELETE",
            AuditAction::StatusChange => "STATUS_CHANGE",
            AuditAction::DecisionResolved => "DECISION_RESOLVED",
            AuditAction::DecisionEscalated => "DECISION_ESCALATED",
            AuditAction::DecisionAssigned => "DECISION_ASSIGNED",
            AuditAction::DecisionCommented => "DECISION_COMMENTED",
            AuditAction::OutcomeValidated => "OUTCOME_VALIDATED",
            AuditAction::OutcomeInvalidated => "OUTCOME_INVALIDATED",
            AuditAction::HypothesisTransitioned => "HYPOTHESIS_TRANSITIONED",
            AuditAction::HypothesisConcluded => "HYPOTHESIS_CONCLUDED",
            AuditAction::HypothesisBlocked => "HYPOTHESIS_BLOCKED",
            AuditAction::HypothesisUnblocked => "HYPOTHESIS_UNBLOCKED",
            AuditAction::Login => "LOGIN",
            AuditAction::Logout => "LOGOUT",
            AuditAction::PasswordChanged => "PASSWORD_CHANGED",
            AuditAction::UserCreated => "USER_CREATED",
            AuditAction::UserDeactivated => "USER_DEACTIVATED",
            AuditAction::RoleAssigned => "ROLE_ASSIGNED",
            AuditAction::TeamMemberAdded => "TEAM_MEMBER_ADDED",
            AuditAction::TeamMemberRemoved => "TEAM_MEMBER_REMOVED",
        }
    }
}

/// Who did it, from where. Built from the caller's token
/// ([`Actor::user`]) or by a named constructor for work no signed-in
/// caller does: the operator credential, a login or token refresh (the
/// user is known only after their credentials check out).
#[derive(Clone, Debug)]
pub struct Actor {
    tenant_id: Uuid,
    user_id: Option<Uuid>,
    name: Option<String>,
    email: Option<String>,
    meta: RequestMeta,
}

impl Actor {
    /// The signed-in caller.
    pub fn user(ctx: &TenantContext) -> Actor {
        Actor {
            tenant_id: ctx.tenant_id,
            user_id: Some(ctx.user_id),
            name: Some(ctx.name.clone()),
            email: Some(ctx.email.clone()),
            meta: ctx.meta.clone(),
        }
    }

    /// The operator credential acting on `tenant_id` (no user of its own).
    pub fn operator(tenant_id: Uuid, meta: &RequestMeta) -> Actor {
        Actor {
            tenant_id,
            user_id: None,
            name: Some("operator".into()),
            email: None,
            meta: meta.clone(),
        }
    }

    /// Someone proving who they are (login, token refresh) in `tenant_id`:
    /// nobody yet, until [`crate::db::WriteTx::authenticated`] names the
    /// user whose credentials checked out.
    pub fn login(tenant_id: Uuid, meta: &RequestMeta) -> Actor {
        Actor {
            tenant_id,
            user_id: None,
            name: None,
            email: None,
            meta: meta.clone(),
        }
    }

    pub(crate) fn set_user(&mut self, user_id: Uuid, name: String, email: String) {
        self.user_id = Some(user_id);
        self.name = Some(name);
        self.email = Some(email);
    }

    /// A background job of the suite itself, named for the audit trail.
    pub fn system(tenant_id: Uuid, job: &'static str) -> Actor {
        Actor {
            tenant_id,
            user_id: None,
            name: Some(job.into()),
            email: None,
            meta: RequestMeta {
                request_id: format!("{job}-{}", Uuid::now_v7()),
                ..RequestMeta::default()
            },
        }
    }

    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// When the request this actor acts in stops being waited for.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.meta.deadline
    }
}

/// What happened. Values are JSON without secrets: callers pass the
/// public projection of a row, never hashes or tokens.
pub struct AuditEntry<'a> {
    pub action: AuditAction,
    pub entity_type: &'static str,
    pub entity_id: Uuid,
    pub entity_title: Option<&'a str>,
    pub description: Option<String>,
    pub old_values: Option<serde_json::Value>,
    pub new_values: Option<serde_json::Value>,
}

impl<'a> AuditEntry<'a> {
    pub fn new(action: AuditAction, entity_type: &'static str, entity_id: Uuid) -> Self {
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

    /// Old and new values of an update, keeping only the keys whose value
    /// changed, so the trail says what changed and nothing else.
    pub fn changes(self, old: serde_json::Value, new: serde_json::Value) -> Self {
        let (old, new) = changed_only(old, new);
        self.old(old).new_values(new)
    }
}

fn changed_only(
    old: serde_json::Value,
    new: serde_json::Value,
) -> (serde_json::Value, serde_json::Value) {
    match (old, new) {
        (serde_json::Value::Object(mut old), serde_json::Value::Object(mut new)) => {
            let same: Vec<String> = old
                .iter()
                .filter(|(k, v)| new.get(*k) == Some(*v))
                .map(|(k, _)| k.clone())
                .collect();
            for key in same {
                old.remove(&key);
                new.remove(&key);
            }
            (old.into(), new.into())
        }
        (old, new) => (old, new),
    }
}

fn clip(value: Option<&str>) -> Option<String> {
    value.map(|v| v.chars().take(255).collect())
}

pub(crate) async fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    entry: AuditEntry<'_>,
) -> Result<(), ApiError> {
    sqlx::query!(
        "INSERT INTO core.audit_logs (id, tenant_id, actor_id, actor_name, actor_email, action, entity_type, \
             entity_id, entity_title, description, old_values, new_values, ip_address, user_agent, request_id, timestamp) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, clock_timestamp())",
        Uuid::now_v7(),
        actor.tenant_id,
        actor.user_id,
        clip(actor.name.as_deref()),
        clip(actor.email.as_deref()),
        entry.action.as_str(),
        entry.entity_type,
        entry.entity_id,
        clip(entry.entity_title),
        entry.description,
        entry.old_values.map(|v| v.to_string()),
        entry.new_values.map(|v| v.to_string()),
        clip(actor.meta.peer_ip.as_deref()),
        clip(actor.meta.user_agent.as_deref()),
        clip(Some(&actor.meta.request_id)),
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use codeops_proto::identity::AuditAction as ProtoAction;

    use super::*;

    /// The Rust enum, the proto enum and the database's CHECK list name the
    /// same actions (READ is in the proto and the schema for reads that are
    /// audited by other systems; no service writes it).
    #[test]
    fn actions_match_the_proto() {
        for action in AuditAction::ALL {
            let proto = format!("AUDIT_ACTION_{}", action.as_str());
            assert!(
                ProtoAction::from_str_name(&proto).is_some(),
                "{proto} is missing from the proto"
            );
        }
        let mut proto_count = 0;
        for value in 1.. {
            let Ok(proto) = ProtoAction::try_from(value) else {
                break;
            };
            proto_count += 1;
            let name = proto.as_str_name().trim_start_matches("AUDIT_ACTION_");
            assert!(
                name == "READ" || AuditAction::ALL.iter().any(|a| a.as_str() == name),
                "{name} has no AuditAction"
            );
        }
        assert_eq!(proto_count, AuditAction::ALL.len() + 1);
    }

    #[test]
    fn changes_keep_only_what_changed() {
        let entry = AuditEntry::new(AuditAction::Update, "team", Uuid::nil()).changes(
            serde_json::json!({"name": "a", "slug": "s", "settings": {"x": 1}}),
            serde_json::json!({"name": "b", "slug": "s", "settings": {"x": 2}}),
        );
        assert_eq!(
            entry.old_values,
            Some(serde_json::json!({"name": "a", "settings": {"x": 1}}))
        );
        assert_eq!(
            entry.new_values,
            Some(serde_json::json!({"name": "b", "settings": {"x": 2}}))
        );
    }
}
