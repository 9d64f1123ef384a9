//! The access tables against the API: every method any port serves has a
//! row, every row names a served method, and every method enforces exactly
//! the access its row declares — table-driven, one app for all of them.

use std::collections::BTreeSet;

use codeops::suite::Service;
use codeops_tenant::{Access, MethodAccess};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{TestApp, bearer};
use crate::identity::support::acme_user_with;

/// `(service, its access table)` as the services declare them.
fn tables() -> [(Service, &'static [MethodAccess]); 3] {
    [
        (Service::Identity, codeops_identity::ACCESS),
        (Service::Planning, codeops_planning::ACCESS),
        (Service::Decision, codeops_decision::ACCESS),
    ]
}

/// `/package.Service/Method` of every method in the descriptors of
/// `grpc_services`.
fn served_methods(grpc_services: &[&str]) -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(codeops_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes");
    let mut methods = BTreeSet::new();
    for file in set.file {
        let package = file.package.clone().unwrap_or_default();
        for service in file.service {
            let full = format!("{package}.{}", service.name());
            if !grpc_services.contains(&full.as_str()) {
                continue;
            }
            for method in service.method {
                methods.insert(format!("/{full}/{}", method.name()));
            }
        }
    }
    methods
}

fn grpc_services_of(service: Service) -> &'static [&'static str] {
    match service {
        Service::Identity => codeops_identity::GRPC_SERVICES,
        Service::Planning => codeops_planning::GRPC_SERVICES,
        Service::Decision => codeops_decision::GRPC_SERVICES,
    }
}

#[test]
fn every_served_method_has_exactly_one_access_row_and_every_row_a_method() {
    for (service, table) in tables() {
        let served = served_methods(grpc_services_of(service));
        assert!(!served.is_empty(), "{service:?} serves no methods");
        let rows: Vec<&str> = table.iter().map(|row| row.path).collect();
        let declared: BTreeSet<String> = rows.iter().map(|p| (*p).to_owned()).collect();
        assert_eq!(
            declared.len(),
            rows.len(),
            "{service:?} declares a method twice"
        );
        let missing: Vec<_> = served.difference(&declared).collect();
        assert!(
            missing.is_empty(),
            "{service:?}: methods with no access row: {missing:?}"
        );
        let stray: Vec<_> = declared.difference(&served).collect();
        assert!(
            stray.is_empty(),
            "{service:?}: rows naming no served method: {stray:?}"
        );
    }
}

/// Calls `path` with an empty message: the auth layer decides before any
/// handler decodes the body.
async fn call(channel: Channel, path: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = match token {
        Some(token) => bearer((), token),
        None => tonic::Request::new(()),
    };
    let path = http::uri::PathAndQuery::try_from(path).expect("method path");
    grpc.unary(request, path, tonic_prost::ProstCodec::<(), ()>::default())
        .await
        .map(|_| ())
}

