//! Tokens. Access tokens: EdDSA (Ed25519) JWTs with `typ: at+jwt` (RFC
//! 9068), signed with keys kept in the database and published as a JWK Set
//! (RFC 7517). Refresh tokens: 256 random bits, stored only as a SHA-256
//! hash.
//!
//! - `jwt`: issuing and verifying access tokens (`TokenService`).
//! - `keyring`: the keys of one moment and the JWK Set.
//! - `keys`: the keys' life in the database (generate, rotate, reload,
//!   retire).
//! - `refresh`: refresh tokens.

mod jwt;
mod keyring;
mod keys;
mod refresh;

pub use jwt::{
    ACCESS_TOKEN_TYPE, AccessClaims, IssuedToken, LEEWAY_SECONDS, TokenService, VerifiedToken,
};
pub use keys::{
    KEY_RELOAD_INTERVAL, SigningKey, generate_signing_key, list_keys, load_or_create_keys,
    rotate_keys, switch_within,
};
pub use refresh::{RefreshToken, hash_refresh_token};

#[cfg(test)]
mod tests {
    use super::{jwt::*, keys::*, refresh::*};
    use std::time::Duration;

    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    use chrono::{DateTime, TimeDelta, Utc};
    use jsonwebtoken::Algorithm;
    use uuid::Uuid;

    use crate::domain::{error::Error, key_encryption::KeyEncryptionKey};
    use chrono::TimeZone;
    use secrecy::ExposeSecret;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    fn service(keys: &[SigningKey]) -> TokenService {
        TokenService::new(
            "warden".into(),
            "warden".into(),
            Duration::from_secs(900),
            keys,
            None,
        )
        .unwrap()
    }

    #[test]
    fn an_issued_token_verifies_and_names_its_user_and_session() {
        let key = generate_signing_key(now(), None).unwrap();
        let tokens = service(std::slice::from_ref(&key));
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let issued = tokens.issue(user, session, now()).unwrap();
        let verified = tokens.verify(&issued.token, now()).unwrap();
        assert_eq!(verified.user_id, user);
        assert_eq!(verified.session_id, session);
        assert_eq!(verified.expires_at, now() + TimeDelta::seconds(900));
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
    }

