//! The `codeops` binary's library: configuration, migrations and seeds,
//! service start-up and `codeops dev`. Tests drive the suite through the
//! same functions the binary uses.

pub mod config;
pub mod dev;
pub mod schema;
pub mod suite;
pub mod tenant_cli;
