//! Password hashing: bcrypt on a small pool of its own low-priority
//! threads, never on the async workers, so logins cannot starve the rest of
//! the service of CPU.
//!
//! Measured on 2 cores (benches/login_load.rs): with hashes on tokio's
//! blocking pool, as many as there are cores, eight clients logging in
//! continuously raised a cheap RPC's p99 five-fold, because both cores were
//! busy hashing. One hashing thread below the other threads' priority
//! leaves a core, and the scheduler's favour, to everything else.
//!
//! Two more properties matter under attack:
//!
//! * **Every failed login check costs the same bcrypt work**, whatever the
//!   account: unknown, wrong password, deactivated, tenant closed, and
//!   whatever cost its stored hash was made with. bcrypt's work doubles
//!   with each cost step, so a check against a cost-10 hash takes 64 times
//!   one at cost 4. Failures are therefore padded up to the *work cost*: the
//!   configured cost, or the highest cost of any stored hash seen, if
//!   higher (see `Hasher::note_stored_cost`).
//! * **The queue is fair between client addresses.** Jobs wait in one lane
//!   per address and the threads serve lanes in turn, so a flood from one
//!   address delays another address's next job by at most one of its own.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use codeops_platform::{ApiError, Violations};
use tokio::sync::oneshot;

use crate::throttle::ClientAddr;

/// bcrypt reads at most 72 bytes; longer passwords are rejected rather
/// than silently truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Niceness of the hashing threads (19 is the lowest priority).
const HASH_THREAD_NICE: libc::c_int = 19;

/// Hashes waiting for a thread at most, over all lanes; past that, callers
/// get RESOURCE_EXHAUSTED at once instead of queueing for minutes.
const QUEUE_CAPACITY: usize = 256;
/// The work cost follows stored hashes up to the highest cost
/// `CODEOPS_BCRYPT_COST` accepts. A stored hash above it (imported from
/// elsewhere) is still checked, but failures are not padded to it: one
/// such hash must not make every login in the process take minutes.
const MAX_WORK_COST: u32 = 16;
/// Salt of the padding hashes: their result is thrown away, only the work
/// counts, so it need not be random.
const PADDING_SALT: [u8; 16] = *b"codeops-padding!";

type Job = Box<dyn FnOnce() + Send>;

/// Whose hashing a job is, for the fair queue.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Lane {
    /// The service's own work: passwords set by an administrator, or
    /// checked and changed for a user already logged in.
    Service,
    /// A login from this client address.
    Client(ClientAddr),
}

pub struct Hasher {
    cost: u32,
    queue: Arc<FairQueue>,
    /// What a failed check costs: max(configured cost, highest stored cost
    /// seen), at most `MAX_WORK_COST`. Only grows, for the life of the
    /// process: lowering it again would reopen the timing difference for
    /// any account still on the costlier hash.
    work_cost: AtomicU32,
}

/// Hashing threads when none are configured: all cores but one.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    cores.saturating_sub(1).max(1)
}

/// The cost a bcrypt hash was made with (`$2b$10$…` → 10).
pub fn hash_cost(hash: &str) -> Option<u32> {
    let mut parts = hash.split('$');
    let (empty, version, cost) = (parts.next()?, parts.next()?, parts.next()?);
    (empty.is_empty() && version.starts_with('2') && cost.len() == 2)
        .then(|| cost.parse().ok())
        .flatten()
}

impl Hasher {
    /// `threads`: how many hashes may run at once (0: all cores but one).
    pub fn new(cost: u32, threads: usize) -> Self {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        let queue = Arc::new(FairQueue::default());
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("bcrypt-{i}"))
                .spawn(move || {
                    lower_priority();
                    // Ends when the Hasher is dropped and the queue drained.
                    while let Some(job) = queue.pop() {
                        // A panicking job drops its answer channel (the
                        // caller gets an internal error); the thread stays.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })
                .expect("spawning a bcrypt thread");
        }
        Self {
            cost,
            queue,
            work_cost: AtomicU32::new(cost),
        }
    }

    /// Whether a stored hash was made with another cost than the current
    /// one; login re-hashes those at the current cost.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        hash_cost(hash) != Some(self.cost)
    }

