//! Starts services: one, or all three in one process on their own ports.
//! The binary and the tests go through this same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use codeops_platform::metrics::{self, Metrics};
use codeops_platform::pipeline::MessageLimits;
use codeops_platform::revocation_feed::{FeedSettings, RevocationFeed};
use codeops_platform::server::{self, AuthSettings, Listeners, PipelineSettings, ServiceSpec};
use codeops_platform::transport::TransportSettings;
use codeops_platform::{Db, DbOptions, ServiceRole};
use codeops_tenant::layer::operator_token_digest;
use codeops_tenant::token::read_pem;
use codeops_tenant::{KeyPair, PublicKey, TokenSettings, TokenSigner, TokenVerifier};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Identity,
    Planning,
    Decision,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Identity, Service::Planning, Service::Decision];

    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Planning => "planning",
            Service::Decision => "decision",
        }
    }

    /// The database role the service's pool takes.
    pub fn role(self) -> ServiceRole {
        match self {
            Service::Identity => ServiceRole::Identity,
            Service::Planning => ServiceRole::Planning,
            Service::Decision => ServiceRole::Decision,
        }
    }
}

/// Signing and verification keys.
#[derive(Clone)]
pub struct Keys {
    /// Only identity signs.
    pub signing: Option<KeyPair>,
    pub public: PublicKey,
}

impl Keys {
    /// From configuration. `ephemeral_ok`: with no key configured, generate
    /// one (dev, and `serve all` where every service shares the process).
    pub fn load(
        private: Option<&str>,
        public: Option<&str>,
        ephemeral_ok: bool,
    ) -> anyhow::Result<Keys> {
        if let Some(private) = private {
            let pair = read_pem(private)
                .map_err(anyhow::Error::from)
                .and_then(|pem| Ok(KeyPair::from_pkcs8_pem(&pem)?))
                .context("CODEOPS_JWT_PRIVATE_KEY")?;
            let public = pair.public_key();
            return Ok(Keys {
                signing: Some(pair),
                public,
            });
        }
        if let Some(public) = public {
            return Ok(Keys {
                signing: None,
                public: read_pem(public)
                    .map_err(anyhow::Error::from)
                    .and_then(|pem| Ok(PublicKey::from_pem(&pem)?))
                    .context("CODEOPS_JWT_PUBLIC_KEY")?,
            });
        }
        anyhow::ensure!(
            ephemeral_ok,
            "no signing key: set CODEOPS_JWT_PRIVATE_KEY (identity) or CODEOPS_JWT_PUBLIC_KEY (planning, decision)"
        );
        let pair = KeyPair::generate()?;
        tracing::warn!(
            service = %"identity",
            kid = %pair.public_key().kid(),
            "no CODEOPS_JWT_PRIVATE_KEY configured: generated an ephemeral Ed25519 key pair; \
             tokens will not survive a restart"
        );
        let public = pair.public_key();
        Ok(Keys {
            signing: Some(pair),
            public,
        })
    }
}

/// Everything needed to run services.
#[derive(Clone)]
pub struct SuiteConfig {
    pub db: DbOptions,
    pub keys: Keys,
    pub token: TokenSettings,
    pub refresh_ttl: Duration,
    pub bcrypt_cost: u32,
    /// bcrypt threads; 0: all cores but one.
    pub bcrypt_threads: usize,
    pub operator_token: Option<String>,
    /// Largest request and response messages.
    pub limits: MessageLimits,
    /// The longest a call may take when its caller asks for no shorter
    /// deadline; `None`: only the caller's deadline applies.
    pub request_timeout: Option<Duration>,
    /// How a stop proceeds: the pre-stop delay, then the drain.
    pub shutdown: ShutdownSettings,
    /// TLS and the maximum connection age of every port.
    pub transport: TransportSettings,
    /// The credential CodeOps processes call identity's internal API with
    /// (the revocation feed); at least 16 characters.
    pub service_token: String,
    /// identity's URL for the revocation feed; `None`: the identity this
    /// process serves (required when it serves none).
    pub identity_url: Option<String>,
    /// How often the revocation feed is polled (at most 30 s): the bound on
    /// how long a revoked session or deactivated user stays usable outside
    /// identity's writes.
    pub revocation_poll: Duration,
    /// How often the decision service's SLA sweeper runs; zero: never (in
    /// this process).
    pub sla_sweep_interval: Duration,
}

/// Running services; dropping the handle does not stop them, `shutdown` does.
pub struct Suite {
    pub addrs: Vec<(Service, SocketAddr)>,
    /// Where `GET /metrics` answers, for every service of the suite.
    pub metrics_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    dbs: Vec<Db>,
    shutdown: ShutdownSettings,
    /// The services of this process, for its own log lines.
    served: String,
}

