//! The `codeops` binary end to end: `dev` with and without DATABASE_URL,
//! and the one-line errors of a bad database or a taken port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use codeops::suite::Service;
use codeops_proto::identity::LoginRequest;
use codeops_proto::identity::auth_service_client::AuthServiceClient;
use codeops_tenant::KeyPair;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::grpc::{HEALTH_SERVICE, IDENTITY_SERVICES, health_status, list_services_v1};
use crate::common::metrics::{sample, scrape};
use crate::common::process::{Running, codeops, output};
use crate::common::{PASSWORD, TestDb, channel};

/// How long `dev` may take to serve (a private cluster runs initdb first).
const STARTUP: Duration = Duration::from_secs(90);
/// How long `dev` may take to stop after SIGTERM.
const SHUTDOWN: Duration = Duration::from_secs(30);

/// Three distinct ports that were free a moment ago.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect();
    [ports[0], ports[1], ports[2]]
}

fn dev_command(ports: [u16; 3]) -> tokio::process::Command {
    let mut command = codeops(["dev"]);
    command
        .env("CODEOPS_IDENTITY_PORT", ports[0].to_string())
        .env("CODEOPS_PLANNING_PORT", ports[1].to_string())
        .env("CODEOPS_DECISION_PORT", ports[2].to_string());
    command
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until health answers SERVING on all three ports.
async fn wait_until_serving(dev: &mut Running, ports: [u16; 3]) {
    let deadline = Instant::now() + STARTUP;
    let mut pending: Vec<u16> = ports.to_vec();
    while !pending.is_empty() {
        if let Some(status) = dev.try_status() {
            panic!(
                "codeops dev exited early with {status}\n{}",
                dev.transcript()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "codeops dev did not serve on {pending:?} within {STARTUP:?}\n{}",
                dev.transcript()
            );
        }
        let mut still = Vec::new();
        for port in pending {
            let serving = tokio::time::timeout(
                Duration::from_secs(5),
                health_status(channel(addr(port)), ""),
            )
            .await
            .is_ok_and(|r| r.is_ok_and(|s| s == ServingStatus::Serving));
            if !serving {
                still.push(port);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Checks what a user of `dev` sees: reflection, health and a login.
async fn assert_dev_serves(dev: &Running, ports: [u16; 3]) {
    let listed = list_services_v1(channel(addr(ports[0])))
        .await
        .unwrap_or_else(|s| {
            panic!(
                "reflection on the identity port: {s:?}\n{}",
                dev.transcript()
            )
        });
    for expected in IDENTITY_SERVICES.iter().chain([&HEALTH_SERVICE]) {
        assert!(
            listed.iter().any(|l| l == expected),
            "{expected} not listed: {listed:?}"
        );
    }
    for (port, service) in ports.iter().zip(Service::ALL) {
        for name in crate::common::grpc::services_of(service) {
            let status = health_status(channel(addr(*port)), name)
                .await
                .expect("health check");
            assert_eq!(status, ServingStatus::Serving, "{name} on port {port}");
        }
    }
    let login = AuthServiceClient::new(channel(addr(ports[0])))
        .login(LoginRequest {
            tenant_slug: "acme".into(),
            email: "alice@acme.test".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("alice cannot log in to dev: {s:?}\n{}", dev.transcript()))
        .into_inner();
    let tokens = login.tokens.expect("tokens");
    assert!(!tokens.access_token.is_empty());
}

/// The metrics address `dev` printed answers for all three services, on
/// loopback like the gRPC ports.
async fn assert_one_metrics_endpoint_for_all_services(dev: &Running) {
    let line = dev
        .stdout()
        .into_iter()
        .find(|l| l.ends_with("/metrics"))
        .unwrap_or_else(|| {
            panic!(
                "dev did not print its metrics address\n{}",
                dev.transcript()
            )
        });
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert!(addr.ip().is_loopback(), "{addr}");
    let text = scrape(addr).await;
    for service in Service::ALL {
        assert_eq!(
            sample(
                &text,
                "codeops_db_pool_max_connections",
                &[("service", service.name())]
            ),
            Some(16.0),
            "{}: {text}",
            service.name()
        );
    }
}

/// SIGTERM, then a clean exit within `SHUTDOWN`.
async fn stop(dev: &mut Running) {
    dev.signal(libc::SIGTERM);
    let status = dev.wait(SHUTDOWN).await.unwrap_or_else(|| {
        panic!(
            "codeops dev still running {SHUTDOWN:?} after SIGTERM\n{}",
            dev.transcript()
        )
    });
    assert!(
        status.success(),
        "codeops dev exited with {status} after SIGTERM\n{}",
        dev.transcript()
    );
}

#[tokio::test]
async fn dev_with_database_url_migrates_seeds_and_serves() {
    let db = TestDb::empty().await;
    let ports = free_ports();
    let mut command = dev_command(ports);
    command.env("DATABASE_URL", &db.url);
    let mut dev = Running::spawn(command);

    wait_until_serving(&mut dev, ports).await;
    assert_dev_serves(&dev, ports).await;
    for port in ports {
        assert!(
            dev.stdout()
                .iter()
                .any(|l| l.contains(&format!("127.0.0.1:{port}"))),
            "dev did not print the address with port {port}\n{}",
            dev.transcript()
        );
    }
    assert_one_metrics_endpoint_for_all_services(&dev).await;
    stop(&mut dev).await;

    // It used the given database: migrated and seeded there.
    let pool = db.admin_pool().await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM core.users")
        .fetch_one(&pool)
        .await
        .expect("dev migrated the given database");
    assert_eq!(users, 6, "dev seeded the given database");
    pool.close().await;
}

#[tokio::test]
async fn dev_without_database_url_runs_and_stops_a_private_cluster() {
    let ports = free_ports();
    let mut dev = Running::spawn(dev_command(ports));

    let line = dev
        .wait_for_stdout(STARTUP, |l| l.starts_with("private PostgreSQL at "))
        .await
        .unwrap_or_else(|| {
            panic!(
                "dev did not report its private cluster\n{}",
                dev.transcript()
            )
        });
    let pg_port: u16 = line
        .trim_start_matches("private PostgreSQL at 127.0.0.1:")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let pid = dev.pid();

    wait_until_serving(&mut dev, ports).await;
    assert_dev_serves(&dev, ports).await;
    assert!(
        TcpStream::connect(addr(pg_port)).is_ok(),
        "the private cluster does not accept connections while dev runs"
    );
    stop(&mut dev).await;

    assert!(
        dev.stdout()
            .iter()
            .any(|l| l.contains("private PostgreSQL stopped")),
        "dev did not report stopping its cluster\n{}",
        dev.transcript()
    );
    assert!(
        TcpStream::connect_timeout(&addr(pg_port), Duration::from_secs(2)).is_err(),
        "the private cluster still accepts connections on {pg_port} after dev stopped"
    );
    let prefix = format!("codeops-dev-{pid}-");
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "the private cluster's data folder was left behind: {left:?}"
    );
}

fn stderr_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn migrate_with_an_unreachable_database_fails_with_one_line() {
    let mut command = codeops(["migrate"]);
    command.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nope");
    let output = output(command, Duration::from_secs(60)).await;
    let lines = stderr_lines(&output);
    assert!(
        !output.status.success(),
        "migrate succeeded against a closed port"
    );
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {lines:#?}"
    );
    let line = &lines[0];
    assert!(line.starts_with("codeops:"), "{line}");
    assert!(
        line.to_lowercase().contains("database"),
        "does not mention the database: {line}"
    );
    assert!(
        line.contains("127.0.0.1:1"),
        "does not say which server: {line}"
    );
    assert!(!line.contains("panicked"), "{line}");
}

#[tokio::test]
async fn serve_all_on_a_taken_port_fails_with_one_line() {
    let db = TestDb::empty().await;
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let taken_port = taken.local_addr().expect("local addr").port();
    let [_, planning, decision] = free_ports();
    let key = KeyPair::generate().expect("key pair").private_key_pem();

    let mut command = codeops(["serve", "all"]);
    command
        .env("DATABASE_URL", &db.url)
        .env("CODEOPS_HOST", "127.0.0.1")
        .env("CODEOPS_IDENTITY_PORT", taken_port.to_string())
        .env("CODEOPS_PLANNING_PORT", planning.to_string())
        .env("CODEOPS_DECISION_PORT", decision.to_string())
        .env("CODEOPS_JWT_PRIVATE_KEY", key);
    let output = output(command, Duration::from_secs(60)).await;
    drop(taken);

    let lines = stderr_lines(&output);
    assert!(
        !output.status.success(),
        "serve all succeeded on a taken port"
    );
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {lines:#?}"
    );
    let line = &lines[0];
    assert!(line.starts_with("codeops:"), "{line}");
    assert!(
        line.contains(&taken_port.to_string()),
        "does not mention port {taken_port}: {line}"
    );
    assert!(!line.contains("panicked"), "{line}");
}

#[tokio::test]
async fn serve_refuses_an_empty_operator_token() {
    let db = TestDb::empty().await;
    let [identity, planning, decision] = free_ports();
    let key = KeyPair::generate().expect("key pair").private_key_pem();
    let mut command = codeops(["serve", "all"]);
    command
        .env("DATABASE_URL", &db.url)
        .env("CODEOPS_HOST", "127.0.0.1")
        .env("CODEOPS_IDENTITY_PORT", identity.to_string())
        .env("CODEOPS_PLANNING_PORT", planning.to_string())
        .env("CODEOPS_DECISION_PORT", decision.to_string())
        .env("CODEOPS_JWT_PRIVATE_KEY", key)
        .env("CODEOPS_OPERATOR_TOKEN", "");
    let output = output(command, Duration::from_secs(60)).await;
    let lines = stderr_lines(&output);
    assert!(
        !output.status.success(),
        "serve all started with an empty operator token"
    );
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {lines:#?}"
    );
    assert!(lines[0].contains("CODEOPS_OPERATOR_TOKEN"), "{}", lines[0]);
}

#[tokio::test]
async fn on_sigterm_health_turns_not_serving_while_calls_are_still_served_for_the_pre_stop_delay() {
    let db = TestDb::empty().await;
    let ports = free_ports();
    let mut command = dev_command(ports);
    command
        .env("DATABASE_URL", &db.url)
        .env("CODEOPS_SHUTDOWN_DELAY_SECS", "3");
    let mut dev = Running::spawn(command);
    wait_until_serving(&mut dev, ports).await;

    dev.signal(libc::SIGTERM);
    let identity = channel(addr(ports[0]));
    let mut not_serving = false;
    for _ in 0..40 {
        if health_status(identity.clone(), "").await.ok() == Some(ServingStatus::NotServing) {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        not_serving,
        "health stayed SERVING after SIGTERM\n{}",
        dev.transcript()
    );
    // Reported NOT_SERVING, yet still answering: endpoints have time to update.
    let login = AuthServiceClient::new(identity)
        .login(LoginRequest {
            tenant_slug: "acme".into(),
            email: "alice@acme.test".into(),
            password: PASSWORD.into(),
        })
        .await;
    assert!(
        login.is_ok(),
        "a call during the pre-stop delay failed: {login:?}"
    );

    let status = dev.wait(SHUTDOWN).await.unwrap_or_else(|| {
        panic!(
            "codeops dev did not stop after its pre-stop delay\n{}",
            dev.transcript()
        )
    });
    assert!(status.success(), "exit {status}\n{}", dev.transcript());
}
