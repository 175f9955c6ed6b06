use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde_json::Value;
use tonic::Code;
use warden::{
    proto::v1 as pb,
    store::entities::{session, user},
};

use crate::{
    helpers::{ADMIN_EMAIL, TestApp, assert_error, spawn_app, spawn_app_on, spawn_app_with},
    login::set_status,
};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn get_me_with_a_valid_token_returns_the_caller() {
    let app = spawn_app().await;
    let (admin, token) = app.admin_session().await;
    assert_eq!(app.get_me_with(Some(&bearer(&token))).await.unwrap(), admin);
    // The scheme is case-insensitive.
    assert_eq!(
        app.get_me_with(Some(&format!("bearer {token}")))
            .await
            .unwrap(),
        admin
    );
}

#[tokio::test]
async fn get_me_without_a_token_is_token_missing() {
    let app = spawn_app().await;
    assert_error(
        app.get_me_with(None).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    assert_error(
        app.get_me_with(Some("Bearer")).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
}

#[tokio::test]
async fn get_me_with_a_malformed_token_is_token_invalid() {
    let app = spawn_app().await;
    let (_, token) = app.admin_session().await;
    for header in [
        "Bearer not-a-jwt".to_owned(),
        "Bearer a.b.c".to_owned(),
        format!("Basic {token}"),
        token.clone(),
    ] {
        assert_error(
            app.get_me_with(Some(&header)).await,
            Code::Unauthenticated,
            "TOKEN_INVALID",
        );
    }
}

#[tokio::test]
async fn get_me_with_an_expired_token_is_token_expired() {
    let app = spawn_app_with(|c| c.access_token_ttl = Duration::from_secs(2)).await;
    let (_, token) = app.admin_session().await;
    // Within the five seconds of leeway the token still works.
    app.clock.advance(Duration::from_secs(2 + 5));
    assert!(app.get_me_with(Some(&bearer(&token))).await.is_ok());
    app.clock.advance(Duration::from_secs(1));
    assert_error(
        app.get_me_with(Some(&bearer(&token))).await,
        Code::Unauthenticated,
        "TOKEN_EXPIRED",
    );
}

/// The token with its payload changed but its signature kept.
fn tamper(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    change(&mut claims);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

#[tokio::test]
async fn get_me_with_a_tampered_token_is_token_invalid() {
    let app = spawn_app().await;
    let (_, token) = app.admin_session().await;
    let longer = tamper(&token, |c| {
        c["exp"] = Value::from(c["exp"].as_i64().unwrap() + 3600)
    });
    assert_error(
        app.get_me_with(Some(&bearer(&longer))).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    let mut bad_signature = token.clone();
    let last = bad_signature.pop().unwrap();
    bad_signature.push(if last == 'A' { 'B' } else { 'A' });
    assert_error(
        app.get_me_with(Some(&bearer(&bad_signature))).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

/// A token an attacker can make without the private key.
fn unsigned(header: Value, claims: Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn forged_tokens_are_token_invalid() {
    let app = spawn_app().await;
    let (_, token) = app.admin_session().await;
    let claims = claims_of(&token);
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();

    let alg_none = unsigned(
        serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
        claims.clone(),
        b"",
    );
    // Algorithm confusion: HS256 keyed with the published public key.
    let jwks: JwkSet = serde_json::from_str(&jwks_of(&app).await).unwrap();
    let public_x = match &jwks.keys[0].algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp) => okp.x.clone(),
        other => panic!("unexpected key {other:?}"),
    };
    let mut hs_header = jsonwebtoken::Header::new(Algorithm::HS256);
    hs_header.typ = Some("at+jwt".into());
    hs_header.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&public_x).unwrap()),
    )
    .unwrap();
    let mut unknown_kid = jsonwebtoken::decode_header(&token).unwrap();
    unknown_kid.kid = Some("someone-elses-key".into());
    let unknown_kid = unsigned(
        serde_json::to_value(&unknown_kid).unwrap(),
        claims.clone(),
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(2).unwrap())
            .unwrap(),
    );
    let wrong_typ = tamper_header(&token, |h| h["typ"] = Value::from("JWT"));

    for forged in [alg_none, hs256, unknown_kid, wrong_typ] {
        assert_error(
            app.get_me_with(Some(&bearer(&forged))).await,
            Code::Unauthenticated,
            "TOKEN_INVALID",
        );
        assert!(!app.validate(&forged).await.unwrap().active);
    }
}

fn tamper_header(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    change(&mut header);
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        parts[1],
        parts[2]
    )
}