    /// Raises the work cost to a stored hash's cost, so that from now on
    /// every failed check costs as much as checking that hash. Login calls
    /// this with the highest cost in the tenant before checking anything.
    pub fn note_stored_cost(&self, stored_cost: u32) {
        let cost = stored_cost.min(MAX_WORK_COST);
        let before = self.work_cost.fetch_max(cost, Ordering::Relaxed);
        if cost > before {
            tracing::info!(
                configured = self.cost,
                work_cost = cost,
                "stored password hashes cost more than configured: failed logins now take as long as one of them"
            );
        }
    }

    /// A new hash at the configured cost, for the service's own work.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.hash_in(Lane::Service, password).await
    }

    /// A new hash at the configured cost, queued in `lane`.
    pub async fn hash_in(&self, lane: Lane, password: String) -> Result<String, ApiError> {
        let cost = self.cost;
        self.run(lane, move || bcrypt::hash(password, cost)).await
    }

    /// Checks a password against `hash`, or against nothing when there is
    /// no account (the answer is then always false), at the cost of a
    /// failed login check.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        self.check_login(Lane::Service, password, hash, true).await
    }

    /// The password check of a login: whether `password` matches
    /// `stored_hash`. `eligible`: whether the account may log in at all
    /// (exists, active, tenant open).
    ///
    /// Unless the login succeeds, the check costs exactly one bcrypt hash
    /// at the work cost, whatever the stored hash's cost: a stored hash of
    /// cost `s` below the work cost `w` is verified (2^s rounds), then
    /// padded with throw-away hashes at costs s, s+1, …, w-1, which adds
    /// 2^w - 2^s rounds. An unknown account pays one hash at cost w. A
    /// success is not padded: its answer already tells the caller all.
    pub async fn check_login(
        &self,
        lane: Lane,
        password: String,
        stored_hash: Option<String>,
        eligible: bool,
    ) -> Result<bool, ApiError> {
        if let Some(cost) = stored_hash.as_deref().and_then(hash_cost) {
            self.note_stored_cost(cost);
        }
        let work_cost = self.work_cost.load(Ordering::Relaxed);
        self.run(lane, move || {
            Ok(check_padded(
                &password,
                stored_hash.as_deref(),
                eligible,
                work_cost,
            ))
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
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
        self.queue.push(lane, job)?;
        result
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// See `Hasher::check_login`. Runs on a hashing thread.
fn check_padded(password: &str, stored_hash: Option<&str>, eligible: bool, work_cost: u32) -> bool {
    // The stored hash's cost, when it is a hash bcrypt could check.
    let verified = stored_hash.and_then(|hash| {
        let matches = bcrypt::verify(password, hash).ok()?;
        Some((matches, hash_cost(hash)?))
    });
    match verified {
        Some((true, _)) if eligible => true,
        Some((matches, spent)) => {
            for cost in spent..work_cost {
                burn(password, cost);
            }
            matches
        }
        None => {
            burn(password, work_cost);
            false
        }
    }
}

/// One bcrypt hash at `cost` whose result nobody needs.
fn burn(password: &str, cost: u32) {
    let _ = std::hint::black_box(bcrypt::hash_with_salt(password, cost, PADDING_SALT));
}

/// Jobs waiting for a hashing thread, one lane per client address, served
/// in turn.
#[derive(Default)]
struct FairQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    lanes: HashMap<Lane, VecDeque<Job>>,
    /// Lanes with jobs, in the order they are served.
    turns: VecDeque<Lane>,
    queued: usize,
    closed: bool,
}

impl FairQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Jobs run outside the lock: a poisoned lock has consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, lane: Lane, job: Job) -> Result<(), ApiError> {
        let mut state = self.lock();
        if state.closed {
            return Err(ApiError::internal(std::io::Error::other(
                "bcrypt threads stopped",
            )));
        }
        if state.queued >= QUEUE_CAPACITY {
            return Err(ApiError::throttled(
                "PASSWORD_CHECKS_BUSY",
                "too many password checks in progress; retry shortly",
                std::time::Duration::from_secs(1),
            ));
        }
        let jobs = state.lanes.entry(lane).or_default();
        jobs.push_back(job);
        if jobs.len() == 1 {
            state.turns.push_back(lane);
        }
        state.queued += 1;
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, its lane's turn ending; blocks while there is none.
    /// `None` once closed and drained.
    fn pop(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(lane) = state.turns.pop_front() {
                let jobs = state.lanes.get_mut(&lane)?;
                let job = jobs.pop_front();
                if jobs.is_empty() {
                    state.lanes.remove(&lane);
                } else {
                    state.turns.push_back(lane);
                }
                state.queued -= 1;
                return job;
            }
            if state.closed {
                return None;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn client(last: u8) -> Lane {
        Lane::Client(ClientAddr::from_peer(Some(&format!("10.0.0.{last}"))))
    }

    #[test]
    fn hash_cost_reads_the_cost_field() {
        assert_eq!(hash_cost("$2b$10$abcdefghijklmnopqrstuu"), Some(10));
        assert_eq!(hash_cost("$2a$04$x"), Some(4));
        assert_eq!(hash_cost("plain"), None);
        assert_eq!(hash_cost("$argon2id$v=19$m=1"), None);
    }

    #[test]
    fn padding_is_skipped_only_for_a_success() {
        let hash = bcrypt::hash("right-password", 4).unwrap();
        assert!(check_padded("right-password", Some(&hash), true, 5));
        assert!(!check_padded("wrong-password", Some(&hash), true, 5));
        assert!(
            check_padded("right-password", Some(&hash), false, 5),
            "a matching password of an ineligible account still matches"
        );
        assert!(!check_padded("right-password", None, true, 5));
        assert!(!check_padded("right-password", Some("not a hash"), true, 5));
    }

    #[test]
    fn the_queue_serves_lanes_in_turn() {
        let queue = FairQueue::default();
        let (order, served) = mpsc::channel();
        for i in 0..5 {
            let order = order.clone();
            queue
                .push(client(1), Box::new(move || order.send((1, i)).unwrap()))
                .unwrap();
        }
        for i in 0..2 {
            let order = order.clone();
            queue
                .push(client(2), Box::new(move || order.send((2, i)).unwrap()))
                .unwrap();
        }
        queue.close();
        while let Some(job) = queue.pop() {
            job();
        }
        let lanes: Vec<u8> = served.try_iter().map(|(lane, _)| lane).collect();
        assert_eq!(lanes, [1, 2, 1, 2, 1, 1, 1]);
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let queue = FairQueue::default();
        for _ in 0..QUEUE_CAPACITY {
            queue.push(Lane::Service, Box::new(|| {})).unwrap();
        }
        assert!(matches!(
            queue.push(client(1), Box::new(|| {})),
            Err(ApiError::ResourceExhausted { .. })
        ));
    }

    #[tokio::test]
    async fn the_work_cost_follows_the_costliest_stored_hash() {
        let hasher = Hasher::new(4, 1);
        let cheap = bcrypt::hash("password-1", 4).unwrap();
        let dear = bcrypt::hash("password-1", 6).unwrap();
        assert!(!hasher.needs_rehash(&cheap));
        assert!(hasher.needs_rehash(&dear));
        assert!(
            hasher
                .check_login(client(1), "password-1".into(), Some(dear), true)
                .await
                .unwrap()
        );
        assert_eq!(hasher.work_cost.load(Ordering::Relaxed), 6);
        assert!(!hasher.verify("password-1".into(), None).await.unwrap());
        hasher.note_stored_cost(31);
        assert_eq!(hasher.work_cost.load(Ordering::Relaxed), MAX_WORK_COST);
    }
}