impl Suite {
    pub fn addr(&self, service: Service) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, a)| *a)
    }

    /// Health flips to NOT_SERVING, in-flight calls finish (for at most
    /// the grace period: a client holding a stream open cannot keep the
    /// process alive), then pools close.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let drain = self.shutdown.pre_stop_delay + self.shutdown.grace;
        let deadline = tokio::time::Instant::now() + drain;
        let mut result = Ok(());
        for mut task in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => result = Err(e),
                Ok(Err(e)) => result = Err(e.into()),
                Err(_) => {
                    tracing::warn!(
                        service = %self.served,
                        grace_secs = self.shutdown.grace.as_secs_f64(),
                        "calls still open after the grace period: closing them"
                    );
                    task.abort();
                }
            }
        }
        for db in self.dbs {
            db.close().await;
        }
        result
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully; a second
    /// signal during the drain exits at once.
    pub async fn serve_until_signal(self) -> anyhow::Result<()> {
        let served = self.served.clone();
        shutdown_signal().await;
        tracing::info!(service = %served, "shutdown signal received");
        tokio::select! {
            result = self.shutdown() => result,
            _ = shutdown_signal() => {
                tracing::warn!(service = %served, "second signal: exiting without waiting for open calls");
                Ok(())
            }
        }
    }
}

/// How a stop proceeds (SIGTERM, SIGINT): health turns NOT_SERVING and the
/// ports keep serving for `pre_stop_delay`, so meshes and load balancers
/// stop sending new calls; then the ports stop accepting and open calls,
/// streams included, get `grace` to finish before they are cut; then the
/// pools close.
#[derive(Clone, Copy, Debug)]
pub struct ShutdownSettings {
    pub pre_stop_delay: Duration,
    pub grace: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            pre_stop_delay: Duration::ZERO,
            grace: Duration::from_secs(10),
        }
    }
}

