//! Configuration: every setting is a flag and an environment variable
//! (12-factor); the README has the table.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use codeops_platform::DbOptions;
use codeops_platform::pipeline::MessageLimits;
use codeops_platform::transport::{IpRange, TransportSettings, tls_config};
use codeops_tenant::TokenSettings;
use codeops_tenant::token::read_pem;

use crate::suite::{Keys, Service, ShutdownSettings, SuiteConfig};

#[derive(Args, Clone, Debug)]
pub struct DbArgs {
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/codeops
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Take each service's own role (codeops_identity, codeops_planning,
    /// codeops_decision) with SET ROLE on connect; false when each service
    /// already logs in as its own unprivileged role.
    #[arg(long, env = "CODEOPS_DB_SET_ROLE", default_value_t = true, action = clap::ArgAction::Set, value_parser = boolean)]
    pub db_set_role: bool,
    /// Pool size per service.
    #[arg(long, env = "CODEOPS_DB_MAX_CONNECTIONS", default_value_t = 16, value_parser = whole::<u32, 1, 10_000>)]
    pub db_max_connections: u32,
}

impl DbArgs {
    pub fn url(&self) -> anyhow::Result<&str> {
        let url = self.database_url.as_deref().ok_or_else(|| {
            anyhow::anyhow!("DATABASE_URL is not set (flag --database-url or environment variable)")
        })?;
        // The URL may hold a password: the error names the variable only.
        let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if let Err(e) = url.parse::<sqlx::postgres::PgConnectOptions>()
            && scheme_ok
        {
            anyhow::bail!("DATABASE_URL: expected a postgres:// URL ({e})");
        }
        anyhow::ensure!(scheme_ok, "DATABASE_URL: expected a postgres:// URL");
        Ok(url)
    }

    pub fn options(&self, url: &str) -> DbOptions {
        let mut options = DbOptions::new(url);
        options.max_connections = self.db_max_connections;
        options.set_role = self.db_set_role;
        options
    }
}

