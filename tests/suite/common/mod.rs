//! The suite's test harness: a real PostgreSQL server, one isolated
//! database per test, and the three services served over loopback.
//!
//! * Server: `DATABASE_URL` when set (tests create their own databases on
//!   that server), otherwise one private cluster per test process, started
//!   lazily and kept for the life of the process (its server dies with it).
//! * Isolation: one template database per process, migrated and seeded once
//!   (`codeops_tmpl_<pid>`); every test gets `ct_<pid>_<n>` copied from it.
//!   Databases left behind by dead test processes are dropped at start-up.
//! * Logs are quiet unless `TEST_LOG` is set (`RUST_LOG` filters them).
//!   `TEST_KEEP_DB=1` keeps each test's database for inspection.

#![allow(dead_code)]

pub mod checks;
pub mod grpc;
pub mod metrics;
pub mod process;
pub mod raw;

use std::net::{IpAddr, SocketAddr};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use codeops::suite::{Keys, Service, Suite, SuiteConfig};
use codeops_pgcluster::Cluster;
use codeops_platform::pipeline::MessageLimits;
use codeops_platform::{Db, DbOptions, ServiceRole};
use codeops_proto::decision::comment_service_client::CommentServiceClient;
use codeops_proto::decision::decision_service_client::DecisionServiceClient;
use codeops_proto::decision::stakeholder_service_client::StakeholderServiceClient;
use codeops_proto::identity::audit_service_client::AuditServiceClient;
use codeops_proto::identity::auth_service_client::AuthServiceClient;
use codeops_proto::identity::role_service_client::RoleServiceClient;
use codeops_proto::identity::team_service_client::TeamServiceClient;
use codeops_proto::identity::tenant_service_client::TenantServiceClient;
use codeops_proto::identity::user_service_client::UserServiceClient;
use codeops_proto::identity::{LoginRequest, LoginResponse};
use codeops_proto::planning::hypothesis_service_client::HypothesisServiceClient;
use codeops_proto::planning::outcome_service_client::OutcomeServiceClient;
use codeops_tenant::TokenSettings;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

/// The password of every seeded user.
pub const PASSWORD: &str = "password123";
/// The operator credential `TestApp` services accept.
pub const OPERATOR_TOKEN: &str = "test-operator-token";
/// The service credential of `TestApp`'s internal API (revocation feed).
pub const SERVICE_TOKEN: &str = "test-service-credential";
/// How often `TestApp` services poll the revocation feed: short, so tests
/// see a revocation arrive within a second or two.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);

/// Fixed ids of the seeds (`seeds/`).
pub mod ids {
    use uuid::{Uuid, uuid};

    pub const ACME: Uuid = uuid!("11111111-1111-1111-1111-111111111111");
    pub const GLOBEX: Uuid = uuid!("22222222-2222-2222-2222-222222222222");
    pub const ALICE: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001");
    pub const BOB: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa002");
    pub const CAROL: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa003");
    pub const DAN: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa004");
    pub const ERIN: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa005");
    pub const FRANK: Uuid = uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa006");
}

// ---------------------------------------------------------------------------
// Logging

/// Installs a log subscriber once, only when `TEST_LOG` is set.
pub fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

// ---------------------------------------------------------------------------
// The PostgreSQL server

