//! What every CodeOps service shares: database access scoped to a tenant,
//! the error type and its mapping to `Status`, request validation, the page
//! token codec, idempotent creates, the audit writer, the request pipeline,
//! metrics and the server bootstrap.

pub mod audit;
pub mod convert;
pub mod db;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod lifecycle;
pub mod metrics;
pub mod pagination;
pub mod pipeline;
pub mod revocation_feed;
pub mod server;
pub mod transport;
pub mod validate;

pub use audit::{Actor, AuditAction, AuditEntry};
pub use db::{Db, DbOptions, ReadTx, ServiceRole, TenantTx, WriteTx};
pub use error::{ApiError, ApiResult, Problem};
pub use idempotency::{Claim, IdempotentRequest, RequestKey};
pub use lifecycle::Lifecycle;
pub use metrics::{Counter, Metrics};
pub use pagination::{Cursor, Ordering, Page, Position, SortKind, SortValue};
pub use validate::Violations;
