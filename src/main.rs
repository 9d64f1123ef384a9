//! `codeops`: one binary for every CodeOps service and its operations.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    if let Err(line) = init_tracing(cli.log_format) {
        eprintln!("codeops: {line}");
        return ExitCode::FAILURE;
    }
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
            eprintln!("codeops: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: many errors
/// print their source in their own message too.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// A command line or environment clap refused, as one line (exit 2):
/// a bad value names its environment variable (or flag, when it came
/// from one) and the value, without clap's usage dump.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
        _ => {}
    }
    let line = bad_value_line(&error).unwrap_or_else(|| {
        let rendered = error.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        format!(
            "{} (see codeops --help)",
            first.trim_start_matches("error: ")
        )
    });
    eprintln!("codeops: {line}");
    ExitCode::from(2)
}

/// `CODEOPS_X: expected …, got "…"` for a value its parser refused.
fn bad_value_line(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let string = |kind| match error.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let arg = string(ContextKind::InvalidArg)?;
    let value = string(ContextKind::InvalidValue)?;
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?.to_owned();
    let expected = match error.kind() {
        ErrorKind::ValueValidation => std::error::Error::source(error)?.to_string(),
        ErrorKind::InvalidValue => match error.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => format!("expected one of {}", valid.join(", ")),
            _ => "invalid value".to_owned(),
        },
        _ => return None,
    };
    // Named as the operator set it: the variable, unless a flag gave it.
    let name = match env_of(&Cli::command(), &long) {
        // A list variable (`a,b`) is refused one item at a time.
        Some(env)
            if std::env::var_os(&env).is_some_and(|v| {
                let v = v.to_string_lossy();
                v == value || v.split(',').any(|item| item.trim() == value)
            }) =>
        {
            env
        }
        _ => format!("--{long}"),
    };
    Some(format!("{name}: {expected}, got {value:?}"))
}

/// The environment variable of the flag `--long`, in any subcommand.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|sub| env_of(sub, long)))
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

fn init_tracing(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::builder()
            .parse(&directives)
            .map_err(|e| {
                format!("RUST_LOG: expected a log filter such as info,codeops_identity=debug ({e}), got {directives:?}")
            })?,
        _ => EnvFilter::new("info,sqlx::postgres::notice=warn"),
    };
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
    Ok(())
}