const MIN_OPERATOR_TOKEN_LEN: usize = 16;
/// The service credential is held to the same rule.
const MIN_SERVICE_TOKEN_LEN: usize = 16;

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address the gRPC ports listen on.
    #[arg(long, env = "CODEOPS_HOST", default_value = "0.0.0.0", value_parser = ip)]
    pub host: IpAddr,
    #[arg(long, env = "CODEOPS_IDENTITY_PORT", default_value_t = 50051, value_parser = port)]
    pub identity_port: u16,
    #[arg(long, env = "CODEOPS_PLANNING_PORT", default_value_t = 50052, value_parser = port)]
    pub planning_port: u16,
    #[arg(long, env = "CODEOPS_DECISION_PORT", default_value_t = 50053, value_parser = port)]
    pub decision_port: u16,
    /// Address `GET /metrics` (Prometheus) listens on; defaults to the gRPC
    /// host.
    #[arg(long, env = "CODEOPS_METRICS_HOST", value_parser = ip)]
    pub metrics_host: Option<IpAddr>,
    /// Port of `GET /metrics`, one for every service of the process; 0
    /// picks a free one.
    #[arg(long, env = "CODEOPS_METRICS_PORT", default_value_t = 9090, value_parser = port)]
    pub metrics_port: u16,
    /// Largest request message (bytes on the wire); larger is
    /// RESOURCE_EXHAUSTED. At most 4 MiB, what the generated servers decode.
    #[arg(
        long,
        env = "CODEOPS_MAX_REQUEST_BYTES",
        default_value_t = MessageLimits::DEFAULT_BYTES,
        value_parser = bytes::<1024, { MessageLimits::DEFAULT_BYTES as u64 }>
    )]
    pub max_request_bytes: usize,
    /// Largest response message (bytes on the wire); a larger one ends its
    /// call with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "CODEOPS_MAX_RESPONSE_BYTES",
        default_value_t = MessageLimits::DEFAULT_BYTES,
        value_parser = bytes::<1024, { u32::MAX as u64 }>
    )]
    pub max_response_bytes: usize,
    /// The longest a call may take when its caller sets no shorter
    /// deadline (`grpc-timeout`), in seconds; past it the call answers
    /// DEADLINE_EXCEEDED and its database statement is cancelled. 0: no
    /// default, only the caller's deadline.
    #[arg(long, env = "CODEOPS_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = seconds::<0, DAY>)]
    pub request_timeout_secs: u64,
    /// On SIGTERM/SIGINT, seconds to keep serving with health NOT_SERVING
    /// before the ports stop accepting calls, so a mesh or load balancer
    /// takes the endpoints out first (set it to the endpoint propagation
    /// time, e.g. 5 under Kubernetes).
    #[arg(long, env = "CODEOPS_SHUTDOWN_DELAY_SECS", default_value_t = 0, value_parser = seconds::<0, HOUR>)]
    pub shutdown_delay_secs: u64,
    /// Then, seconds open calls (streams included) get to finish before
    /// they are cut and the pools close.
    #[arg(long, env = "CODEOPS_SHUTDOWN_GRACE_SECS", default_value_t = 10, value_parser = seconds::<0, HOUR>)]
    pub shutdown_grace_secs: u64,
    /// Seconds after which a connection is told to go away (HTTP/2 GOAWAY),
    /// so clients behind an L4 load balancer reconnect and spread over the
    /// replicas; calls in flight finish. 0: connections live as long as
    /// their clients keep them.
    #[arg(long, env = "CODEOPS_MAX_CONNECTION_AGE_SECS", default_value_t = 300, value_parser = seconds::<0, { 30 * DAY }>)]
    pub max_connection_age_secs: u64,
    /// Then, seconds the calls still open on it (streams) may go on before
    /// the connection is closed under them.
    #[arg(long, env = "CODEOPS_MAX_CONNECTION_AGE_GRACE_SECS", default_value_t = 60, value_parser = seconds::<0, DAY>)]
    pub max_connection_age_grace_secs: u64,
    /// Comma-separated addresses or CIDR blocks of proxies (a sidecar, an
    /// ingress) whose `x-forwarded-for` names the client; empty: the TCP
    /// peer is the client. Login throttling and the audit trail use it.
    #[arg(long, env = "CODEOPS_TRUSTED_PROXIES", value_delimiter = ',', value_parser = ip_range)]
    pub trusted_proxies: Vec<IpRange>,
    /// TLS certificate chain (PEM, inline or a file path) every gRPC port
    /// serves; with CODEOPS_TLS_KEY. Unset: plaintext HTTP/2 (h2c).
    #[arg(long, env = "CODEOPS_TLS_CERT")]
    pub tls_cert: Option<String>,
    /// The certificate's private key (PEM, inline or a file path).
    #[arg(long, env = "CODEOPS_TLS_KEY", hide_env_values = true)]
    pub tls_key: Option<String>,
    /// Ed25519 private key (PKCS#8 PEM, inline or a file path) identity signs with.
    #[arg(long, env = "CODEOPS_JWT_PRIVATE_KEY", hide_env_values = true)]
    pub jwt_private_key: Option<String>,
    /// Ed25519 public key (PEM, inline or a file path) planning and decision verify with.
    #[arg(long, env = "CODEOPS_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,
    #[arg(long, env = "CODEOPS_JWT_ISSUER", default_value = codeops_tenant::token::DEFAULT_ISSUER)]
    pub jwt_issuer: String,
    #[arg(long, env = "CODEOPS_JWT_AUDIENCE", default_value = codeops_tenant::token::DEFAULT_AUDIENCE)]
    pub jwt_audience: String,
    /// Access token lifetime; also the bound on how long a role change
    /// takes to reach the other services (revocations take one poll).
    #[arg(long, env = "CODEOPS_ACCESS_TOKEN_TTL_SECS", default_value_t = 900, value_parser = seconds::<1, DAY>)]
    pub access_token_ttl_secs: u64,
    /// Longest access-token lifetime (exp - iat) any service accepts; at
    /// least the access token lifetime.
    #[arg(long, env = "CODEOPS_ACCESS_TOKEN_MAX_TTL_SECS", default_value_t = 3600, value_parser = seconds::<1, DAY>)]
    pub access_token_max_ttl_secs: u64,
    #[arg(long, env = "CODEOPS_REFRESH_TOKEN_TTL_SECS", default_value_t = 30 * DAY, value_parser = seconds::<1, { 3650 * DAY }>)]
    pub refresh_token_ttl_secs: u64,
    /// Credential for operator RPCs (CreateTenant, tenant status changes);
    /// unset disables them.
    #[arg(long, env = "CODEOPS_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
    /// Credential CodeOps processes call identity's internal API (the
    /// revocation feed) with; at least 16 characters. `serve all` and `dev`
    /// generate one when unset; separate processes must share one.
    #[arg(long, env = "CODEOPS_SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: Option<String>,
    /// identity's gRPC URL (e.g. http://identity:50051), whose revocation
    /// feed planning and decision poll; defaults to the identity served by
    /// the same process.
    #[arg(long, env = "CODEOPS_IDENTITY_URL")]
    pub identity_url: Option<String>,
    /// How often the revocation feed is polled (1-30 s): a revoked session
    /// or deactivated user is refused by every service within this bound.
    #[arg(long, env = "CODEOPS_REVOCATION_POLL_SECS", default_value_t = 10, value_parser = seconds::<1, 30>)]
    pub revocation_poll_secs: u64,
    /// How often the decision service's SLA sweeper escalates overdue
    /// decisions, in seconds; 0 switches it off in this process.
    #[arg(long, env = "CODEOPS_SLA_SWEEP_SECS", default_value_t = 60, value_parser = seconds::<0, DAY>)]
    pub sla_sweep_secs: u64,
    /// bcrypt cost for new password hashes.
    #[arg(long, env = "CODEOPS_BCRYPT_COST", default_value_t = 12, value_parser = whole::<u32, 4, 16>)]
    pub bcrypt_cost: u32,
    /// Password hashes that may run at once, on low-priority threads;
    /// 0 means all cores but one, so logins never take every core.
    #[arg(long, env = "CODEOPS_BCRYPT_THREADS", default_value_t = 0, value_parser = whole::<usize, 0, 256>)]
    pub bcrypt_threads: usize,
}

