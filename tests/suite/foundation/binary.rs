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
use crate::common::{PASSWORD, TestDb, channel, free_port};

/// How long `dev` may take to serve (a private cluster runs initdb first).
const STARTUP: Duration = Duration::from_secs(90);
/// How long `dev` may take to stop after SIGTERM.
const SHUTDOWN: Duration = Duration::from_secs(30);

/// Three distinct ports that were free a moment ago.
fn free_ports() -> [u16; 3] {
    [free_port(), free_port(), free_port()]
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

#[tokio::test]
async fn bad_configuration_is_one_line_naming_the_variable_and_a_non_zero_exit() {
    let missing_file = std::env::temp_dir().join("codeops-no-such-key.pem");
    let cases: &[(&str, &str, &str)] = &[
        (
            "CODEOPS_SHUTDOWN_GRACE_SECS",
            "abc",
            r#"expected a number of seconds from 0 to 3600, got "abc""#,
        ),
        ("CODEOPS_IDENTITY_PORT", "99999", r#"got "99999""#),
        ("CODEOPS_HOST", "nowhere", "expected an IP address"),
        ("CODEOPS_DB_MAX_CONNECTIONS", "0", "expected a whole number"),
        ("CODEOPS_MAX_CONNECTION_AGE_SECS", "-1", "seconds"),
        ("CODEOPS_LOG_FORMAT", "xml", "expected one of text, json"),
        ("CODEOPS_DB_SET_ROLE", "maybe", "expected true or false"),
        ("CODEOPS_REVOCATION_POLL_SECS", "31", "from 1 to 30"),
        (
            "CODEOPS_JWT_PRIVATE_KEY",
            missing_file.to_str().expect("utf-8 temp dir"),
            "could not read",
        ),
        (
            "CODEOPS_TLS_CERT",
            "-----BEGIN CERTIFICATE-----",
            "without CODEOPS_TLS_KEY",
        ),
        ("CODEOPS_IDENTITY_URL", "identity:50051", "expected an http"),
        (
            "CODEOPS_IDENTITY_URL",
            "https://identity:50051",
            "https:// is not supported",
        ),
        (
            "CODEOPS_TRUSTED_PROXIES",
            "10.0.0.0/8,sidecar",
            r#"CODEOPS_TRUSTED_PROXIES: expected IP addresses or CIDR blocks such as 10.0.0.0/8, got "sidecar""#,
        ),
        (
            "DATABASE_URL",
            "mysql://db/codeops",
            "expected a postgres:// URL",
        ),
        ("RUST_LOG", "info,codeops=loud", "expected a log filter"),
    ];
    for (variable, value, expected) in cases {
        let mut command = codeops(["serve", "all"]);
        // Nothing listens on port 1: nothing is reached before the check.
        command
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
            .env("CODEOPS_HOST", "127.0.0.1")
            .env(variable, value);
        let output = output(command, Duration::from_secs(30)).await;
        let lines = stderr_lines(&output);
        assert!(
            !output.status.success(),
            "{variable}={value:?} started: {lines:#?}"
        );
        assert_eq!(
            lines.len(),
            1,
            "{variable}={value:?}: expected one line on stderr, got {lines:#?}"
        );
        let line = &lines[0];
        assert!(
            line.starts_with(&format!("codeops: {variable}")),
            "{variable}={value:?}: the line does not start with the variable: {line}"
        );
        assert!(line.contains(expected), "{variable}={value:?}: {line}");
        assert!(!line.contains("panicked"), "{line}");
        assert!(
            !output.status.success() && output.status.code().is_some(),
            "{variable}: {:?}",
            output.status
        );
    }
}

/// The current assignee of a seeded decision, and another acme user to
/// assign it to.
async fn reassignment(pool: &sqlx::PgPool, decision: uuid::Uuid) -> String {
    let current: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT assigned_to_id FROM core.decisions WHERE id = $1")
            .bind(decision)
            .fetch_one(pool)
            .await
            .expect("the seeded decision");
    let other = if current == Some(crate::common::ids::BOB) {
        crate::common::ids::CAROL
    } else {
        crate::common::ids::BOB
    };
    other.to_string()
}

#[tokio::test]
async fn sigterm_lets_in_flight_calls_and_an_open_stream_finish_then_exits_0() {
    use codeops_proto::decision::decision_service_client::DecisionServiceClient;
    use codeops_proto::decision::{
        AssignDecisionRequest, DecisionEventType, WatchDecisionsRequest,
    };
    use uuid::uuid;

    const DELAY: Duration = Duration::from_secs(2);
    // Seeded open acme decisions.
    const FIRST: uuid::Uuid = uuid!("ffffffff-ffff-ffff-ffff-fffffffff001");
    const SECOND: uuid::Uuid = uuid!("ffffffff-ffff-ffff-ffff-fffffffff002");

    let db = TestDb::empty().await;
    let ports = free_ports();
    let mut command = dev_command(ports);
    command
        .env("DATABASE_URL", &db.url)
        .env("CODEOPS_SHUTDOWN_DELAY_SECS", DELAY.as_secs().to_string())
        .env("CODEOPS_SHUTDOWN_GRACE_SECS", "20");
    let mut dev = Running::spawn(command);
    wait_until_serving(&mut dev, ports).await;
    let pool = db.admin_pool().await;

    let login = AuthServiceClient::new(channel(addr(ports[0])))
        .login(LoginRequest {
            tenant_slug: "acme".into(),
            email: "alice@acme.test".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner();
    let token = login.tokens.expect("tokens").access_token;
    let decisions = DecisionServiceClient::new(channel(addr(ports[2])));
    let mut stream = decisions
        .clone()
        .watch_decisions(crate::common::bearer(
            WatchDecisionsRequest::default(),
            &token,
        ))
        .await
        .expect("WatchDecisions")
        .into_inner();

    // Two assignments held by row locks: the first is released during
    // the pre-stop delay, the second only after the ports stopped
    // accepting (in the grace period).
    let mut assignees = Vec::new();
    for decision in [FIRST, SECOND] {
        assignees.push(reassignment(&pool, decision).await);
    }
    let mut locks = Vec::new();
    let mut calls = Vec::new();
    for (decision, assignee) in [FIRST, SECOND].into_iter().zip(assignees) {
        let mut lock = pool.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM core.decisions WHERE id = $1 FOR UPDATE")
            .bind(decision)
            .execute(&mut *lock)
            .await
            .expect("lock the decision's row");
        locks.push(lock);
        let assign = AssignDecisionRequest {
            id: decision.to_string(),
            assigned_to_id: assignee,
            etag: String::new(),
        };
        let mut client = decisions.clone();
        let token = token.clone();
        calls.push(tokio::spawn(async move {
            client
                .assign_decision(crate::common::bearer(assign, &token))
                .await
        }));
    }
    // Both calls are waiting on their locks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "the calls did not wait"
    );

    dev.signal(libc::SIGTERM);
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut locks = locks.into_iter();
    locks
        .next()
        .expect("first lock")
        .commit()
        .await
        .expect("release the first lock");
    let first = calls.remove(0).await.expect("first call task");
    assert!(
        first.is_ok(),
        "the first in-flight call failed: {first:?}\n{}",
        dev.transcript()
    );

    // Its event reaches the stream opened before the signal.
    let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an event within 5 s")
        .expect("the stream goes on after SIGTERM")
        .expect("an event, not the end");
    assert_eq!(event.decision_id, FIRST.to_string());
    assert_eq!(
        DecisionEventType::try_from(event.event_type),
        Ok(DecisionEventType::Assigned)
    );
    assert!(
        signalled.elapsed() < DELAY,
        "the event came after the pre-stop delay"
    );

    // After the delay the stream ends cleanly; the second call still runs.
    let end = tokio::time::timeout(DELAY + Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends after the pre-stop delay");
    assert!(matches!(end, Ok(None)), "a clean end: {end:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(signalled.elapsed() > DELAY);
    assert!(!calls[0].is_finished(), "the second call ended early");
    assert!(dev.try_status().is_none(), "exited with a call in flight");
    locks
        .next()
        .expect("second lock")
        .commit()
        .await
        .expect("release the second lock");
    let second = calls.remove(0).await.expect("second call task");
    assert!(
        second.is_ok(),
        "the call in flight during the grace period failed: {second:?}\n{}",
        dev.transcript()
    );

    let status = dev.wait(SHUTDOWN).await.unwrap_or_else(|| {
        panic!(
            "codeops dev did not stop after its calls finished\n{}",
            dev.transcript()
        )
    });
    assert!(status.success(), "exit {status}\n{}", dev.transcript());
    pool.close().await;
}
