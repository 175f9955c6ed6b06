//! Opaque page tokens for `ListUsers`: a keyset cursor bound to the filters
//! of the request that produced it, authenticated with HMAC-SHA256 so that
//! a token the server did not issue is refused. The filters are bound by a
//! digest of bytes laid out here (`filter_bytes`), never of a `Debug`
//! rendering, so that renaming a field cannot silently invalidate tokens.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{
    error::FieldViolation,
    types::{UserFilter, UserStatus},
};

type HmacSha256 = Hmac<Sha256>;

/// The layout sealed now: the filters bound by `filter_bytes`.
const VERSION: u8 = 2;
/// Tokens of earlier releases, whose filters were bound by a text digest
/// (`legacy_filter_text`); still opened, so that a client paging through a
/// rolling upgrade is not refused.
const LEGACY_VERSION: u8 = 1;
const MAC_LEN: usize = 16;
/// version, created_at (µs), id, filter digest.
const PAYLOAD_LEN: usize = 1 + 8 + 16 + 8;
const FIELD: &str = "page_token";

/// Where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// The filters as bytes: one byte for the status (0 for any, then pending,
/// approved, disabled as 1, 2, 3), then the email substring as UTF-8 after
/// a 0 byte when absent or a 1 byte when present.
fn filter_bytes(filter: &UserFilter) -> Vec<u8> {
    let status = match filter.status {
        None => 0,
        Some(UserStatus::Pending) => 1,
        Some(UserStatus::Approved) => 2,
        Some(UserStatus::Disabled) => 3,
    };
    let mut bytes = vec![status];
    match &filter.email_contains {
        None => bytes.push(0),
        Some(part) => {
            bytes.push(1);
            bytes.extend_from_slice(part.as_bytes());
        }
    }
    bytes
}

/// The text version-1 tokens bound, spelled out: `None|None`,
/// `Some(Pending)|Some("ex")` (the email part with Rust's string escapes).
fn legacy_filter_text(filter: &UserFilter) -> String {
    let status = match filter.status {
        None => "None",
        Some(UserStatus::Pending) => "Some(Pending)",
        Some(UserStatus::Approved) => "Some(Approved)",
        Some(UserStatus::Disabled) => "Some(Disabled)",
    };
    match &filter.email_contains {
        None => format!("{status}|None"),
        Some(part) => format!("{status}|Some(\"{}\")", part.escape_debug()),
    }
}

