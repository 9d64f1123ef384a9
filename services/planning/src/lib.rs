//! The planning service (`codeops.planning.v1`): outcomes and hypotheses
//! with their lifecycles. It owns `core.outcomes` and `core.hypotheses` and
//! their migrations; facts about other slices (a team or user of the
//! tenant, a decision linking to an outcome) come from composite foreign
//! keys, never from their tables.

mod documents;
mod hypotheses;
mod lifecycle;
mod outcomes;

use codeops_platform::Db;
use codeops_platform::server::ServiceSpec;
use codeops_proto::planning::hypothesis_service_server::HypothesisServiceServer;
use codeops_proto::planning::outcome_service_server::OutcomeServiceServer;
use codeops_tenant::{Access, MethodAccess, Permission};
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;

pub use lifecycle::{HYPOTHESIS_LIFECYCLE, HypothesisTarget, OUTCOME_LIFECYCLE};

/// Planning's migrations (`migrations/planning`), applied after identity's.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../../migrations/planning");
    // The three services share one history table; the others' rows are not missing.
    migrator.set_ignore_missing(true);
    migrator
}

const fn require(path: &'static str, permission: Permission) -> MethodAccess {
    MethodAccess::new(path, Access::Require(permission))
}

/// Who may call each planning method.
pub const ACCESS: &[MethodAccess] = &[
    require(
        "/codeops.planning.v1.OutcomeService/CreateOutcome",
        Permission::OutcomeWrite,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/GetOutcome",
        Permission::OutcomeRead,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/ListOutcomes",
        Permission::OutcomeRead,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/UpdateOutcome",
        Permission::OutcomeWrite,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/DeleteOutcome",
        Permission::OutcomeWrite,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/PlanOutcome",
        Permission::OutcomeWrite,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/StartOutcome",
        Permission::OutcomeWrite,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/SubmitOutcomeForValidation",
        Permission::OutcomeWrite,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/ValidateOutcome",
        Permission::OutcomeValidate,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/InvalidateOutcome",
        Permission::OutcomeValidate,
    ),
    require(
        "/codeops.planning.v1.OutcomeService/AbandonOutcome",
        Permission::OutcomeWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/CreateHypothesis",
        Permission::HypothesisWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/GetHypothesis",
        Permission::HypothesisRead,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/ListHypotheses",
        Permission::HypothesisRead,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/UpdateHypothesis",
        Permission::HypothesisWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/DeleteHypothesis",
        Permission::HypothesisWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/MarkHypothesisReady",
        Permission::HypothesisWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/StartBuildingHypothesis",
        Permission::HypothesisWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/MarkHypothesisDeployed",
        Permission::HypothesisWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/StartMeasuringHypothesis",
        Permission::HypothesisWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/BlockHypothesis",
        Permission::HypothesisWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/UnblockHypothesis",
        Permission::HypothesisWrite,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/ConcludeHypothesis",
        Permission::HypothesisConclude,
    ),
    require(
        "/codeops.planning.v1.HypothesisService/AbandonHypothesis",
        Permission::HypothesisWrite,
    ),
];

pub const GRPC_SERVICES: &[&str] = &[
    "codeops.planning.v1.OutcomeService",
    "codeops.planning.v1.HypothesisService",
];

pub fn spec(db: Db) -> ServiceSpec {
    let outcomes = OutcomeServiceServer::new(outcomes::Outcomes::new(db.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let hypotheses = HypothesisServiceServer::new(hypotheses::Hypotheses::new(db))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let mut routes = Routes::new(outcomes);
    routes = routes.add_service(hypotheses);
    ServiceSpec {
        name: "planning",
        grpc_services: GRPC_SERVICES,
        routes,
        access: ACCESS,
    }
}

/// Field violations from a write's foreign keys, with the request's path
/// (`team_id` → `outcome.team_id`): an id that is not of the caller's
/// tenant reads exactly like one that does not exist.
pub(crate) fn write_error(prefix: &str) -> impl Fn(sqlx::Error) -> codeops_platform::ApiError {
    let prefix = prefix.to_owned();
    move |err| match codeops_platform::ApiError::from(err) {
        codeops_platform::ApiError::InvalidArgument(mut violations) => {
            for violation in &mut violations {
                violation.field = format!("{prefix}.{}", violation.field);
            }
            codeops_platform::ApiError::InvalidArgument(violations)
        }
        other => other,
    }
}

/// A delete refused by a foreign key of another row pointing at this one:
/// `OUTCOME_HAS_HYPOTHESES` for hypotheses under an outcome,
/// `RESOURCE_REFERENCED` for a decision linking to it.
pub(crate) fn delete_error(
    resource: &'static str,
) -> impl Fn(sqlx::Error) -> codeops_platform::ApiError {
    move |err| {
        if let sqlx::Error::Database(db) = &err
            && db.code().as_deref() == Some("23503")
        {
            return if db.constraint() == Some("hypotheses_outcome_fkey") {
                codeops_platform::ApiError::precondition(
                    "OUTCOME_HAS_HYPOTHESES",
                    "the outcome has hypotheses; delete or move them first",
                )
            } else {
                codeops_platform::ApiError::precondition(
                    "RESOURCE_REFERENCED",
                    format!("a decision links to this {resource}"),
                )
            };
        }
        codeops_platform::ApiError::from(err)
    }
}
