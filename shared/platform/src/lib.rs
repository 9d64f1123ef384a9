//! What every CodeOps service shares: database access scoped to a tenant,
//! the error type and its mapping to `Status`, request validation, the page
//! token codec, the audit writer, the request pipeline, metrics and the
//! server bootstrap.

pub mod audit;
pub mod convert;
pub mod db;
pub mod error;
pub mod metrics;
pub mod pagination;
pub mod pipeline;
pub mod server;
pub mod validate;

pub use audit::{Actor, AuditEntry};
pub use db::{Db, DbOptions, Tx};
pub use error::{ApiError, ApiResult};
pub use metrics::{Counter, Metrics, PoolStats};
pub use pagination::{Cursor, Page};
pub use validate::Violations;
