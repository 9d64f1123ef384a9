//! The SLA sweeper at volume (decision issue 9).
//!
//! Claim under test: two sweepers running at once over the same database
//! escalate `BENCH_DECISIONS` (50,000) overdue decisions spread over
//! `BENCH_TENANTS` (100) tenants, each exactly once; the bench reports the
//! wall time and decisions/s.
//!
//! `cargo bench --bench sla_sweep`. Environment:
//! * `DATABASE_URL`: superuser URL of a PostgreSQL server; the bench creates
//!   `codeops_bench_sweep_<pid>` on it and drops it at the end. Unset: a
//!   private cluster (`codeops_pgcluster`), stopped at the end.
//! * `BENCH_TENANTS` (100), `BENCH_DECISIONS` (50000), `BENCH_SWEEPERS` (2),
//!   `BENCH_LOG` (tracing filter; quiet unset).
//!
//! After migrating and seeding, the superuser loads, with generate_series,
//! the tenants (each with an owner, a product lead reporting to the owner
//! and an engineer reporting to the lead) and the decisions (NEEDS_INPUT
//! and UNDER_DISCUSSION, held by the engineer, past due), and moves the
//! seeded decisions' deadlines out of the way so the overdue set is
//! exactly the bench's. Identity and decision then start as in the tests,
//! and the sweepers (`codeops_decision::Sweeper`, each with a pool of its
//! own, like replicas) call `sweep(now)` concurrently until nothing is
//! overdue. Exits non-zero unless every decision was escalated exactly
//! once (escalation level 1, escalated to the lead, one
//! `DECISION_ESCALATED` audit row each).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use codeops::suite::{Keys, Service, SuiteConfig};
use codeops_decision::{IdentityClient, SweepReport, Sweeper};
use codeops_platform::{Db, DbOptions, Metrics, ServiceRole};
use codeops_tenant::TokenSettings;
use sqlx::{Connection, PgConnection};

#[path = "support/server.rs"]
mod server;

/// More sweep rounds than this and the bench gives up: something is stuck.
const MAX_ROUNDS: usize = 5;

struct Settings {
    tenants: i64,
    decisions: i64,
    sweepers: usize,
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
            tenants: env_num("BENCH_TENANTS", 100)?,
            decisions: env_num("BENCH_DECISIONS", 50_000)?,
            sweepers: env_num("BENCH_SWEEPERS", 2)?,
        };
        anyhow::ensure!(settings.tenants >= 1, "BENCH_TENANTS must be at least 1");
        anyhow::ensure!(
            settings.decisions >= settings.tenants,
            "BENCH_DECISIONS must be at least BENCH_TENANTS"
        );
        anyhow::ensure!(settings.sweepers >= 1, "BENCH_SWEEPERS must be at least 1");
        Ok(settings)
    }
}

// ---------------------------------------------------------------------------
// The database

/// The seeds' bcrypt hash of `password123` (nobody logs in here).
const PASSWORD_HASH: &str = "$2b$10$lJdP4.ww3.KP25JFnX1Ce.vD18jS6rz4LeyzVA.ikyYOR3DzNwLHO";
const OWNER_ROLE: &str = "00000000-0000-4000-8002-000000000001";
const PRODUCT_LEAD_ROLE: &str = "00000000-0000-4000-8002-000000000003";
const ENGINEER_ROLE: &str = "00000000-0000-4000-8002-000000000004";

/// Tenant `n`'s ids are `md5('bench-<kind>-<n>')::uuid`, so every statement
/// can name them without a lookup.
fn bench_id(kind: &str, n: &str) -> String {
    format!("md5('bench-{kind}-' || {n})::uuid")
}

