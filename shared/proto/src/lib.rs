//! Generated protobuf types and gRPC stubs for every CodeOps API, in a
//! module tree that mirrors the proto packages, plus the encoded file
//! descriptor set that reflection serves.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

use std::fmt;

/// Every CodeOps proto file, `google/rpc/error_details.proto` and the
/// well-known types they import, encoded as a `FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/codeops_descriptor.bin"));

pub mod codeops {
    pub mod identity {
        pub mod v1 {
            tonic::include_proto!("codeops.identity.v1");
        }
    }
    pub mod planning {
        pub mod v1 {
            tonic::include_proto!("codeops.planning.v1");
        }
    }
    pub mod decision {
        pub mod v1 {
            tonic::include_proto!("codeops.decision.v1");
        }
    }
}

pub use codeops::decision::v1 as decision;
pub use codeops::identity::v1 as identity;
pub use codeops::planning::v1 as planning;

/// Messages that carry passwords or tokens print their fields redacted.
macro_rules! redacted_debug {
    ($($ty:ty),* $(,)?) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }
    )*};
}

redacted_debug!(
    identity::LoginRequest,
    identity::LoginResponse,
    identity::RefreshRequest,
    identity::RefreshResponse,
    identity::LogoutRequest,
    identity::ChangePasswordRequest,
    identity::CreateUserRequest,
    identity::TokenPair,
    identity::CreateTenantRequest,
    identity::CreateTenantResponse,
);