/// Binds every listener first (a taken port fails before anything starts),
/// then serves each service with its own pool, and the metrics of all of
/// them on `metrics_addr`.
pub async fn start(
    config: &SuiteConfig,
    services: &[(Service, SocketAddr)],
    metrics_addr: SocketAddr,
) -> anyhow::Result<Suite> {
    let mut listeners = Vec::new();
    for (service, addr) in services {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for {}", service.name()))?;
        listeners.push((*service, listener));
    }
    // Services of this process call identity's plaintext loopback port
    // when its public port speaks TLS.
    let identity_loopback = match (&config.transport.tls, &config.identity_url) {
        (Some(_), None) if services.iter().any(|(s, _)| *s == Service::Identity) => Some(
            TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .await
                .context("cannot listen on loopback for identity's in-process callers")?,
        ),
        _ => None,
    };
    let served = services
        .iter()
        .map(|(s, _)| s.name())
        .collect::<Vec<_>>()
        .join(",");
    let metrics_listener = TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {metrics_addr} for metrics"))?;

    let verifier = Arc::new(TokenVerifier::new(
        std::slice::from_ref(&config.keys.public),
        &config.token,
    )?);
    let identity_url = match &identity_loopback {
        Some(loopback) => format!("http://{}", loopback.local_addr()?),
        None => identity_url(config, &listeners)?,
    };
    let feed = revocation_feed(config, &identity_url, &verifier)?;
    let auth = AuthSettings {
        verifier,
        operator_token_sha256: config.operator_token.as_deref().map(operator_token_digest),
        service_token_sha256: Some(operator_token_digest(&config.service_token)),
    };
    let pipeline = PipelineSettings {
        metrics: Metrics::new(),
        limits: config.limits,
        default_timeout: config.request_timeout,
        pre_stop_delay: config.shutdown.pre_stop_delay,
        transport: config.transport.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    let mut suite = Suite {
        addrs: Vec::new(),
        metrics_addr: metrics_listener.local_addr()?,
        stop,
        tasks: Vec::new(),
        dbs: Vec::new(),
        shutdown: config.shutdown,
        served: served.clone(),
    };
    let shutdown = {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let metrics_span = tracing::info_span!("metrics", service = %served);
    tracing::info!(parent: &metrics_span, addr = %suite.metrics_addr, "serving metrics");
    suite.tasks.push(tokio::spawn({
        let metrics = pipeline.metrics.clone();
        async move {
            metrics::endpoint::serve(metrics_listener, metrics, shutdown).await;
            Ok(())
        }
        .instrument(metrics_span)
    }));
    // Streams (WatchDecisions) go on through the pre-stop delay, like
    // every call, and end (OK) once the ports stop accepting, so they do
    // not hold the drain.
    let (draining_tx, draining) = watch::channel(false);
    suite.tasks.push(tokio::spawn({
        let mut stopped = stopped.clone();
        let delay = config.shutdown.pre_stop_delay;
        async move {
            if stopped.wait_for(|stop| *stop).await.is_ok() {
                tokio::time::sleep(delay).await;
            }
            let _ = draining_tx.send(true);
            Ok(())
        }
    }));
    let decision = codeops_decision::DecisionConfig {
        identity: codeops_decision::IdentityClient::new(&identity_url, &config.service_token)?,
        metrics: pipeline.metrics.clone(),
        sla_sweep_interval: (!config.sla_sweep_interval.is_zero())
            .then_some(config.sla_sweep_interval),
        watch_buffer: codeops_decision::watch::DEFAULT_BUFFER,
        stopping: draining,
    };
    let mut identity_loopback = identity_loopback;
    for (service, listener) in listeners {
        let db = Db::connect(&config.db, service.role()).await?;
        let spec = spec(service, db.clone(), config, &pipeline.metrics, &decision)?;
        if service == Service::Decision
            && let Some(interval) = decision.sla_sweep_interval
        {
            let sweeper = codeops_decision::Sweeper::new(
                db.clone(),
                decision.identity.clone(),
                decision.metrics.clone(),
            );
            let mut stopped = stopped.clone();
            suite.tasks.push(tokio::spawn(
                async move {
                    sweeper
                        .run(interval, async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        })
                        .await;
                    Ok(())
                }
                .instrument(tracing::info_span!("sla_sweeper", service = %service.name())),
            ));
        }
        suite.addrs.push((service, listener.local_addr()?));
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let auth = auth.clone();
        let pipeline = pipeline.clone();
        suite.dbs.push(db.clone());
        let listeners = Listeners {
            public: listener,
            loopback: if service == Service::Identity {
                identity_loopback.take()
            } else {
                None
            },
        };
        suite.tasks.push(tokio::spawn(async move {
            server::serve(listeners, spec, auth, pipeline, db, shutdown)
                .await
                .with_context(|| format!("{} server failed", service.name()))
        }));
    }
    // Polled by every process, identity's own included: its reads use the
    // same verifier (its writes re-check the session in the database).
    let mut stopped = stopped.clone();
    suite.tasks.push(tokio::spawn(
        async move {
            feed.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await;
            Ok(())
        }
        .instrument(tracing::info_span!("revocation_feed", service = %served)),
    ));
    Ok(suite)
}

/// identity's URL for the other services' calls (the revocation feed, the
/// decision service's internal reads): `identity_url` when configured, else
/// the identity this process serves (over loopback when it listens on
/// every address).
fn identity_url(
    config: &SuiteConfig,
    listeners: &[(Service, TcpListener)],
) -> anyhow::Result<String> {
    Ok(match &config.identity_url {
        Some(url) => url.clone(),
        None => {
            let (_, listener) = listeners
                .iter()
                .find(|(service, _)| *service == Service::Identity)
                .context(
                    "CODEOPS_IDENTITY_URL is required when identity runs in another process \
                     (planning and decision poll its revocation feed)",
                )?;
            let mut addr = listener.local_addr()?;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}")
        }
    })
}

/// The revocation feed this process polls.
fn revocation_feed(
    config: &SuiteConfig,
    identity_url: &str,
    verifier: &TokenVerifier,
) -> anyhow::Result<RevocationFeed> {
    Ok(RevocationFeed::new(
        FeedSettings {
            identity_url: identity_url.to_owned(),
            service_token: config.service_token.clone(),
            interval: config.revocation_poll,
        },
        verifier.revocations(),
    )?)
}

fn spec(
    service: Service,
    db: Db,
    config: &SuiteConfig,
    metrics: &Metrics,
    decision: &codeops_decision::DecisionConfig,
) -> anyhow::Result<ServiceSpec> {
    Ok(match service {
        Service::Identity => {
            let pair = config
                .keys
                .signing
                .as_ref()
                .context("identity needs a private key: set CODEOPS_JWT_PRIVATE_KEY")?;
            let signer = TokenSigner::new(pair, config.token.clone())?;
            codeops_identity::spec(
                db,
                codeops_identity::IdentityConfig {
                    signer: Arc::new(signer),
                    public_keys: vec![config.keys.public.clone()],
                    refresh_ttl: config.refresh_ttl,
                    bcrypt_cost: config.bcrypt_cost,
                    bcrypt_threads: config.bcrypt_threads,
                    metrics: metrics.clone(),
                },
            )
        }
        Service::Planning => codeops_planning::spec(db),
        Service::Decision => codeops_decision::spec(db, decision),
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
