//! The SLA sweeper: escalates every open decision past its deadline, in
//! every tenant, once per deadline.
//!
//! The one read across tenants is `core.overdue_decisions` (a SECURITY
//! DEFINER function that returns ids, tenants and deadlines, nothing else).
//! Each decision is then escalated in a write transaction of its own
//! tenant, as the system actor `sla-sweeper`, after locking its row with
//! `FOR UPDATE SKIP LOCKED` and checking that it is still overdue: several
//! sweepers (replicas) may run at once, and a deadline escalated by one is
//! no longer overdue for the others. Escalation moves the deadline, so the
//! next sweep does not pick it again; a holder without a manager leaves
//! the decision flagged for that deadline (`unescalated_due_at`) instead of
//! escalated in a loop. When identity does not answer, the sweep stops,
//! logs and counts it, and the next sweep tries again: nothing is lost.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use codeops_platform::{Actor, ApiError, AuditAction, AuditEntry, Db, Metrics, TenantTx};
use uuid::Uuid;

use crate::decisions::{DecisionRow, escalate, get};
use crate::identity::IdentityClient;
use crate::watch::{EventKind, notify};

/// Overdue decisions read per batch.
const BATCH: i32 = 500;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Decisions escalated.
    pub escalated: u64,
    /// Decisions flagged: whoever holds them has no manager.
    pub flagged: u64,
    /// Decisions another sweeper or writer held or had already handled.
    pub skipped: u64,
    /// Whether identity failed to answer (the sweep stopped early).
    pub identity_failed: bool,
}

/// The background task of the decision service.
#[derive(Clone)]
pub struct Sweeper {
    db: Db,
    identity: IdentityClient,
    metrics: Metrics,
}

enum Outcome {
    Escalated,
    Flagged,
    Skipped,
}

impl Sweeper {
    pub fn new(db: Db, identity: IdentityClient, metrics: Metrics) -> Self {
        Self {
            db,
            identity,
            metrics,
        }
    }

    /// Sweeps at once and then every `interval` until `shutdown` resolves.
    pub async fn run(self, interval: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        tracing::info!(?interval, "SLA sweeper running");
        loop {
            let report = tokio::select! {
                _ = &mut shutdown => return,
                report = self.sweep(Utc::now()) => report,
            };
            match report {
                Ok(report) if report.escalated + report.flagged > 0 => {
                    tracing::info!(
                        escalated = report.escalated,
                        flagged = report.flagged,
                        skipped = report.skipped,
                        "SLA sweep"
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    self.counter(
                        "codeops_sla_sweep_failures_total",
                        "SLA sweeps that failed.",
                        "database",
                    )
                    .inc();
                    tracing::warn!(%error, retry_in = ?interval, "SLA sweep failed");
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        reason: &str,
    ) -> codeops_platform::Counter {
        self.metrics.counter(name, help, &[("reason", reason)])
    }

    /// One sweep as of `now`: every decision overdue at `now`, batch by
    /// batch. Tests pass a later `now` to move the clock.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<SweepReport, ApiError> {
        let mut report = SweepReport::default();
        let mut seen = std::collections::HashSet::new();
        loop {
            let batch = self.db.overdue_decisions(now, BATCH).await?;
            let fresh: Vec<_> = batch
                .into_iter()
                .filter(|(_, id, _)| seen.insert(*id))
                .collect();
            if fresh.is_empty() {
                return Ok(report);
            }
            for (tenant_id, id, _) in fresh {
                match self.sweep_one(tenant_id, id, now).await {
                    Ok(Outcome::Escalated) => report.escalated += 1,
                    Ok(Outcome::Flagged) => report.flagged += 1,
                    Ok(Outcome::Skipped) => report.skipped += 1,
                    Err(SweepError::Identity(status)) => {
                        self.counter(
                            "codeops_sla_sweep_failures_total",
                            "SLA sweeps that failed.",
                            "identity_unavailable",
                        )
                        .inc();
                        tracing::warn!(
                            identity = %self.identity.url(),
                            code = ?status.code(),
                            error = %status.message(),
                            "SLA sweep: identity unreachable; overdue decisions wait for the next sweep"
                        );
                        report.identity_failed = true;
                        return Ok(report);
                    }
                    Err(SweepError::Api(error)) => return Err(error),
                }
            }
        }
    }

    async fn sweep_one(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SweepError> {
        let mut tx = self
            .db
            .write_as(Actor::system(tenant_id, "sla-sweeper"))
            .await?;
        // Held until commit: another sweeper skips it, and once this one
        // commits the decision is no longer overdue.
        let locked = sqlx::query_scalar!(
            "SELECT id FROM core.decisions \
             WHERE tenant_id = $1 AND id = $2 AND status IN ('NEEDS_INPUT', 'UNDER_DISCUSSION') \
               AND due_at < $3 AND unescalated_due_at IS DISTINCT FROM due_at \
             FOR UPDATE SKIP LOCKED",
            tx.tenant_id(),
            id,
            now,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        if locked.is_none() {
            return Ok(Outcome::Skipped);
        }
        let before: DecisionRow = get(&mut tx, id).await?;
        let manager = match before.holder() {
            Some(holder) => self
                .identity
                .manager(tenant_id, holder)
                .await
                .map_err(SweepError::Identity)?,
            None => None,
        };
        match manager {
            Some(manager) => {
                if !escalate(&mut tx, &before, manager, Some(now)).await? {
                    return Ok(Outcome::Skipped);
                }
                let after = get(&mut tx, id).await?;
                crate::stakeholders::recount_moved(&mut tx, &before, &after).await?;
                notify(&mut tx, id, EventKind::Escalated, &after.status).await?;
                tx.commit(
                    AuditEntry::new(AuditAction::DecisionEscalated, "decision", id)
                        .title(&after.title)
                        .description("overdue: escalated by the SLA sweeper")
                        .changes(before.audit_values(), after.audit_values()),
                )
                .await?;
                self.counter(
                    "codeops_sla_escalations_total",
                    "Decisions the SLA sweeper escalated or flagged.",
                    "escalated",
                )
                .inc();
                Ok(Outcome::Escalated)
            }
            None => {
                sqlx::query!(
                    "UPDATE core.decisions SET unescalated_due_at = due_at, updated_at = clock_timestamp() \
                     WHERE tenant_id = $1 AND id = $2",
                    tx.tenant_id(),
                    id,
                )
                .execute(&mut *tx)
                .await
                .map_err(ApiError::from)?;
                let after = get(&mut tx, id).await?;
                notify(&mut tx, id, EventKind::Updated, &after.status).await?;
                tx.commit(
                    AuditEntry::new(AuditAction::Update, "decision", id)
                        .title(&after.title)
                        .description(
                            "overdue, but whoever holds it has no manager: flagged, not escalated",
                        )
                        .changes(before.audit_values(), after.audit_values()),
                )
                .await?;
                self.counter(
                    "codeops_sla_escalations_total",
                    "Decisions the SLA sweeper escalated or flagged.",
                    "no_manager",
                )
                .inc();
                tracing::warn!(%tenant_id, decision_id = %id, "overdue decision flagged: its holder has no manager");
                Ok(Outcome::Flagged)
            }
        }
    }
}

enum SweepError {
    Identity(tonic::Status),
    Api(ApiError),
}

impl From<ApiError> for SweepError {
    fn from(error: ApiError) -> Self {
        SweepError::Api(error)
    }
}
