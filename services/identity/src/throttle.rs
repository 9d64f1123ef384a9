//! Throttles consecutive failed logins per account (tenant slug + e-mail),
//! whether or not the account exists, so the throttle itself reveals
//! nothing. Per process: each replica keeps its own counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts without a success allowed before a lock-out starts.
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

    /// Counts an attempt before its password is checked, so concurrent
    /// guesses cannot all slip in before the first failure is recorded.
    /// `Err` carries how long the account stays locked.
    pub fn attempt(&self, key: &str) -> Result<(), Duration> {
        let mut accounts = self.accounts.lock().expect("throttle poisoned");
        let now = Instant::now();
        if let Some(wait) = accounts
            .get(key)
            .and_then(|f| f.locked_until)
            .and_then(|until| until.checked_duration_since(now))
        {
            return Err(wait);
        }
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
            entry.locked_until = Some(now + lockout);
        }
        Ok(())
    }

    /// A successful attempt clears the account's count.
    pub fn record_success(&self, key: &str) {
        self.accounts.lock().expect("throttle poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_repeated_attempts_and_resets_on_success() {
        let throttle = LoginThrottle::default();
        let key = LoginThrottle::key("acme", "a@acme.test");
        for _ in 0..FREE_FAILURES {
            assert!(throttle.attempt(&key).is_ok());
        }
        assert!(
            throttle.attempt(&key).is_err(),
            "the sixth attempt in a row is locked out"
        );
        throttle.record_success(&key);
        assert!(throttle.attempt(&key).is_ok());
    }

    #[test]
    fn accounts_are_throttled_independently() {
        let throttle = LoginThrottle::default();
        let key = LoginThrottle::key("acme", "a@acme.test");
        for _ in 0..FREE_FAILURES {
            throttle.attempt(&key).expect("allowed");
        }
        assert!(
            throttle
                .attempt(&LoginThrottle::key("acme", "b@acme.test"))
                .is_ok()
        );
    }
}
