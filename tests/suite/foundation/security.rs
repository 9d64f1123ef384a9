//! Row-level security and the per-service database roles, as the services'
//! roles see them in SQL.

use codeops_platform::db::DbError;
use codeops_platform::{Db, DbOptions, ServiceRole};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::{TestDb, ids, tenant_tx};

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The SQLSTATE of a statement that must fail.
async fn refused(pool: &PgPool, tenant: Uuid, sql: &str) -> String {
    let mut tx = tenant_tx(pool, tenant).await;
    let err = sqlx::query(sql)
        .execute(&mut *tx)
        .await
        .expect_err(&format!("{sql} should be refused"));
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

const INSUFFICIENT_PRIVILEGE: &str = "42501";

#[tokio::test]
async fn without_a_tenant_a_service_role_sees_no_rows() {
    let test_db = TestDb::seeded().await;
    let admin = test_db.admin_pool().await;
    let all_users: i64 = sqlx::query_scalar("SELECT count(*) FROM core.users")
        .fetch_one(&admin)
        .await
        .expect("count users as superuser");
    assert!(all_users > 0, "the seeds have no users");

    for (role, table) in [
        (ServiceRole::Identity, "users"),
        (ServiceRole::Planning, "outcomes"),
        (ServiceRole::Decision, "decisions"),
    ] {
        let pool = test_db.role_pool(role).await;
        let current: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&pool)
            .await
            .expect("current_user");
        assert_eq!(current, role.role_name());
        assert_eq!(
            count(&pool, &format!("SELECT count(*) FROM core.{table}")).await,
            0,
            "{} sees {table} rows without a tenant",
            role.role_name()
        );
        pool.close().await;
    }
    admin.close().await;
}

