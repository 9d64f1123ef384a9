//! `codeops dev`: a running, seeded suite with nothing to install but the
//! toolchain. Uses DATABASE_URL when set, otherwise a private PostgreSQL
//! cluster that lives exactly as long as this command.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use codeops_pgcluster::Cluster;

use crate::config::{DbArgs, ServeArgs};
use crate::schema;
use crate::suite::{self, Service};

/// Logins the seeds create (every password is `password123`).
pub const SEEDED_LOGINS: &[(&str, &str, &str)] = &[
    ("acme", "alice@acme.test", "OWNER"),
    ("acme", "bob@acme.test", "PRODUCT_LEAD"),
    ("acme", "carol@acme.test", "ENGINEER"),
    ("acme", "dan@acme.test", "VIEWER"),
    ("globex", "erin@globex.test", "OWNER"),
    ("globex", "frank@globex.test", "ENGINEER"),
];

pub async fn run(db: DbArgs, serve: ServeArgs) -> anyhow::Result<()> {
    let (url, cluster) = match db.database_url.clone() {
        Some(url) => (url, None),
        None => {
            println!("DATABASE_URL not set: starting a private PostgreSQL cluster");
            let cluster = tokio::task::spawn_blocking(|| Cluster::start("codeops-dev"))
                .await?
                .context("cannot start a private PostgreSQL cluster")?;
            create_database(&cluster.url(), "codeops").await?;
            let url = cluster.database_url("codeops");
            println!(
                "private PostgreSQL at 127.0.0.1:{} (stops with this command)",
                cluster.port()
            );
            (url, Some(cluster))
        }
    };
    let result = run_with(&url, &db, &serve).await;
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || cluster.stop()).await?;
        println!("private PostgreSQL stopped");
    }
    result
}

async fn run_with(url: &str, db: &DbArgs, serve: &ServeArgs) -> anyhow::Result<()> {
    schema::migrate(url).await?;
    let inserted = schema::seed(url).await?;
    tracing::info!(service = %"identity,planning,decision", inserted, "migrated and seeded");
    let config = serve.suite_config(db, url, true)?;
    // dev listens on loopback unless told otherwise.
    let host = if serve.host.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        serve.host
    };
    let services: Vec<_> = Service::ALL
        .iter()
        .map(|s| (*s, SocketAddr::new(host, serve.port(*s))))
        .collect();
    let running = suite::start(&config, &services, serve.metrics_addr(host)).await?;
    println!("CodeOps is running:");
    for (service, addr) in &running.addrs {
        println!("  {:<9} {addr}", service.name());
    }
    println!("  {:<9} http://{}/metrics", "metrics", running.metrics_addr);
    println!("Seeded logins (password: password123):");
    for (tenant, email, role) in SEEDED_LOGINS {
        println!("  {tenant:<7} {email:<18} {role}");
    }
    if let Some(addr) = running.addr(Service::Identity) {
        println!(
            "Try: grpcurl -plaintext -d '{{\"tenant_slug\":\"acme\",\"email\":\"alice@acme.test\",\"password\":\"password123\"}}' {addr} codeops.identity.v1.AuthService/Login"
        );
    }
    println!("Stop with Ctrl-C or SIGTERM.");
    running.serve_until_signal().await
}

/// Creates `name` on the cluster if missing.
async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}