struct Server {
    /// Superuser URL of the server's maintenance database.
    admin_url: String,
    /// The private cluster, when there was no DATABASE_URL. Never dropped:
    /// its server stops when this process dies.
    _cluster: Option<std::sync::Mutex<Cluster>>,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            init_logging();
            remove_dead_cluster_dirs();
            let server = match std::env::var("DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => Server {
                    admin_url: url,
                    _cluster: None,
                },
                _ => {
                    let cluster = tokio::task::spawn_blocking(|| Cluster::start("codeops-test"))
                        .await
                        .expect("cluster start task")
                        .unwrap_or_else(|e| {
                            panic!("DATABASE_URL is not set and a private PostgreSQL cluster could not start: {e}")
                        });
                    Server {
                        admin_url: cluster.url(),
                        _cluster: Some(std::sync::Mutex::new(cluster)),
                    }
                }
            };
            drop_dead_databases(&server.admin_url).await;
            server
        })
        .await
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// A superuser connection to the server's maintenance database.
async fn admin_connection() -> PgConnection {
    let url = &server().await.admin_url;
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"))
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Pid encoded in `ct_<pid>_<n>` or `codeops_tmpl_<pid>`.
fn owner_pid(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix("codeops_tmpl_") {
        return rest.parse().ok();
    }
    name.strip_prefix("ct_")?.split('_').next()?.parse().ok()
}

/// Drops test databases whose process is gone.
async fn drop_dead_databases(admin_url: &str) {
    let Ok(mut conn) = PgConnection::connect(admin_url).await else {
        return;
    };
    let names: Vec<String> = sqlx::query_scalar(
        r"SELECT datname::text FROM pg_database WHERE datname LIKE 'ct\_%' OR datname LIKE 'codeops\_tmpl\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    for name in names {
        if owner_pid(&name).is_some_and(|pid| !process_alive(pid)) {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let _ = conn.close().await;
}

/// Removes data folders of private test clusters whose process is gone.
fn remove_dead_cluster_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("codeops-test-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The migrated and seeded template of this process; created once.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("codeops_tmpl_{}", std::process::id());
            let admin_url = server().await.admin_url.clone();
            let mut conn = admin_connection().await;
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .expect("drop a stale template");
            sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await
                .expect("create the template database");
            let url = with_database(&admin_url, &name);
            codeops::schema::migrate(&url)
                .await
                .expect("migrate the template database");
            let inserted = codeops::schema::seed(&url)
                .await
                .expect("seed the template database");
            assert!(inserted > 0, "seeding the template inserted no rows");
            // Copies need a template nobody is connected to.
            wait_for_no_connections(&mut conn, &name).await;
            let _ = conn.close().await;
            name
        })
        .await
}

async fn wait_for_no_connections(conn: &mut PgConnection, database: &str) {
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .fetch_one(&mut *conn)
            .await
            .expect("pg_stat_activity");
        if n == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("connections to {database} did not go away");
}

// ---------------------------------------------------------------------------
// Per-test databases

/// A database of its own for one test, dropped when this handle drops
/// (unless `TEST_KEEP_DB` is set).
pub struct TestDb {
    pub name: String,
    /// Superuser URL of this database (schema owner: bypasses RLS).
    pub url: String,
}

impl TestDb {
    /// An empty database (no schema, no seeds).
    pub async fn empty() -> TestDb {
        Self::create(None).await
    }

    /// A migrated and seeded database.
    pub async fn seeded() -> TestDb {
        let template = template().await;
        Self::create(Some(template)).await
    }

    async fn create(template: Option<&str>) -> TestDb {
        let name = format!(
            "ct_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let admin_url = server().await.admin_url.clone();
        let mut conn = admin_connection().await;
        let sql = match template {
            Some(template) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        // A template being copied by a concurrent CREATE DATABASE, or a
        // backend still on its way out, makes PostgreSQL refuse (55006).
        let mut attempt = 0;
        loop {
            match sqlx::raw_sql(&sql).execute(&mut conn).await {
                Ok(_) => break,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("55006") && attempt < 100 =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot create test database {name}: {e}"),
            }
        }
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name);
        TestDb { name, url }
    }

    /// A superuser pool on this database (bypasses row-level security).
    pub async fn admin_pool(&self) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("superuser connection to the test database")
    }

    /// A `Db` the way a service connects: `SET ROLE` to its own role.
    pub async fn service_db(&self, role: ServiceRole) -> Db {
        Db::connect(&DbOptions::new(self.url.clone()), role)
            .await
            .expect("Db::connect as a service role")
    }

    /// A plain pool as one service's database role, for tests of what the
    /// role itself may do in SQL (grants, row-level security).
    pub async fn role_pool(&self, role: ServiceRole) -> PgPool {
        let set_role = format!("SET ROLE {}", role.role_name());
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .after_connect(move |conn, _meta| {
                let set_role = set_role.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(conn, set_role.as_str()).await?;
                    Ok(())
                })
            })
            .connect(&self.url)
            .await
            .expect("pool as a service role")
    }
}

