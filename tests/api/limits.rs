//! Connection, call and time limits on the gRPC port. The deadline for a
//! connection's first request is tested in `connections`.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use warden::{
    domain::password::HashingCost,
    proto::v1::{self as pb, auth_client::AuthClient},
};

use tonic_types::StatusExt as _;

use crate::helpers::{ADMIN_EMAIL, PASSWORD, assert_error, channel, spawn_app_with};

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let app = spawn_app_with(|c| c.max_connections = 2).await;
    // The test app's own client holds one connection; one more fills the cap
    // (it has not sent a request, but the default handshake timeout, 5 s, is
    // longer than this test holds it).
    let mut held = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut held, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();

    let waiting = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect_lazy();
    let mut waiting = AuthClient::new(waiting);
    let call = tokio::time::timeout(
        Duration::from_millis(500),
        waiting.get_jwks(pb::GetJwksRequest {}),
    )
    .await;
    assert!(
        call.is_err(),
        "a third connection is not served while two are open"
    );
    // The connections already open keep working.
    assert!(
        app.auth
            .clone()
            .get_jwks(pb::GetJwksRequest {})
            .await
            .is_ok()
    );

    drop(held);
    let call = tokio::time::timeout(
        Duration::from_secs(10),
        waiting.get_jwks(pb::GetJwksRequest {}),
    )
    .await;
    assert!(call.expect("served once a slot is free").is_ok());
}

#[tokio::test]
async fn a_call_that_outlives_the_request_timeout_is_cancelled() {
    let app = spawn_app_with(|c| {
        c.request_timeout = Duration::from_millis(100);
        // An unknown email is verified against a dummy hash of these costs:
        // far longer than the timeout.
        c.hashing = HashingCost {
            memory_kib: 64 * 1024,
            iterations: 8,
            parallelism: 1,
        };
    })
    .await;
    let result = app
        .login("nobody@example.com", "some long passphrase")
        .await;
    let code = result.unwrap_err().code();
    assert!(
        matches!(code, Code::Cancelled | Code::DeadlineExceeded),
        "{code:?}"
    );
    // Quick calls are unaffected.
    assert!(
        app.auth
            .clone()
            .get_jwks(pb::GetJwksRequest {})
            .await
            .is_ok()
    );
}

/// With every place in the hashing queue taken, calls that would hash are
/// refused at once (before any database work), and served again as soon as
/// places free up.
#[tokio::test]
async fn logins_and_registrations_are_refused_while_the_hashing_queue_is_full() {
    let app = spawn_app_with(|_| {}).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let hasher = app.state.accounts.hasher();
    let mut places = Vec::new();
    while let Ok(place) = hasher.queue() {
        places.push(place);
    }
    assert!(!places.is_empty());
    for result in [
        app.login(ADMIN_EMAIL, PASSWORD).await.map(|_| ()),
        app.register("late@example.com", PASSWORD).await.map(|_| ()),
    ] {
        let status = assert_error(result, Code::ResourceExhausted, "OVERLOADED");
        assert!(status.get_details_retry_info().is_some());
    }
    drop(places);
    assert!(app.login(ADMIN_EMAIL, PASSWORD).await.is_ok());
    assert!(app.register("late@example.com", PASSWORD).await.is_ok());
}

/// Calls beyond `WARDEN_MAX_REQUESTS_IN_FLIGHT` are refused at once, health
/// checks still answer, and calls are served again once places free up.
#[tokio::test]
async fn calls_beyond_the_in_flight_cap_are_overloaded_until_places_free_up() {
    let app = spawn_app_with(|c| {
        c.max_requests_in_flight = 2;
        // An unknown email is verified against a dummy hash of these costs:
        // slow enough to hold two calls in flight.
        c.hashing = HashingCost {
            memory_kib: 64 * 1024,
            iterations: 16,
            parallelism: 1,
        };
    })
    .await;
    let held: Vec<_> = ["a@example.com", "b@example.com"]
        .into_iter()
        .map(|email| {
            let mut auth = app.auth.clone();
            tokio::spawn(async move {
                auth.login(pb::LoginRequest {
                    organization_id: None,
                    email: email.into(),
                    password: "some long passphrase".into(),
                    device: None,
                })
                .await
            })
        })
        .collect();
    // Both calls are in their handlers once both have a hashing place.
    let hasher = app.state.accounts.hasher();
    tokio::time::timeout(Duration::from_secs(10), async {
        while hasher.queue_depth() + hasher.in_flight() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both logins reach the hasher");

    let refused = app.auth.clone().get_jwks(pb::GetJwksRequest {}).await;
    let status = assert_error(refused, Code::ResourceExhausted, "OVERLOADED");
    assert!(status.get_details_retry_info().is_some());
    let health = HealthClient::new(channel(app.addr).await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health checks have places of their own");
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);

    for login in held {
        let result = login.await.unwrap();
        assert_error(result, Code::Unauthenticated, "INVALID_CREDENTIALS");
    }
    assert!(
        app.auth
            .clone()
            .get_jwks(pb::GetJwksRequest {})
            .await
            .is_ok()
    );
}