    #[test]
    fn expiry_allows_five_seconds_of_leeway_and_no_more() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let at = |secs| now() + TimeDelta::seconds(secs);
        assert!(tokens.verify(&issued.token, at(900 + 5)).is_ok());
        assert!(matches!(
            tokens.verify(&issued.token, at(900 + 6)),
            Err(Error::TokenExpired)
        ));
    }

    #[test]
    fn a_token_from_the_future_is_invalid() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens
            .issue(
                Uuid::new_v4(),
                Uuid::new_v4(),
                now() + TimeDelta::seconds(60),
            )
            .unwrap();
        assert!(matches!(
            tokens.verify(&issued.token, now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn a_token_signed_by_an_unknown_key_is_invalid() {
        let ours = service(&[generate_signing_key(now(), None).unwrap()]);
        let theirs = service(&[generate_signing_key(now(), None).unwrap()]);
        let forged = theirs.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        assert!(matches!(
            ours.verify(&forged.token, now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn wrong_issuer_or_audience_is_invalid() {
        let key = generate_signing_key(now(), None).unwrap();
        let other_iss = TokenService::new(
            "other".into(),
            "warden".into(),
            Duration::from_secs(60),
            std::slice::from_ref(&key),
            None,
        )
        .unwrap();
        let other_aud = TokenService::new(
            "warden".into(),
            "other".into(),
            Duration::from_secs(60),
            std::slice::from_ref(&key),
            None,
        )
        .unwrap();
        let ours = service(&[key]);
        for foreign in [&other_iss, &other_aud] {
            let t = foreign
                .issue(Uuid::new_v4(), Uuid::new_v4(), now())
                .unwrap();
            assert!(matches!(
                ours.verify(&t.token, now()),
                Err(Error::TokenInvalid)
            ));
        }
    }

    #[test]
    fn a_tampered_payload_is_invalid() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let parts: Vec<&str> = issued.token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = serde_json::Value::String(Uuid::new_v4().to_string());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert!(matches!(
            tokens.verify(&tampered, now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn garbage_empty_and_oversized_tokens_are_invalid() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        for bad in ["", "abc", "a.b.c", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(
                matches!(tokens.verify(bad, now()), Err(Error::TokenInvalid)),
                "{bad:.20}"
            );
        }
    }

    #[test]
    fn the_jwks_publishes_every_key_as_an_ed25519_okp_key() {
        let (a, b) = (
            generate_signing_key(now(), None).unwrap(),
            generate_signing_key(now(), None).unwrap(),
        );
        let tokens = service(&[a.clone(), b.clone()]);
        let jwks: serde_json::Value = serde_json::from_str(&tokens.jwks_json()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for (jwk, row) in keys.iter().zip([&a, &b]) {
            assert_eq!(jwk["kty"], "OKP");
            assert_eq!(jwk["crv"], "Ed25519");
            assert_eq!(jwk["alg"], "EdDSA");
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], row.kid.as_str());
            assert_eq!(
                URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
                row.public_key
            );
        }
    }

    #[test]
    fn the_newest_key_signs_and_every_live_key_verifies() {
        let old = generate_signing_key(now(), None).unwrap();
        let mut new = generate_signing_key(now(), None).unwrap();
        new.created_at = now() + TimeDelta::seconds(1);
        let before = service(std::slice::from_ref(&old));
        let token = before.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let after = service(&[new.clone(), old]);
        assert!(
            after.verify(&token.token, now()).is_ok(),
            "the old key still verifies"
        );
        let fresh = after.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let kid = jsonwebtoken::decode_header(&fresh.token)
            .unwrap()
            .kid
            .unwrap();
        assert_eq!(kid, new.kid);
    }

    #[test]
    fn a_token_seen_before_is_not_verified_again_but_still_expires() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let first = tokens.verify(&issued.token, now()).unwrap();
        let again = tokens.verify(&issued.token, now()).unwrap();
        assert_eq!(first, again);
        assert_eq!(tokens.signature_checks(), 1);
        assert!(matches!(
            tokens.verify(&issued.token, now() + TimeDelta::seconds(900 + 6)),
            Err(Error::TokenExpired)
        ));
    }

    #[test]
    fn a_token_altered_after_the_genuine_one_was_seen_is_still_invalid() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        tokens.verify(&issued.token, now()).unwrap();
        let (head, signature) = issued.token.rsplit_once('.').unwrap();
        let mut flipped = signature.as_bytes().to_vec();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let forged = format!("{head}.{}", String::from_utf8(flipped).unwrap());
        assert!(matches!(
            tokens.verify(&forged, now()),
            Err(Error::TokenInvalid)
        ));
        assert!(matches!(
            tokens.verify(&format!("{} ", issued.token), now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn a_remembered_token_of_a_retired_key_stops_verifying() {
        let old = generate_signing_key(now(), None).unwrap();
        let mut new = generate_signing_key(now(), None).unwrap();
        new.created_at = now() + TimeDelta::seconds(1);
        let tokens = service(&[new.clone(), old.clone()]);
        let signed_by_old = service(&[old])
            .issue(Uuid::new_v4(), Uuid::new_v4(), now())
            .unwrap();
        assert!(tokens.verify(&signed_by_old.token, now()).is_ok());
        tokens.replace_keys(&[new]).unwrap();
        assert!(matches!(
            tokens.verify(&signed_by_old.token, now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn a_stored_public_key_of_the_wrong_length_is_refused_not_a_panic_later() {
        let mut key = generate_signing_key(now(), None).unwrap();
        key.public_key.truncate(31);
        let refused = TokenService::new(
            "warden".into(),
            "warden".into(),
            Duration::from_secs(900),
            &[key],
            None,
        );
        assert!(matches!(refused, Err(Error::Unexpected(_))));
    }

    fn kek() -> KeyEncryptionKey {
        KeyEncryptionKey::parse(&"07".repeat(32)).unwrap()
    }

    #[test]
    fn with_a_kek_a_key_stored_in_the_clear_neither_signs_nor_verifies() {
        let clear = generate_signing_key(now(), None).unwrap();
        let refused = TokenService::new(
            "warden".into(),
            "warden".into(),
            Duration::from_secs(900),
            &[clear],
            Some(kek()),
        );
        let Err(e) = refused else {
            panic!("a clear key was taken with a kek set")
        };
        assert!(e.to_string().contains("in the clear"), "{e}");
        let sealed = generate_signing_key(now(), Some(&kek())).unwrap();
        assert!(
            TokenService::new(
                "warden".into(),
                "warden".into(),
                Duration::from_secs(900),
                &[sealed],
                Some(kek()),
            )
            .is_ok()
        );
    }

    #[test]
    fn a_private_key_that_does_not_match_its_public_key_is_refused() {
        let mut key = generate_signing_key(now(), None).unwrap();
        key.public_key = generate_signing_key(now(), None).unwrap().public_key;
        let refused = TokenService::new(
            "warden".into(),
            "warden".into(),
            Duration::from_secs(900),
            &[key],
            None,
        );
        assert!(matches!(refused, Err(Error::Unexpected(_))));
    }

    const TTL: TimeDelta = TimeDelta::seconds(900);
    const SWITCH: Duration = Duration::from_secs(90);

    #[test]
    fn a_replica_switches_within_its_reload_interval_and_a_reload_s_longest_run() {
        assert_eq!(
            switch_within(Duration::from_secs(30), Duration::from_secs(5)),
            Duration::from_secs(90)
        );
        assert_eq!(
            switch_within(Duration::from_secs(30), Duration::from_secs(60)),
            Duration::from_secs(270)
        );
    }

    #[test]
    fn a_key_first_seen_replaced_retires_after_the_slowest_replica_switched_and_its_tokens_expired()
    {
        // However short this replica's own reload interval: a replica set
        // to reload every two hours may sign with the key that long.
        let slowest = Duration::from_secs(2 * 3600 + 60);
        let at = retire_after(None, false, now(), TTL, slowest).unwrap();
        assert_eq!(
            at,
            now() + TimeDelta::seconds(2 * 3600 + 60) + TTL + TimeDelta::seconds(5)
        );
        assert_eq!(
            retire_after(None, true, now(), TTL, slowest),
            Some(at),
            "the same for the replica that signed with it"
        );
    }

    #[test]
    fn a_stored_retire_after_time_is_never_brought_forward() {
        let stored = now() + TimeDelta::hours(2);
        assert_eq!(retire_after(Some(stored), false, now(), TTL, SWITCH), None);
        assert_eq!(
            retire_after(Some(stored), true, now(), TTL, SWITCH),
            None,
            "its own last token expires before that"
        );
    }

    #[test]
    fn a_replica_that_signed_with_a_replaced_key_until_now_keeps_it_until_its_own_tokens_expired() {
        // Stored by a replica whose tokens live a minute; this one's live
        // for an hour, and it signed with the key until this reload.
        let stored = now() + TimeDelta::seconds(65);
        let hour = TimeDelta::hours(1);
        assert_eq!(
            retire_after(Some(stored), true, now(), hour, SWITCH),
            Some(now() + hour + TimeDelta::seconds(5))
        );
        assert_eq!(
            retire_after(Some(stored), false, now(), hour, SWITCH),
            None,
            "a replica that never signed with it has no tokens of it"
        );
    }

    #[test]
    fn a_new_key_is_the_newest_even_when_the_clock_is_behind_the_newest_key() {
        let mut ahead = generate_signing_key(now(), None).unwrap();
        ahead.created_at = now() + TimeDelta::seconds(30);
        let at = rotation_time(now(), Some(&ahead));
        assert!(at > ahead.created_at);
        assert!(at - ahead.created_at <= TimeDelta::milliseconds(1));
        let behind = generate_signing_key(now() - TimeDelta::seconds(30), None).unwrap();
        assert_eq!(rotation_time(now(), Some(&behind)), now());
        assert_eq!(rotation_time(now(), None), now());
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_as_their_hash() {
        let (a, b) = (
            RefreshToken::generate().unwrap(),
            RefreshToken::generate().unwrap(),
        );
        assert_ne!(a.token.expose_secret(), b.token.expose_secret());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(a.token.expose_secret())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(a.hash, hash_refresh_token(a.token.expose_secret()));
        assert_eq!(format!("{a:?}"), "RefreshToken([redacted])");
    }
}
