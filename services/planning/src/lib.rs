//! The planning service (`codeops.planning.v1`): outcomes and hypotheses.
//! It owns `core.outcomes` and `core.hypotheses` and their migrations.

mod outcomes;

use codeops_platform::Db;
use codeops_platform::server::ServiceSpec;
use codeops_proto::planning::outcome_service_server::OutcomeServiceServer;
use codeops_tenant::{Access, MethodAccess, Permission};
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;

/// Planning's migrations (`migrations/planning`), applied after identity's.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../../migrations/planning");
    // The three services share one history table; the others' rows are not missing.
    migrator.set_ignore_missing(true);
    migrator
}

/// Who may call each planning method.
pub const ACCESS: &[MethodAccess] = &[
    MethodAccess::new(
        "/codeops.planning.v1.OutcomeService/GetOutcome",
        Access::Require(Permission::OutcomeRead),
    ),
    MethodAccess::new(
        "/codeops.planning.v1.OutcomeService/ListOutcomes",
        Access::Require(Permission::OutcomeRead),
    ),
];

pub const GRPC_SERVICES: &[&str] = &["codeops.planning.v1.OutcomeService"];

pub fn spec(db: Db) -> ServiceSpec {
    let outcomes = OutcomeServiceServer::new(outcomes::Outcomes::new(db))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    ServiceSpec {
        name: "planning",
        grpc_services: GRPC_SERVICES,
        routes: Routes::new(outcomes),
        access: ACCESS,
    }
}
