//! Login throttling that stops whoever guesses, not the account they guess.
//!
//! Counting failures per account alone lets anyone lock any user out by
//! failing five times with their e-mail. Failed password checks are counted
//! three ways instead, per process (each replica keeps its own counts):
//!
//! * per account and client address: `PAIR_FREE_FAILURES` failures in a
//!   row, then a lock-out that doubles from 1 s up to `MAX_LOCKOUT` with
//!   every further failure; a success from that address clears it, and a
//!   quiet `PAIR_MEMORY` forgets it. This is the limit an attacker meets,
//!   and it does not touch the owner logging in from elsewhere.
//! * per account across addresses: `ACCOUNT_CEILING`, for guessing spread
//!   over many addresses. Addresses the account logged in from in the last
//!   `TRUST_FOR` are exempt, so even then its owner is not locked out.
//! * per address across accounts: `ADDRESS_CEILING`, for one password
//!   tried against many accounts (spraying). Exempt as above.
//!
//! On top, one address may have at most `MAX_CHECKS_PER_ADDRESS` checks in
//! flight, so a flood from one address cannot fill the hashing queue.
//!
//! An account is the normalised tenant slug and e-mail, whether or not it
//! exists, so the throttle itself reveals nothing. A refused attempt is
//! answered before any database or bcrypt work. Every table is capped at
//! `CAPACITY` entries; entries expire, and when a table is full the ones
//! closest to expiry go first.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use codeops_platform::Metrics;
use sha2::{Digest, Sha256};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Failures in a row for one account from one address before a lock-out.
const PAIR_FREE_FAILURES: u32 = 5;
/// The first lock-out; each further failure doubles it.
const FIRST_LOCKOUT: Duration = Duration::from_secs(1);
/// Lock-outs grow up to this: past it, one guess per 15 minutes.
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// An account and address pair without a failure for this long starts over.
const PAIR_MEMORY: Duration = Duration::from_secs(3600);
/// Failures per account from all addresses together.
const ACCOUNT_CEILING: Ceiling = Ceiling {
    failures: 100,
    window: Duration::from_secs(3600),
};
/// Failures per address over all accounts together.
const ADDRESS_CEILING: Ceiling = Ceiling {
    failures: 50,
    window: Duration::from_secs(3600),
};
/// Password checks one address may have running or queued at once.
const MAX_CHECKS_PER_ADDRESS: u32 = 8;
/// How long a successful login exempts its address from that account's
/// and that address's ceilings.
const TRUST_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// The wait suggested when only checks in flight stand in the way.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// Entries per table at most (about 100 bytes each).
const CAPACITY: usize = 100_000;

/// `failures` per `window`, drained continuously: a full ceiling admits
/// one more failure every `window / failures`.
#[derive(Clone, Copy)]
struct Ceiling {
    failures: u32,
    window: Duration,
}

impl Ceiling {
    /// Failures forgiven per second.
    fn rate(self) -> f64 {
        f64::from(self.failures) / self.window.as_secs_f64()
    }
}

// ---------------------------------------------------------------------------
// Who is trying

/// An account as the throttle knows it: a digest of the normalised tenant
/// slug and e-mail. Fixed-size, and no e-mail is kept in memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct AccountKey([u8; 16]);

impl AccountKey {
    fn new(tenant: &str, email: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(normalise(tenant).as_bytes())
            .chain_update([0])
            .chain_update(normalise(email).as_bytes())
            .finalize();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        AccountKey(key)
    }

    /// A short stable id for logs, to follow one account without its e-mail.
    fn log_id(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What login compares: surrounding whitespace and case do not make
/// another account.
fn normalise(text: &str) -> String {
    text.trim().to_lowercase()
}

/// Where attempts come from: the TCP peer's IP address. IPv6 counts per
/// /64, the block one subscriber usually holds; IPv4-mapped IPv6 as IPv4.
/// Attempts with no known peer share one address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ClientAddr(Option<IpAddr>);

impl ClientAddr {
    pub fn from_peer(peer_ip: Option<&str>) -> Self {
        let ip = peer_ip
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| match ip {
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
                },
                v4 => v4,
            });
        ClientAddr(ip)
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("unknown"),
        }
    }
}

/// The subject of one login attempt: the account tried and where from,
/// with what logs may say about them (never the password).
pub struct Who {
    account: AccountKey,
    addr: ClientAddr,
    tenant: String,
    masked_email: String,
}