#[tokio::test]
async fn a_revoked_or_deleted_session_is_session_revoked() {
    let app = spawn_app().await;
    let (_, token) = app.admin_session().await;
    let sid = uuid::Uuid::parse_str(claims_of(&token)["sid"].as_str().unwrap()).unwrap();
    let row = session::Entity::find_by_id(sid)
        .one(app.db())
        .await
        .unwrap()
        .unwrap();

    let mut revoked: session::ActiveModel = row.clone().into();
    revoked.revoked_at = Set(Some(app.now()));
    revoked.update(app.db()).await.unwrap();
    assert_error(
        app.get_me_with(Some(&bearer(&token))).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(!app.validate(&token).await.unwrap().active);

    session::Entity::delete_by_id(sid)
        .exec(app.db())
        .await
        .unwrap();
    assert_error(
        app.get_me_with(Some(&bearer(&token))).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
}

#[tokio::test]
async fn a_token_of_a_disabled_user_stops_working_at_once() {
    let app = spawn_app().await;
    let (admin, token) = app.admin_session().await;
    set_status(&app, &admin.id, user::Status::Disabled).await;
    assert_error(
        app.get_me_with(Some(&bearer(&token))).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(!app.validate(&token).await.unwrap().active);
}

#[tokio::test]
async fn a_token_of_a_deleted_user_is_session_revoked() {
    let app = spawn_app().await;
    let (admin, token) = app.admin_session().await;
    let id = uuid::Uuid::parse_str(&admin.id).unwrap();
    user::Entity::delete_by_id(id).exec(app.db()).await.unwrap();
    assert_error(
        app.get_me_with(Some(&bearer(&token))).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
}

#[tokio::test]
async fn validate_token_describes_a_good_token() {
    let app = spawn_app().await;
    let (admin, token) = app.admin_session().await;
    let claims = claims_of(&token);
    let answer = app.validate(&token).await.unwrap();
    assert!(answer.active);
    assert_eq!(answer.user_id, admin.id);
    assert_eq!(answer.email, ADMIN_EMAIL);
    assert!(answer.is_admin);
    assert_eq!(answer.session_id, claims["sid"].as_str().unwrap());
    assert_eq!(
        answer.expires_at.unwrap().seconds,
        claims["exp"].as_i64().unwrap()
    );
}

#[tokio::test]
async fn validate_token_says_inactive_for_every_bad_token() {
    let app = spawn_app_with(|c| c.access_token_ttl = Duration::from_secs(60)).await;
    let (_, token) = app.admin_session().await;
    let tampered = tamper(&token, |c| {
        c["sub"] = Value::from(uuid::Uuid::new_v4().to_string())
    });
    for bad in ["", "garbage", "a.b.c", tampered.as_str()] {
        let answer = app.validate(bad).await.unwrap();
        assert_eq!(answer, pb::ValidateTokenResponse::default(), "{bad:.30}");
    }
    app.clock.advance(Duration::from_secs(60 + 6));
    assert_eq!(
        app.validate(&token).await.unwrap(),
        pb::ValidateTokenResponse::default(),
        "expired"
    );
}

#[tokio::test]
async fn a_token_for_another_issuer_or_audience_is_refused() {
    let app = spawn_app().await;
    let (_, token) = app.admin_session().await;
    // Deployments on one database share keys, so only iss and aud tell
    // their tokens apart.
    for configure in [
        (|c: &mut warden::config::Config| c.issuer = "someone-else".into()) as fn(&mut _),
        |c| c.audience = "another-service".into(),
    ] {
        let other = spawn_app_on(app.database.share(), configure).await;
        assert!(!other.validate(&token).await.unwrap().active);
        assert_error(
            other.get_me_with(Some(&bearer(&token))).await,
            Code::Unauthenticated,
            "TOKEN_INVALID",
        );
    }
    assert!(app.validate(&token).await.unwrap().active);
}

async fn jwks_of(app: &TestApp) -> String {
    app.auth
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .jwks_json
}

#[tokio::test]
async fn an_outside_service_verifies_a_token_with_the_published_jwks() {
    let app = spawn_app().await;
    let (admin, token) = app.admin_session().await;
    let jwks: JwkSet = serde_json::from_str(&jwks_of(&app).await).unwrap();

    // What a resource server does: pick the key by kid, pin the algorithm,
    // check iss, aud and exp.
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the kid is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["warden"]);
    validation.set_audience(&["warden"]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("verifies");
    assert_eq!(data.claims["sub"], admin.id.as_str());
    for claim in ["sid", "iat", "nbf", "exp", "jti"] {
        assert!(data.claims.get(claim).is_some(), "claim {claim}");
    }
    let lifetime = data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 15 * 60);
}

#[tokio::test]
async fn the_jwks_is_an_ed25519_key_set_also_on_the_side_port() {
    let app = spawn_app().await;
    let over_grpc = jwks_of(&app).await;
    let jwks: Value = serde_json::from_str(&over_grpc).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(key["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert!(key.get("d").is_none(), "no private part");

    let (status, over_http) = app.http_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert_eq!(over_http, over_grpc);
}

#[tokio::test]
async fn the_signing_key_is_kept_in_the_database_across_restarts() {
    let app = spawn_app().await;
    let (_, token) = app.admin_session().await;
    let jwks = jwks_of(&app).await;
    // A second server on the same database: a restart, or another replica.
    let replica = spawn_app_on(app.database.share(), |_| {}).await;
    assert_eq!(jwks_of(&replica).await, jwks);
    assert!(replica.validate(&token).await.unwrap().active);
}
