//! The client side of identity's revocation feed: every process polls
//! `InternalService.ListRevocations` and records revoked sessions and
//! deactivated users in its verifier's [`RevocationSet`], so a revoked
//! access token is refused within one poll interval everywhere instead of
//! living until it expires.
//!
//! The feed never blocks a request: the auth layer only reads the set. When
//! identity does not answer, the poller logs a warning and tries again at
//! the next interval; meanwhile the set holds what it last learned.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use codeops_proto::identity::internal_service_client::InternalServiceClient;
use codeops_proto::identity::{ListRevocationsRequest, ListRevocationsResponse};
use codeops_tenant::RevocationSet;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

/// Longest poll interval accepted: the documented bound on how long a
/// revoked session stays usable outside identity.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Pages fetched in one poll before waiting for the next interval, so a
/// burst (a tenant's suspension) is drained without starving the loop.
const MAX_PAGES_PER_POLL: usize = 20;
/// A call that takes longer is abandoned and retried at the next interval.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the feed is and how often to read it.
#[derive(Clone)]
pub struct FeedSettings {
    /// identity's gRPC URL, e.g. `http://identity:50051`.
    pub identity_url: String,
    /// The service credential (`CODEOPS_SERVICE_TOKEN`).
    pub service_token: String,
    /// How often to poll; at most [`MAX_POLL_INTERVAL`].
    pub interval: Duration,
}

impl std::fmt::Debug for FeedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSettings")
            .field("identity_url", &self.identity_url)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("identity URL {url:?} is not a valid URL: {source}")]
    BadUrl {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("the service credential is not a valid header value")]
    BadCredential,
}

/// A poller ready to run: the URL and credential have been checked.
pub struct RevocationFeed {
    client: InternalServiceClient<Channel>,
    authorization: MetadataValue<tonic::metadata::Ascii>,
    settings: FeedSettings,
    set: Arc<RevocationSet>,
    cursor: String,
}

impl RevocationFeed {
    pub fn new(settings: FeedSettings, set: Arc<RevocationSet>) -> Result<Self, FeedError> {
        let endpoint = Endpoint::from_shared(settings.identity_url.clone()).map_err(|source| {
            FeedError::BadUrl {
                url: settings.identity_url.clone(),
                source,
            }
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let authorization = format!("Bearer {}", settings.service_token)
            .parse()
            .map_err(|_| FeedError::BadCredential)?;
        Ok(Self {
            client: InternalServiceClient::new(channel),
            authorization,
            settings,
            set,
            cursor: String::new(),
        })
    }

    /// Polls at once and then every interval until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let interval = self.settings.interval.min(MAX_POLL_INTERVAL);
        let mut failing = false;
        loop {
            match self.poll().await {
                Ok(entries) => {
                    if failing {
                        tracing::info!(
                            identity = %self.settings.identity_url,
                            "revocation feed answers again"
                        );
                    }
                    failing = false;
                    if entries > 0 {
                        let (sessions, users) = self.set.len();
                        tracing::debug!(entries, sessions, users, "revocations recorded");
                    }
                }
                Err(status) => {
                    failing = true;
                    tracing::warn!(
                        identity = %self.settings.identity_url,
                        code = ?status.code(),
                        error = %status.message(),
                        retry_in = ?interval,
                        "revocation feed unreachable: sessions revoked meanwhile are refused once it answers"
                    );
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One poll: every waiting page (up to a limit), recorded in the set.
    /// Returns how many entries arrived.
    pub async fn poll(&mut self) -> Result<usize, tonic::Status> {
        let mut entries = 0;
        for _ in 0..MAX_PAGES_PER_POLL {
            let mut request = tonic::Request::new(ListRevocationsRequest {
                cursor: self.cursor.clone(),
            });
            request
                .metadata_mut()
                .insert("authorization", self.authorization.clone());
            let response = self.client.list_revocations(request).await?.into_inner();
            entries += response.sessions.len() + response.users.len();
            self.record(&response);
            self.cursor = response.next_cursor;
            if !response.more {
                break;
            }
        }
        Ok(entries)
    }

    fn record(&self, response: &ListRevocationsResponse) {
        let seconds = |t: Option<&prost_types::Timestamp>| {
            t.and_then(|t| u64::try_from(t.seconds).ok())
                .unwrap_or_else(codeops_tenant::token::unix_now)
        };
        let sessions = response.sessions.iter().filter_map(|s| {
            Some((
                Uuid::parse_str(&s.session_id).ok()?,
                seconds(s.revoke_time.as_ref()),
            ))
        });
        let users = response.users.iter().filter_map(|u| {
            Some((
                Uuid::parse_str(&u.user_id).ok()?,
                seconds(u.deactivate_time.as_ref()),
            ))
        });
        self.set.record(sessions, users);
    }
}
