//! Idempotent creates (AIP-155): every Create (and AddComment) takes an
//! optional `request_id`, a UUID the client chooses. A retry with the same
//! key within [`WINDOW_HOURS`] answers what the first call created instead
//! of creating it again, so a client or a mesh may retry after
//! `UNAVAILABLE` or a lost answer; a key reused for a different request is
//! `INVALID_ARGUMENT` on `request_id`.
//!
//! One mechanism for every such RPC. The handler parses the key with the
//! rest of its request ([`RequestKey::parse`]), and claims it first thing
//! in its write transaction with the id it is about to create
//! ([`WriteTx::claim`]):
//!
//! ```ignore
//! let key = RequestKey::parse(&mut v, request.get_ref());
//! v.finish()?;
//! let mut tx = self.db.write(ctx).await?;
//! let id = Uuid::now_v7();
//! if let Claim::Replay(first) = tx.claim(key.as_ref(), id).await? {
//!     // Rolled back when `tx` drops; the answer is the resource as it is now.
//!     return Ok(Response::new(get(&mut tx, first).await?.into_proto()));
//! }
//! // ... insert, audit, commit as without a key
//! ```
//!
//! The key is a row of `core.request_ids` written in the create's own
//! transaction, beside the resource and its audit row: it exists exactly
//! when the resource does (a call that failed left none, so its retry
//! really runs), and a concurrent retry waits on the key's primary key
//! until the first call commits (then replays it) or rolls back (then
//! creates). Keys are per tenant, and each service's database role sees only
//! the keys of its own methods.
//!
//! Expired keys are pruned by the claims themselves: each claim deletes up
//! to [`PRUNE_BATCH`] of its tenant's keys of the same service older than
//! the window (skipping any another transaction holds), in the same
//! statement, so the table holds about one day of keyed creates and no job
//! is needed. A key past the window is replaced by the next call using it.

use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::{TenantTx, WriteTx};
use crate::error::{ApiError, ApiResult};
use crate::validate::Violations;

/// How long a key is remembered: a retry within it replays the first call.
pub const WINDOW_HOURS: i32 = 24;

/// Expired keys a claim deletes at most (it adds one key, so pruning keeps
/// up with any rate of creates).
pub const PRUNE_BATCH: i64 = 100;

/// A request that carries an idempotency key.
pub trait IdempotentRequest: Message + Clone {
    /// The full gRPC method, `/package.Service/Method`.
    const METHOD: &'static str;

    fn request_id(&self) -> &str;

    /// Turns the request into what its digest covers: `request_id` cleared,
    /// passwords cleared (a fast hash of a request must never let anyone
    /// guess a password that is otherwise stored only as bcrypt), and map
    /// fields, whose order on the wire is not fixed, moved into `canonical`
    /// in key order.
    fn for_digest(&mut self, canonical: &mut Vec<u8>);
}

/// A parsed idempotency key: the client's UUID, the method and a digest of
/// the request it came with.
#[derive(Clone, Debug)]
pub struct RequestKey {
    id: Uuid,
    method: &'static str,
    digest: [u8; 32],
}

