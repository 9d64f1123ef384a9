//! InternalService: identity's API for the other CodeOps processes, behind
//! the service credential: the revocation feed, and the two facts the
//! decision service needs from identity's slice (a user's manager, a
//! tenant's SLA defaults), each read in a transaction of the tenant named.
//!
//! The feed is keyset-paged on (time, kind, id). A revocation becomes
//! visible when its transaction commits, which may be a moment after the
//! time it records; so once a reader has caught up, its next cursor starts
//! [`OVERLAP`] before the database clock of its last read, and an entry
//! committed late is still delivered. Entries may therefore arrive more
//! than once; recording them is idempotent.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use codeops_platform::convert::timestamp;
use codeops_platform::db::RevocationRow;
use codeops_platform::{Actor, ApiError, TenantTx, Violations};
use codeops_proto::identity::internal_service_server::InternalService;
use codeops_proto::identity::{
    DeactivatedUser, GetManagerRequest, GetManagerResponse, GetSlaDefaultsRequest,
    GetSlaDefaultsResponse, ListRevocationsRequest, ListRevocationsResponse, RevokedSession,
};
use codeops_tenant::RequestExt;
use codeops_tenant::token::LEEWAY_SECS;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Svc;

/// Entries per answer.
const PAGE_SIZE: i32 = 5_000;
/// How far before its last read a caught-up reader starts again: longer
/// than any identity write transaction takes between recording a
/// revocation and committing it.
const OVERLAP: ChronoDuration = ChronoDuration::seconds(60);
const SESSION: i16 = 0;
const USER: i16 = 1;

/// A keyset position in the feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    at: DateTime<Utc>,
    kind: i16,
    id: Uuid,
}

impl Position {
    /// Just before everything at or after `at`.
    fn before(at: DateTime<Utc>) -> Self {
        Self {
            at,
            kind: -1,
            id: Uuid::nil(),
        }
    }

    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "v1:{}:{}:{}",
            self.at.timestamp_micros(),
            self.kind,
            self.id
        ))
    }

    fn decode(cursor: &str) -> Option<Self> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
        let mut parts = text.split(':');
        (parts.next()? == "v1").then_some(())?;
        let at = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?;
        let kind = parts.next()?.parse().ok()?;
        let id = Uuid::parse_str(parts.next()?).ok()?;
        parts.next().is_none().then_some(Self { at, kind, id })
    }
}

impl Svc {
    async fn list_revocations(
        &self,
        req: &ListRevocationsRequest,
    ) -> Result<ListRevocationsResponse, ApiError> {
        let after = if req.cursor.is_empty() {
            None
        } else {
            Some(
                Position::decode(&req.cursor)
                    .ok_or_else(|| ApiError::field("cursor", "is not a valid feed cursor"))?,
            )
        };
        let (now, mut rows) = match after {
            Some(position) => {
                self.db
                    .revocations_after((position.at, position.kind, position.id), PAGE_SIZE + 1)
                    .await?
            }
            None => {
                // A new reader needs everything a still-valid token could
                // be affected by: one longest token lifetime back, plus the
                // verifiers' leeway and the overlap (which also absorbs any
                // skew between this clock and the database's).
                let max_ttl = self.config.signer.settings().max_access_ttl;
                let window = ChronoDuration::from_std(max_ttl).map_err(ApiError::internal)?
                    + ChronoDuration::seconds(2 * LEEWAY_SECS as i64)
                    + OVERLAP;
                let start = Position::before(Utc::now() - window);
                self.db
                    .revocations_after((start.at, start.kind, start.id), PAGE_SIZE + 1)
                    .await?
            }
        };
        let more = rows.len() > PAGE_SIZE as usize;
        rows.truncate(PAGE_SIZE as usize);
        let next = match (more, rows.last()) {
            (true, Some(last)) => Position {
                at: last.at,
                kind: last.kind,
                id: last.id,
            },
            _ => Position::before(now - OVERLAP),
        };
        let mut response = ListRevocationsResponse {
            next_cursor: next.encode(),
            more,
            ..Default::default()
        };
        for row in rows {
            let RevocationRow {
                kind,
                id,
                tenant_id,
                user_id,
                at,
            } = row;
            match kind {
                SESSION => response.sessions.push(RevokedSession {
                    session_id: id.to_string(),
                    tenant_id: tenant_id.to_string(),
                    user_id: user_id.to_string(),
                    revoke_time: Some(timestamp(at)),
                }),
                USER => response.users.push(DeactivatedUser {
                    user_id: id.to_string(),
                    tenant_id: tenant_id.to_string(),
                    deactivate_time: Some(timestamp(at)),
                }),
                other => {
                    return Err(ApiError::internal(std::io::Error::other(format!(
                        "revocation feed row of unknown kind {other}"
                    ))));
                }
            }
        }
        Ok(response)
    }
}

