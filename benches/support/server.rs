//! What every benchmark does around its measurement, shared by the benches
//! (each includes this file as a module): logs from `BENCH_LOG`, a tokio
//! runtime, and the database it runs on — a fresh database on
//! `DATABASE_URL`'s server, dropped at the end, or a private cluster from
//! the machine's PostgreSQL binaries when `DATABASE_URL` is unset.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use codeops_pgcluster::Cluster;
use sqlx::{Connection, PgConnection};

pub enum Server {
    External { admin_url: String, database: String },
    Private(Cluster),
}

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

pub async fn admin_exec(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .context("cannot connect to DATABASE_URL")?;
    sqlx::raw_sql(sql)
        .execute(&mut conn)
        .await
        .with_context(|| sql.to_owned())?;
    let _ = conn.close().await;
    Ok(())
}

/// A fresh database `{name}_<pid>` on `DATABASE_URL`'s server, or `{name}` on
/// a private cluster when it is unset; returns it and its URL.
pub async fn prepare_server(name: &str) -> anyhow::Result<(Server, String)> {
    match std::env::var("DATABASE_URL") {
        Ok(admin_url) if !admin_url.trim().is_empty() => {
            let database = format!("{name}_{}", std::process::id());
            admin_exec(
                &admin_url,
                &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
            )
            .await?;
            admin_exec(&admin_url, &format!("CREATE DATABASE \"{database}\"")).await?;
            let url = with_database(&admin_url, &database);
            Ok((
                Server::External {
                    admin_url,
                    database,
                },
                url,
            ))
        }
        _ => {
            let cluster = tokio::task::spawn_blocking(|| Cluster::start("codeops-bench"))
                .await
                .context("cluster start task")?
                .context(
                    "DATABASE_URL is not set and a private PostgreSQL cluster could not start",
                )?;
            let url = cluster.database_url(name);
            admin_exec(&cluster.url(), &format!("CREATE DATABASE \"{name}\"")).await?;
            Ok((Server::Private(cluster), url))
        }
    }
}

/// Drops the database or stops the cluster.
pub async fn release_server(server: Server) {
    match server {
        Server::External {
            admin_url,
            database,
        } => {
            if let Err(e) = admin_exec(
                &admin_url,
                &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
            )
            .await
            {
                eprintln!("warning: could not drop {database}: {e:#}");
            }
        }
        Server::Private(cluster) => {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
        }
    }
}

/// Runs `body` with the URL of a fresh database `database` and releases the
/// database whatever happens. Exit 0 when it passed, 1 when it failed, 2 on
/// an error (printed after `bench:`).
pub fn run<F, Fut>(bench: &str, database: &str, worker_threads: Option<usize>, body: F) -> ExitCode
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{bench}: cannot build the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let (server, url) = prepare_server(database).await?;
        let result = body(url).await;
        release_server(server).await;
        result
    });
    drop(runtime);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{bench}: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
