//! The connection pool and the one way to reach tenant data: a transaction
//! with the tenant set for row-level security.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::ApiError;

/// The unprivileged role the migrations create for the services' queries.
pub const APP_ROLE: &str = "codeops_app";

pub type Tx = Transaction<'static, Postgres>;

#[derive(Clone, Debug)]
pub struct DbOptions {
    pub url: String,
    pub max_connections: u32,
    /// Role to `SET ROLE` to on every new connection; `None` when the
    /// login role already is the unprivileged one.
    pub app_role: Option<String>,
    pub acquire_timeout: Duration,
}

impl DbOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            app_role: Some(APP_ROLE.to_owned()),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("cannot connect to the database at {target}: {source}")]
    Connect { target: String, source: sqlx::Error },
    #[error(
        "the services' database role {0:?} is a superuser, owns tables or bypasses row-level security; \
         run `codeops migrate` and connect with an unprivileged role"
    )]
    Privileged(String),
}

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    /// Connects, takes the unprivileged role on every connection and checks
    /// that row-level security really applies to it.
    pub async fn connect(options: &DbOptions) -> Result<Db, DbError> {
        let connect: PgConnectOptions = options.url.parse().map_err(DbError::BadUrl)?;
        let target = format!("{}:{}", connect.get_host(), connect.get_port());
        // One direct connection first: a pool retries until its acquire
        // timeout and then hides why ("connection refused", bad password).
        PgConnection::connect_with(&connect)
            .await
            .map_err(|source| DbError::Connect {
                target: target.clone(),
                source,
            })?
            .close()
            .await
            .ok();
        let role = options.app_role.clone();
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let role = role.clone();
                Box::pin(async move {
                    if let Some(role) = role {
                        // The role name is configuration, quoted as an identifier.
                        let sql = format!("SET ROLE \"{}\"", role.replace('"', "\"\""));
                        conn.execute(sql.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(|source| DbError::Connect { target, source })?;
        let db = Db { pool };
        db.check_unprivileged().await?;
        Ok(db)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn check_unprivileged(&self) -> Result<(), DbError> {
        let (role, privileged): (String, bool) = sqlx::query_as(
            "SELECT current_user::text, r.rolsuper OR r.rolbypassrls OR EXISTS ( \
                 SELECT 1 FROM pg_tables t WHERE t.schemaname = 'core' AND t.tableowner = current_user) \
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|source| DbError::Connect {
            target: "role check".into(),
            source,
        })?;
        if privileged {
            return Err(DbError::Privileged(role));
        }
        Ok(())
    }

    /// A transaction scoped to one tenant. `BEGIN` and the tenant setting go
    /// in one round trip; the setting is transaction-local, so it never
    /// outlives the transaction on a pooled connection.
    pub async fn tenant_tx(&self, tenant_id: Uuid) -> Result<Tx, ApiError> {
        // A formatted UUID is only hex digits and dashes: safe to inline,
        // and inlining lets both statements share one simple-query trip.
        let begin = format!("BEGIN; SELECT set_config('app.tenant_id', '{tenant_id}', true)");
        Ok(self.pool.begin_with(begin).await?)
    }

    /// A transaction with no tenant: row-level security shows it no tenant
    /// rows. For the few narrow cross-tenant paths (login by slug).
    pub async fn untenanted_tx(&self) -> Result<Tx, ApiError> {
        Ok(self.pool.begin().await?)
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Open, idle and maximum connections, for the pool gauges.
    pub fn pool_stats(&self) -> crate::metrics::PoolStats {
        crate::metrics::PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }
}

/// Sets the tenant of an open transaction (after login has resolved it).
pub async fn set_tenant(tx: &mut Tx, tenant_id: Uuid) -> Result<(), ApiError> {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant_id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