fn digest(bytes: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn filter_digest(version: u8, filter: &UserFilter) -> [u8; 8] {
    if version == LEGACY_VERSION {
        digest(legacy_filter_text(filter).as_bytes())
    } else {
        digest(&filter_bytes(filter))
    }
}

fn mac(key: &[u8; 32], payload: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; 32 bytes cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(payload);
    mac
}

pub fn seal(key: &[u8; 32], cursor: Cursor, filter: &UserFilter) -> String {
    seal_digest(key, cursor, filter_digest(VERSION, filter))
}

/// What a listing other than ListUsers binds its tokens to: the listing's
/// name and its parameters, so that a token of one listing (or of one
/// organisation's members) is refused by another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    /// ListMembers of one organisation.
    Members(Uuid),
    /// ListOrganizations with this (lower-case) name filter.
    Organizations(Option<&'a str>),
}

/// The scope as bytes: a tag that no `filter_bytes` starts with (their
/// first byte is a status, 0 to 3), then the parameters.
fn scope_bytes(scope: &Scope<'_>) -> Vec<u8> {
    match scope {
        Scope::Members(org) => {
            let mut bytes = b"members:".to_vec();
            bytes.extend_from_slice(org.as_bytes());
            bytes
        }
        Scope::Organizations(name) => {
            let mut bytes = b"organizations:".to_vec();
            match name {
                None => bytes.push(0),
                Some(part) => {
                    bytes.push(1);
                    bytes.extend_from_slice(part.as_bytes());
                }
            }
            bytes
        }
    }
}

pub fn seal_scoped(key: &[u8; 32], cursor: Cursor, scope: &Scope<'_>) -> String {
    seal_digest(key, cursor, digest(&scope_bytes(scope)))
}

/// The cursor in `token`, if one of `keys` issued it for this scope.
pub fn open_scoped(
    keys: &[[u8; 32]],
    token: &str,
    scope: &Scope<'_>,
) -> Result<Cursor, FieldViolation> {
    open_with(keys, token, |version| {
        (version == VERSION).then(|| digest(&scope_bytes(scope)))
    })
}

fn seal_digest(key: &[u8; 32], cursor: Cursor, bound: [u8; 8]) -> String {
    let mut token = Vec::with_capacity(PAYLOAD_LEN + MAC_LEN);
    token.push(VERSION);
    token.extend_from_slice(&cursor.created_at.timestamp_micros().to_be_bytes());
    token.extend_from_slice(cursor.id.as_bytes());
    token.extend_from_slice(&bound);
    let tag = mac(key, &token).finalize().into_bytes();
    token.extend_from_slice(&tag[..MAC_LEN]);
    URL_SAFE_NO_PAD.encode(token)
}

/// The cursor in `token`, if one of `keys` issued it for these filters.
pub fn open(keys: &[[u8; 32]], token: &str, filter: &UserFilter) -> Result<Cursor, FieldViolation> {
    open_with(keys, token, |version| Some(filter_digest(version, filter)))
}

/// Opens a token whose bound digest, for its layout version, `expected`
/// says (`None`: a version this listing never issued).
fn open_with(
    keys: &[[u8; 32]],
    token: &str,
    expected: impl Fn(u8) -> Option<[u8; 8]>,
) -> Result<Cursor, FieldViolation> {
    let foreign = || FieldViolation::new(FIELD, "was not issued by this server");
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| foreign())?;
    if bytes.len() != PAYLOAD_LEN + MAC_LEN {
        return Err(foreign());
    }
    let (payload, tag) = bytes.split_at(PAYLOAD_LEN);
    if !keys
        .iter()
        .any(|key| mac(key, payload).verify_truncated_left(tag).is_ok())
    {
        return Err(foreign());
    }
    let version = payload[0];
    if version != VERSION && version != LEGACY_VERSION {
        return Err(foreign());
    }
    let Some(bound) = expected(version) else {
        return Err(foreign());
    };
    if payload[25..33] != bound {
        return Err(FieldViolation::new(
            FIELD,
            "belongs to a request with other filters",
        ));
    }
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&payload[1..9]);
    let created_at =
        DateTime::from_timestamp_micros(i64::from_be_bytes(micros)).ok_or_else(foreign)?;
    let id = Uuid::from_slice(&payload[9..25]).map_err(|_| foreign())?;
    Ok(Cursor { created_at, id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::types::UserStatus as Status;

    const KEY: [u8; 32] = [7; 32];

    fn cursor() -> Cursor {
        Cursor {
            created_at: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_sealed_cursor_opens_with_any_of_the_keys() {
        let (c, filter) = (
            cursor(),
            UserFilter {
                status: Some(Status::Pending),
                email_contains: Some("ex".into()),
            },
        );
        let token = seal(&KEY, c, &filter);
        assert_eq!(open(&[[1; 32], KEY], &token, &filter), Ok(c));
    }

    #[test]
    fn a_token_is_bound_to_its_filters() {
        let c = cursor();
        let token = seal(&KEY, c, &UserFilter::default());
        assert_eq!(open(&[KEY], &token, &UserFilter::default()), Ok(c));
        let other = UserFilter {
            status: Some(Status::Approved),
            email_contains: None,
        };
        assert!(
            open(&[KEY], &token, &other)
                .unwrap_err()
                .description
                .contains("other filters")
        );
    }

    /// The layout of a token is part of what clients hold: tokens issued
    /// before an upgrade must open after it. This pins every byte.
    #[test]
    fn the_encoding_of_a_token_is_pinned() {
        assert_eq!(filter_bytes(&UserFilter::default()), [0, 0]);
        let filter = UserFilter {
            status: Some(Status::Approved),
            email_contains: Some("ex".into()),
        };
        assert_eq!(filter_bytes(&filter), [2, 1, b'e', b'x']);
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap(),
            id: Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0001),
        };
        let token = "AgAGYIsBYRJAAZYAAAAAcACAAAAAAAAAAX0EpL5Bc3KDr1qvz6u2y7zSTMLQfd9k6w";
        assert_eq!(seal(&KEY, c, &filter), token);
        assert_eq!(open(&[KEY], token, &filter), Ok(c));
    }

    /// Sealed by the release before this layout, for the same cursor and
    /// filters: it still opens, and only for those filters.
    #[test]
    fn a_token_of_the_previous_layout_still_opens() {
        let filter = UserFilter {
            status: Some(Status::Approved),
            email_contains: Some("ex".into()),
        };
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap(),
            id: Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0001),
        };
        let legacy = "AQAGYIsBYRJAAZYAAAAAcACAAAAAAAAAAeBNaz7L1AroV67ceME4NMPvZhthXb37Vw";
        assert_eq!(open(&[KEY], legacy, &filter), Ok(c));
        assert!(open(&[KEY], legacy, &UserFilter::default()).is_err());
        assert_eq!(legacy_filter_text(&UserFilter::default()), "None|None");
    }

    #[test]
    fn a_scoped_token_opens_only_for_its_scope_and_never_as_a_user_listing() {
        let c = cursor();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let token = seal_scoped(&KEY, c, &Scope::Members(a));
        assert_eq!(open_scoped(&[KEY], &token, &Scope::Members(a)), Ok(c));
        assert!(open_scoped(&[KEY], &token, &Scope::Members(b)).is_err());
        assert!(open_scoped(&[KEY], &token, &Scope::Organizations(None)).is_err());
        assert!(open(&[KEY], &token, &UserFilter::default()).is_err());
        let users = seal(&KEY, c, &UserFilter::default());
        assert!(open_scoped(&[KEY], &users, &Scope::Organizations(None)).is_err());
        let named = seal_scoped(&KEY, c, &Scope::Organizations(Some("ac")));
        assert!(open_scoped(&[KEY], &named, &Scope::Organizations(Some("ac"))).is_ok());
        assert!(open_scoped(&[KEY], &named, &Scope::Organizations(None)).is_err());
    }

    #[test]
    fn forged_altered_or_foreign_tokens_are_refused() {
        let token = seal(&KEY, cursor(), &UserFilter::default());
        let filter = UserFilter::default();
        assert!(open(&[[9; 32]], &token, &filter).is_err(), "another key");
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[5] ^= 1;
        assert!(
            open(&[KEY], &URL_SAFE_NO_PAD.encode(&bytes), &filter).is_err(),
            "altered"
        );
        for junk in ["", "abc", "!!!", &"A".repeat(66)] {
            assert!(open(&[KEY], junk, &filter).is_err(), "{junk}");
        }
    }
}
