//! The one server bootstrap every service goes through. It always adds the
//! auth layer (request ids, tokens, permissions, tracing spans), health,
//! reflection (v1 and v1alpha) and gzip, so no service can forget one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use codeops_tenant::{Access, AccessTable, AuthConfig, AuthLayer, MethodAccess, TokenVerifier};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::db::Db;

/// How often health re-checks the database.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// What a service crate hands to the bootstrap.
pub struct ServiceSpec {
    /// Short name for logs: identity, planning, decision.
    pub name: &'static str,
    /// Fully qualified gRPC service names, reported by health.
    pub grpc_services: &'static [&'static str],
    pub routes: Routes,
    /// Who may call each method; methods without a row are refused.
    pub access: &'static [MethodAccess],
}

/// What every service's auth layer needs.
#[derive(Clone)]
pub struct AuthSettings {
    pub verifier: Arc<TokenVerifier>,
    pub operator_token_sha256: Option<[u8; 32]>,
}

const PUBLIC_INFRASTRUCTURE: &[MethodAccess] = &[
    MethodAccess::new("/grpc.health.v1.Health", Access::Public),
    MethodAccess::new("/grpc.reflection.v1.ServerReflection", Access::Public),
    MethodAccess::new("/grpc.reflection.v1alpha.ServerReflection", Access::Public),
];

/// The access table a service is served with, infrastructure included.
pub fn access_table(spec_access: &[MethodAccess]) -> AccessTable {
    let mut table = AccessTable::default();
    table.extend(PUBLIC_INFRASTRUCTURE);
    table.extend(spec_access);
    table
}

/// Serves one service on `listener` until `shutdown` resolves. Health turns
/// NOT_SERVING first, then in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    spec: ServiceSpec,
    auth: AuthSettings,
    db: Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_status(&reporter, spec.grpc_services, ServingStatus::Serving).await;
    let watcher = tokio::spawn(watch_database(
        db.clone(),
        reporter.clone(),
        spec.grpc_services,
    ));

    // Reflection lists what this port serves, not every CodeOps service.
    let reflection = || {
        spec.grpc_services.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(codeops_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health"),
            |builder, service| builder.with_service_name(*service),
        )
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("descriptor sets are generated at build time and valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("descriptor sets are generated at build time and valid");

    let layer = AuthLayer::new(AuthConfig {
        verifier: auth.verifier,
        table: access_table(spec.access),
        operator_token_sha256: auth.operator_token_sha256,
    });
    let routes = spec
        .routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let addr = listener.local_addr().ok();
    tracing::info!(service = spec.name, addr = ?addr, "serving");
    let grpc_services = spec.grpc_services;
    let shutdown_reporter = reporter.clone();
    let result = tonic::transport::Server::builder()
        .layer(layer)
        .add_routes(routes)
        // TCP_NODELAY on every accepted connection: without it a response
        // written in several small frames waits for the client's delayed
        // ACK (about 40 ms on Linux) before its last frame goes out.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                set_status(&shutdown_reporter, grpc_services, ServingStatus::NotServing).await;
            },
        )
        .await;
    watcher.abort();
    tracing::info!(service = spec.name, "stopped");
    result
}

async fn set_status(reporter: &HealthReporter, services: &[&str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(*service, status).await;
    }
}

/// NOT_SERVING while the database does not answer.
async fn watch_database(db: Db, reporter: HealthReporter, services: &'static [&'static str]) {
    let mut healthy = true;
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let ok = tokio::time::timeout(Duration::from_secs(2), db.ping())
            .await
            .unwrap_or(false);
        if ok != healthy {
            healthy = ok;
            tracing::warn!(healthy, "database health changed");
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_status(&reporter, services, status).await;
        }
    }
}
