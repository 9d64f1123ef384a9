//! The one server bootstrap every service goes through. It always adds the
//! request pipeline (request ids, tracing spans, panic catching, message
//! limits, metrics), then the auth layer (tokens, permissions), health,
//! reflection (v1 and v1alpha, error details included), the HTTP/2 limits
//! and the transport settings (TLS, maximum connection age), so no service
//! can forget one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use codeops_tenant::{Access, AccessTable, AuthConfig, AuthLayer, MethodAccess, TokenVerifier};
use prost::Message;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding::Gzip;
use tonic::service::Routes;
use tonic_health::pb::health_check_response::ServingStatus;
use tracing::Instrument;

use crate::db::Db;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pipeline::{MessageLimits, PipelineLayer};
use crate::transport::{TransportSettings, incoming};

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
pub use crate::transport::TCP_KEEPALIVE;
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
    /// TLS and the maximum connection age.
    pub transport: TransportSettings,
}

/// The ports a service listens on: its public one and, when the public
/// one speaks TLS and services of the same process call it, a plaintext
/// one on loopback for them.
pub struct Listeners {
    pub public: TcpListener,
    pub loopback: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(public: TcpListener) -> Self {
        Listeners {
            public,
            loopback: None,
        }
    }
}

/// Serves one service on `listeners` until `shutdown` resolves. Health
/// turns NOT_SERVING first, then in-flight calls finish.
pub async fn serve(
    listeners: impl Into<Listeners>,
    spec: ServiceSpec,
    auth: AuthSettings,
    pipeline: PipelineSettings,
    db: Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let span = tracing::info_span!("server", service = %spec.name);
    serve_service(listeners.into(), spec, auth, pipeline, db, shutdown)
        .instrument(span)
        .await
}

async fn serve_service(
    listeners: Listeners,
    spec: ServiceSpec,
    auth: AuthSettings,
    pipeline: PipelineSettings,
    db: Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let health = Health::new();
    set_status(&health, spec.grpc_services, ServingStatus::Serving);
    let watcher = tokio::spawn(
        watch_database(db.clone(), health.clone(), spec.grpc_services).in_current_span(),
    );
    // Health and reflection take and send gzip like every CodeOps service:
    // a client channel configured for gzip uses it on every call.
    let health_service = health
        .service()
        .accept_compressed(Gzip)
        .send_compressed(Gzip);

    // Reflection lists what this port serves, not every CodeOps service.
    // It describes google.rpc's error details too (in the CodeOps
    // descriptor set), so grpcurl can print the details of an error.
    let health_descriptors = health_descriptor_set();
    let reflection = || {
        spec.grpc_services.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(codeops_proto::FILE_DESCRIPTOR_SET)
                .register_file_descriptor_set(health_descriptors.clone())
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

    let pre_stop_delay = pipeline.pre_stop_delay;
    let transport = pipeline.transport.clone();
    let rpc_metrics = pipeline
        .metrics
        .register_rpc(spec.name, served_methods(spec.grpc_services));
    pipeline.metrics.register_pool(spec.name, db.clone());
    let pipeline = PipelineLayer::new(
        spec.name,
        rpc_metrics,
        pipeline.limits,
        pipeline.default_timeout,
        transport.trusted_proxies.clone(),
    );
    let auth = AuthLayer::new(AuthConfig {
        verifier: auth.verifier,
        table: access_table(spec.access),
        operator_token_sha256: auth.operator_token_sha256,
        service_token_sha256: auth.service_token_sha256,
    });
    let routes = spec
        .routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    // The same stack on every port of the service; only TLS differs.
    let server = || {
        let mut server = tonic::transport::Server::builder()
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES);
        if let Some(age) = transport.max_connection_age {
            server = server.max_connection_age(age);
        }
        server
    };
    let max_age = transport
        .max_connection_age
        .map(|age| age + transport.max_connection_age_grace);

    // Stop accepting once the shutdown has come and the pre-stop delay
    // has passed; the loopback port follows the public one.
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let shutdown_health = health.clone();
    let grpc_services = spec.grpc_services;
    let public_shutdown = async move {
        shutdown.await;
        set_status(&shutdown_health, grpc_services, ServingStatus::NotServing);
        // Still serving, but reported NOT_SERVING, while endpoints update.
        tokio::time::sleep(pre_stop_delay).await;
        // Watch streams end, so they do not hold the drain.
        shutdown_health.close();
        let _ = stopping.send(true);
    };
    let loopback = listeners.loopback.map(|listener| {
        let addr = listener.local_addr().ok();
        let mut stopped = stopped.clone();
        let serving = server()
            .layer(pipeline.clone())
            .layer(auth.clone())
            .add_routes(routes.clone())
            .serve_with_incoming_shutdown(incoming(listener, max_age), async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            });
        (addr, serving)
    });

    let tls = transport.tls.is_some();
    let mut public = server();
    if let Some(config) = transport.tls {
        public = public.tls_config(config)?;
    }
    if let Ok(addr) = listeners.public.local_addr() {
        tracing::info!(%addr, tls, "serving");
    }
    let public = public
        // Outermost first: the pipeline sees every request, refused or not.
        .layer(pipeline)
        .layer(auth)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listeners.public, max_age), public_shutdown);
    let result = match loopback {
        None => public.await,
        Some((addr, loopback)) => {
            if let Some(addr) = addr {
                tracing::info!(%addr, "serving plaintext on loopback for this process's services");
            }
            let (public, loopback) = tokio::join!(public, loopback);
            public.and(loopback)
        }
    };
    watcher.abort();
    tracing::info!("stopped");
    result
}

/// tonic-health's descriptor, under the file name the gRPC health
/// protocol gives it (`grpc/health/v1/health.proto`), so reflection
/// clients that ask for it by name, or resolve imports of it, find it.
fn health_descriptor_set() -> prost_types::FileDescriptorSet {
    let mut set = prost_types::FileDescriptorSet::decode(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .expect("descriptor sets are generated at build time and valid");
    for file in &mut set.file {
        if file.package() == "grpc.health.v1" {
            file.name = Some(HEALTH_PROTO_FILE.to_owned());
        }
    }
    set
}

/// The standard file name of `grpc.health.v1`.
pub const HEALTH_PROTO_FILE: &str = "grpc/health/v1/health.proto";

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

fn set_status(health: &Health, services: &[&str], status: ServingStatus) {
    health.set("", status);
    for service in services {
        health.set(service, status);
    }
}

/// NOT_SERVING while the database does not answer.
async fn watch_database(db: Db, health: Health, services: &'static [&'static str]) {
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
            set_status(&health, services, status);
        }
    }
}
