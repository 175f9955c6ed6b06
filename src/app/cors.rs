//! CORS for grpc-web from browsers.

use std::time::Duration;

use super::preflight::SettingError;

/// CORS for grpc-web from browsers: exact origins may send credentials; a
/// wildcard never does.
pub(super) fn cors_layer(
    origins: &[String],
) -> Result<Option<tower_http::cors::CorsLayer>, SettingError> {
    use ::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_headers = [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "authorization",
        "x-request-id",
    ]
    .map(HeaderName::from_static);
    let expose_headers = [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
    ]
    .map(HeaderName::from_static);
    let layer = CorsLayer::new()
        .allow_methods([Method::POST])
        .allow_headers(allow_headers)
        .expose_headers(expose_headers)
        .max_age(Duration::from_secs(86_400));
    if origins.iter().any(|o| o == "*") {
        return Ok(Some(
            layer
                .allow_origin(AllowOrigin::any())
                .allow_credentials(false),
        ));
    }
    let list = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o).map_err(|_| {
                SettingError::new("cors-origins", format!("`{o}` cannot be an Origin header"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        layer
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true),
    ))
}