impl Who {
    pub fn new(tenant: &str, email: &str, peer_ip: Option<&str>) -> Self {
        Who {
            account: AccountKey::new(tenant, email),
            addr: ClientAddr::from_peer(peer_ip),
            tenant: normalise(tenant),
            masked_email: mask_email(&normalise(email)),
        }
    }

    pub fn addr(&self) -> ClientAddr {
        self.addr
    }
}

/// `carol@acme.test` → `c***@acme.test`: enough to tell a typo from an
/// attack in the logs, not enough to list a tenant's users from them.
fn mask_email(email: &str) -> String {
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    let first: String = local.chars().take(1).collect();
    format!("{first}***@{domain}")
}

// ---------------------------------------------------------------------------
// Events: logged now, and the one place to count them in metrics

/// Why a password check failed; logged, never told to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    UnknownTenant,
    UnknownUser,
    WrongPassword,
    UserInactive,
    TenantClosed,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::UnknownTenant => "unknown_tenant",
            Failure::UnknownUser => "unknown_user",
            Failure::WrongPassword => "wrong_password",
            Failure::UserInactive => "user_inactive",
            Failure::TenantClosed => "tenant_closed",
        }
    }
}

/// Which limit refused an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Failures of this account from this address (or checks in flight).
    AccountAddress,
    /// Failures of this account from every address.
    Account,
    /// Failures from this address over every account.
    Address,
    /// Checks this address has in flight.
    AddressConcurrency,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::AccountAddress => "account_address",
            Limit::Account => "account_ceiling",
            Limit::Address => "address_ceiling",
            Limit::AddressConcurrency => "address_concurrency",
        }
    }
}

/// An attempt refused before its password was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Limit,
    pub retry_after: Duration,
}

impl Refusal {
    /// `RESOURCE_EXHAUSTED` saying when to retry: in the message, in a
    /// `RetryInfo` detail, and with the `ErrorInfo` reason `LOGIN_THROTTLED`.
    pub fn into_status(self) -> Status {
        let seconds = self.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut details = ErrorDetails::with_retry_info(Some(Duration::from_secs(seconds)));
        details.set_error_info(
            "LOGIN_THROTTLED",
            "codeops",
            [
                ("limit".to_owned(), self.limit.as_str().to_owned()),
                ("retry_after_seconds".to_owned(), seconds.to_string()),
            ],
        );
        Status::with_error_details(
            Code::ResourceExhausted,
            format!("too many failed password checks; retry in {seconds} s"),
            details,
        )
    }
}

