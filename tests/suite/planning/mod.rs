//! The planning service over real gRPC and PostgreSQL: outcomes and
//! hypotheses, their lifecycles (generated from product.md's tables),
//! lists, and tenant isolation.

mod cross_tenant;
mod hypotheses;
mod lifecycle;
mod lists;
mod outcomes;

use codeops_proto::planning::{
    CreateHypothesisRequest, CreateOutcomeRequest, Hypothesis, HypothesisPriority, Outcome,
    OutcomePriority,
};
use sqlx::PgPool;
use uuid::{Uuid, uuid};

use crate::common::{TestApp, bearer};

/// Seeded planning rows (`seeds/05_outcomes.sql`, `seeds/06_hypotheses.sql`).
pub mod seeded {
    use super::*;

    /// Acme, IN_PROGRESS, with hypotheses 001-003.
    pub const ACME_ACTIVATION: Uuid = uuid!("dddddddd-dddd-dddd-dddd-ddddddddd001");
    /// Acme, VALIDATED (terminal), no hypotheses.
    pub const ACME_LATENCY: Uuid = uuid!("dddddddd-dddd-dddd-dddd-ddddddddd002");
    /// Acme, DRAFT, with hypothesis 004.
    pub const ACME_BILLING: Uuid = uuid!("dddddddd-dddd-dddd-dddd-ddddddddd003");
    /// Globex, IN_PROGRESS, with hypothesis 005.
    pub const GLOBEX_PICKS: Uuid = uuid!("dddddddd-dddd-dddd-dddd-ddddddddd004");
    /// Acme, BUILDING.
    pub const ACME_CHECKLIST: Uuid = uuid!("eeeeeeee-eeee-eeee-eeee-eeeeeeeee001");
    /// Acme, BLOCKED by the first release (no blocked_from stored; never started).
    pub const ACME_CHAT: Uuid = uuid!("eeeeeeee-eeee-eeee-eeee-eeeeeeeee003");
    /// Globex, BUILDING.
    pub const GLOBEX_LIGHTS: Uuid = uuid!("eeeeeeee-eeee-eeee-eeee-eeeeeeeee005");
    /// Globex's Operations team.
    pub const GLOBEX_TEAM: Uuid = uuid!("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb003");
    /// Acme's Growth team.
    pub const ACME_TEAM: Uuid = uuid!("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbb001");
}

/// An app with alice (acme OWNER: every permission) signed in.
pub struct Planning {
    pub app: TestApp,
    pub pool: PgPool,
    pub alice: String,
}

impl Planning {
    pub async fn spawn() -> Planning {
        let app = TestApp::spawn().await;
        let pool = app.admin_pool().await;
        let alice = app.login_seeded("acme", "alice@acme.test").await;
        Planning { app, pool, alice }
    }

    /// Creates an outcome as alice (DRAFT unless `outcome.status` says
    /// NOT_STARTED).
    pub async fn create_outcome(&self, outcome: Outcome) -> Outcome {
        self.app
            .outcomes()
            .create_outcome(bearer(
                CreateOutcomeRequest {
                    outcome: Some(outcome),
                    ..Default::default()
                },
                &self.alice,
            ))
            .await
            .expect("CreateOutcome")
            .into_inner()
    }

    /// Creates a DRAFT hypothesis under `outcome_id` as alice.
    pub async fn create_hypothesis(&self, outcome_id: &str, title: &str) -> Hypothesis {
        self.app
            .hypotheses()
            .create_hypothesis(bearer(
                CreateHypothesisRequest {
                    hypothesis: Some(hypothesis(outcome_id, title)),
                    ..Default::default()
                },
                &self.alice,
            ))
            .await
            .expect("CreateHypothesis")
            .into_inner()
    }

    /// Puts an outcome into `status` directly in the database (as the
    /// schema owner), for setting up a lifecycle case.
    pub async fn force_outcome_status(&self, id: &str, status: &str) {
        sqlx::query("UPDATE core.outcomes SET status = $2, updated_at = clock_timestamp() WHERE id = $1::uuid")
            .bind(id)
            .bind(status)
            .execute(&self.pool)
            .await
            .expect("force the outcome's status");
    }

    /// Puts a hypothesis into `status` (and `blocked_from`) directly.
    pub async fn force_hypothesis_status(
        &self,
        id: &str,
        status: &str,
        blocked_from: Option<&str>,
    ) {
        sqlx::query(
            "UPDATE core.hypotheses SET status = $2, blocked_from = $3, \
                 blocked_reason = CASE WHEN $2 = 'BLOCKED' THEN 'set up by a test' END, \
                 updated_at = clock_timestamp() WHERE id = $1::uuid",
        )
        .bind(id)
        .bind(status)
        .bind(blocked_from)
        .execute(&self.pool)
        .await
        .expect("force the hypothesis's status");
    }
}

/// A valid outcome to create.
pub fn outcome(title: &str) -> Outcome {
    Outcome {
        title: title.to_owned(),
        priority: OutcomePriority::Medium as i32,
        ..Default::default()
    }
}

/// A valid hypothesis to create under `outcome_id`.
pub fn hypothesis(outcome_id: &str, title: &str) -> Hypothesis {
    Hypothesis {
        outcome_id: outcome_id.to_owned(),
        title: title.to_owned(),
        belief: "Users want this".to_owned(),
        expected_result: "A metric moves".to_owned(),
        priority: HypothesisPriority::High as i32,
        ..Default::default()
    }
}

pub fn uuid_of(id: &str) -> Uuid {
    Uuid::parse_str(id).expect("a UUID")
}
