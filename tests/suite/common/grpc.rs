//! gRPC helpers shared by every area: reflection and health.

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Expands to an async fn listing services over one reflection version.
macro_rules! list_services_fn {
    ($name:ident, $pb:path) => {
        pub async fn $name(channel: Channel) -> Result<Vec<String>, tonic::Status> {
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use $pb as pb;
            let request = pb::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut client = pb::server_reflection_client::ServerReflectionClient::new(channel);
            let mut responses = client
                .server_reflection_info(tokio_stream::iter(vec![request]))
                .await?
                .into_inner();
            let response = responses.message().await?.ok_or_else(|| {
                tonic::Status::internal("reflection stream ended without an answer")
            })?;
            match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                    names.sort();
                    Ok(names)
                }
                other => Err(tonic::Status::internal(format!(
                    "unexpected reflection answer: {other:?}"
                ))),
            }
        }
    };
}

list_services_fn!(list_services_v1, tonic_reflection::pb::v1);
list_services_fn!(list_services_v1alpha, tonic_reflection::pb::v1alpha);

/// Expands to an async fn asking one reflection version for the files that
/// define a symbol; their encoded `FileDescriptorProto`s.
macro_rules! file_containing_symbol_fn {
    ($name:ident, $pb:path) => {
        pub async fn $name(channel: Channel, symbol: &str) -> Result<Vec<Vec<u8>>, tonic::Status> {
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use $pb as pb;
            let request = pb::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
            };
            let mut client = pb::server_reflection_client::ServerReflectionClient::new(channel);
            let mut responses = client
                .server_reflection_info(tokio_stream::iter(vec![request]))
                .await?
                .into_inner();
            let response = responses.message().await?.ok_or_else(|| {
                tonic::Status::internal("reflection stream ended without an answer")
            })?;
            match response.message_response {
                Some(MessageResponse::FileDescriptorResponse(files)) => {
                    Ok(files.file_descriptor_proto)
                }
                Some(MessageResponse::ErrorResponse(error)) => Err(tonic::Status::new(
                    tonic::Code::from_i32(error.error_code),
                    error.error_message,
                )),
                other => Err(tonic::Status::internal(format!(
                    "unexpected reflection answer: {other:?}"
                ))),
            }
        }
    };
}

file_containing_symbol_fn!(file_containing_symbol_v1, tonic_reflection::pb::v1);
file_containing_symbol_fn!(
    file_containing_symbol_v1alpha,
    tonic_reflection::pb::v1alpha
);

/// The serving status health reports for `service` ("" for the server).
pub async fn health_status(
    channel: Channel,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
}

/// The services each port must list (besides health and reflection).
pub const IDENTITY_SERVICES: &[&str] = &[
    "codeops.identity.v1.AuditService",
    "codeops.identity.v1.AuthService",
    "codeops.identity.v1.InternalService",
    "codeops.identity.v1.RoleService",
    "codeops.identity.v1.TeamService",
    "codeops.identity.v1.TenantService",
    "codeops.identity.v1.UserService",
];
pub const PLANNING_SERVICES: &[&str] = &[
    "codeops.planning.v1.HypothesisService",
    "codeops.planning.v1.OutcomeService",
];
pub const DECISION_SERVICES: &[&str] = &["codeops.decision.v1.DecisionService"];
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// The gRPC services a CodeOps service serves.
pub fn services_of(service: codeops::suite::Service) -> &'static [&'static str] {
    match service {
        codeops::suite::Service::Identity => IDENTITY_SERVICES,
        codeops::suite::Service::Planning => PLANNING_SERVICES,
        codeops::suite::Service::Decision => DECISION_SERVICES,
    }
}
