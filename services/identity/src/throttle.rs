//! Throttles password guessing per account (tenant + e-mail), whether or
//! not the account exists, so the throttle itself reveals nothing. Per
//! process: each replica keeps its own counts.
//!
//! An attempt takes a slot before its password is checked: failures in a
//! row plus checks still running may not exceed `FREE_FAILURES`, so twenty
//! concurrent guesses get five checks, not twenty. Only failures lock the
//! account out; a burst of correct logins is merely asked to retry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed (or still running) attempts allowed in a row.
const FREE_FAILURES: u32 = 5;
/// Lock-outs double from one second up to this.
const MAX_LOCKOUT: Duration = Duration::from_secs(300);
/// What a refused attempt is told to wait when no lock-out is running.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// Entries kept at most; idle entries are dropped when full.
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct LoginThrottle {
    accounts: Mutex<HashMap<String, Account>>,
}

#[derive(Default)]
struct Account {
    failures: u32,
    in_flight: u32,
    locked_until: Option<Instant>,
}

/// A password check in progress. Resolve it with `succeeded` or `failed`;
/// dropped unresolved (an error before the answer), it just frees its slot.
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    key: String,
    resolved: bool,
}

impl LoginThrottle {
    pub fn key(tenant: &str, email: &str) -> String {
        format!("{}\u{0}{}", tenant.to_lowercase(), email.to_lowercase())
    }

    /// Takes a slot for one password check, or says how long to wait.
    pub fn attempt(&self, key: &str) -> Result<Attempt<'_>, Duration> {
        let mut accounts = self.accounts.lock().expect("throttle poisoned");
        let now = Instant::now();
        if accounts.len() >= CAPACITY {
            accounts.retain(|_, a| a.in_flight > 0 || a.locked_until.is_some_and(|t| t > now));
        }
        let account = accounts.entry(key.to_owned()).or_default();
        if let Some(wait) = account
            .locked_until
            .and_then(|t| t.checked_duration_since(now))
        {
            return Err(wait);
        }
        // Past the allowance (a lock-out just ended), one check at a time.
        let allowance = FREE_FAILURES.saturating_sub(account.failures).max(1);
        if account.in_flight >= allowance {
            return Err(BUSY_RETRY);
        }
        account.in_flight += 1;
        Ok(Attempt {
            throttle: self,
            key: key.to_owned(),
            resolved: false,
        })
    }

    fn resolve(&self, key: &str, outcome: Option<bool>) {
        let mut accounts = self.accounts.lock().expect("throttle poisoned");
        let Some(account) = accounts.get_mut(key) else {
            return;
        };
        account.in_flight = account.in_flight.saturating_sub(1);
        match outcome {
            Some(true) => {
                account.failures = 0;
                account.locked_until = None;
            }
            Some(false) => {
                account.failures += 1;
                if account.failures >= FREE_FAILURES {
                    let exponent = (account.failures - FREE_FAILURES).min(16);
                    let lockout = Duration::from_secs(1 << exponent).min(MAX_LOCKOUT);
                    account.locked_until = Some(Instant::now() + lockout);
                }
            }
            None => {}
        }
        if account.in_flight == 0 && account.failures == 0 {
            accounts.remove(key);
        }
    }
}

impl Attempt<'_> {
    pub fn succeeded(mut self) {
        self.resolved = true;
        self.throttle.resolve(&self.key, Some(true));
    }

    pub fn failed(mut self) {
        self.resolved = true;
        self.throttle.resolve(&self.key, Some(false));
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.throttle.resolve(&self.key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        LoginThrottle::key("acme", "a@acme.test")
    }

    #[test]
    fn locks_after_five_failures_and_resets_on_success() {
        let throttle = LoginThrottle::default();
        for _ in 0..FREE_FAILURES {
            throttle.attempt(&key()).expect("allowed").failed();
        }
        assert!(
            throttle.attempt(&key()).is_err(),
            "the sixth attempt is locked out"
        );
        throttle
            .accounts
            .lock()
            .unwrap()
            .get_mut(&key())
            .unwrap()
            .locked_until = None;
        throttle
            .attempt(&key())
            .expect("after the lock-out")
            .succeeded();
        assert!(throttle.accounts.lock().unwrap().get(&key()).is_none());
    }

    #[test]
    fn checks_in_flight_count_against_the_allowance() {
        let throttle = LoginThrottle::default();
        let running: Vec<_> = (0..FREE_FAILURES)
            .map(|_| throttle.attempt(&key()).expect("allowed"))
            .collect();
        assert_eq!(throttle.attempt(&key()).err(), Some(BUSY_RETRY));
        drop(running);
        assert!(
            throttle.attempt(&key()).is_ok(),
            "unresolved attempts free their slot"
        );
    }

    #[test]
    fn accounts_are_throttled_independently() {
        let throttle = LoginThrottle::default();
        for _ in 0..FREE_FAILURES {
            throttle.attempt(&key()).expect("allowed").failed();
        }
        assert!(
            throttle
                .attempt(&LoginThrottle::key("acme", "b@acme.test"))
                .is_ok()
        );
    }
}
