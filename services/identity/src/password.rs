//! Password hashing: bcrypt on a small pool of its own low-priority
//! threads, never on the async workers, so logins cannot starve the rest of
//! the service of CPU.
//!
//! Measured on 2 cores (benches/login_load.rs): with hashes on tokio's
//! blocking pool, as many as there are cores, eight clients logging in
//! continuously raised a cheap RPC's p99 five-fold, because both cores were
//! busy hashing. One hashing thread below the other threads' priority
//! leaves a core, and the scheduler's favour, to everything else.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use codeops_platform::{ApiError, Violations};
use tokio::sync::oneshot;

/// bcrypt reads at most 72 bytes; longer passwords are rejected rather
/// than silently truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Niceness of the hashing threads (19 is the lowest priority).
const HASH_THREAD_NICE: libc::c_int = 19;

/// Password checks waiting for a thread at most; past that, callers get
/// RESOURCE_EXHAUSTED at once instead of queueing for minutes.
const QUEUE_CAPACITY: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

pub struct Hasher {
    cost: u32,
    jobs: mpsc::SyncSender<Job>,
    /// Verified against when the account does not exist, so unknown users
    /// take as long as known ones.
    dummy_hash: String,
}

/// Hashing threads when none are configured: all cores but one.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    cores.saturating_sub(1).max(1)
}

impl Hasher {
    /// `threads`: how many hashes may run at once (0: all cores but one).
    pub fn new(cost: u32, threads: usize) -> Self {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE_CAPACITY);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("bcrypt-{i}"))
                .spawn(move || {
                    lower_priority();
                    // Ends when the Hasher, and so the sender, is dropped.
                    loop {
                        let job = queue.lock().map(|q| q.recv());
                        match job {
                            Ok(Ok(job)) => job(),
                            _ => break,
                        }
                    }
                })
                .expect("spawning a bcrypt thread");
        }
        Self {
            cost,
            jobs,
            dummy_hash: bcrypt::hash("codeops-dummy-password", cost)
                .expect("bcrypt cost is validated by config"),
        }
    }

    /// Whether a stored hash was made with another cost than the current
    /// one. Login re-hashes those, so every account costs the same to check
    /// and an unknown account (checked against the dummy hash at the
    /// current cost) cannot be told apart by timing.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        hash.split('$').nth(2).and_then(|c| c.parse::<u32>().ok()) != Some(self.cost)
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let cost = self.cost;
        self.run(move || bcrypt::hash(password, cost)).await
    }

    /// Verifies against `hash`, or against the dummy hash when there is no
    /// account (the answer is then always false).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = self
            .run(move || bcrypt::verify(password, &hash))
            .await
            .unwrap_or(false);
        Ok(ok && known)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (done, result) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            // The caller gave up (deadline, disconnect): skip the work.
            if !done.is_closed() {
                let _ = done.send(span.in_scope(work));
            }
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => ApiError::throttled(
                "PASSWORD_CHECKS_BUSY",
                "too many password checks in progress; retry shortly",
                std::time::Duration::from_secs(1),
            ),
            mpsc::TrySendError::Disconnected(_) => {
                ApiError::internal(std::io::Error::other("bcrypt threads stopped"))
            }
        })?;
        result
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }
}

/// Linux keeps a niceness per thread: this lowers the calling thread only.
fn lower_priority() {
    // SAFETY: setpriority has no memory effects; `who` 0 is this thread.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASH_THREAD_NICE) };
    if result != 0 {
        tracing::debug!("could not lower the bcrypt thread's priority");
    }
}

/// The password policy for new passwords.
pub fn check_new_password(v: &mut Violations, field: &str, password: &str, email: &str) {
    if password.len() > MAX_PASSWORD_BYTES {
        v.add(field, format!("must be at most {MAX_PASSWORD_BYTES} bytes"));
    } else if password.chars().count() < MIN_PASSWORD_CHARS {
        v.add(
            field,
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        );
    } else if password.chars().all(|c| password.starts_with(c)) {
        v.add(field, "must not repeat one character");
    } else if !email.is_empty() && password.eq_ignore_ascii_case(email) {
        v.add(field, "must not be the e-mail address");
    }
}