/// How far up a management chain GetManager looks for an active manager.
const MAX_CHAIN: usize = 16;

impl Svc {
    async fn get_manager(&self, req: &GetManagerRequest) -> Result<GetManagerResponse, ApiError> {
        let mut v = Violations::new();
        let tenant_id = v.uuid("tenant_id", &req.tenant_id);
        let user_id = v.uuid("user_id", &req.user_id);
        v.finish()?;
        let mut tx = self
            .db
            .read_as(&Actor::system(tenant_id, "internal-api"))
            .await?;
        let mut current = sqlx::query_scalar!(
            "SELECT manager_id FROM core.users WHERE tenant_id = $1 AND id = $2",
            tx.tenant_id(),
            user_id,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
        // Skip deactivated managers: escalating to someone who cannot sign
        // in would leave the decision with nobody.
        for _ in 0..MAX_CHAIN {
            let Some(manager_id) = current else { break };
            let row = sqlx::query!(
                "SELECT coalesce(is_active, false) AS \"active!\", manager_id \
                 FROM core.users WHERE tenant_id = $1 AND id = $2",
                tx.tenant_id(),
                manager_id,
            )
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(row) if row.active => {
                    return Ok(GetManagerResponse {
                        manager_id: manager_id.to_string(),
                    });
                }
                Some(row) => current = row.manager_id,
                None => break,
            }
        }
        Ok(GetManagerResponse::default())
    }

    async fn get_sla_defaults(
        &self,
        req: &GetSlaDefaultsRequest,
    ) -> Result<GetSlaDefaultsResponse, ApiError> {
        let mut v = Violations::new();
        let tenant_id = v.uuid("tenant_id", &req.tenant_id);
        v.finish()?;
        let mut tx = self
            .db
            .read_as(&Actor::system(tenant_id, "internal-api"))
            .await?;
        let settings = sqlx::query_scalar!(
            "SELECT settings FROM core.tenants WHERE id = $1",
            tx.tenant_id(),
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
        let settings = settings
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok(GetSlaDefaultsResponse {
            sla_defaults: Some(crate::tenants::sla_defaults(&settings)),
        })
    }
}

#[tonic::async_trait]
impl InternalService for Svc {
    async fn get_manager(
        &self,
        request: Request<GetManagerRequest>,
    ) -> Result<Response<GetManagerResponse>, Status> {
        request.service()?;
        Ok(Response::new(
            Svc::get_manager(self, request.get_ref()).await?,
        ))
    }

    async fn get_sla_defaults(
        &self,
        request: Request<GetSlaDefaultsRequest>,
    ) -> Result<Response<GetSlaDefaultsResponse>, Status> {
        request.service()?;
        Ok(Response::new(
            Svc::get_sla_defaults(self, request.get_ref()).await?,
        ))
    }

    async fn list_revocations(
        &self,
        request: Request<ListRevocationsRequest>,
    ) -> Result<Response<ListRevocationsResponse>, Status> {
        // The auth layer admitted only the service credential; this states
        // it where the handler can be read.
        request.service()?;
        Ok(Response::new(
            Svc::list_revocations(self, request.get_ref()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let position = Position {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
            kind: USER,
            id: Uuid::new_v4(),
        };
        assert_eq!(Position::decode(&position.encode()), Some(position));
        for garbage in ["", "x", "djE6MTox", &URL_SAFE_NO_PAD.encode("v2:1:0:x")] {
            assert_eq!(Position::decode(garbage), None, "{garbage}");
        }
    }
}