#[tokio::test]
async fn a_tenant_transaction_sees_only_that_tenants_rows() {
    let test_db = TestDb::seeded().await;
    let admin = test_db.admin_pool().await;
    let identity = test_db.role_pool(ServiceRole::Identity).await;
    let decision = test_db.role_pool(ServiceRole::Decision).await;

    for (tenant, expected_users) in [(ids::ACME, 4_i64), (ids::GLOBEX, 2)] {
        let expected_decisions: i64 =
            sqlx::query_scalar("SELECT count(*) FROM core.decisions WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&admin)
                .await
                .expect("count decisions as superuser");
        assert!(
            expected_decisions > 0,
            "tenant {tenant} has no seeded decisions"
        );

        let mut tx = tenant_tx(&identity, tenant).await;
        let users: Vec<Uuid> = sqlx::query_scalar("SELECT tenant_id FROM core.users")
            .fetch_all(&mut *tx)
            .await
            .expect("users in tenant transaction");
        assert_eq!(users.len() as i64, expected_users, "users of {tenant}");
        assert!(users.iter().all(|t| *t == tenant), "another tenant's user");
        tx.commit().await.expect("commit");

        let mut tx = tenant_tx(&decision, tenant).await;
        let decisions: Vec<Uuid> = sqlx::query_scalar("SELECT tenant_id FROM core.decisions")
            .fetch_all(&mut *tx)
            .await
            .expect("decisions in tenant transaction");
        assert_eq!(decisions.len() as i64, expected_decisions);
        assert!(
            decisions.iter().all(|t| *t == tenant),
            "another tenant's decision"
        );
        tx.commit().await.expect("commit");
    }

    // The setting is transaction-local: the pooled connection forgets it.
    assert_eq!(count(&identity, "SELECT count(*) FROM core.users").await, 0);
    identity.close().await;
    decision.close().await;
    admin.close().await;
}

#[tokio::test]
async fn planning_role_cannot_read_users_or_write_decisions() {
    let test_db = TestDb::seeded().await;
    let planning = test_db.role_pool(ServiceRole::Planning).await;
    for sql in [
        "SELECT count(*) FROM core.users",
        "SELECT count(*) FROM core.teams",
        "SELECT count(*) FROM core.audit_logs",
        "SELECT count(*) FROM core.decisions",
        "UPDATE core.decisions SET title = 'x'",
        "DELETE FROM core.decision_comments",
        "UPDATE core.users SET first_name = 'x'",
    ] {
        assert_eq!(
            refused(&planning, ids::ACME, sql).await,
            INSUFFICIENT_PRIVILEGE,
            "planning's role: {sql}"
        );
    }
    // Its own slice is open to it.
    let mut tx = tenant_tx(&planning, ids::ACME).await;
    let outcomes: i64 = sqlx::query_scalar("SELECT count(*) FROM core.outcomes")
        .fetch_one(&mut *tx)
        .await
        .expect("planning reads outcomes");
    assert!(outcomes > 0);
    // Closing a pool waits for every connection to come back.
    drop(tx);
    planning.close().await;
}

#[tokio::test]
async fn decision_role_cannot_write_outcomes_or_read_identity() {
    let test_db = TestDb::seeded().await;
    let decision = test_db.role_pool(ServiceRole::Decision).await;
    for sql in [
        "UPDATE core.outcomes SET title = 'x'",
        "INSERT INTO core.outcomes (id, tenant_id, title) VALUES (gen_random_uuid(), core.current_tenant_id(), 'x')",
        "DELETE FROM core.hypotheses",
        "SELECT count(*) FROM core.users",
        "SELECT count(*) FROM core.tenants",
        "SELECT count(*) FROM core.refresh_tokens",
    ] {
        assert_eq!(
            refused(&decision, ids::ACME, sql).await,
            INSUFFICIENT_PRIVILEGE,
            "decision's role: {sql}"
        );
    }
    decision.close().await;
}

#[tokio::test]
async fn identity_role_cannot_touch_planning_or_decision_slices() {
    let test_db = TestDb::seeded().await;
    let identity = test_db.role_pool(ServiceRole::Identity).await;
    for sql in [
        "SELECT count(*) FROM core.outcomes",
        "SELECT count(*) FROM core.decisions",
        "UPDATE core.stakeholders SET name = 'x'",
        "DELETE FROM core.audit_logs",
    ] {
        assert_eq!(
            refused(&identity, ids::ACME, sql).await,
            INSUFFICIENT_PRIVILEGE,
            "identity's role: {sql}"
        );
    }
    identity.close().await;
}

#[tokio::test]
async fn the_old_shared_role_holds_no_grants_on_any_slice() {
    let test_db = TestDb::seeded().await;
    let admin = test_db.admin_pool().await;
    let grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.role_table_grants \
         WHERE grantee = 'codeops_app' AND table_schema = 'core'",
    )
    .fetch_one(&admin)
    .await
    .expect("count grants");
    assert_eq!(grants, 0);
    admin.close().await;
}

#[tokio::test]
async fn service_roles_own_nothing_and_cannot_bypass_rls() {
    let test_db = TestDb::seeded().await;
    let admin = test_db.admin_pool().await;
    for role in [
        ServiceRole::Identity,
        ServiceRole::Planning,
        ServiceRole::Decision,
    ] {
        let (login, superuser, bypass, owned): (bool, bool, bool, i64) = sqlx::query_as(
            "SELECT r.rolcanlogin, r.rolsuper, r.rolbypassrls, \
                 (SELECT count(*) FROM pg_tables t WHERE t.tableowner = r.rolname) \
             FROM pg_roles r WHERE r.rolname = $1",
        )
        .bind(role.role_name())
        .fetch_one(&admin)
        .await
        .expect("role attributes");
        assert!(!login && !superuser && !bypass, "{}", role.role_name());
        assert_eq!(owned, 0, "{} owns tables", role.role_name());
    }
    admin.close().await;
}

#[tokio::test]
async fn connecting_as_a_superuser_without_the_service_role_is_refused() {
    let test_db = TestDb::seeded().await;
    let mut options = DbOptions::new(test_db.url.clone());
    options.set_role = false;
    let result = Db::connect(&options, ServiceRole::Planning).await;
    match result {
        Err(DbError::Privileged(role)) => assert!(!role.is_empty()),
        Err(other) => panic!("expected the privileged-role error, got: {other}"),
        Ok(_) => panic!("Db::connect accepted a superuser without SET ROLE"),
    }
}
