//! Keyset pages of ListOutcomes at depth (planning issue 8).
//!
//! Claim under test: with 100,000 outcomes in each of two tenants, page 200
//! of ListOutcomes costs within 1.3x of page 1, for each ordering (newest
//! first, target date, priority), through the gRPC API.
//!
//! `cargo bench --bench planning_pages`. Environment:
//! * `DATABASE_URL`: superuser URL of a PostgreSQL server; the bench creates
//!   `codeops_bench_pages_<pid>` on it and drops it at the end. Unset: a
//!   private cluster (`codeops_pgcluster`), stopped at the end.
//! * `BENCH_ROWS` (100000 per tenant), `BENCH_PAGE` (200), `BENCH_PAGE_SIZE`
//!   (25, the API's default), `BENCH_SAMPLES` (300 per page and ordering),
//!   `BENCH_MAX_RATIO` (1.3), `BENCH_LOG` (tracing filter; quiet unset).
//!
//! The rows are loaded as the superuser with generate_series (dates over
//! two years, one in seven without one; priorities and statuses spread),
//! then ANALYZEd. For each ordering the bench walks to page BENCH_PAGE
//! once to get its token, warms both pages up, then measures page 1 and
//! page BENCH_PAGE alternately and compares their medians. Exits non-zero
//! when a ratio passes the limit.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use codeops::suite::{Keys, Service, SuiteConfig};
use codeops_platform::DbOptions;
use codeops_proto::identity::LoginRequest;
use codeops_proto::identity::auth_service_client::AuthServiceClient;
use codeops_proto::planning::outcome_service_client::OutcomeServiceClient;
use codeops_proto::planning::{ListOutcomesRequest, OutcomeOrderBy};
use codeops_tenant::TokenSettings;
use sqlx::{Connection, PgConnection};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

#[path = "support/server.rs"]
mod server;

const ACME: &str = "11111111-1111-1111-1111-111111111111";
const GLOBEX: &str = "22222222-2222-2222-2222-222222222222";
const WARMUP_CALLS: usize = 20;