impl RequestKey {
    /// The request's `request_id`: `None` when empty (no idempotency), a
    /// field violation on `request_id` when it is not a UUID.
    pub fn parse<R: IdempotentRequest>(v: &mut Violations, request: &R) -> Option<RequestKey> {
        let id = v.optional_uuid("request_id", request.request_id())?;
        Some(RequestKey {
            id,
            method: R::METHOD,
            digest: digest(request),
        })
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// An id the key alone determines (SHA-256 of the key, as a version 8
    /// UUID), for a create whose new resource is the transaction's tenant:
    /// CreateTenant creates the tenant with this id, so a retry opens its
    /// transaction in the same tenant and finds the key there.
    pub fn derived_id(&self) -> Uuid {
        let mut hasher = Sha256::new();
        hasher.update(b"codeops request_id ");
        hasher.update(self.method.as_bytes());
        hasher.update(self.id.as_bytes());
        let hash = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

fn digest<R: IdempotentRequest>(request: &R) -> [u8; 32] {
    let mut copy = request.clone();
    let mut canonical = Vec::new();
    copy.for_digest(&mut canonical);
    let encoded = copy.encode_to_vec();
    let mut hasher = Sha256::new();
    hasher.update((encoded.len() as u64).to_le_bytes());
    hasher.update(&encoded);
    hasher.update(&canonical);
    hasher.finalize().into()
}

/// What a claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No key, or a new one (now held by this transaction): create.
    Fresh,
    /// The key's first call created this resource: answer it as it is now
    /// and let the transaction roll back.
    Replay(Uuid),
}

/// A key that was used for another request (another method, other
/// fields, or another service's method).
fn reused() -> ApiError {
    ApiError::field(
        "request_id",
        format!(
            "was used in the last {WINDOW_HOURS} hours for a different request; \
             use a new request_id for a new request"
        ),
    )
}

impl WriteTx {
    /// Claims `key` for `resource_id`, the resource this transaction is
    /// about to create. Call it first in the transaction: a retry must find
    /// the first result before anything else can refuse it.
    pub async fn claim(&mut self, key: Option<&RequestKey>, resource_id: Uuid) -> ApiResult<Claim> {
        let Some(key) = key else {
            return Ok(Claim::Fresh);
        };
        let tenant_id = self.tenant_id();
        // A conflict whose row this role cannot see is another service's
        // key; one that disappeared before it could be read was pruned
        // meanwhile and is claimed on the next round.
        for _ in 0..3 {
            let claimed = sqlx::query_scalar!(
                "WITH pruned AS ( \
                     DELETE FROM core.request_ids WHERE (tenant_id, request_id) IN ( \
                         SELECT tenant_id, request_id FROM core.request_ids \
                         WHERE tenant_id = $1 AND request_id <> $2 \
                           AND created_at < now() - make_interval(hours => $6) \
                         ORDER BY created_at LIMIT $7 FOR UPDATE SKIP LOCKED)) \
                 INSERT INTO core.request_ids (tenant_id, request_id, method, request_digest, resource_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, now()) \
                 ON CONFLICT (tenant_id, request_id) DO NOTHING \
                 RETURNING resource_id",
                tenant_id,
                key.id,
                key.method,
                &key.digest[..],
                resource_id,
                WINDOW_HOURS,
                PRUNE_BATCH,
            )
            .fetch_optional(&mut **self)
            .await?;
            if claimed.is_some() {
                return Ok(Claim::Fresh);
            }
            let Some(first) = sqlx::query!(
                r#"SELECT method, request_digest, resource_id,
                       created_at < now() - make_interval(hours => $3) AS "expired!"
                   FROM core.request_ids WHERE tenant_id = $1 AND request_id = $2
                   FOR UPDATE"#,
                tenant_id,
                key.id,
                WINDOW_HOURS,
            )
            .fetch_optional(&mut **self)
            .await?
            else {
                continue;
            };
            if first.expired {
                sqlx::query!(
                    "UPDATE core.request_ids \
                     SET method = $3, request_digest = $4, resource_id = $5, created_at = now() \
                     WHERE tenant_id = $1 AND request_id = $2",
                    tenant_id,
                    key.id,
                    key.method,
                    &key.digest[..],
                    resource_id,
                )
                .execute(&mut **self)
                .await?;
                return Ok(Claim::Fresh);
            }
            if first.method != key.method || first.request_digest[..] != key.digest[..] {
                return Err(reused());
            }
            tracing::info!(
                request_id = %key.id,
                resource_id = %first.resource_id,
                "a retried create answers what its first call created"
            );
            return Ok(Claim::Replay(first.resource_id));
        }
        Err(reused())
    }
}

/// The keyed requests whose digest is the request with `request_id` cleared.
macro_rules! plain_requests {
    ($($request:ty => $method:literal,)*) => {$(
        impl IdempotentRequest for $request {
            const METHOD: &'static str = $method;

            fn request_id(&self) -> &str {
                &self.request_id
            }

            fn for_digest(&mut self, _canonical: &mut Vec<u8>) {
                self.request_id.clear();
            }
        }
    )*};
}

plain_requests! {
    codeops_proto::identity::CreateRoleRequest => "/codeops.identity.v1.RoleService/CreateRole",
    codeops_proto::identity::CreateTeamRequest => "/codeops.identity.v1.TeamService/CreateTeam",
    codeops_proto::planning::CreateOutcomeRequest => "/codeops.planning.v1.OutcomeService/CreateOutcome",
    codeops_proto::decision::CreateDecisionRequest => "/codeops.decision.v1.DecisionService/CreateDecision",
    codeops_proto::decision::AddCommentRequest => "/codeops.decision.v1.CommentService/AddComment",
    codeops_proto::decision::CreateStakeholderRequest => "/codeops.decision.v1.StakeholderService/CreateStakeholder",
}

impl IdempotentRequest for codeops_proto::identity::CreateTenantRequest {
    const METHOD: &'static str = "/codeops.identity.v1.TenantService/CreateTenant";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn for_digest(&mut self, _canonical: &mut Vec<u8>) {
        self.request_id.clear();
        self.owner_password.clear();
    }
}

impl IdempotentRequest for codeops_proto::identity::CreateUserRequest {
    const METHOD: &'static str = "/codeops.identity.v1.UserService/CreateUser";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn for_digest(&mut self, _canonical: &mut Vec<u8>) {
        self.request_id.clear();
        self.password.clear();
    }
}

