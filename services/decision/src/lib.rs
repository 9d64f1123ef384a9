//! The decision service (`codeops.decision.v1`): decisions with options,
//! SLA and escalation. It owns `core.decisions`, `core.decision_comments`,
//! `core.stakeholders` and their migrations; what it needs from identity (a
//! user's manager, a tenant's SLA defaults) comes through identity's
//! internal gRPC API, and its background SLA sweeper escalates overdue
//! decisions in every tenant.

mod comments;
mod decisions;
mod documents;
pub mod identity;
pub mod lifecycle;
mod stakeholders;
pub mod sweeper;
pub mod watch;

use std::time::Duration;

use codeops_platform::server::ServiceSpec;
use codeops_platform::{Db, Metrics};
use codeops_proto::decision::comment_service_server::CommentServiceServer;
use codeops_proto::decision::decision_service_server::DecisionServiceServer;
use codeops_proto::decision::stakeholder_service_server::StakeholderServiceServer;
use codeops_tenant::{Access, MethodAccess, Permission};
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;

pub use identity::IdentityClient;
pub use lifecycle::{DECISION_LIFECYCLE, DecisionMove};
pub use sweeper::{SweepReport, Sweeper};

/// Decision's migrations (`migrations/decision`), applied last.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../../migrations/decision");
    // The three services share one history table; the others' rows are not missing.
    migrator.set_ignore_missing(true);
    migrator
}

const fn require(path: &'static str, permission: Permission) -> MethodAccess {
    MethodAccess::new(path, Access::Require(permission))
}

/// Who may call each decision method.
pub const ACCESS: &[MethodAccess] = &[
    require(
        "/codeops.decision.v1.DecisionService/CreateDecision",
        Permission::DecisionWrite,
    ),
    require(
        "/codeops.decision.v1.DecisionService/GetDecision",
        Permission::DecisionRead,
    ),
    require(
        "/codeops.decision.v1.DecisionService/ListDecisions",
        Permission::DecisionRead,
    ),
    require(
        "/codeops.decision.v1.DecisionService/UpdateDecision",
        Permission::DecisionWrite,
    ),
    require(
        "/codeops.decision.v1.DecisionService/AssignDecision",
        Permission::DecisionWrite,
    ),
    require(
        "/codeops.decision.v1.DecisionService/DiscussDecision",
        Permission::DecisionWrite,
    ),
    require(
        "/codeops.decision.v1.DecisionService/RequestDecisionInput",
        Permission::DecisionWrite,
    ),
    require(
        "/codeops.decision.v1.DecisionService/ResolveDecision",
        Permission::DecisionResolve,
    ),
    require(
        "/codeops.decision.v1.DecisionService/DeferDecision",
        Permission::DecisionWrite,
    ),
    require(
        "/codeops.decision.v1.DecisionService/CancelDecision",
        Permission::DecisionWrite,
    ),
    require(
        "/codeops.decision.v1.DecisionService/MarkDecisionImplemented",
        Permission::DecisionWrite,
    ),
    require(
        "/codeops.decision.v1.DecisionService/ReopenDecision",
        Permission::DecisionResolve,
    ),
    require(
        "/codeops.decision.v1.DecisionService/EscalateDecision",
        Permission::DecisionEscalate,
    ),
    require(
        "/codeops.decision.v1.DecisionService/WatchDecisions",
        Permission::DecisionRead,
    ),
    require(
        "/codeops.decision.v1.CommentService/AddComment",
        Permission::CommentWrite,
    ),
    require(
        "/codeops.decision.v1.CommentService/ListComments",
        Permission::DecisionRead,
    ),
    require(
        "/codeops.decision.v1.CommentService/UpdateComment",
        Permission::CommentWrite,
    ),
    require(
        "/codeops.decision.v1.CommentService/DeleteComment",
        Permission::CommentWrite,
    ),
    require(
        "/codeops.decision.v1.StakeholderService/CreateStakeholder",
        Permission::StakeholderManage,
    ),
    require(
        "/codeops.decision.v1.StakeholderService/GetStakeholder",
        Permission::StakeholderRead,
    ),
    require(
        "/codeops.decision.v1.StakeholderService/ListStakeholders",
        Permission::StakeholderRead,
    ),
    require(
        "/codeops.decision.v1.StakeholderService/UpdateStakeholder",
        Permission::StakeholderManage,
    ),
    require(
        "/codeops.decision.v1.StakeholderService/DeactivateStakeholder",
        Permission::StakeholderManage,
    ),
];

pub const GRPC_SERVICES: &[&str] = &[
    "codeops.decision.v1.DecisionService",
    "codeops.decision.v1.CommentService",
    "codeops.decision.v1.StakeholderService",
];

/// What the decision service needs besides its database.
#[derive(Clone)]
pub struct DecisionConfig {
    /// identity's internal API (managers, SLA defaults).
    pub identity: IdentityClient,
    /// The process's metrics (the sweeper's counters).
    pub metrics: Metrics,
    /// How often the SLA sweeper runs; `None`: not in this process.
    pub sla_sweep_interval: Option<Duration>,
    /// Events WatchDecisions buffers per subscriber before cutting it off
    /// ([`watch::DEFAULT_BUFFER`]).
    pub watch_buffer: usize,
    /// Turns true when the process stops: WatchDecisions streams end and
    /// the listener gives its connection back.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

pub fn spec(db: Db, config: &DecisionConfig) -> ServiceSpec {
    let hub = watch::WatchHub::new(db.clone(), config.watch_buffer, config.stopping.clone());
    let decisions = DecisionServiceServer::new(decisions::Decisions::new(
        db.clone(),
        config.identity.clone(),
        hub,
    ))
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip);
    let stakeholders = StakeholderServiceServer::new(stakeholders::Stakeholders::new(db.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let comments = CommentServiceServer::new(comments::Comments::new(db))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    ServiceSpec {
        name: "decision",
        grpc_services: GRPC_SERVICES,
        routes: Routes::new(decisions)
            .add_service(comments)
            .add_service(stakeholders),
        access: ACCESS,
    }
}

/// Field violations from a write's constraints, with the request's path
/// (`owner_id` → `decision.owner_id`): an id that is not of the caller's
/// tenant reads exactly like one that does not exist; a hypothesis of
/// another outcome is a violation on `hypothesis_id`.
pub(crate) fn write_error(prefix: &str) -> impl Fn(sqlx::Error) -> codeops_platform::ApiError {
    let prefix = prefix.to_owned();
    move |err| {
        if let sqlx::Error::Database(db) = &err {
            match db.constraint() {
                Some("decisions_hypothesis_outcome_fkey") => {
                    return codeops_platform::ApiError::field(
                        format!("{prefix}.hypothesis_id"),
                        "must be a hypothesis of the decision's outcome",
                    );
                }
                Some("decisions_hypothesis_needs_outcome_check") => {
                    return codeops_platform::ApiError::field(
                        format!("{prefix}.outcome_id"),
                        "is required with a hypothesis: the hypothesis's outcome",
                    );
                }
                _ => {}
            }
        }
        match codeops_platform::ApiError::from(err) {
            codeops_platform::ApiError::InvalidArgument(mut violations) => {
                for violation in &mut violations {
                    violation.field = format!("{prefix}.{}", violation.field);
                }
                codeops_platform::ApiError::InvalidArgument(violations)
            }
            other => other,
        }
    }
}
