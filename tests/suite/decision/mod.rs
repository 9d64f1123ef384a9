//! The decision service over real gRPC and PostgreSQL: decisions, their
//! lifecycle (generated from product.md's table), SLA defaults from
//! identity, escalation on demand and by the SLA sweeper, lists, and tenant
//! isolation.

mod comments;
mod cross_tenant;
mod decisions;
mod lifecycle;
mod sequences;
mod stakeholders;
mod sweeper;
mod watch;

use codeops_platform::{Db, DbOptions, Metrics, ServiceRole};
use codeops_proto::decision::{
    CreateDecisionRequest, Decision, DecisionOption, DecisionPriority, GetDecisionRequest,
};
use sqlx::PgPool;
use uuid::{Uuid, uuid};

use crate::common::{SERVICE_TOKEN, TestApp, bearer};

/// Seeded decision rows (`seeds/07_decisions.sql`).
pub mod seeded {
    use super::*;

    /// Acme, NEEDS_INPUT, BLOCKING, overdue; owner carol, assignee bob.
    pub const ACME_CHECKLIST: Uuid = uuid!("ffffffff-ffff-ffff-ffff-fffffffff001");
    /// Acme, DECIDED.
    pub const ACME_DECIDED: Uuid = uuid!("ffffffff-ffff-ffff-ffff-fffffffff004");
    /// Globex, UNDER_DISCUSSION, overdue.
    pub const GLOBEX_OVERDUE: Uuid = uuid!("ffffffff-ffff-ffff-ffff-fffffffff006");
    /// Acme outcome with hypotheses eeee...001-003.
    pub const ACME_ACTIVATION: Uuid = uuid!("dddddddd-dddd-dddd-dddd-ddddddddd001");
    /// Acme outcome with hypothesis eeee...004.
    pub const ACME_BILLING: Uuid = uuid!("dddddddd-dddd-dddd-dddd-ddddddddd003");
    /// Acme hypothesis under ACME_ACTIVATION.
    pub const ACME_CHECKLIST_HYPOTHESIS: Uuid = uuid!("eeeeeeee-eeee-eeee-eeee-eeeeeeeee001");
}

/// An app with alice (acme OWNER: every permission) signed in.
pub struct Decisions {
    pub app: TestApp,
    pub pool: PgPool,
    pub alice: String,
}

impl Decisions {
    pub async fn spawn() -> Decisions {
        let app = TestApp::spawn().await;
        let pool = app.admin_pool().await;
        let alice = app.login_seeded("acme", "alice@acme.test").await;
        Decisions { app, pool, alice }
    }

    /// Creates a decision as alice.
    pub async fn create(&self, decision: Decision) -> Decision {
        self.app
            .decisions()
            .create_decision(bearer(
                CreateDecisionRequest {
                    decision: Some(decision),
                    ..Default::default()
                },
                &self.alice,
            ))
            .await
            .expect("CreateDecision")
            .into_inner()
    }

    pub async fn get(&self, id: &str) -> Decision {
        self.app
            .decisions()
            .get_decision(bearer(GetDecisionRequest { id: id.into() }, &self.alice))
            .await
            .expect("GetDecision")
            .into_inner()
    }

    /// Puts a decision into `status` directly in the database (as the
    /// schema owner), for setting up a lifecycle case.
    pub async fn force_status(&self, id: &str, status: &str) {
        sqlx::query(
            "UPDATE core.decisions SET status = $2, updated_at = clock_timestamp() WHERE id = $1::uuid",
        )
        .bind(id)
        .bind(status)
        .execute(&self.pool)
        .await
        .expect("force the decision's status");
    }

    /// A sweeper on this app's database, calling identity at `identity_url`
    /// (the app's own when `None`).
    pub async fn sweeper(&self, identity_url: Option<String>) -> codeops_decision::Sweeper {
        let db = Db::connect(
            &DbOptions::new(self.app.db.url.clone()),
            ServiceRole::Decision,
        )
        .await
        .expect("decision pool");
        let url = identity_url.unwrap_or_else(|| format!("http://{}", self.app.identity_addr));
        let identity =
            codeops_decision::IdentityClient::new(&url, SERVICE_TOKEN).expect("identity client");
        codeops_decision::Sweeper::new(db, identity, Metrics::new())
    }
}

/// Two options, `opt-a` and `opt-b`.
pub fn options() -> Vec<DecisionOption> {
    ["opt-a", "opt-b"]
        .iter()
        .map(|id| DecisionOption {
            id: (*id).into(),
            title: format!("Option {id}"),
            description: "what it means".into(),
            pros: vec!["cheap".into()],
            cons: vec!["slow".into()],
        })
        .collect()
}

/// A valid decision to create: NORMAL priority, two options.
pub fn decision(title: &str) -> Decision {
    Decision {
        title: title.to_owned(),
        priority: DecisionPriority::Normal as i32,
        options: options(),
        ..Default::default()
    }
}

pub fn uuid_of(id: &str) -> Uuid {
    Uuid::parse_str(id).expect("a UUID")
}

pub fn time_of(ts: &Option<prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    let ts = ts.as_ref().expect("a timestamp");
    chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32).expect("a time")
}