struct Settings {
    rows: i64,
    page: usize,
    page_size: i32,
    samples: usize,
    max_ratio: f64,
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
            rows: env_num("BENCH_ROWS", 100_000)?,
            page: env_num("BENCH_PAGE", 200)?,
            page_size: env_num("BENCH_PAGE_SIZE", 25)?,
            samples: env_num("BENCH_SAMPLES", 300)?,
            max_ratio: env_num("BENCH_MAX_RATIO", 1.3)?,
        };
        anyhow::ensure!(settings.page >= 2, "BENCH_PAGE must be at least 2");
        anyhow::ensure!(
            (1..=100).contains(&settings.page_size),
            "BENCH_PAGE_SIZE must be 1..=100"
        );
        anyhow::ensure!(
            settings.rows >= settings.page as i64 * i64::from(settings.page_size),
            "BENCH_ROWS must fill BENCH_PAGE pages"
        );
        anyhow::ensure!(settings.samples >= 10, "BENCH_SAMPLES must be at least 10");
        Ok(settings)
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn p90(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[(samples.len() * 9 / 10).min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------
// The database

/// `rows` outcomes in each tenant, as the superuser, in one statement each.
async fn load(url: &str, rows: i64) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    for tenant in [ACME, GLOBEX] {
        let started = Instant::now();
        sqlx::query(
            "INSERT INTO core.outcomes (id, tenant_id, title, description, status, priority, target_date, \
                 tags, created_at, updated_at) \
             SELECT gen_random_uuid(), $1::uuid, 'Bench outcome ' || g, 'Generated for the page benchmark', \
                 (ARRAY['DRAFT', 'NOT_STARTED', 'IN_PROGRESS', 'VALIDATING'])[1 + g % 4], \
                 (ARRAY['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'BACKLOG'])[1 + (g / 7) % 5], \
                 CASE WHEN g % 7 = 0 THEN NULL ELSE DATE '2026-01-01' + (g * 37 % 730)::int END, \
                 '[\"bench\"]', \
                 now() - make_interval(secs => g), now() - make_interval(secs => g) \
             FROM generate_series(1, $2::bigint) AS g",
        )
        .bind(tenant)
        .bind(rows)
        .execute(&mut conn)
        .await
        .context("load outcomes")?;
        println!(
            "loaded {rows} outcomes into tenant {tenant} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    sqlx::raw_sql("ANALYZE core.outcomes; ANALYZE core.hypotheses")
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// The API

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

struct Lister {
    client: OutcomeServiceClient<Channel>,
    token: String,
    page_size: i32,
}

impl Lister {
    async fn page(
        &mut self,
        order: OutcomeOrderBy,
        token: &str,
    ) -> anyhow::Result<(usize, String)> {
        let request = ListOutcomesRequest {
            page_size: self.page_size,
            page_token: token.to_owned(),
            order_by: order as i32,
            ..Default::default()
        };
        let page = self
            .client
            .list_outcomes(bearer(request, &self.token))
            .await
            .context("ListOutcomes")?
            .into_inner();
        Ok((page.outcomes.len(), page.next_page_token))
    }

    async fn timed(&mut self, order: OutcomeOrderBy, token: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (n, _) = self.page(order, token).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(n == self.page_size as usize, "a short page: {n} rows");
        Ok(elapsed)
    }
}

struct Figures {
    order: OutcomeOrderBy,
    first: Duration,
    deep: Duration,
    first_p90: Duration,
    deep_p90: Duration,
}

async fn measure(
    settings: &Settings,
    lister: &mut Lister,
    order: OutcomeOrderBy,
) -> anyhow::Result<Figures> {
    // The token of page N: walk pages 1..N-1.
    let mut token = String::new();
    for page in 1..settings.page {
        let (_, next) = lister.page(order, &token).await?;
        anyhow::ensure!(!next.is_empty(), "{order:?}: the list ended at page {page}");
        token = next;
    }
    for _ in 0..WARMUP_CALLS {
        lister.timed(order, "").await?;
        lister.timed(order, &token).await?;
    }
    let mut first = Vec::with_capacity(settings.samples);
    let mut deep = Vec::with_capacity(settings.samples);
    for _ in 0..settings.samples {
        first.push(lister.timed(order, "").await?);
        deep.push(lister.timed(order, &token).await?);
    }
    Ok(Figures {
        order,
        first: median(&mut first),
        deep: median(&mut deep),
        first_p90: p90(&mut first),
        deep_p90: p90(&mut deep),
    })
}

async fn bench(settings: &Settings, url: &str) -> anyhow::Result<bool> {
    codeops::schema::migrate(url).await.context("migrate")?;
    codeops::schema::seed(url).await.context("seed")?;
    load(url, settings.rows).await?;

    let config = SuiteConfig {
        db: DbOptions::new(url.to_owned()),
        keys: Keys::load(None, None, true)?,
        token: TokenSettings::default(),
        refresh_ttl: Duration::from_secs(3600),
        bcrypt_cost: 4,
        bcrypt_threads: 0,
        operator_token: None,
        limits: codeops_platform::pipeline::MessageLimits::default(),
        request_timeout: None,
        shutdown: codeops::suite::ShutdownSettings::default(),
        transport: codeops_platform::transport::TransportSettings::default(),
        service_token: codeops::config::generate_service_token(),
        identity_url: None,
        revocation_poll: Duration::from_secs(10),
        sla_sweep_interval: Duration::ZERO,
    };
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let suite = codeops::suite::start(
        &config,
        &[(Service::Identity, loopback), (Service::Planning, loopback)],
        loopback,
    )
    .await?;
    let result = async {
        let identity = connect(suite.addr(Service::Identity).context("identity")?).await?;
        let planning = connect(suite.addr(Service::Planning).context("planning")?).await?;
        let token = AuthServiceClient::new(identity)
            .login(LoginRequest {
                tenant_slug: "acme".into(),
                email: "alice@acme.test".into(),
                password: "password123".into(),
            })
            .await
            .context("login")?
            .into_inner()
            .tokens
            .context("tokens")?
            .access_token;
        let mut lister = Lister {
            client: OutcomeServiceClient::new(planning),
            token,
            page_size: settings.page_size,
        };
        let mut all = Vec::new();
        for order in [
            OutcomeOrderBy::CreateTimeDesc,
            OutcomeOrderBy::TargetDate,
            OutcomeOrderBy::Priority,
        ] {
            all.push(measure(settings, &mut lister, order).await?);
        }
        anyhow::Ok(all)
    }
    .await;
    let shutdown = suite.shutdown().await;
    let figures = result?;
    shutdown.context("suite shutdown")?;

    println!();
    println!(
        "ListOutcomes, {} outcomes in each of 2 tenants, page size {}, {} samples per page (median, p90):",
        settings.rows, settings.page_size, settings.samples
    );
    let mut passed = true;
    for f in &figures {
        let ratio = f.deep.as_secs_f64() / f.first.as_secs_f64();
        let ok = ratio <= settings.max_ratio;
        passed &= ok;
        println!(
            "  {:<16} page 1 {} (p90 {})  page {} {} (p90 {})  ratio {ratio:.2}  {}",
            format!("{:?}", f.order),
            ms(f.first),
            ms(f.first_p90),
            settings.page,
            ms(f.deep),
            ms(f.deep_p90),
            if ok { "ok" } else { "FAIL" }
        );
    }
    println!(
        "{}: page {} within {}x of page 1 for every ordering",
        if passed { "PASS" } else { "FAIL" },
        settings.page,
        settings.max_ratio
    );
    Ok(passed)
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("planning_pages: {e:#}");
            return ExitCode::from(2);
        }
    };
    server::run(
        "planning_pages",
        "codeops_bench_pages",
        None,
        |url| async move { bench(&settings, &url).await },
    )
}
