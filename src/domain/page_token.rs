//! Opaque page tokens for `ListUsers`: a keyset cursor bound to the filters
//! of the request that produced it, authenticated with HMAC-SHA256 so that
//! a token the server did not issue is refused.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{error::FieldViolation, store::users::UserFilter};

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
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

fn filter_digest(filter: &UserFilter) -> [u8; 8] {
    let text = format!("{:?}|{:?}", filter.status, filter.email_contains);
    let digest = Sha256::digest(text.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn mac(key: &[u8; 32], payload: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; 32 bytes cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(payload);
    mac
}

pub fn seal(key: &[u8; 32], cursor: Cursor, filter: &UserFilter) -> String {
    let mut token = Vec::with_capacity(PAYLOAD_LEN + MAC_LEN);
    token.push(VERSION);
    token.extend_from_slice(&cursor.created_at.timestamp_micros().to_be_bytes());
    token.extend_from_slice(cursor.id.as_bytes());
    token.extend_from_slice(&filter_digest(filter));
    let tag = mac(key, &token).finalize().into_bytes();
    token.extend_from_slice(&tag[..MAC_LEN]);
    URL_SAFE_NO_PAD.encode(token)
}

/// The cursor in `token`, if one of `keys` issued it for these filters.
pub fn open(keys: &[[u8; 32]], token: &str, filter: &UserFilter) -> Result<Cursor, FieldViolation> {
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
    if payload[0] != VERSION {
        return Err(foreign());
    }
    if payload[25..33] != filter_digest(filter) {
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
    use crate::store::entities::user::Status;

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