/// Something the throttle saw.
pub enum LoginEvent<'a> {
    /// A password check failed.
    Failed { who: &'a Who, failure: Failure },
    /// A failure started a lock-out or filled a ceiling.
    LockedOut {
        who: &'a Who,
        limit: Limit,
        retry_after: Duration,
    },
    /// An attempt was refused before its password was checked.
    Refused { who: &'a Who, refusal: Refusal },
}

/// Where every login event goes: counted in the metrics
/// (`codeops_login_failures_total{reason}`,
/// `codeops_login_lockouts_total{limit}`,
/// `codeops_login_refusals_total{limit}`) and logged with structured fields,
/// never the password.
fn record(metrics: &Metrics, event: LoginEvent<'_>) {
    let (name, help, label, value) = match &event {
        LoginEvent::Failed { failure, .. } => (
            "codeops_login_failures_total",
            "Failed password checks (login and password change), by cause.",
            "reason",
            failure.as_str(),
        ),
        LoginEvent::LockedOut { limit, .. } => (
            "codeops_login_lockouts_total",
            "Lock-outs the login throttle started, by limit.",
            "limit",
            limit.as_str(),
        ),
        LoginEvent::Refused { refusal, .. } => (
            "codeops_login_refusals_total",
            "Password checks refused by the throttle before any work, by limit.",
            "limit",
            refusal.limit.as_str(),
        ),
    };
    metrics.counter(name, help, &[(label, value)]).inc();
    match event {
        LoginEvent::Failed { who, failure } => tracing::info!(
            tenant = ?who.tenant,
            email = ?who.masked_email,
            account = %who.account.log_id(),
            peer_ip = %who.addr,
            reason = failure.as_str(),
            "login failed"
        ),
        LoginEvent::LockedOut {
            who,
            limit,
            retry_after,
        } => tracing::warn!(
            tenant = ?who.tenant,
            email = ?who.masked_email,
            account = %who.account.log_id(),
            peer_ip = %who.addr,
            reason = limit.as_str(),
            retry_after_secs = retry_after.as_secs(),
            "login lock-out"
        ),
        // Every refused attempt of a flood would flood the logs too: the
        // lock-out that causes them is logged once, at warn.
        LoginEvent::Refused { who, refusal } => tracing::debug!(
            tenant = ?who.tenant,
            email = ?who.masked_email,
            account = %who.account.log_id(),
            peer_ip = %who.addr,
            reason = refusal.limit.as_str(),
            retry_after_secs = refusal.retry_after.as_secs(),
            "login refused by the throttle"
        ),
    }
}

// ---------------------------------------------------------------------------
// The counts

#[derive(Default)]
pub struct LoginThrottle {
    state: Mutex<State>,
    metrics: Metrics,
}

#[derive(Default)]
struct State {
    pairs: HashMap<(AccountKey, ClientAddr), Pair>,
    accounts: HashMap<AccountKey, Bucket>,
    addresses: HashMap<ClientAddr, Bucket>,
}

/// One account from one address.
#[derive(Default)]
struct Pair {
    /// Failures in a row.
    failures: u32,
    in_flight: u32,
    last_failure: Option<Instant>,
    locked_until: Option<Instant>,
    /// Set by a success: exempts this address from the ceilings.
    trusted_until: Option<Instant>,
}

/// Failures under a `Ceiling`, drained continuously, plus checks in flight.
struct Bucket {
    level: f64,
    drained_at: Instant,
    in_flight: u32,
}

/// What the expiry sweep needs to know of an entry.
#[derive(Clone, Copy)]
struct Life {
    in_flight: u32,
    /// When the entry has nothing left to remember; `None`: already.
    until: Option<Instant>,
}

impl Life {
    fn expired(self, now: Instant) -> bool {
        self.in_flight == 0 && self.until.is_none_or(|at| at <= now)
    }
}

impl Pair {
    fn trusted(&self, now: Instant) -> bool {
        self.trusted_until.is_some_and(|t| t > now)
    }

    fn locked_for(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|wait| !wait.is_zero())
    }

    /// Failures older than `PAIR_MEMORY` no longer count.
    fn forget_old_failures(&mut self, now: Instant) {
        if self
            .last_failure
            .is_some_and(|at| now.saturating_duration_since(at) >= PAIR_MEMORY)
        {
            self.failures = 0;
            self.last_failure = None;
            self.locked_until = None;
        }
    }

    /// Checks that may run at once: the failures still free, and after a
    /// lock-out one at a time, so concurrent guesses cannot overshoot.
    fn allowance(&self) -> u32 {
        PAIR_FREE_FAILURES.saturating_sub(self.failures).max(1)
    }

    fn life(&self) -> Life {
        let until = [
            self.last_failure.map(|at| at + PAIR_MEMORY),
            self.locked_until,
            self.trusted_until,
        ]
        .into_iter()
        .flatten()
        .max();
        Life {
            in_flight: self.in_flight,
            until,
        }
    }
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Bucket {
            level: 0.0,
            drained_at: now,
            in_flight: 0,
        }
    }

    fn drain(&mut self, ceiling: Ceiling, now: Instant) {
        let elapsed = now.saturating_duration_since(self.drained_at).as_secs_f64();
        self.level = (self.level - elapsed * ceiling.rate()).max(0.0);
        self.drained_at = now;
    }

    /// How long until one more check fits under `ceiling`; `None`: now.
    /// Checks in flight count as failures until they resolve, so that
    /// concurrent guesses cannot overshoot the ceiling either.
    fn wait(&mut self, ceiling: Ceiling, now: Instant) -> Option<Duration> {
        self.drain(ceiling, now);
        let limit = f64::from(ceiling.failures);
        if self.level + f64::from(self.in_flight) + 1.0 <= limit {
            return None;
        }
        let excess = self.level + 1.0 - limit;
        if excess <= 0.0 {
            return Some(BUSY_RETRY);
        }
        Some(Duration::from_secs_f64(excess / ceiling.rate()).max(BUSY_RETRY))
    }

    /// Counts a failure; the wait for the next check when this one filled
    /// the ceiling.
    fn fail(&mut self, ceiling: Ceiling, now: Instant) -> Option<Duration> {
        self.drain(ceiling, now);
        let limit = f64::from(ceiling.failures);
        let was_full = self.level + 1.0 > limit;
        self.level += 1.0;
        if was_full || self.level + 1.0 <= limit {
            return None;
        }
        Some(Duration::from_secs_f64((self.level + 1.0 - limit) / ceiling.rate()).max(BUSY_RETRY))
    }

    fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Empty once every failure has drained, at `ceiling`'s rate.
    fn life(&self, ceiling: Ceiling) -> Life {
        let until = (self.level > 0.0)
            .then(|| self.drained_at + Duration::from_secs_f64(self.level / ceiling.rate()));
        Life {
            in_flight: self.in_flight,
            until,
        }
    }
}

