//! The one server bootstrap every service goes through. It always adds the
//! request pipeline (request ids, tracing spans, panic catching, message
//! limits, metrics), then the auth layer (tokens, permissions), health,
//! reflection (v1 and v1alpha, error details included) and the HTTP/2
//! limits, so no service can forget one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use codeops_tenant::{Access, AccessTable, AuthConfig, AuthLayer, MethodAccess, TokenVerifier};
use prost::Message;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding::Gzip;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::db::Db;
use crate::metrics::Metrics;
use crate::pipeline::{MessageLimits, PipelineLayer};

/// How often health re-checks the database.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How long one health ping may take before it counts as slow.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Slow pings in a row before the database counts as unreachable. A ping
/// that fails (refused, reset, authentication) decides at once; one that
/// is merely slow may be waiting behind a busy pool on a loaded host, and
/// declaring the database down then would refuse every call for nothing.
const SLOW_PINGS_TO_FAIL: u32 = 3;

// HTTP/2 limits of every port. A client that opens more streams than
// `MAX_CONCURRENT_STREAMS` on one connection has the extra ones refused
// (REFUSED_STREAM) instead of each holding a task and buffers; hyper's
// defaults bound the rest (16 KiB header lists, 16 KiB frames, 1 MiB flow
// control windows per stream and per connection, 20 streams reset before
// being accepted, 1024 locally reset streams per connection).
/// Streams in flight per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 200;
/// How often an idle connection is pinged, and how long the answer may
/// take before the connection is closed: a vanished peer's streams are
/// released instead of waiting on TCP.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive, for peers that vanish without a FIN.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// The largest header list a request may send (hyper's default, stated).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

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
    /// SHA-256 of the service credential internal methods require.
    pub service_token_sha256: Option<[u8; 32]>,
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

/// What every service's request pipeline needs.
#[derive(Clone, Default)]
pub struct PipelineSettings {
    /// The process's metrics; the port's RPCs and pool are counted here.
    pub metrics: Metrics,
    pub limits: MessageLimits,
    /// The longest a call may take when its caller asks for no shorter
    /// deadline (`CODEOPS_REQUEST_TIMEOUT_SECS`); `None`: no default.
    pub default_timeout: Option<std::time::Duration>,
    /// After the shutdown signal, how long the port keeps serving with
    /// health NOT_SERVING, so load balancers and meshes take it out of
    /// their endpoints before it stops accepting calls
    /// (`CODEOPS_SHUTDOWN_DELAY_SECS`).
    pub pre_stop_delay: std::time::Duration,
}

/// Serves one service on `listener` until `shutdown` resolves. Health turns
/// NOT_SERVING first, then in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    spec: ServiceSpec,
    auth: AuthSettings,
    pipeline: PipelineSettings,
    db: Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // Health and reflection take and send gzip like every CodeOps service:
    // a client channel configured for gzip uses it on every call.
    let health = health.accept_compressed(Gzip).send_compressed(Gzip);
    set_status(&reporter, spec.grpc_services, ServingStatus::Serving).await;
    let watcher = tokio::spawn(watch_database(
        db.clone(),
        reporter.clone(),
        spec.grpc_services,
    ));

    // Reflection lists what this port serves, not every CodeOps service.
    // It describes google.rpc's error details too (in the CodeOps
    // descriptor set), so grpcurl can print the details of an error.
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
        .expect("descriptor sets are generated at build time and valid")
        .accept_compressed(Gzip)
        .send_compressed(Gzip);
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("descriptor sets are generated at build time and valid")
        .accept_compressed(Gzip)
        .send_compressed(Gzip);

    let pipeline_pre_stop_delay = pipeline.pre_stop_delay;
    let rpc_metrics = pipeline
        .metrics
        .register_rpc(spec.name, served_methods(spec.grpc_services));
    pipeline.metrics.register_pool(spec.name, db.clone());
    let pipeline = PipelineLayer::new(
        spec.name,
        rpc_metrics,
        pipeline.limits,
        pipeline.default_timeout,
    );
    let auth = AuthLayer::new(AuthConfig {
        verifier: auth.verifier,
        table: access_table(spec.access),
        operator_token_sha256: auth.operator_token_sha256,
        service_token_sha256: auth.service_token_sha256,
    });
    let routes = spec
        .routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let addr = listener.local_addr().ok();
    tracing::info!(service = spec.name, addr = ?addr, "serving");
    let grpc_services = spec.grpc_services;
    let pre_stop_delay = pipeline_pre_stop_delay;
    let shutdown_reporter = reporter.clone();
    let result = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        // Outermost first: the pipeline sees every request, refused or not.
        .layer(pipeline)
        .layer(auth)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), async move {
            shutdown.await;
            set_status(&shutdown_reporter, grpc_services, ServingStatus::NotServing).await;
            // Still serving, but reported NOT_SERVING, while endpoints update.
            tokio::time::sleep(pre_stop_delay).await;
        })
        .await;
    watcher.abort();
    tracing::info!(service = spec.name, "stopped");
    result
}

/// Accepted connections with `TCP_NODELAY` and TCP keepalive set (the
/// builder's own socket options do not apply to a listener passed in).
/// Without `TCP_NODELAY` the trailers of a unary answer, written after its
/// message, wait for the client's delayed ACK: about 40 ms a call for any
/// client that does not send something back at once.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
}

/// The infrastructure services every port serves besides its own.
const INFRASTRUCTURE_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Every method path (`/package.Service/Method`) a port serving
/// `grpc_services` answers, from the descriptor sets: the methods the
/// metrics name (anything else is counted as unknown).
fn served_methods(grpc_services: &[&str]) -> Vec<String> {
    let descriptor_sets = [
        codeops_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = Vec::new();
    for encoded in descriptor_sets {
        let set = prost_types::FileDescriptorSet::decode(encoded)
            .expect("descriptor sets are generated at build time and valid");
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                if !grpc_services.contains(&name.as_str())
                    && !INFRASTRUCTURE_SERVICES.contains(&name.as_str())
                {
                    continue;
                }
                for method in &service.method {
                    methods.push(format!("/{name}/{}", method.name()));
                }
            }
        }
    }
    methods
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
    let mut slow = 0;
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let ok = match tokio::time::timeout(PING_TIMEOUT, db.ping()).await {
            Ok(Some(answered)) => {
                slow = 0;
                answered
            }
            Ok(None) | Err(_) => {
                slow += 1;
                if slow < SLOW_PINGS_TO_FAIL {
                    continue;
                }
                false
            }
        };
        if ok != healthy {
            healthy = ok;
            db.set_reachable(ok);
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
