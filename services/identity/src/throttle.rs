//! Throttles consecutive failed logins per account (tenant slug + e-mail),
//! whether or not the account exists, so the throttle itself reveals
//! nothing. Per process: each replica keeps its own counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before a lock-out starts.
const FREE_FAILURES: u32 = 5;
/// Lock-outs double from one second up to this.
const MAX_LOCKOUT: Duration = Duration::from_secs(300);
/// Entries kept at most; the table is cleared when full.
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct LoginThrottle {
    accounts: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    locked_until: Option<Instant>,
}

impl LoginThrottle {
    pub fn key(tenant: &str, email: &str) -> String {
        format!("{}\u{0}{}", tenant.to_lowercase(), email.to_lowercase())
    }

    /// How long the account stays locked, if it is.
    pub fn locked_for(&self, key: &str) -> Option<Duration> {
        let accounts = self.accounts.lock().expect("throttle poisoned");
        let until = accounts.get(key)?.locked_until?;
        until.checked_duration_since(Instant::now())
    }

    pub fn record_failure(&self, key: &str) {
        let mut accounts = self.accounts.lock().expect("throttle poisoned");
        if accounts.len() >= CAPACITY {
            accounts.clear();
        }
        let entry = accounts.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            locked_until: None,
        });
        entry.count += 1;
        if entry.count >= FREE_FAILURES {
            let exponent = (entry.count - FREE_FAILURES).min(16);
            let lockout = Duration::from_secs(1 << exponent).min(MAX_LOCKOUT);
            entry.locked_until = Some(Instant::now() + lockout);
        }
    }

    pub fn record_success(&self, key: &str) {
        self.accounts.lock().expect("throttle poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_repeated_failures_and_resets_on_success() {
        let throttle = LoginThrottle::default();
        let key = LoginThrottle::key("acme", "a@acme.test");
        for _ in 0..FREE_FAILURES - 1 {
            throttle.record_failure(&key);
        }
        assert!(throttle.locked_for(&key).is_none());
        throttle.record_failure(&key);
        assert!(throttle.locked_for(&key).is_some());
        throttle.record_success(&key);
        assert!(throttle.locked_for(&key).is_none());
    }
}
