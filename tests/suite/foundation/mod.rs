//! Foundation: schema and seeds, row-level security, what every port
//! serves, the read RPCs across tenants, and the `codeops` binary.

mod access;
mod binary;
mod errors;
mod grpc;
mod limits;
mod schema;
mod security;