impl ServeArgs {
    pub fn port(&self, service: Service) -> u16 {
        match service {
            Service::Identity => self.identity_port,
            Service::Planning => self.planning_port,
            Service::Decision => self.decision_port,
        }
    }

    /// Where metrics listen: `CODEOPS_METRICS_HOST`, else `grpc_host`.
    pub fn metrics_addr(&self, grpc_host: IpAddr) -> SocketAddr {
        SocketAddr::new(self.metrics_host.unwrap_or(grpc_host), self.metrics_port)
    }

    /// `ephemeral_key_ok`: generate a key pair and a service credential
    /// when none is configured (every service in this one process).
    pub fn suite_config(
        &self,
        db: &DbArgs,
        url: &str,
        ephemeral_key_ok: bool,
    ) -> anyhow::Result<SuiteConfig> {
        // An empty or guessable operator credential would open tenant
        // creation and suspension to anyone.
        if let Some(token) = &self.operator_token {
            anyhow::ensure!(
                token.trim().len() >= MIN_OPERATOR_TOKEN_LEN,
                "CODEOPS_OPERATOR_TOKEN must be at least {MIN_OPERATOR_TOKEN_LEN} characters (or unset to disable operator RPCs)"
            );
        }
        anyhow::ensure!(
            self.access_token_ttl_secs <= self.access_token_max_ttl_secs,
            "CODEOPS_ACCESS_TOKEN_TTL_SECS ({}) must not exceed CODEOPS_ACCESS_TOKEN_MAX_TTL_SECS ({}): \
             the services would refuse every token identity signs",
            self.access_token_ttl_secs,
            self.access_token_max_ttl_secs
        );
        let service_token = self.service_token(ephemeral_key_ok)?;
        if let Some(url) = &self.identity_url {
            // https would need a CA setting the clients do not have yet;
            // refusing it here beats a feed that fails at every poll.
            anyhow::ensure!(
                !url.starts_with("https://"),
                "CODEOPS_IDENTITY_URL: https:// is not supported (no CA to verify identity with); \
                 use http:// on a private network or let the mesh encrypt it"
            );
            anyhow::ensure!(
                url.starts_with("http://")
                    && url
                        .parse::<tonic::transport::Uri>()
                        .is_ok_and(|u| u.host().is_some()),
                "CODEOPS_IDENTITY_URL: expected an http:// URL, got {url:?}"
            );
        }
        for (name, value) in [
            ("CODEOPS_JWT_ISSUER", &self.jwt_issuer),
            ("CODEOPS_JWT_AUDIENCE", &self.jwt_audience),
        ] {
            anyhow::ensure!(!value.trim().is_empty(), "{name}: must not be empty");
        }
        let transport = self.transport()?;
        let keys = Keys::load(
            self.jwt_private_key.as_deref(),
            self.jwt_public_key.as_deref(),
            ephemeral_key_ok,
        )?;
        Ok(SuiteConfig {
            db: db.options(url),
            keys,
            token: TokenSettings {
                issuer: self.jwt_issuer.clone(),
                audience: self.jwt_audience.clone(),
                access_ttl: Duration::from_secs(self.access_token_ttl_secs),
                max_access_ttl: Duration::from_secs(self.access_token_max_ttl_secs),
            },
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
            bcrypt_cost: self.bcrypt_cost,
            bcrypt_threads: self.bcrypt_threads,
            operator_token: self.operator_token.clone(),
            limits: MessageLimits {
                max_request_bytes: self.max_request_bytes,
                max_response_bytes: self.max_response_bytes,
            },
            request_timeout: (self.request_timeout_secs > 0)
                .then(|| Duration::from_secs(self.request_timeout_secs)),
            shutdown: ShutdownSettings {
                pre_stop_delay: Duration::from_secs(self.shutdown_delay_secs),
                grace: Duration::from_secs(self.shutdown_grace_secs),
            },
            transport,
            service_token,
            identity_url: self.identity_url.clone(),
            revocation_poll: Duration::from_secs(self.revocation_poll_secs),
            sla_sweep_interval: Duration::from_secs(self.sla_sweep_secs),
        })
    }

