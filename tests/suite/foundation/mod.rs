//! Foundation: schema and seeds, row-level security, what every port
//! serves, the request pipeline in front of every port, the read RPCs
//! across tenants, idempotent creates, and the `codeops` binary.

mod access;
mod binary;
mod deadlines;
mod errors;
mod grpc;
mod idempotency;
mod limits;
mod pipeline;
mod schema;
mod security;
mod transport;
