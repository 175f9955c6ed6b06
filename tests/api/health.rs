use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use warden::proto::v1 as pb;

use crate::helpers::{ADMIN_EMAIL, PASSWORD, channel, spawn_app};

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(channel(app.addr).await);
    for service in [
        "",
        "warden.v1.Auth",
        "warden.v1.UserAdmin",
        "warden.v1.Organizations",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
    let liveness = health
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(liveness, ServingStatus::Serving);
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_v1_lists_every_service_and_resolves_error_details() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(channel(app.addr).await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "google.rpc.ErrorInfo".into(),
            )),
        },
    ];
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let listed = responses
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    let MessageResponse::ListServicesResponse(list) = listed else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "warden.v1.Auth",
        "warden.v1.UserAdmin",
        "warden.v1.Organizations",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let file = responses
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    assert!(
        matches!(file, MessageResponse::FileDescriptorResponse(f) if !f.file_descriptor_proto.is_empty())
    );
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_warden_services() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(channel(app.addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"warden.v1.Auth") && names.contains(&"warden.v1.UserAdmin"),
        "{names:?}"
    );
}

#[tokio::test]
async fn the_side_port_answers_liveness_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(app.http_get("/healthz").await.0, 200);
    assert_eq!(app.http_get("/readyz").await.0, 200);
    assert_eq!(app.http_get("/nothing-here").await.0, 404);
}

#[tokio::test]
async fn a_request_over_64_kib_is_refused_before_any_work() {
    let app = spawn_app().await;
    let result = app
        .auth
        .clone()
        .register(pb::RegisterRequest {
            organization_name: None,
            invitation_token: String::new(),
            email: ADMIN_EMAIL.into(),
            password: PASSWORD.into(),
            display_name: "x".repeat(65 * 1024),
        })
        .await;
    let code = result.unwrap_err().code();
    assert!(
        matches!(code, Code::OutOfRange | Code::ResourceExhausted),
        "transport-level refusal, got {code:?}"
    );
    // Nothing was created: the next registration is still the first.
    assert!(app.register(ADMIN_EMAIL, PASSWORD).await.unwrap().is_admin);
}
