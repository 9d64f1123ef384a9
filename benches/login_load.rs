//! Login load vs. a cheap authenticated RPC (identity issue 3).
//!
//! Claim under test: while `BENCH_LOGIN_CLIENTS` (8) clients log in
//! continuously, the p99 latency of `AuthService/GetCurrentUser` stays
//! within 3x of its idle p99, i.e. bcrypt runs off the async workers and
//! does not stall the runtime.
//!
//! `cargo bench --bench login_load`. Environment:
//! * `DATABASE_URL`: superuser URL of a PostgreSQL server; the bench creates
//!   `codeops_bench_<pid>` on it and drops it at the end. Unset: a private
//!   cluster (`codeops_pgcluster`), stopped at the end.
//! * `BENCH_BCRYPT_COST` (12, production), `BENCH_SAMPLES` (2000),
//!   `BENCH_LOGIN_CLIENTS` (8), `BENCH_WORKER_THREADS` (tokio's default:
//!   one per core), `BENCH_MAX_PHASE_SECS` (120: a phase stops short
//!   there, and the run fails), `BENCH_LOG` (tracing filter, e.g. `info`; quiet unset).
//!
//! Phase 1 calls GetCurrentUser sequentially on an idle suite; phase 2
//! repeats it while the login clients run, each on its own channel, as a
//! user created through CreateUser so its hash has the configured cost.
//! Exits non-zero when the loaded p99 exceeds 3x the idle p99.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use codeops::suite::{Keys, Service, SuiteConfig};
use codeops_platform::DbOptions;
use codeops_platform::pipeline::MessageLimits;
use codeops_proto::identity::auth_service_client::AuthServiceClient;
use codeops_proto::identity::user_service_client::UserServiceClient;
use codeops_proto::identity::{CreateUserRequest, GetCurrentUserRequest, LoginRequest, User};
use codeops_tenant::TokenSettings;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

#[path = "support/server.rs"]
mod server;

const TENANT: &str = "acme";
const ALICE: &str = "alice@acme.test";
const SEED_PASSWORD: &str = "password123";
/// Login client `i` logs in as its own user: the throttle allows an
/// account only a few password checks at once, as it should.
fn bench_email(i: usize) -> String {
    format!("bench-login-{i}@acme.test")
}
const BENCH_PASSWORD: &str = "bench-login-Passw0rd";
/// The seeded VIEWER system role.
const VIEWER_ROLE: &str = "00000000-0000-4000-8002-000000000005";
const MAX_RATIO: f64 = 3.0;
const WARMUP_CALLS: usize = 200;

struct Settings {
    bcrypt_cost: u32,
    samples: usize,
    login_clients: usize,
    worker_threads: Option<usize>,
    /// Longest a measurement phase may take before it stops short (FAIL).
    phase_budget: Duration,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let settings = Settings {
            bcrypt_cost: env_num("BENCH_BCRYPT_COST", 12)?,
            samples: env_num("BENCH_SAMPLES", 2000)?,
            login_clients: env_num("BENCH_LOGIN_CLIENTS", 8)?,
            phase_budget: Duration::from_secs(env_num("BENCH_MAX_PHASE_SECS", 120)?),
            worker_threads: match std::env::var("BENCH_WORKER_THREADS") {
                Ok(v) if !v.trim().is_empty() => Some(env_num("BENCH_WORKER_THREADS", 0)?),
                _ => None,
            },
        };
        anyhow::ensure!(
            (4..=31).contains(&settings.bcrypt_cost),
            "BENCH_BCRYPT_COST must be 4..=31"
        );
        anyhow::ensure!(
            settings.samples >= 100,
            "BENCH_SAMPLES must be at least 100"
        );
        anyhow::ensure!(
            !settings.phase_budget.is_zero(),
            "BENCH_MAX_PHASE_SECS must be at least 1"
        );
        anyhow::ensure!(
            settings.login_clients >= 1,
            "BENCH_LOGIN_CLIENTS must be at least 1"
        );
        anyhow::ensure!(
            settings.worker_threads != Some(0),
            "BENCH_WORKER_THREADS must be at least 1"
        );
        Ok(settings)
    }
}

// ---------------------------------------------------------------------------
// Statistics

struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        // Nearest rank.
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        let total: Duration = sorted.iter().sum();
        Stats {
            n: sorted.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: *sorted.last().expect("non-empty"),
            mean: total / sorted.len() as u32,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------
// gRPC

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to identity at {addr}"))
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

fn login_request(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        tenant_slug: TENANT.to_owned(),
        email: email.to_owned(),
        password: password.to_owned(),
    }
}

async fn login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let response = client
        .login(login_request(email, password))
        .await
        .with_context(|| format!("login of {email} failed"))?
        .into_inner();
    Ok(response
        .tokens
        .context("LoginResponse.tokens")?
        .access_token)
}

