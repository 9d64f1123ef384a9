//! Foundation: schema and seeds, row-level security, what every port
//! serves, the read RPCs across tenants, and the `codeops` binary.

mod binary;
mod grpc;
mod schema;
mod security;