/// A transaction on `pool` scoped to `tenant`, as the services scope theirs.
pub async fn tenant_tx(pool: &PgPool, tenant: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .expect("set the tenant");
    tx
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("TEST_KEEP_DB").is_some() {
            eprintln!("keeping test database {} ({})", self.name, self.url);
            return;
        }
        let Some(server) = SERVER.get() else { return };
        let admin_url = server.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a
        // thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ =
                        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

// ---------------------------------------------------------------------------
// The running suite

/// How the tests run the services on `db`: ephemeral keys, bcrypt at its
/// cheapest, the test operator and service credentials, a 1 s revocation
/// poll. Tests that need other settings override fields of it.
pub fn suite_config(db: &TestDb) -> SuiteConfig {
    SuiteConfig {
        db: DbOptions::new(db.url.clone()),
        keys: Keys::load(None, None, true).expect("ephemeral keys"),
        token: TokenSettings::default(),
        refresh_ttl: Duration::from_secs(24 * 3600),
        bcrypt_cost: 4,
        bcrypt_threads: 0,
        operator_token: Some(OPERATOR_TOKEN.to_owned()),
        limits: MessageLimits::default(),
        request_timeout: None,
        shutdown: codeops::suite::ShutdownSettings::default(),
        transport: codeops_platform::transport::TransportSettings::default(),
        service_token: SERVICE_TOKEN.to_owned(),
        identity_url: None,
        revocation_poll: REVOCATION_POLL,
        sla_sweep_interval: Duration::ZERO,
    }
}

/// The three services on loopback ports, on a seeded database of their own.
pub struct TestApp {
    pub identity_addr: SocketAddr,
    pub planning_addr: SocketAddr,
    pub decision_addr: SocketAddr,
    /// Where `GET /metrics` answers for all three.
    pub metrics_addr: SocketAddr,
    identity: Channel,
    planning: Channel,
    decision: Channel,
    suite: Option<Suite>,
    /// Declared last: dropped after the services stop using it.
    pub db: TestDb,
}

impl TestApp {
    /// A seeded database and the three services on `127.0.0.1:0` ports.
    pub async fn spawn() -> TestApp {
        let db = TestDb::seeded().await;
        Self::spawn_on(db).await
    }

    /// The three services on an existing (migrated) database.
    pub async fn spawn_on(db: TestDb) -> TestApp {
        let config = suite_config(&db);
        Self::spawn_with(db, config).await
    }

    /// The three services on `db` with `config` (from `suite_config`,
    /// changed as a test needs). Channels are plaintext: a test of TLS
    /// builds its own.
    pub async fn spawn_with(db: TestDb, config: SuiteConfig) -> TestApp {
        init_logging();
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
        let services: Vec<_> = Service::ALL.iter().map(|s| (*s, loopback)).collect();
        let suite = codeops::suite::start(&config, &services, loopback)
            .await
            .expect("start the three services");
        let addr = |service| suite.addr(service).expect("service address");
        let (identity_addr, planning_addr, decision_addr) = (
            addr(Service::Identity),
            addr(Service::Planning),
            addr(Service::Decision),
        );
        TestApp {
            identity_addr,
            planning_addr,
            decision_addr,
            metrics_addr: suite.metrics_addr,
            identity: channel(identity_addr),
            planning: channel(planning_addr),
            decision: channel(decision_addr),
            suite: Some(suite),
            db,
        }
    }

    /// Graceful stop: health NOT_SERVING, calls finish, pools close.
    pub async fn shutdown(mut self) {
        if let Some(suite) = self.suite.take() {
            suite.shutdown().await.expect("suite shutdown");
        }
    }

    pub fn addr(&self, service: Service) -> SocketAddr {
        match service {
            Service::Identity => self.identity_addr,
            Service::Planning => self.planning_addr,
            Service::Decision => self.decision_addr,
        }
    }

    /// A channel to a service's port (cheap to clone).
    pub fn channel(&self, service: Service) -> Channel {
        match service {
            Service::Identity => self.identity.clone(),
            Service::Planning => self.planning.clone(),
            Service::Decision => self.decision.clone(),
        }
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.identity.clone())
    }

    pub fn tenants(&self) -> TenantServiceClient<Channel> {
        TenantServiceClient::new(self.identity.clone())
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.identity.clone())
    }

    pub fn roles(&self) -> RoleServiceClient<Channel> {
        RoleServiceClient::new(self.identity.clone())
    }

    pub fn teams(&self) -> TeamServiceClient<Channel> {
        TeamServiceClient::new(self.identity.clone())
    }

    pub fn audit_logs(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.identity.clone())
    }

    pub fn outcomes(&self) -> OutcomeServiceClient<Channel> {
        OutcomeServiceClient::new(self.planning.clone())
    }

    pub fn hypotheses(&self) -> HypothesisServiceClient<Channel> {
        HypothesisServiceClient::new(self.planning.clone())
    }

    pub fn decisions(&self) -> DecisionServiceClient<Channel> {
        DecisionServiceClient::new(self.decision.clone())
    }

    pub fn comments(&self) -> CommentServiceClient<Channel> {
        CommentServiceClient::new(self.decision.clone())
    }

    pub fn stakeholders(&self) -> StakeholderServiceClient<Channel> {
        StakeholderServiceClient::new(self.decision.clone())
    }

    pub fn health(&self, service: Service) -> HealthClient<Channel> {
        HealthClient::new(self.channel(service))
    }

    /// Logs in; the full response (tokens and user).
    pub async fn login_response(
        &self,
        tenant_slug: &str,
        email: &str,
        password: &str,
    ) -> Result<LoginResponse, tonic::Status> {
        let request = LoginRequest {
            tenant_slug: tenant_slug.to_owned(),
            email: email.to_owned(),
            password: password.to_owned(),
        };
        self.auth()
            .login(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Logs in and returns the access token; panics when login fails.
    pub async fn login(&self, tenant_slug: &str, email: &str, password: &str) -> String {
        let response = self
            .login_response(tenant_slug, email, password)
            .await
            .unwrap_or_else(|status| {
                panic!("login of {email} in {tenant_slug} failed: {status:?}")
            });
        let tokens = response.tokens.expect("LoginResponse.tokens");
        assert!(
            !tokens.access_token.is_empty(),
            "empty access token for {email}"
        );
        tokens.access_token
    }

    /// Access token of a seeded user (password `password123`).
    pub async fn login_seeded(&self, tenant_slug: &str, email: &str) -> String {
        self.login(tenant_slug, email, PASSWORD).await
    }

    /// A superuser pool on this app's database.
    pub async fn admin_pool(&self) -> PgPool {
        self.db.admin_pool().await
    }
}

/// A lazily connecting channel to `addr`.
pub fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// A lazily connecting channel to `addr` whose connections come from
/// `source`. Every 127.0.0.0/8 address is loopback on Linux, so a test can
/// play several clients that the services tell apart by peer address.
pub fn channel_from(source: IpAddr, addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .local_address(Some(source))
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    set_bearer(&mut request, token);
    request
}

/// Adds `authorization: Bearer <token>` to a request.
pub fn set_bearer<T>(request: &mut tonic::Request<T>, token: &str) {
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
}

/// `message` with the operator credential of `TestApp`.
pub fn operator<T>(message: T) -> tonic::Request<T> {
    bearer(message, OPERATOR_TOKEN)
}

/// A port that was free a moment ago, for a process or server told to bind
/// it later. Taken below the kernel's ephemeral range (32768 and up on
/// Linux): the suite's many outgoing connections and `127.0.0.1:0`
/// listeners draw from that range and could take the port between its
/// check and its use (CI saw "Address already in use"). Successive calls
/// walk the range from a random start, so they never repeat a port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id(),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..COUNT {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(port).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}

/// A fresh random id, for "does not exist" cases.
pub fn random_id() -> Uuid {
    Uuid::new_v4()
}

#[test]
fn with_database_replaces_only_the_database_name() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "ct_1_2"),
        "postgres://postgres@127.0.0.1:5432/ct_1_2"
    );
    assert_eq!(
        with_database("postgres://u:p@db:5432", "x"),
        "postgres://u:p@db:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@db/app?sslmode=disable", "x"),
        "postgres://u@db/x?sslmode=disable"
    );
}