/// `count` sequential GetCurrentUser calls; per-call latencies. Stops
/// early (fewer latencies) once `budget` has passed.
async fn measure(
    client: &mut AuthServiceClient<Channel>,
    token: &str,
    count: usize,
    budget: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + budget;
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        if Instant::now() >= deadline {
            break;
        }
        let request = bearer(GetCurrentUserRequest {}, token);
        let start = Instant::now();
        let result = client.get_current_user(request).await;
        let elapsed = start.elapsed();
        let user = result
            .with_context(|| format!("GetCurrentUser call {i} failed"))?
            .into_inner();
        anyhow::ensure!(
            user.email == ALICE,
            "GetCurrentUser answered {:?}",
            user.email
        );
        latencies.push(elapsed);
    }
    Ok(latencies)
}

struct LoginTotals {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Logs in as the bench user until `stop`; its login latencies.
async fn login_loop(
    addr: SocketAddr,
    email: String,
    stop: Arc<AtomicBool>,
    totals: Arc<LoginTotals>,
) -> anyhow::Result<(Vec<Duration>, Option<String>)> {
    let mut client = AuthServiceClient::new(connect(addr).await?);
    let mut latencies = Vec::new();
    let mut first_error = None;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        match client.login(login_request(&email, BENCH_PASSWORD)).await {
            Ok(_) => {
                latencies.push(start.elapsed());
                totals.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => {
                totals.failed.fetch_add(1, Ordering::Relaxed);
                first_error
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                // Do not spin on a persistent failure.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok((latencies, first_error))
}

// ---------------------------------------------------------------------------
// The bench

struct Outcome {
    passed: bool,
}

async fn bench(settings: &Settings, url: &str) -> anyhow::Result<Outcome> {
    codeops::schema::migrate(url)
        .await
        .context("migrate the bench database")?;
    let inserted = codeops::schema::seed(url)
        .await
        .context("seed the bench database")?;
    anyhow::ensure!(inserted > 0, "seeding inserted no rows");

    let config = SuiteConfig {
        db: DbOptions::new(url.to_owned()),
        keys: Keys::load(None, None, true)?,
        token: TokenSettings::default(),
        refresh_ttl: Duration::from_secs(24 * 3600),
        bcrypt_cost: settings.bcrypt_cost,
        bcrypt_threads: 0,
        operator_token: None,
        limits: MessageLimits::default(),
        request_timeout: None,
        shutdown: codeops::suite::ShutdownSettings::default(),
        transport: codeops_platform::transport::TransportSettings::default(),
        service_token: codeops::config::generate_service_token(),
        identity_url: None,
        revocation_poll: Duration::from_secs(10),
        sla_sweep_interval: Duration::ZERO,
    };
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let suite = codeops::suite::start(&config, &[(Service::Identity, loopback)], loopback).await?;
    let result = run_phases(
        settings,
        &config,
        suite.addr(Service::Identity).context("identity address")?,
    )
    .await;
    let shutdown = suite.shutdown().await;
    let outcome = result?;
    shutdown.context("suite shutdown")?;
    Ok(outcome)
}

async fn run_phases(
    settings: &Settings,
    config: &SuiteConfig,
    addr: SocketAddr,
) -> anyhow::Result<Outcome> {
    let channel = connect(addr).await?;
    let mut auth = AuthServiceClient::new(channel.clone());

    // Setup: alice's token; a bench user whose hash has the configured cost.
    let alice_token = login(&mut auth, ALICE, SEED_PASSWORD).await?;
    let mut users = UserServiceClient::new(channel.clone());
    for i in 0..settings.login_clients.max(1) {
        users
            .create_user(bearer(
                CreateUserRequest {
                    user: Some(User {
                        email: bench_email(i),
                        first_name: "Bench".to_owned(),
                        last_name: format!("Login {i}"),
                        role_id: VIEWER_ROLE.to_owned(),
                        ..User::default()
                    }),
                    password: BENCH_PASSWORD.to_owned(),
                    ..Default::default()
                },
                &alice_token,
            ))
            .await
            .context("CreateUser of a bench user as alice")?;
    }
    let start = Instant::now();
    login(&mut auth, &bench_email(0), BENCH_PASSWORD).await?;
    let single_login = start.elapsed();

    // Warm-up: connections in the pool, caches, branch predictors.
    measure(&mut auth, &alice_token, WARMUP_CALLS, settings.phase_budget).await?;

    // Phase 1: idle.
    let idle_started = Instant::now();
    let idle = measure(
        &mut auth,
        &alice_token,
        settings.samples,
        settings.phase_budget,
    )
    .await?;
    let idle_elapsed = idle_started.elapsed();
    let idle_stats = Stats::of(&idle);

    // Phase 2: the login clients, then the same measurement.
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(LoginTotals {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let mut clients = Vec::new();
    for i in 0..settings.login_clients {
        clients.push(tokio::spawn(login_loop(
            addr,
            bench_email(i),
            stop.clone(),
            totals.clone(),
        )));
    }
    // Ramp-up: every client's first login is in flight or done; wait until
    // as many logins as clients completed (steady state), at most 60 s.
    let ramp_deadline = Instant::now() + Duration::from_secs(60);
    while totals.ok.load(Ordering::Relaxed) + totals.failed.load(Ordering::Relaxed)
        < settings.login_clients as u64
        && Instant::now() < ramp_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logins_before = totals.ok.load(Ordering::Relaxed);
    let loaded_started = Instant::now();
    let loaded = measure(
        &mut auth,
        &alice_token,
        settings.samples,
        settings.phase_budget,
    )
    .await;
    let loaded_elapsed = loaded_started.elapsed();
    let logins_during = totals.ok.load(Ordering::Relaxed) - logins_before;
    stop.store(true, Ordering::Relaxed);
    let mut login_latencies = Vec::new();
    let mut login_errors = Vec::new();
    for client in clients {
        let (latencies, error) = client.await.context("login client task")??;
        login_latencies.extend(latencies);
        login_errors.extend(error);
    }
    let loaded = loaded?;
    let loaded_stats = Stats::of(&loaded);
    let failed_logins = totals.failed.load(Ordering::Relaxed);
    let logins_per_sec = logins_during as f64 / loaded_elapsed.as_secs_f64();

    let ratio = loaded_stats.p99.as_secs_f64() / idle_stats.p99.as_secs_f64();
    let complete = idle.len() == settings.samples && loaded.len() == settings.samples;
    let passed = ratio <= MAX_RATIO && logins_during > 0 && failed_logins == 0 && complete;

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!();
    println!("=== login_load: GetCurrentUser p99 under continuous login load ===");
    println!(
        "setup: identity in-process on {addr}; {cores} cores; tokio workers {}; db pool {} connections",
        settings
            .worker_threads
            .map_or_else(|| format!("{cores} (default)"), |n| n.to_string()),
        config.db.max_connections
    );
    println!(
        "bcrypt cost: {} ({} bench users created via CreateUser; one login alone took {})",
        settings.bcrypt_cost,
        settings.login_clients,
        ms(single_login)
    );
    println!(
        "login clients: {} (each on its own channel)",
        settings.login_clients
    );
    println!();
    println!(
        "phase                 n     p50          p99          max          mean         calls/s"
    );
    for (name, stats, elapsed) in [
        ("idle", &idle_stats, idle_elapsed),
        ("under login load", &loaded_stats, loaded_elapsed),
    ] {
        println!(
            "{name:<18} {:>6}  {:<12} {:<12} {:<12} {:<12} {:.0}",
            stats.n,
            ms(stats.p50),
            ms(stats.p99),
            ms(stats.max),
            ms(stats.mean),
            stats.n as f64 / elapsed.as_secs_f64()
        );
    }
    println!();
    println!("idle p99:        {}", ms(idle_stats.p99));
    println!("loaded p99:      {}", ms(loaded_stats.p99));
    println!("ratio loaded/idle p99: {ratio:.2}x (limit {MAX_RATIO:.0}x)");
    println!(
        "logins/s:        {logins_per_sec:.2} ({logins_during} logins in {:.2} s of measurement; {failed_logins} failed)",
        loaded_elapsed.as_secs_f64()
    );
    if !login_latencies.is_empty() {
        let login_stats = Stats::of(&login_latencies);
        println!(
            "login latency:   p50 {}, p99 {}, max {} (n {}, whole phase 2)",
            ms(login_stats.p50),
            ms(login_stats.p99),
            ms(login_stats.max),
            login_stats.n
        );
    }
    for error in &login_errors {
        println!("login error:     {error}");
    }
    if !complete {
        println!(
            "note:            a phase hit BENCH_MAX_PHASE_SECS={} before {} samples",
            settings.phase_budget.as_secs(),
            settings.samples
        );
    }
    if passed {
        println!("PASS: loaded p99 within 3x idle p99");
    } else if !complete {
        println!(
            "FAIL: measurement stopped short ({} idle, {} loaded of {} samples in {} s); loaded p99 {} is {ratio:.2}x idle p99 {}",
            idle.len(),
            loaded.len(),
            settings.samples,
            settings.phase_budget.as_secs(),
            ms(loaded_stats.p99),
            ms(idle_stats.p99)
        );
    } else if logins_during == 0 || failed_logins > 0 {
        println!(
            "FAIL: the login load did not run cleanly ({logins_during} logins during measurement, {failed_logins} failed)"
        );
    } else {
        println!(
            "FAIL: loaded p99 {} is {ratio:.2}x idle p99 {} (limit 3x)",
            ms(loaded_stats.p99),
            ms(idle_stats.p99)
        );
    }
    Ok(Outcome { passed })
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("login_load: {e:#}");
            return ExitCode::from(2);
        }
    };
    server::run(
        "login_load",
        "codeops_bench",
        settings.worker_threads,
        |url| async move { bench(&settings, &url).await.map(|outcome| outcome.passed) },
    )
}
