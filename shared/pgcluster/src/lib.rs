//! A private PostgreSQL cluster started from the machine's own binaries
//! (`initdb`, `postgres` on PATH or under `/usr/lib/postgresql/*/bin`), in
//! a data folder of its own, on a free loopback port.
//!
//! PostgreSQL refuses to run as root, so as root the cluster runs as the
//! `postgres` user (or `nobody`). The server process is told to stop when
//! the thread that started it dies (`PR_SET_PDEATHSIG`); that thread lives
//! as long as the process, so a crashed or killed parent never leaves a
//! server behind.

use std::ffi::CString;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or under /usr/lib/postgresql/*/bin; \
         install PostgreSQL or set DATABASE_URL"
    )]
    BinariesNotFound,
    #[error("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")]
    NoUnprivilegedUser,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("PostgreSQL did not accept connections within {0:?}; log: {1}")]
    NotReady(Duration, String),
}

fn step(step: &'static str) -> impl Fn(std::io::Error) -> ClusterError {
    move |e| ClusterError::Step {
        step,
        detail: e.to_string(),
    }
}

/// A running private cluster. `stop` (or drop) shuts it down and removes
/// its data folder.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    pid: u32,
    exited: mpsc::Receiver<()>,
}

impl Cluster {
    /// initdb + start. `name` prefixes the data folder in the temp dir.
    pub fn start(name: &str) -> Result<Cluster, ClusterError> {
        let bin = find_binaries()?;
        let user = run_as()?;
        let dir = std::env::temp_dir().join(format!("{name}-{}-{}", std::process::id(), unique()));
        let data = dir.join("data");
        fs::create_dir_all(&data).map_err(step("creating the data folder"))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(step("chmod data folder"))?;
        if let Some((uid, gid)) = user {
            chown_recursive(&dir, uid, gid)?;
        }

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir(&dir)
            .stdin(Stdio::null());
        as_user(&mut initdb, user);
        let out = initdb.output().map_err(step("running initdb"))?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&dir);
            return Err(ClusterError::Step {
                step: "initdb",
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }

        let port = free_port()?;
        let log = dir.join("postgres.log");
        let log_file = fs::File::create(&log).map_err(step("creating the server log"))?;
        if let Some((uid, gid)) = user {
            chown(&log, uid, gid)?;
        }
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=128MB",
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(step("opening the server log"))?,
            )
            .stderr(log_file);
        as_user(&mut postgres, user);
        // SIGINT is PostgreSQL's "fast shutdown".
        unsafe {
            postgres.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }

        // The starting thread must outlive the server (see the module doc).
        let (started_tx, started_rx) = mpsc::channel();
        let (exited_tx, exited_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{name}-postgres"))
            .spawn(move || match postgres.spawn() {
                Ok(mut child) => {
                    let _ = started_tx.send(Ok(child.id()));
                    let _ = wait(&mut child);
                    let _ = exited_tx.send(());
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            })
            .map_err(step("starting the server thread"))?;
        let pid = started_rx
            .recv()
            .map_err(|_| ClusterError::Step {
                step: "starting postgres",
                detail: "server thread ended".into(),
            })?
            .map_err(step("starting postgres"))?;

        let cluster = Cluster {
            dir,
            port,
            pid,
            exited: exited_rx,
        };
        cluster.wait_ready(Duration::from_secs(60), &log)?;
        Ok(cluster)
    }

    fn wait_ready(&self, timeout: Duration, log: &Path) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited.try_recv().is_ok() {
                break;
            }
            // Accepting TCP is not enough: the server also has to be out of
            // startup recovery. A readiness file appears in postmaster.pid.
            let pid_file =
                fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap_or_default();
            if pid_file.lines().nth(7).is_some_and(|l| l.trim() == "ready")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tail = fs::read_to_string(log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        Err(ClusterError::NotReady(timeout, tail))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Superuser URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Superuser URL of another database of the cluster.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Fast shutdown, then the data folder goes.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGINT);
        }
        let _ = self.exited.recv_timeout(Duration::from_secs(30));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn wait(child: &mut Child) -> std::io::Result<()> {
    child.wait().map(|_| ())
}

fn unique() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(step("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(step("finding a free port"))?
        .port())
}

/// The folder holding `initdb` and `postgres`.
pub fn find_binaries() -> Result<PathBuf, ClusterError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(ClusterError::BinariesNotFound)
}

/// `None`: run as ourselves. `Some`: we are root; run as this uid/gid.
fn run_as() -> Result<Option<(u32, u32)>, ClusterError> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        let cname = CString::new(name).expect("no NUL in user names");
        let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
        if !pw.is_null() {
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Ok(Some((uid, gid)));
        }
    }
    Err(ClusterError::NoUnprivilegedUser)
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), ClusterError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(step("chown data folder"))
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> Result<(), ClusterError> {
    chown(path, uid, gid)?;
    if path.is_dir() {
        for entry in fs::read_dir(path).map_err(step("chown data folder"))? {
            chown_recursive(&entry.map_err(step("chown data folder"))?.path(), uid, gid)?;
        }
    }
    Ok(())
}