/// The bench's tenants, users and overdue decisions, as the superuser.
async fn load(url: &str, settings: &Settings) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    let started = Instant::now();
    // The seeded overdue decisions are not the bench's: move them out of
    // the way, so the overdue set is exactly the loaded one.
    sqlx::query(
        "UPDATE core.decisions SET due_at = now() + interval '30 days' \
         WHERE status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') AND due_at < now() + interval '1 day'",
    )
    .execute(&mut conn)
    .await
    .context("move the seeded deadlines")?;
    sqlx::query(&format!(
        "INSERT INTO core.tenants (id, name, slug, settings, status, created_at, updated_at) \
         SELECT {tenant}, 'Bench tenant ' || n, 'bench-' || n, \
             '{{\"sla_defaults\":{{\"blocking_hours\":24,\"high_hours\":72,\"normal_hours\":168,\"low_hours\":336}},\"timezone\":\"UTC\"}}', \
             'ACTIVE', now() - interval '30 days', now() - interval '30 days' \
         FROM generate_series(1, $1::bigint) AS n",
        tenant = bench_id("tenant", "n"),
    ))
    .bind(settings.tenants)
    .execute(&mut conn)
    .await
    .context("load tenants")?;
    // Managers first: owner <- lead <- engineer.
    for (kind, first, role, manager) in [
        ("owner", "Olive", OWNER_ROLE, None),
        ("lead", "Leo", PRODUCT_LEAD_ROLE, Some("owner")),
        ("engineer", "Erin", ENGINEER_ROLE, Some("lead")),
    ] {
        let manager = manager.map_or_else(|| "NULL".to_owned(), |m| bench_id(m, "n"));
        sqlx::query(&format!(
            "INSERT INTO core.users (id, tenant_id, email, password_hash, first_name, last_name, title, \
                 role_id, manager_id, is_active, created_at, updated_at) \
             SELECT {id}, {tenant}, '{kind}@bench-' || n || '.test', $2, '{first}', 'Bench ' || n, '{kind}', \
                 '{role}'::uuid, {manager}, true, now() - interval '30 days', now() - interval '30 days' \
             FROM generate_series(1, $1::bigint) AS n",
            id = bench_id(kind, "n"),
            tenant = bench_id("tenant", "n"),
        ))
        .bind(settings.tenants)
        .bind(PASSWORD_HASH)
        .execute(&mut conn)
        .await
        .with_context(|| format!("load {kind}s"))?;
    }
    // Decision g belongs to tenant 1 + g % tenants; half are assigned to
    // the engineer, half only owned by them: either way the engineer holds
    // it and the lead is whom it escalates to.
    sqlx::query(&format!(
        "INSERT INTO core.decisions (id, tenant_id, title, description, options, status, priority, \
             decision_type, owner_id, assigned_to_id, sla_hours, due_at, escalation_level, \
             created_at, updated_at, created_by_id) \
         SELECT gen_random_uuid(), {tenant}, 'Bench decision ' || g, 'Generated for the SLA sweep benchmark', \
             '[{{\"id\":\"opt-a\",\"title\":\"Option A\",\"description\":\"\",\"pros\":[],\"cons\":[]}},\
               {{\"id\":\"opt-b\",\"title\":\"Option B\",\"description\":\"\",\"pros\":[],\"cons\":[]}}]', \
             (ARRAY['NEEDS_INPUT', 'UNDER_DISCUSSION'])[1 + g % 2], \
             (ARRAY['BLOCKING', 'HIGH', 'NORMAL', 'LOW'])[1 + (g / 7) % 4], 'PRODUCT', \
             {engineer}, CASE WHEN g % 2 = 0 THEN {engineer} END, 24, \
             now() - interval '1 hour' - make_interval(secs => g % 86400), 0, \
             now() - interval '2 days', now() - interval '2 days', {engineer} \
         FROM (SELECT g, 1 + g % $1::bigint AS n FROM generate_series(1, $2::bigint) AS g) AS s",
        tenant = bench_id("tenant", "n"),
        engineer = bench_id("engineer", "n"),
    ))
    .bind(settings.tenants)
    .bind(settings.decisions)
    .execute(&mut conn)
    .await
    .context("load decisions")?;
    sqlx::raw_sql("ANALYZE core.decisions; ANALYZE core.users; ANALYZE core.tenants")
        .execute(&mut conn)
        .await?;
    println!(
        "loaded {} tenants and {} overdue decisions in {:.1} s",
        settings.tenants,
        settings.decisions,
        started.elapsed().as_secs_f64()
    );
    let _ = conn.close().await;
    Ok(())
}

/// What the database says after the sweep, over the bench's tenants.
struct Verdict {
    escalated_once: i64,
    not_once: i64,
    wrong_manager: i64,
    still_overdue: i64,
    audit_rows: i64,
    audited_decisions: i64,
}

async fn verify(url: &str) -> anyhow::Result<Verdict> {
    let mut conn = PgConnection::connect(url).await?;
    let (escalated_once, not_once, wrong_manager, still_overdue): (i64, i64, i64, i64) =
        sqlx::query_as(&format!(
            "SELECT count(*) FILTER (WHERE d.escalation_level = 1), \
                 count(*) FILTER (WHERE d.escalation_level IS DISTINCT FROM 1), \
                 count(*) FILTER (WHERE d.escalated_to_id IS DISTINCT FROM {lead}), \
                 count(*) FILTER (WHERE d.due_at < now()) \
             FROM core.decisions d JOIN core.tenants t ON t.id = d.tenant_id \
             CROSS JOIN LATERAL (SELECT substr(t.slug, 7) AS n) AS s \
             WHERE t.slug LIKE 'bench-%'",
            lead = bench_id("lead", "s.n"),
        ))
        .fetch_one(&mut conn)
        .await
        .context("count the decisions")?;
    let (audit_rows, audited_decisions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT a.entity_id) \
         FROM core.audit_logs a JOIN core.tenants t ON t.id = a.tenant_id \
         WHERE t.slug LIKE 'bench-%' AND a.action = 'DECISION_ESCALATED'",
    )
    .fetch_one(&mut conn)
    .await
    .context("count the audit rows")?;
    let _ = conn.close().await;
    Ok(Verdict {
        escalated_once,
        not_once,
        wrong_manager,
        still_overdue,
        audit_rows,
        audited_decisions,
    })
}

