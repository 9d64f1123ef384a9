//! `codeops migrate` and `codeops seed`: run as the schema owner (the
//! migrating role), not as the services' unprivileged role.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// Seed files, loaded in this order (the audit's insert order) in one
/// transaction. Every insert is `ON CONFLICT DO NOTHING`: loading twice is
/// a no-op.
pub const SEED_FILES: &[(&str, &str)] = &[
    ("01_tenants.sql", include_str!("../seeds/01_tenants.sql")),
    ("02_users.sql", include_str!("../seeds/02_users.sql")),
    ("03_teams.sql", include_str!("../seeds/03_teams.sql")),
    (
        "04_stakeholders.sql",
        include_str!("../seeds/04_stakeholders.sql"),
    ),
    ("05_outcomes.sql", include_str!("../seeds/05_outcomes.sql")),
    (
        "06_hypotheses.sql",
        include_str!("../seeds/06_hypotheses.sql"),
    ),
    (
        "07_decisions.sql",
        include_str!("../seeds/07_decisions.sql"),
    ),
    (
        "08_decision_comments.sql",
        include_str!("../seeds/08_decision_comments.sql"),
    ),
];

async fn owner_pool(url: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
    let target = format!("{}:{}", options.get_host(), options.get_port());
    // One direct connection first: a pool retries until its acquire
    // timeout and then hides why the database is unreachable.
    PgConnection::connect_with(&options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database at {target}: {e}"))?
        .close()
        .await
        .ok();
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database at {target}: {e}"))
}

/// Applies identity's, then planning's, then decision's migrations.
/// Already-applied migrations are skipped, so running twice is a no-op.
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    let pool = owner_pool(url).await?;
    for (service, migrator) in [
        ("identity", codeops_identity::migrator()),
        ("planning", codeops_planning::migrator()),
        ("decision", codeops_decision::migrator()),
    ] {
        migrator
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("{service} migrations failed: {e}"))?;
    }
    pool.close().await;
    Ok(())
}

/// Loads `seeds/` in one transaction; returns the number of rows inserted.
pub async fn seed(url: &str) -> anyhow::Result<u64> {
    let pool = owner_pool(url).await?;
    let mut conn = pool.acquire().await?;
    let inserted = seed_connection(&mut conn).await;
    drop(conn);
    pool.close().await;
    inserted
}

async fn seed_connection(conn: &mut PgConnection) -> anyhow::Result<u64> {
    let mut tx = conn.begin().await?;
    let mut inserted = 0;
    for (name, sql) in SEED_FILES {
        let result = sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| anyhow::anyhow!("seed {name} failed: {e}"))?;
        inserted += result.rows_affected();
    }
    tx.commit().await?;
    Ok(inserted)
}