/// Whether `path` is a server-streaming method (its descriptor says so).
fn server_streaming(path: &str) -> bool {
    let set = prost_types::FileDescriptorSet::decode(codeops_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes");
    set.file.iter().any(|file| {
        file.service.iter().any(|service| {
            service.method.iter().any(|method| {
                method.server_streaming()
                    && path == format!("/{}.{}/{}", file.package(), service.name(), method.name())
            })
        })
    })
}

/// Opens a server-streaming call with an empty message: Ok once its
/// response headers arrive (an accepted watch sends no message yet).
async fn call_streaming(channel: Channel, path: &str, token: &str) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::try_from(path).expect("method path");
    grpc.server_streaming(
        bearer((), token),
        path,
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
    .map(|_| ())
}

/// Whether the auth layer (not the handler) refused the call: handlers
/// answer UNAUTHENTICATED too (a bad refresh token), with reasons of their own.
fn refused_by_auth_layer(status: &tonic::Status) -> bool {
    let reason = reason(status);
    status.code() == Code::PermissionDenied
        || (status.code() == Code::Unauthenticated
            && (reason.is_empty()
                || reason.starts_with("TOKEN_")
                || reason.starts_with("OPERATOR_")))
}

fn reason(status: &tonic::Status) -> String {
    tonic_types::StatusExt::get_details_error_info(status)
        .map(|info| info.reason)
        .unwrap_or_default()
}

#[tokio::test]
async fn every_method_enforces_its_declared_access() {
    let app = TestApp::spawn().await;
    let owner = app.login_seeded("acme", "alice@acme.test").await;
    let (_, nobody) = acme_user_with(&app, &[]).await;
    // Authenticated methods get a user of their own: an empty Logout ends
    // every session of its caller, and the revocation feed would then
    // refuse that caller's token in the rows that follow.
    let (_, signed_in) = acme_user_with(&app, &[]).await;

    for (service, table) in tables() {
        let channel = app.channel(service);
        for row in table {
            let path = row.path;
            match row.access {
                Access::Require(permission) => {
                    let denied = call(channel.clone(), path, Some(&nobody))
                        .await
                        .expect_err("a caller without the permission is refused");
                    assert_eq!(denied.code(), Code::PermissionDenied, "{path}");
                    assert_eq!(reason(&denied), "PERMISSION_MISSING", "{path}");
                    let info = tonic_types::StatusExt::get_details_error_info(&denied)
                        .expect("error info");
                    assert_eq!(
                        info.metadata.get("permission").map(String::as_str),
                        Some(permission.code()),
                        "{path} names the permission it needs"
                    );
                    let anonymous = call(channel.clone(), path, None)
                        .await
                        .expect_err("no token");
                    assert_eq!(anonymous.code(), Code::Unauthenticated, "{path}");
                    // The owner holds every permission: whatever the empty
                    // message earns it, it is not an access refusal (a
                    // watch is accepted once its response headers arrive).
                    let owner_call = if server_streaming(path) {
                        call_streaming(channel.clone(), path, &owner).await
                    } else {
                        call(channel.clone(), path, Some(&owner)).await
                    };
                    if let Err(status) = owner_call {
                        assert!(
                            !matches!(
                                status.code(),
                                Code::PermissionDenied | Code::Unauthenticated
                            ),
                            "{path} refused the owner: {status:?}"
                        );
                    }
                }
                Access::Authenticated => {
                    let anonymous = call(channel.clone(), path, None)
                        .await
                        .expect_err("no token");
                    assert_eq!(anonymous.code(), Code::Unauthenticated, "{path}");
                    if let Err(status) = call(channel.clone(), path, Some(&signed_in)).await {
                        assert!(
                            !matches!(
                                status.code(),
                                Code::PermissionDenied | Code::Unauthenticated
                            ),
                            "{path} refused a signed-in caller: {status:?}"
                        );
                    }
                }
                Access::Service => {
                    // Neither a user's token nor the operator's credential
                    // is the service credential.
                    for credential in [owner.as_str(), crate::common::OPERATOR_TOKEN] {
                        let refused = call(channel.clone(), path, Some(credential))
                            .await
                            .expect_err("only the service credential passes");
                        assert_eq!(refused.code(), Code::Unauthenticated, "{path}");
                        assert_eq!(reason(&refused), "SERVICE_CREDENTIAL_REQUIRED", "{path}");
                    }
                    if let Err(status) =
                        call(channel.clone(), path, Some(crate::common::SERVICE_TOKEN)).await
                    {
                        assert!(!refused_by_auth_layer(&status), "{path}: {status:?}");
                    }
                }
                Access::Operator => {
                    // A user's token, even the owner's, is no operator credential.
                    let refused = call(channel.clone(), path, Some(&owner))
                        .await
                        .expect_err("a user token is refused");
                    assert_eq!(refused.code(), Code::Unauthenticated, "{path}");
                }
                Access::Public => {
                    if let Err(status) = call(channel.clone(), path, None).await {
                        assert!(
                            !refused_by_auth_layer(&status),
                            "{path} is public but refused an anonymous caller: {status:?}"
                        );
                    }
                }
            }
        }
    }
    app.shutdown().await;
}
