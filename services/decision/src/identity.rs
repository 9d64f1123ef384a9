//! What decision learns from identity, through identity's internal gRPC API
//! with the service credential (never from identity's tables): a user's
//! manager, for escalation, and a tenant's SLA defaults, cached briefly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codeops_proto::decision::DecisionPriority;
use codeops_proto::identity::internal_service_client::InternalServiceClient;
use codeops_proto::identity::{GetManagerRequest, GetSlaDefaultsRequest, SlaDefaults};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

/// How long a tenant's SLA defaults are reused before identity is asked
/// again: a change of a tenant's settings reaches new decisions within it.
pub const SLA_CACHE_TTL: Duration = Duration::from_secs(30);
/// Tenants whose defaults are kept at most; past it the cache starts over.
const SLA_CACHE_MAX: usize = 10_000;
/// A call to identity that takes longer is abandoned.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IdentityClientError {
    #[error("identity URL {url:?} is not a valid URL: {source}")]
    BadUrl {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("the service credential is not a valid header value")]
    BadCredential,
}

/// A client of identity's InternalService, cheap to clone.
#[derive(Clone)]
pub struct IdentityClient {
    client: InternalServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
    url: Arc<str>,
    sla_cache: Arc<Mutex<HashMap<Uuid, (Instant, SlaDefaults)>>>,
}

impl IdentityClient {
    /// A lazily connecting client of identity at `url`, calling with the
    /// service credential.
    pub fn new(url: &str, service_token: &str) -> Result<Self, IdentityClientError> {
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|source| {
            IdentityClientError::BadUrl {
                url: url.to_owned(),
                source,
            }
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let authorization = format!("Bearer {service_token}")
            .parse()
            .map_err(|_| IdentityClientError::BadCredential)?;
        Ok(Self {
            client: InternalServiceClient::new(channel),
            authorization,
            url: url.into(),
            sla_cache: Arc::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    /// The nearest active manager of `user_id`, `None` when there is none.
    pub async fn manager(&self, tenant_id: Uuid, user_id: Uuid) -> Result<Option<Uuid>, Status> {
        let response = self
            .client
            .clone()
            .get_manager(self.request(GetManagerRequest {
                tenant_id: tenant_id.to_string(),
                user_id: user_id.to_string(),
            }))
            .await?
            .into_inner();
        if response.manager_id.is_empty() {
            return Ok(None);
        }
        Uuid::parse_str(&response.manager_id)
            .map(Some)
            .map_err(|_| Status::internal("identity answered a malformed manager id"))
    }

    /// The tenant's default SLA for `priority`, in hours.
    pub async fn sla_hours(
        &self,
        tenant_id: Uuid,
        priority: DecisionPriority,
    ) -> Result<i32, Status> {
        let defaults = self.sla_defaults(tenant_id).await?;
        Ok(match priority {
            DecisionPriority::Blocking => defaults.blocking_hours,
            DecisionPriority::High => defaults.high_hours,
            DecisionPriority::Normal | DecisionPriority::Unspecified => defaults.normal_hours,
            DecisionPriority::Low => defaults.low_hours,
        })
    }

    async fn sla_defaults(&self, tenant_id: Uuid) -> Result<SlaDefaults, Status> {
        if let Some((at, defaults)) = self.cache().get(&tenant_id)
            && at.elapsed() < SLA_CACHE_TTL
        {
            return Ok(*defaults);
        }
        let defaults = self
            .client
            .clone()
            .get_sla_defaults(self.request(GetSlaDefaultsRequest {
                tenant_id: tenant_id.to_string(),
            }))
            .await?
            .into_inner()
            .sla_defaults
            .unwrap_or_default();
        let mut cache = self.cache();
        if cache.len() >= SLA_CACHE_MAX {
            cache.clear();
        }
        cache.insert(tenant_id, (Instant::now(), defaults));
        Ok(defaults)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Instant, SlaDefaults)>> {
        self.sla_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `UNAVAILABLE` (`IDENTITY_UNAVAILABLE`, retry in 1 s) for a call identity
/// did not answer; the cause is logged, not sent.
pub fn identity_unavailable(cause: &Status, what: &str) -> Status {
    tracing::warn!(code = ?cause.code(), error = %cause.message(), what, "identity did not answer");
    let mut details = ErrorDetails::with_error_info(
        "IDENTITY_UNAVAILABLE",
        codeops_platform::error::DOMAIN,
        HashMap::new(),
    );
    details.set_retry_info(Some(Duration::from_secs(1)));
    Status::with_error_details(
        Code::Unavailable,
        format!("identity is unreachable, so {what} could not be read; retry"),
        details,
    )
}