impl IdempotentRequest for codeops_proto::planning::CreateHypothesisRequest {
    const METHOD: &'static str = "/codeops.planning.v1.HypothesisService/CreateHypothesis";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn for_digest(&mut self, canonical: &mut Vec<u8>) {
        self.request_id.clear();
        let config = self
            .hypothesis
            .as_mut()
            .and_then(|h| h.experiment_config.as_mut());
        if let Some(config) = config {
            let mut split: Vec<(String, f64)> = config.split.drain().collect();
            split.sort_by(|a, b| a.0.cmp(&b.0));
            for (variant, share) in split {
                canonical.extend_from_slice(&(variant.len() as u64).to_le_bytes());
                canonical.extend_from_slice(variant.as_bytes());
                canonical.extend_from_slice(&share.to_bits().to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use codeops_proto::identity::{CreateTeamRequest, CreateTenantRequest, Team};
    use codeops_proto::planning::{CreateHypothesisRequest, ExperimentConfig, Hypothesis};

    use super::*;

    const KEY: &str = "0b7c4f7e-8a59-4d8e-9a57-3f0d2f1f9c11";

    fn key<R: IdempotentRequest>(request: &R) -> Option<RequestKey> {
        let mut v = Violations::new();
        let key = RequestKey::parse(&mut v, request);
        v.finish().expect("a valid key");
        key
    }

    fn team(name: &str, request_id: &str) -> CreateTeamRequest {
        CreateTeamRequest {
            team: Some(Team {
                name: name.into(),
                ..Team::default()
            }),
            request_id: request_id.into(),
        }
    }

    #[test]
    fn an_empty_request_id_is_no_key_and_a_malformed_one_a_violation() {
        assert!(key(&team("a", "")).is_none());
        let mut v = Violations::new();
        assert!(RequestKey::parse(&mut v, &team("a", "not-a-uuid")).is_none());
        let Err(ApiError::InvalidArgument(violations)) = v.finish() else {
            panic!("a malformed request_id must be a field violation");
        };
        assert_eq!(violations[0].field, "request_id");
    }

    #[test]
    fn the_digest_ignores_the_key_and_sees_every_other_field() {
        let first = key(&team("a", KEY)).expect("key");
        let other_key = key(&team("a", "7d7c0a4e-2b1f-4c53-8f0e-5b7c0f3e1a22")).expect("key");
        let other_team = key(&team("b", KEY)).expect("key");
        assert_eq!(first.digest, other_key.digest);
        assert_ne!(first.digest, other_team.digest);
    }

    #[test]
    fn the_digest_leaves_passwords_out() {
        let tenant = |password: &str| CreateTenantRequest {
            owner_email: "o@x.test".into(),
            owner_password: password.into(),
            request_id: KEY.into(),
            ..CreateTenantRequest::default()
        };
        assert_eq!(
            key(&tenant("one password")).expect("key").digest,
            key(&tenant("another one")).expect("key").digest
        );
    }

    #[test]
    fn the_digest_of_a_map_does_not_depend_on_its_order() {
        let hypothesis = |variants: &[(&str, f64)]| CreateHypothesisRequest {
            hypothesis: Some(Hypothesis {
                experiment_config: Some(ExperimentConfig {
                    split: variants
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), *v))
                        .collect(),
                    ..ExperimentConfig::default()
                }),
                ..Hypothesis::default()
            }),
            request_id: KEY.into(),
        };
        let many: Vec<(String, f64)> = (0..50).map(|i| (format!("v{i}"), 1.0)).collect();
        let forward: Vec<(&str, f64)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let backward: Vec<(&str, f64)> = forward.iter().rev().copied().collect();
        assert_eq!(
            key(&hypothesis(&forward)).expect("key").digest,
            key(&hypothesis(&backward)).expect("key").digest
        );
        assert_ne!(
            key(&hypothesis(&[("a", 50.0)])).expect("key").digest,
            key(&hypothesis(&[("a", 40.0)])).expect("key").digest
        );
    }

    #[test]
    fn a_derived_id_depends_on_the_key_alone() {
        let a = key(&team("a", KEY)).expect("key");
        let b = key(&team("b", KEY)).expect("key");
        assert_eq!(a.derived_id(), b.derived_id());
        assert_ne!(a.derived_id(), a.id());
        assert!(!a.derived_id().is_nil());
    }
}
