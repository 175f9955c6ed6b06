//! Connection and time limits on the gRPC port.

use std::time::Duration;

use tonic::Code;
use warden::{
    domain::password::HashingCost,
    proto::v1::{self as pb, auth_client::AuthClient},
};

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let app = spawn_app_with(|c| c.max_connections = 2).await;
    // The test app's own client holds one connection; one more fills the cap.
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