/// Makes room for one entry in a full table: expired entries go, then, if
/// the table is still over nine tenths full, those closest to expiry. The
/// sweep is linear, and runs only when the table is full, after which a
/// tenth of it is free: amortised, constant per insert.
fn make_room<K: Eq + Hash, V>(table: &mut HashMap<K, V>, now: Instant, life: impl Fn(&V) -> Life) {
    if table.len() < CAPACITY {
        return;
    }
    table.retain(|_, v| !life(v).expired(now));
    let target = CAPACITY / 10 * 9;
    if table.len() <= target {
        return;
    }
    let mut expiries: Vec<Instant> = table
        .values()
        .map(&life)
        .filter(|l| l.in_flight == 0)
        .map(|l| l.until.unwrap_or(now))
        .collect();
    if expiries.is_empty() {
        return;
    }
    let nth = (table.len() - target).min(expiries.len()) - 1;
    let cutoff = *expiries.select_nth_unstable(nth).1;
    table.retain(|_, v| {
        let l = life(v);
        l.in_flight > 0 || l.until.is_some_and(|at| at > cutoff)
    });
}

impl State {
    fn admit(
        &mut self,
        account: AccountKey,
        addr: ClientAddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        make_room(&mut self.pairs, now, Pair::life);
        make_room(&mut self.accounts, now, |b| b.life(ACCOUNT_CEILING));
        make_room(&mut self.addresses, now, |b| b.life(ADDRESS_CEILING));

        let mut trusted = false;
        if let Some(pair) = self.pairs.get_mut(&(account, addr)) {
            pair.forget_old_failures(now);
            if let Some(wait) = pair.locked_for(now) {
                return Err(Refusal {
                    limit: Limit::AccountAddress,
                    retry_after: wait,
                });
            }
            if pair.in_flight >= pair.allowance() {
                return Err(Refusal {
                    limit: Limit::AccountAddress,
                    retry_after: BUSY_RETRY,
                });
            }
            trusted = pair.trusted(now);
        }
        if let Some(address) = self.addresses.get_mut(&addr) {
            if address.in_flight >= MAX_CHECKS_PER_ADDRESS {
                return Err(Refusal {
                    limit: Limit::AddressConcurrency,
                    retry_after: BUSY_RETRY,
                });
            }
            if let Some(wait) = address.wait(ADDRESS_CEILING, now).filter(|_| !trusted) {
                return Err(Refusal {
                    limit: Limit::Address,
                    retry_after: wait,
                });
            }
        }
        if let Some(wait) = self
            .accounts
            .get_mut(&account)
            .and_then(|a| a.wait(ACCOUNT_CEILING, now))
            .filter(|_| !trusted)
        {
            return Err(Refusal {
                limit: Limit::Account,
                retry_after: wait,
            });
        }

        self.pairs.entry((account, addr)).or_default().in_flight += 1;
        self.addresses
            .entry(addr)
            .or_insert_with(|| Bucket::new(now))
            .in_flight += 1;
        self.accounts
            .entry(account)
            .or_insert_with(|| Bucket::new(now))
            .in_flight += 1;
        Ok(())
    }

