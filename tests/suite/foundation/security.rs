//! Row-level security as the services' role sees it.

use codeops_platform::db::DbError;
use codeops_platform::{Db, DbOptions};
use uuid::Uuid;

use crate::common::{TestDb, ids};

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn without_a_tenant_the_app_role_sees_no_rows() {
    let test_db = TestDb::seeded().await;
    let admin = test_db.admin_pool().await;
    let all_users: i64 = sqlx::query_scalar("SELECT count(*) FROM core.users")
        .fetch_one(&admin)
        .await
        .expect("count users as superuser");
    assert!(all_users > 0, "the seeds have no users");

    let db = test_db.app_db().await;
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(db.pool())
        .await
        .expect("current_user");
    assert_eq!(role, "codeops_app");
    assert_eq!(count(&db, "SELECT count(*) FROM core.users").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM core.decisions").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM core.outcomes").await, 0);

    // A transaction without a tenant is no different.
    let mut tx = db.untenanted_tx().await.expect("untenanted transaction");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM core.users")
        .fetch_one(&mut *tx)
        .await
        .expect("count users");
    assert_eq!(n, 0);
    tx.rollback().await.expect("rollback");
    db.close().await;
    admin.close().await;
}

#[tokio::test]
async fn a_tenant_transaction_sees_only_that_tenants_rows() {
    let test_db = TestDb::seeded().await;
    let admin = test_db.admin_pool().await;
    let db = test_db.app_db().await;

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

        let mut tx = db.tenant_tx(tenant).await.expect("tenant transaction");
        let users: Vec<Uuid> = sqlx::query_scalar("SELECT tenant_id FROM core.users")
            .fetch_all(&mut *tx)
            .await
            .expect("users in tenant transaction");
        assert_eq!(
            users.len() as i64,
            expected_users,
            "users visible to tenant {tenant}"
        );
        assert!(
            users.iter().all(|t| *t == tenant),
            "another tenant's user is visible: {users:?}"
        );

        let decisions: Vec<Uuid> = sqlx::query_scalar("SELECT tenant_id FROM core.decisions")
            .fetch_all(&mut *tx)
            .await
            .expect("decisions in tenant transaction");
        assert_eq!(
            decisions.len() as i64,
            expected_decisions,
            "decisions visible to tenant {tenant}"
        );
        assert!(
            decisions.iter().all(|t| *t == tenant),
            "another tenant's decision is visible"
        );
        tx.commit().await.expect("commit");
    }

    // The setting is transaction-local: the pooled connection forgets it.
    assert_eq!(count(&db, "SELECT count(*) FROM core.users").await, 0);
    db.close().await;
    admin.close().await;
}

#[tokio::test]
async fn connecting_as_a_superuser_without_the_app_role_is_refused() {
    let test_db = TestDb::seeded().await;
    let mut options = DbOptions::new(test_db.url.clone());
    options.app_role = None;
    let result = Db::connect(&options).await;
    match result {
        Err(DbError::Privileged(role)) => assert!(!role.is_empty()),
        Err(other) => panic!("expected the privileged-role error, got: {other}"),
        Ok(_) => panic!("Db::connect accepted a superuser without SET ROLE"),
    }
}
