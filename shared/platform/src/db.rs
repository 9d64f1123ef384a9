//! The connection pool and the only ways to reach tenant data: a read or a
//! write transaction that carries its tenant and its actor, opened from the
//! caller's [`TenantContext`] or from a named system [`Actor`].
//!
//! Round trips are the cost that matters. A pooled connection is handed out
//! without sqlx's liveness ping; `BEGIN` and the tenant setting share one
//! round trip; a read never waits for its end (dropping a [`ReadTx`] queues
//! the `ROLLBACK`, which goes out when the pool takes the connection back).
//! A read therefore costs two round trips, a write one more per statement
//! plus its `COMMIT`.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use codeops_tenant::TenantContext;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::audit::{self, Actor, AuditEntry};
use crate::error::{ApiError, ApiResult};

/// The services, each with its own database role (migrations create them):
/// a service's role is granted its own tables plus appending to
/// `audit_logs`, nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceRole {
    Identity,
    Planning,
    Decision,
}

impl ServiceRole {
    pub fn role_name(self) -> &'static str {
        match self {
            ServiceRole::Identity => "codeops_identity",
            ServiceRole::Planning => "codeops_planning",
            ServiceRole::Decision => "codeops_decision",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DbOptions {
    pub url: String,
    pub max_connections: u32,
    /// `SET ROLE` to the service's role on every new connection. Off when
    /// each service logs in with its own unprivileged role already.
    pub set_role: bool,
    pub acquire_timeout: Duration,
}

impl DbOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            set_role: true,
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
    /// False while health knows the database is unreachable: calls then
    /// answer UNAVAILABLE at once instead of each waiting out the pool's
    /// acquire timeout. The health watcher sets it (`set_reachable`).
    reachable: Arc<AtomicBool>,
}

impl Db {
    /// Connects as `role` (with `SET ROLE` on every connection unless the
    /// options say the login role already is the service's) and checks that
    /// row-level security really applies to it.
    pub async fn connect(options: &DbOptions, role: ServiceRole) -> Result<Db, DbError> {
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
        let set_role = options
            .set_role
            .then(|| format!("SET ROLE {}", role.role_name()));
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // No ping when a connection leaves the pool: it would add a round
            // trip to every call. The pool pings on release instead, after
            // the answer has gone out, and drops connections that fail.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                let set_role = set_role.clone();
                Box::pin(async move {
                    if let Some(sql) = set_role {
                        conn.execute(sql.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(|source| DbError::Connect { target, source })?;
        let db = Db {
            pool,
            reachable: Arc::new(AtomicBool::new(true)),
        };
        db.check_unprivileged().await?;
        Ok(db)
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

    /// A read-only transaction in the caller's tenant.
    pub async fn read(&self, ctx: &TenantContext) -> ApiResult<ReadTx> {
        self.read_in(ctx.tenant_id, ctx.meta.deadline).await
    }

    /// A read-only transaction on behalf of a system actor (login, the
    /// operator, the SLA sweeper) in the actor's tenant.
    pub async fn read_as(&self, actor: &Actor) -> ApiResult<ReadTx> {
        self.read_in(actor.tenant_id(), actor.deadline()).await
    }

    async fn read_in(&self, tenant_id: Uuid, deadline: Option<Instant>) -> ApiResult<ReadTx> {
        let tx = self.begin(tenant_id, "BEGIN READ ONLY", deadline).await?;
        Ok(ReadTx { tx, tenant_id })
    }

    /// A write transaction by the caller; it commits only together with an
    /// audit entry (see [`WriteTx::commit`]).
    pub async fn write(&self, ctx: &TenantContext) -> ApiResult<WriteTx> {
        self.write_as(Actor::user(ctx)).await
    }

    /// A write transaction by a system actor, in the actor's tenant.
    pub async fn write_as(&self, actor: Actor) -> ApiResult<WriteTx> {
        let tx = self
            .begin(actor.tenant_id(), "BEGIN", actor.deadline())
            .await?;
        Ok(WriteTx { tx, actor })
    }

    async fn begin(
        &self,
        tenant_id: Uuid,
        begin: &str,
        deadline: Option<Instant>,
    ) -> ApiResult<Transaction<'static, Postgres>> {
        // A formatted UUID is only hex digits and dashes, a timeout only
        // digits: safe to inline, and inlining lets every statement share
        // one simple-query round trip. Both settings are transaction-local,
        // so they never outlive the transaction on a pooled connection.
        if !self.reachable.load(Ordering::Relaxed) {
            return Err(ApiError::DatabaseDown);
        }
        let mut sql = format!("{begin}; SELECT set_config('app.tenant_id', '{tenant_id}', true)");
        if let Some(deadline) = deadline {
            // The caller stops waiting at its deadline: PostgreSQL stops
            // working on the call's statements then too (a statement still
            // running is cancelled, SQLSTATE 57014).
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::DeadlineExceeded);
            }
            let millis = left.as_millis().clamp(1, i32::MAX as u128);
            sql.push_str(&format!("; SET LOCAL statement_timeout = {millis}"));
        }
        Ok(self.pool.begin_with(sql).await?)
    }

    /// The one query that runs with no tenant: resolving a tenant slug at
    /// login, through the narrow `core.tenant_for_login` function (id and
    /// status of one slug, nothing else). Row-level security shows this
    /// statement no tenant rows otherwise.
    pub async fn tenant_for_login(&self, slug: &str) -> ApiResult<Option<(Uuid, Option<String>)>> {
        Ok(
            sqlx::query_as("SELECT id, status FROM core.tenant_for_login($1)")
                .bind(slug)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The other query that spans tenants: identity's revocation feed,
    /// through the narrow `core.revocations_after` function (ids, tenant
    /// and time of revoked sessions and deactivated users after a keyset
    /// position, nothing else). Returns the database's clock, read before
    /// the rows, with them.
    pub async fn revocations_after(
        &self,
        after: (DateTime<Utc>, i16, Uuid),
        limit: i32,
    ) -> ApiResult<(DateTime<Utc>, Vec<RevocationRow>)> {
        let mut conn = self.pool.acquire().await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *conn)
            .await?;
        let rows = sqlx::query_as(
            "SELECT kind, id, tenant_id, user_id, at FROM core.revocations_after($1, $2, $3, $4)",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(after.2)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        Ok((now, rows))
    }

    /// The decision service's one read across tenants: open decisions past
    /// their deadline at `now` (tenant, id, deadline), oldest deadline
    /// first, through the narrow `core.overdue_decisions` function. The SLA
    /// sweeper escalates each in a transaction of its own tenant.
    pub async fn overdue_decisions(
        &self,
        now: DateTime<Utc>,
        limit: i32,
    ) -> ApiResult<Vec<(Uuid, Uuid, DateTime<Utc>)>> {
        Ok(
            sqlx::query_as("SELECT tenant_id, id, due_at FROM core.overdue_decisions($1, $2)")
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// A `LISTEN` on `channel` over a connection of the pool (so with the
    /// service's role; listening needs no table access), held until the
    /// listener is dropped. The decision service's one per process feeds
    /// WatchDecisions.
    pub async fn listen(&self, channel: &str) -> ApiResult<sqlx::postgres::PgListener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(channel).await?;
        Ok(listener)
    }

    /// What the health watcher last learned: while false, transactions are
    /// refused at once with UNAVAILABLE.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    /// One health probe: `Some(true)` answered, `Some(false)` failed,
    /// `None` no verdict (every pooled connection busy: the database is
    /// slow or the service loaded, not known to be down).
    pub async fn ping(&self) -> Option<bool> {
        match sqlx::query("SELECT 1").execute(&self.pool).await {
            Ok(_) => Some(true),
            Err(sqlx::Error::PoolTimedOut) => None,
            Err(_) => Some(false),
        }
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

/// One entry of the revocation feed ([`Db::revocations_after`]).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RevocationRow {
    /// 0: a revoked session (`id` is the refresh-token family); 1: a
    /// deactivated user (`id` is the user).
    pub kind: i16,
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A read-only transaction scoped to one tenant. Dropping it ends it; there
/// is nothing to commit and no reason to wait for the server to say so.
pub struct ReadTx {
    tx: Transaction<'static, Postgres>,
    tenant_id: Uuid,
}

impl Deref for ReadTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for ReadTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// A write transaction scoped to its actor's tenant. It has no plain
/// `commit`: [`WriteTx::commit`] takes the audit entry of the change, so a
/// change cannot be committed without its audit row; the rare write that
/// records nothing says why with [`WriteTx::commit_unaudited`]. Dropped
/// without committing, it rolls back.
///
/// With its audit entry, a write commits:
///
/// ```no_run
/// # use codeops_platform::{ApiResult, AuditAction, AuditEntry, Db};
/// # async fn rename(db: Db, ctx: codeops_tenant::TenantContext, id: uuid::Uuid) -> ApiResult<()> {
/// let mut tx = db.write(&ctx).await?;
/// sqlx::query("UPDATE core.teams SET name = 'x' WHERE id = $1")
///     .bind(id)
///     .execute(&mut *tx)
///     .await?;
/// tx.commit(AuditEntry::new(AuditAction::Update, "team", id)).await?;
/// # Ok(()) }
/// ```
///
/// Without one, it does not compile:
///
/// ```compile_fail
/// # use codeops_platform::{ApiResult, Db};
/// # async fn rename(db: Db, ctx: codeops_tenant::TenantContext, id: uuid::Uuid) -> ApiResult<()> {
/// let mut tx = db.write(&ctx).await?;
/// sqlx::query("UPDATE core.teams SET name = 'x' WHERE id = $1")
///     .bind(id)
///     .execute(&mut *tx)
///     .await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct WriteTx {
    tx: Transaction<'static, Postgres>,
    actor: Actor,
}

impl WriteTx {
    /// Names the user a login or refresh transaction ([`Actor::login`])
    /// authenticated, so its audit rows say who it was.
    pub fn authenticated(&mut self, user_id: Uuid, name: String, email: String) {
        self.actor.set_user(user_id, name, email);
    }

    /// Records an audit entry now, for a write with several of them; the
    /// last one goes to [`WriteTx::commit`].
    pub async fn audit(&mut self, entry: AuditEntry<'_>) -> ApiResult<()> {
        audit::record(&mut self.tx, &self.actor, entry).await
    }

    /// Records the change's audit entry and commits both at once.
    pub async fn commit(mut self, entry: AuditEntry<'_>) -> ApiResult<()> {
        audit::record(&mut self.tx, &self.actor, entry).await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Commits a write that records no audit entry, saying why (for
    /// bookkeeping that is not a change of the tenant's data, such as the
    /// last-login time). The reason is logged at debug level.
    pub async fn commit_unaudited(self, why: &'static str) -> ApiResult<()> {
        tracing::debug!(why, "write committed without an audit entry");
        self.tx.commit().await?;
        Ok(())
    }
}

impl Deref for WriteTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// A transaction that knows its tenant: what the services' SQL functions
/// take, so they never take a tenant id of their own.
pub trait TenantTx: DerefMut<Target = PgConnection> + Send {
    fn tenant_id(&self) -> Uuid;
}

impl TenantTx for ReadTx {
    fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
}

impl TenantTx for WriteTx {
    fn tenant_id(&self) -> Uuid {
        self.actor.tenant_id()
    }
}
