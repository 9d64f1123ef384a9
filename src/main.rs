//! `codeops`: one binary for every CodeOps service and its operations.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use codeops::config::{DbArgs, ServeArgs};
use codeops::suite::{self, Service};
use codeops::{dev, schema, tenant_cli};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "codeops",
    version,
    about = "CodeOps: outcomes, hypotheses and decisions as gRPC services"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "CODEOPS_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations (identity, planning, decision); idempotent.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Load the demo seed data; idempotent.
    Seed {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Serve one service, or all three in one process on their own ports.
    Serve {
        #[arg(value_enum)]
        service: ServeTarget,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Migrate, seed and serve everything; without DATABASE_URL, on a
    /// private PostgreSQL cluster that stops with this command.
    Dev {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Tenant administration for operators.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and its first OWNER.
    Create {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        args: tenant_cli::CreateTenantArgs,
    },
    /// Make an active user of a tenant its OWNER (for a tenant nobody can
    /// manage any more); audited as ROLE_ASSIGNED by the operator.
    AppointOwner {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        args: tenant_cli::AppointOwnerArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ServeTarget {
    Identity,
    Planning,
    Decision,
    All,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("codeops: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes, no backtrace.
            eprintln!("codeops: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate { db } => {
            schema::migrate(db.url()?).await?;
            println!("migrations applied");
        }
        Command::Seed { db } => {
            let inserted = schema::seed(db.url()?).await?;
            println!("seeds loaded ({inserted} rows inserted)");
        }
        Command::Serve { service, db, serve } => serve_command(service, db, serve).await?,
        Command::Dev { db, serve } => dev::run(db, serve).await?,
        Command::Tenant {
            command: TenantCommand::Create { db, args },
        } => tenant_cli::create(db, args).await?,
        Command::Tenant {
            command: TenantCommand::AppointOwner { db, args },
        } => tenant_cli::appoint(db, args).await?,
    }
    Ok(())
}

async fn serve_command(target: ServeTarget, db: DbArgs, serve: ServeArgs) -> anyhow::Result<()> {
    let url = db.url()?;
    let services: Vec<Service> = match target {
        ServeTarget::Identity => vec![Service::Identity],
        ServeTarget::Planning => vec![Service::Planning],
        ServeTarget::Decision => vec![Service::Decision],
        ServeTarget::All => Service::ALL.to_vec(),
    };
    // `serve all` holds both halves of the key pair in one process, so an
    // ephemeral pair works there; separate processes must share real keys.
    let config = serve.suite_config(&db, url, matches!(target, ServeTarget::All))?;
    let addrs: Vec<_> = services
        .iter()
        .map(|s| (*s, SocketAddr::new(serve.host, serve.port(*s))))
        .collect();
    let running = suite::start(&config, &addrs, serve.metrics_addr(serve.host)).await?;
    for (service, addr) in &running.addrs {
        println!("{} listening on {addr}", service.name());
    }
    println!("metrics on http://{}/metrics", running.metrics_addr);
    running.serve_until_signal().await
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // Colour codes only for a person at a terminal: in a file or a log
    // collector they are noise, and writing them costs every call.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