    /// Ends an admitted check; the lock-outs its failure started.
    fn resolve(
        &mut self,
        account: AccountKey,
        addr: ClientAddr,
        outcome: Outcome,
        now: Instant,
    ) -> Vec<(Limit, Duration)> {
        let mut lockouts = Vec::new();
        let failed = matches!(outcome, Outcome::Failed(_));
        if let Some(pair) = self.pairs.get_mut(&(account, addr)) {
            pair.in_flight = pair.in_flight.saturating_sub(1);
            match outcome {
                Outcome::Succeeded => {
                    pair.failures = 0;
                    pair.last_failure = None;
                    pair.locked_until = None;
                    pair.trusted_until = Some(now + TRUST_FOR);
                }
                Outcome::Failed(_) => {
                    pair.forget_old_failures(now);
                    pair.failures += 1;
                    pair.last_failure = Some(now);
                    if pair.failures >= PAIR_FREE_FAILURES {
                        let doublings = (pair.failures - PAIR_FREE_FAILURES).min(16);
                        let lockout = (FIRST_LOCKOUT * (1 << doublings)).min(MAX_LOCKOUT);
                        pair.locked_until = Some(now + lockout);
                        lockouts.push((Limit::AccountAddress, lockout));
                    }
                }
                Outcome::Abandoned => {}
            }
            if pair.life().expired(now) {
                self.pairs.remove(&(account, addr));
            }
        }
        // Successes do not empty the ceilings: an attacker who also holds
        // an account of their own could otherwise reset them at will.
        if let Some(address) = self.addresses.get_mut(&addr) {
            address.release();
            if failed && let Some(wait) = address.fail(ADDRESS_CEILING, now) {
                lockouts.push((Limit::Address, wait));
            }
            if address.life(ADDRESS_CEILING).expired(now) {
                self.addresses.remove(&addr);
            }
        }
        if let Some(bucket) = self.accounts.get_mut(&account) {
            bucket.release();
            if failed && let Some(wait) = bucket.fail(ACCOUNT_CEILING, now) {
                lockouts.push((Limit::Account, wait));
            }
            if bucket.life(ACCOUNT_CEILING).expired(now) {
                self.accounts.remove(&account);
            }
        }
        lockouts
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    Succeeded,
    Failed(Failure),
    Abandoned,
}

/// A password check admitted by the throttle. Resolve it with `succeeded`
/// or `failed`; dropped unresolved (an error before the answer), it only
/// frees its place.
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    who: Who,
    resolved: bool,
}

impl LoginThrottle {
    /// A throttle counting its events in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            state: Mutex::default(),
            metrics,
        }
    }

    /// Admits one password check of `who`, or refuses it (and logs that).
    pub fn attempt(&self, who: Who) -> Result<Attempt<'_>, Refusal> {
        let admitted = self.lock().admit(who.account, who.addr, Instant::now());
        match admitted {
            Ok(()) => Ok(Attempt {
                throttle: self,
                who,
                resolved: false,
            }),
            Err(refusal) => {
                record(&self.metrics, LoginEvent::Refused { who: &who, refusal });
                Err(refusal)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The counts stay consistent even if a holder panicked: every
        // update is a few field writes.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn resolve(&self, who: &Who, outcome: Outcome) {
        let lockouts = self
            .lock()
            .resolve(who.account, who.addr, outcome, Instant::now());
        if let Outcome::Failed(failure) = outcome {
            record(&self.metrics, LoginEvent::Failed { who, failure });
        }
        for (limit, retry_after) in lockouts {
            record(
                &self.metrics,
                LoginEvent::LockedOut {
                    who,
                    limit,
                    retry_after,
                },
            );
        }
    }
}

