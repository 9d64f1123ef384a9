//! Running the `codeops` binary from tests.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Environment variables the binary reads; cleared so that the caller's
/// environment cannot change what a test sees.
pub const CONFIG_VARS: &[&str] = &[
    "DATABASE_URL",
    "CODEOPS_DB_ROLE",
    "CODEOPS_DB_SET_ROLE",
    "CODEOPS_DB_MAX_CONNECTIONS",
    "CODEOPS_HOST",
    "CODEOPS_IDENTITY_PORT",
    "CODEOPS_PLANNING_PORT",
    "CODEOPS_DECISION_PORT",
    "CODEOPS_METRICS_HOST",
    "CODEOPS_METRICS_PORT",
    "CODEOPS_TRUSTED_PROXIES",
    "CODEOPS_MAX_REQUEST_BYTES",
    "CODEOPS_MAX_RESPONSE_BYTES",
    "CODEOPS_REQUEST_TIMEOUT_SECS",
    "CODEOPS_SHUTDOWN_DELAY_SECS",
    "CODEOPS_SHUTDOWN_GRACE_SECS",
    "CODEOPS_MAX_CONNECTION_AGE_SECS",
    "CODEOPS_MAX_CONNECTION_AGE_GRACE_SECS",
    "CODEOPS_TLS_CERT",
    "CODEOPS_TLS_KEY",
    "CODEOPS_SLA_SWEEP_SECS",
    "CODEOPS_OWNER_PASSWORD",
    "CODEOPS_JWT_PRIVATE_KEY",
    "CODEOPS_JWT_PUBLIC_KEY",
    "CODEOPS_JWT_ISSUER",
    "CODEOPS_JWT_AUDIENCE",
    "CODEOPS_ACCESS_TOKEN_TTL_SECS",
    "CODEOPS_REFRESH_TOKEN_TTL_SECS",
    "CODEOPS_OPERATOR_TOKEN",
    "CODEOPS_SERVICE_TOKEN",
    "CODEOPS_IDENTITY_URL",
    "CODEOPS_REVOCATION_POLL_SECS",
    "CODEOPS_ACCESS_TOKEN_MAX_TTL_SECS",
    "CODEOPS_BCRYPT_COST",
    "CODEOPS_BCRYPT_THREADS",
    "CODEOPS_LOG_FORMAT",
    "RUST_LOG",
];

/// `codeops <args>` with a clean configuration environment, its metrics on
/// a free port (tests run side by side; the default 9090 would clash).
pub fn codeops<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_codeops"));
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for var in CONFIG_VARS {
        command.env_remove(var);
    }
    command.env("CODEOPS_METRICS_PORT", "0");
    command
}

/// Runs a command that is expected to end by itself, within `timeout`.
pub async fn output(mut command: Command, timeout: Duration) -> std::process::Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("spawn codeops");
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("codeops did not exit within {timeout:?}"))
        .expect("wait for codeops")
}

type Lines = Arc<Mutex<Vec<String>>>;

/// A long-running `codeops` process whose output is collected line by line.
pub struct Running {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Running {
    pub fn spawn(mut command: Command) -> Running {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn codeops");
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lines").clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }

    /// Both outputs, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    /// `Some(status)` once the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// The first stdout line matching `pred`, waiting up to `timeout`.
    pub async fn wait_for_stdout(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stdout().into_iter().find(|l| pred(l)) {
                return Some(line);
            }
            if Instant::now() > deadline || self.try_status().is_some() {
                // One more look: the line may have arrived with the exit.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return self.stdout().into_iter().find(|l| pred(l));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The exit status, or `None` if still running after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()?;
        let status = status.expect("wait for codeops");
        // Let the readers drain what was written before the exit.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some(status)
    }
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static) -> Lines {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!("codeops| {line}");
            }
            sink.lock().expect("output lines").push(line);
        }
    });
    lines
}
