//! The tenant-context layer every CodeOps service stands behind: it turns an
//! `authorization: Bearer` access token into a [`TenantContext`], checks the
//! permission each method declares, and hands handlers the request's
//! metadata (request id, peer, user agent) the request pipeline gathered.

pub mod context;
pub mod layer;
pub mod permission;
pub mod revocation;
pub mod token;

pub use context::{
    AuthFailure, ERROR_DOMAIN, OperatorContext, RequestExt, RequestMeta, ServiceContext,
    TenantContext, permission_denied,
};
pub use layer::{Access, AccessTable, AuthConfig, AuthLayer, MethodAccess};
pub use permission::{Permission, PermissionSet};
pub use revocation::{RevocationSet, Revoked};
pub use token::{
    Claims, KeyPair, PublicKey, Subject, TokenError, TokenSettings, TokenSigner, TokenVerifier,
};