impl Attempt<'_> {
    pub fn succeeded(mut self) {
        self.resolved = true;
        self.throttle.resolve(&self.who, Outcome::Succeeded);
    }

    pub fn failed(mut self, failure: Failure) {
        self.resolved = true;
        self.throttle.resolve(&self.who, Outcome::Failed(failure));
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.throttle.resolve(&self.who, Outcome::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(email: &str, peer: &str) -> Who {
        Who::new("acme", email, Some(peer))
    }

    fn fail(throttle: &LoginThrottle, email: &str, peer: &str) {
        throttle
            .attempt(who(email, peer))
            .expect("admitted")
            .failed(Failure::WrongPassword);
    }

    fn refusal(throttle: &LoginThrottle, email: &str, peer: &str) -> Option<Refusal> {
        throttle.attempt(who(email, peer)).err()
    }

    #[test]
    fn a_pair_locks_after_five_failures_and_doubles() {
        let throttle = LoginThrottle::default();
        for _ in 0..PAIR_FREE_FAILURES {
            assert_eq!(refusal(&throttle, "a@acme.test", "10.0.0.1"), None);
            fail(&throttle, "a@acme.test", "10.0.0.1");
        }
        let first = refusal(&throttle, "a@acme.test", "10.0.0.1").expect("locked");
        assert_eq!(first.limit, Limit::AccountAddress);
        assert!(first.retry_after <= FIRST_LOCKOUT);
        // The lock-out ends; the next failure locks for twice as long.
        let key = (
            AccountKey::new("acme", "a@acme.test"),
            ClientAddr::from_peer(Some("10.0.0.1")),
        );
        throttle.lock().pairs.get_mut(&key).unwrap().locked_until = None;
        fail(&throttle, "a@acme.test", "10.0.0.1");
        let second = refusal(&throttle, "a@acme.test", "10.0.0.1").expect("locked");
        assert!(second.retry_after > FIRST_LOCKOUT && second.retry_after <= 2 * FIRST_LOCKOUT);
    }

    #[test]
    fn lockouts_stop_growing_at_the_maximum() {
        let mut pair = Pair::default();
        let mut state = State::default();
        let now = Instant::now();
        let account = AccountKey::new("acme", "a@acme.test");
        let addr = ClientAddr::from_peer(Some("10.0.0.1"));
        pair.failures = 40;
        state.pairs.insert((account, addr), pair);
        state.pairs.get_mut(&(account, addr)).unwrap().in_flight = 1;
        let lockouts = state.resolve(account, addr, Outcome::Failed(Failure::WrongPassword), now);
        assert!(lockouts.contains(&(Limit::AccountAddress, MAX_LOCKOUT)));
    }

    #[test]
    fn another_address_is_not_locked_out_with_the_attacker() {
        let throttle = LoginThrottle::default();
        for _ in 0..PAIR_FREE_FAILURES {
            fail(&throttle, "a@acme.test", "10.0.0.66");
        }
        assert!(refusal(&throttle, "a@acme.test", "10.0.0.66").is_some());
        throttle
            .attempt(who("a@acme.test", "10.0.0.1"))
            .expect("the owner's address is admitted")
            .succeeded();
    }

    #[test]
    fn case_and_whitespace_do_not_make_another_account() {
        assert!(
            AccountKey::new(" ACME", "Carol@Acme.Test ")
                == AccountKey::new("acme", "carol@acme.test")
        );
        assert!(
            AccountKey::new("acme", "carol@acme.test") != AccountKey::new("acme", "bob@acme.test")
        );
        // The separator keeps "a"+"bc" apart from "ab"+"c".
        assert!(AccountKey::new("a", "bc") != AccountKey::new("ab", "c"));
    }

    #[test]
    fn checks_in_flight_count_against_the_pair_allowance() {
        let throttle = LoginThrottle::default();
        let running: Vec<_> = (0..PAIR_FREE_FAILURES)
            .map(|_| {
                throttle
                    .attempt(who("a@acme.test", "10.0.0.1"))
                    .expect("admitted")
            })
            .collect();
        let refused = refusal(&throttle, "a@acme.test", "10.0.0.1").expect("refused");
        assert_eq!(refused.retry_after, BUSY_RETRY);
        drop(running);
        assert!(
            throttle.attempt(who("a@acme.test", "10.0.0.1")).is_ok(),
            "unresolved attempts free their place"
        );
        assert!(throttle.lock().pairs.is_empty(), "and leave nothing behind");
    }

    #[test]
    fn one_address_has_a_bounded_number_of_checks_in_flight() {
        let throttle = LoginThrottle::default();
        let running: Vec<_> = (0..MAX_CHECKS_PER_ADDRESS)
            .map(|i| {
                throttle
                    .attempt(who(&format!("u{i}@acme.test"), "10.0.0.9"))
                    .expect("admitted")
            })
            .collect();
        let refused = refusal(&throttle, "other@acme.test", "10.0.0.9").expect("refused");
        assert_eq!(refused.limit, Limit::AddressConcurrency);
        assert!(refusal(&throttle, "other@acme.test", "10.0.0.10").is_none());
        drop(running);
    }

    #[test]
    fn the_account_ceiling_spares_addresses_that_logged_in() {
        let throttle = LoginThrottle::default();
        throttle
            .attempt(who("a@acme.test", "10.0.0.1"))
            .expect("admitted")
            .succeeded();
        let bots = ACCOUNT_CEILING.failures / PAIR_FREE_FAILURES;
        for bot in 0..bots {
            for _ in 0..PAIR_FREE_FAILURES {
                fail(&throttle, "a@acme.test", &format!("10.1.0.{bot}"));
            }
        }
        let refused = refusal(&throttle, "a@acme.test", "10.2.0.1").expect("ceiling");
        assert_eq!(refused.limit, Limit::Account);
        // One failure is forgiven every window / failures.
        let per_failure = ACCOUNT_CEILING.window / ACCOUNT_CEILING.failures;
        assert!(refused.retry_after <= per_failure && refused.retry_after > per_failure / 2);
        throttle
            .attempt(who("a@acme.test", "10.0.0.1"))
            .expect("the owner's address is exempt")
            .succeeded();
    }

    #[test]
    fn the_address_ceiling_stops_spraying() {
        let throttle = LoginThrottle::default();
        for i in 0..ADDRESS_CEILING.failures {
            fail(&throttle, &format!("u{i}@acme.test"), "10.0.0.5");
        }
        let refused = refusal(&throttle, "fresh@acme.test", "10.0.0.5").expect("ceiling");
        assert_eq!(refused.limit, Limit::Address);
        assert!(refusal(&throttle, "fresh@acme.test", "10.0.0.6").is_none());
    }

    #[test]
    fn ceilings_drain_over_their_window() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        for _ in 0..ADDRESS_CEILING.failures {
            bucket.fail(ADDRESS_CEILING, start);
        }
        assert!(bucket.wait(ADDRESS_CEILING, start).is_some());
        let later = start + ADDRESS_CEILING.window / ADDRESS_CEILING.failures;
        assert_eq!(bucket.wait(ADDRESS_CEILING, later), None);
        let much_later = start + ADDRESS_CEILING.window;
        assert!(bucket.life(ADDRESS_CEILING).expired(much_later));
    }

    #[test]
    fn a_pair_forgets_after_its_memory() {
        let now = Instant::now();
        let mut pair = Pair {
            failures: 4,
            last_failure: Some(now),
            ..Pair::default()
        };
        pair.forget_old_failures(now + PAIR_MEMORY / 2);
        assert_eq!(pair.failures, 4);
        pair.forget_old_failures(now + PAIR_MEMORY);
        assert_eq!(pair.failures, 0);
    }

    #[test]
    fn a_full_table_drops_what_expires_first() {
        let now = Instant::now();
        let mut table: HashMap<u32, Pair> = (0..CAPACITY as u32)
            .map(|i| {
                let pair = Pair {
                    failures: 1,
                    last_failure: Some(now + Duration::from_secs(u64::from(i))),
                    ..Pair::default()
                };
                (i, pair)
            })
            .collect();
        table.get_mut(&0).unwrap().in_flight = 1;
        make_room(&mut table, now, Pair::life);
        assert_eq!(table.len(), CAPACITY / 10 * 9);
        assert!(table.contains_key(&0), "entries in use stay");
        assert!(!table.contains_key(&1), "the soonest to expire go");
        assert!(table.contains_key(&(CAPACITY as u32 - 1)));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            ClientAddr::from_peer(Some("2001:db8:1:2:aaaa::1")),
            ClientAddr::from_peer(Some("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            ClientAddr::from_peer(Some("2001:db8:1:2::1")),
            ClientAddr::from_peer(Some("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientAddr::from_peer(Some("::ffff:10.0.0.1")),
            ClientAddr::from_peer(Some("10.0.0.1"))
        );
        assert_eq!(
            ClientAddr::from_peer(Some("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(ClientAddr::from_peer(None).to_string(), "unknown");
    }

    #[test]
    fn refusals_carry_their_delay() {
        let status = Refusal {
            limit: Limit::Account,
            retry_after: Duration::from_millis(35_200),
        }
        .into_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("retry in 36 s"));
        assert_eq!(
            status.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(36))
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "LOGIN_THROTTLED");
        assert_eq!(
            info.metadata.get("limit").map(String::as_str),
            Some("account_ceiling")
        );
    }

    #[test]
    fn emails_are_masked_in_logs() {
        assert_eq!(mask_email("carol@acme.test"), "c***@acme.test");
        assert_eq!(mask_email("nobody"), "n***@");
        assert_eq!(mask_email(""), "***@");
    }
}