    /// TLS (both of `CODEOPS_TLS_CERT` and `CODEOPS_TLS_KEY`, or neither)
    /// and the maximum connection age.
    fn transport(&self) -> anyhow::Result<TransportSettings> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(_), None) => anyhow::bail!(
                "CODEOPS_TLS_CERT: set without CODEOPS_TLS_KEY (TLS needs both, plaintext neither)"
            ),
            (None, Some(_)) => anyhow::bail!(
                "CODEOPS_TLS_KEY: set without CODEOPS_TLS_CERT (TLS needs both, plaintext neither)"
            ),
            (Some(cert), Some(key)) => {
                let cert = read_pem(cert).context("CODEOPS_TLS_CERT")?;
                let key = read_pem(key).context("CODEOPS_TLS_KEY")?;
                Some(tls_config(&cert, &key).map_err(|e| {
                    anyhow::anyhow!(
                        "CODEOPS_TLS_CERT, CODEOPS_TLS_KEY: not a PEM certificate chain and its private key ({})",
                        error_chain(&e)
                    )
                })?)
            }
        };
        Ok(TransportSettings {
            max_connection_age: (self.max_connection_age_secs > 0)
                .then(|| Duration::from_secs(self.max_connection_age_secs)),
            max_connection_age_grace: Duration::from_secs(self.max_connection_age_grace_secs),
            tls,
            trusted_proxies: self.trusted_proxies.clone(),
        })
    }

    /// The configured service credential, or (when every service shares
    /// this process) a random one nobody else needs to know.
    fn service_token(&self, ephemeral_ok: bool) -> anyhow::Result<String> {
        match &self.service_token {
            Some(token) => {
                // Sent as a header value: printable ASCII only.
                anyhow::ensure!(
                    token.trim().len() >= MIN_SERVICE_TOKEN_LEN
                        && token.bytes().all(|b| b.is_ascii_graphic()),
                    "CODEOPS_SERVICE_TOKEN must be at least {MIN_SERVICE_TOKEN_LEN} printable ASCII characters without spaces"
                );
                Ok(token.clone())
            }
            None => {
                anyhow::ensure!(
                    ephemeral_ok,
                    "CODEOPS_SERVICE_TOKEN is not set: services running as separate processes must share one \
                     (planning and decision read identity's revocation feed with it)"
                );
                Ok(generate_service_token())
            }
        }
    }
}

/// 244 random bits from the operating system (two v4 UUIDs), hex.
pub fn generate_service_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// Value parsers: each says what it expects, so a bad value is one line
// naming the variable (`main` adds the name and the value it got).

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// A number of seconds from `MIN` to `MAX`.
pub fn seconds<const MIN: u64, const MAX: u64>(value: &str) -> Result<u64, String> {
    whole_in(value, MIN, MAX)
        .ok_or_else(|| format!("expected a number of seconds from {MIN} to {MAX}"))
}

/// A number of bytes from `MIN` to `MAX`.
pub fn bytes<const MIN: u64, const MAX: u64>(value: &str) -> Result<usize, String> {
    whole_in(value, MIN, MAX)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("expected a number of bytes from {MIN} to {MAX}"))
}

/// A whole number from `MIN` to `MAX`.
pub fn whole<T: TryFrom<u64>, const MIN: u64, const MAX: u64>(value: &str) -> Result<T, String> {
    whole_in(value, MIN, MAX)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("expected a whole number from {MIN} to {MAX}"))
}

fn whole_in(value: &str, min: u64, max: u64) -> Option<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
}

/// A TCP port (0 picks a free one).
/// An IP address or CIDR block (`10.0.0.0/8`).
pub fn ip_range(value: &str) -> Result<IpRange, String> {
    value.parse()
}

pub fn port(value: &str) -> Result<u16, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "expected a port number from 0 to 65535".to_owned())
}

/// An IP address to listen on.
pub fn ip(value: &str) -> Result<IpAddr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "expected an IP address such as 0.0.0.0, 127.0.0.1 or ::".to_owned())
}

/// `true` or `false`.
pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}