// ---------------------------------------------------------------------------
// The sweep

async fn bench(settings: &Settings, url: &str) -> anyhow::Result<bool> {
    codeops::schema::migrate(url).await.context("migrate")?;
    codeops::schema::seed(url).await.context("seed")?;
    load(url, settings).await?;

    let service_token = codeops::config::generate_service_token();
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
        service_token: service_token.clone(),
        identity_url: None,
        revocation_poll: Duration::from_secs(10),
        // The suite's own sweeper stays off: the bench runs its own.
        sla_sweep_interval: Duration::ZERO,
    };
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let suite = codeops::suite::start(
        &config,
        &[(Service::Identity, loopback), (Service::Decision, loopback)],
        loopback,
    )
    .await?;
    let result = async {
        let identity_url = format!(
            "http://{}",
            suite.addr(Service::Identity).context("identity")?
        );
        let mut sweepers = Vec::with_capacity(settings.sweepers);
        for _ in 0..settings.sweepers {
            // A pool of its own, as a replica would have.
            let db = Db::connect(&DbOptions::new(url.to_owned()), ServiceRole::Decision)
                .await
                .context("decision pool")?;
            let identity = IdentityClient::new(&identity_url, &service_token)?;
            sweepers.push(Sweeper::new(db, identity, Metrics::new()));
        }
        let now = Utc::now();
        let started = Instant::now();
        let mut totals = vec![SweepReport::default(); sweepers.len()];
        let mut rounds = 0;
        loop {
            rounds += 1;
            let tasks: Vec<_> = sweepers
                .iter()
                .cloned()
                .map(|sweeper| tokio::spawn(async move { sweeper.sweep(now).await }))
                .collect();
            let mut progress = 0;
            for (task, total) in tasks.into_iter().zip(totals.iter_mut()) {
                let report = task.await.context("sweeper task")?.context("sweep")?;
                anyhow::ensure!(!report.identity_failed, "identity failed during the sweep");
                progress += report.escalated + report.flagged;
                total.escalated += report.escalated;
                total.flagged += report.flagged;
                total.skipped += report.skipped;
            }
            let escalated: u64 = totals.iter().map(|t| t.escalated).sum();
            if escalated >= settings.decisions as u64 || progress == 0 || rounds >= MAX_ROUNDS {
                break;
            }
        }
        anyhow::Ok((started.elapsed(), rounds, totals))
    }
    .await;
    let shutdown = suite.shutdown().await;
    let (elapsed, rounds, totals) = result?;
    shutdown.context("suite shutdown")?;
    let verdict = verify(url).await?;

    let n = settings.decisions;
    let escalated: u64 = totals.iter().map(|t| t.escalated).sum();
    println!();
    println!(
        "SLA sweep: {n} overdue decisions over {} tenants, {} sweepers at once:",
        settings.tenants, settings.sweepers
    );
    for (i, t) in totals.iter().enumerate() {
        println!(
            "  sweeper {}: escalated {}, flagged {}, skipped {}",
            i + 1,
            t.escalated,
            t.flagged,
            t.skipped
        );
    }
    println!(
        "  {escalated} escalations in {:.2} s ({rounds} round{}): {:.0} decisions/s",
        elapsed.as_secs_f64(),
        if rounds == 1 { "" } else { "s" },
        escalated as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  database: {} at level 1, {} not, {} escalated to someone other than the lead, \
         {} still overdue; {} DECISION_ESCALATED audit rows for {} decisions",
        verdict.escalated_once,
        verdict.not_once,
        verdict.wrong_manager,
        verdict.still_overdue,
        verdict.audit_rows,
        verdict.audited_decisions
    );
    let passed = escalated == n as u64
        && verdict.escalated_once == n
        && verdict.not_once == 0
        && verdict.wrong_manager == 0
        && verdict.still_overdue == 0
        && verdict.audit_rows == n
        && verdict.audited_decisions == n;
    println!(
        "{}: every decision escalated exactly once",
        if passed { "PASS" } else { "FAIL" }
    );
    Ok(passed)
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("sla_sweep: {e:#}");
            return ExitCode::from(2);
        }
    };
    server::run("sla_sweep", "codeops_bench_sweep", None, |url| async move {
        bench(&settings, &url).await
    })
}
