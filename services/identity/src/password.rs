//! Password hashing: bcrypt on the blocking pool, never on the async
//! workers, with bounded concurrency and the caller's tracing span.

use std::sync::Arc;

use codeops_platform::{ApiError, Violations};
use tokio::sync::Semaphore;

/// bcrypt reads at most 72 bytes; longer passwords are rejected rather
/// than silently truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;
pub const MIN_PASSWORD_CHARS: usize = 10;

pub struct Hasher {
    cost: u32,
    permits: Arc<Semaphore>,
    /// Verified against when the account does not exist, so unknown users
    /// take as long as known ones.
    dummy_hash: String,
}

impl Hasher {
    pub fn new(cost: u32) -> Self {
        let parallelism = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            cost,
            permits: Arc::new(Semaphore::new(parallelism)),
            dummy_hash: bcrypt::hash("codeops-dummy-password", cost)
                .expect("bcrypt cost is validated by config"),
        }
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
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
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
