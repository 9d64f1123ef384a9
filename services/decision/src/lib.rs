//! The decision service (`codeops.decision.v1`): decisions with options,
//! SLA and escalation, threaded comments, stakeholders. It owns
//! `core.decisions`, `core.decision_comments`, `core.stakeholders` and their
//! migrations.

mod decisions;

use codeops_platform::Db;
use codeops_platform::server::ServiceSpec;
use codeops_proto::decision::decision_service_server::DecisionServiceServer;
use codeops_tenant::{Access, MethodAccess, Permission};
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;

/// Decision's migrations (`migrations/decision`), applied last.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../../migrations/decision");
    // The three services share one history table; the others' rows are not missing.
    migrator.set_ignore_missing(true);
    migrator
}

/// Who may call each decision method.
pub const ACCESS: &[MethodAccess] = &[
    MethodAccess::new(
        "/codeops.decision.v1.DecisionService/GetDecision",
        Access::Require(Permission::DecisionRead),
    ),
    MethodAccess::new(
        "/codeops.decision.v1.DecisionService/ListDecisions",
        Access::Require(Permission::DecisionRead),
    ),
];

pub const GRPC_SERVICES: &[&str] = &["codeops.decision.v1.DecisionService"];

pub fn spec(db: Db) -> ServiceSpec {
    let decisions = DecisionServiceServer::new(decisions::Decisions::new(db))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    ServiceSpec {
        name: "decision",
        grpc_services: GRPC_SERVICES,
        routes: Routes::new(decisions),
        access: ACCESS,
    }
}
