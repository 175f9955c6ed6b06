//! How long a session lives, and when a refresh token may be exchanged.

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::types::{RefreshRecord, Session, UserStatus};

/// When a session (and its newest refresh token) ends: after `refresh_ttl`
/// without use (sliding), and `max_lifetime` after it began however often it
/// is used, so that a stolen refresh token kept fresh by its thief still dies
/// (OWASP ASVS v5 §7.3, absolute session timeout). Past the last
/// representable instant it stays there, never panics.
pub fn session_expiry(
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    refresh_ttl: TimeDelta,
    max_lifetime: TimeDelta,
) -> DateTime<Utc> {
    let end = |from: DateTime<Utc>, span| {
        from.checked_add_signed(span)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    };
    end(now, refresh_ttl).min(end(created_at, max_lifetime))
}

/// What presenting a refresh token comes to. Reuse is an outcome, not an
/// error, so that the revocation of the session it causes commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// Never issued (or pruned long ago).
    Unknown,
    /// Exchanged already, earlier or just now by a concurrent caller: a theft
    /// signal (OAuth 2.0 Security BCP). Its session is revoked.
    Reused,
    /// This caller claimed it: it may be exchanged if `may_rotate` agrees.
    Claimed,
}

/// Which of the three a presentation is, given whether this caller's
/// conditional update claimed the token and whether the token is known.
pub fn presented(claimed: bool, known: bool) -> Presented {
    match (claimed, known) {
        (true, _) => Presented::Claimed,
        (false, true) => Presented::Reused,
        (false, false) => Presented::Unknown,
    }
}

/// A claimed refresh token is exchanged only while its session is live, it
/// has not expired itself, the account is approved, and the session has
/// time left (its absolute lifetime is not over: `next_expiry` is in the
/// future).
pub fn may_rotate(
    token: &RefreshRecord,
    session: &Session,
    status: UserStatus,
    next_expiry: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    session.is_live(now)
        && token.expires_at > now
        && status == UserStatus::Approved
        && next_expiry > now
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::input::Device;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(1_800_000_000 + secs)
    }

    const DAY: i64 = 86_400;

    #[test]
    fn a_session_slides_by_the_refresh_ttl_while_young() {
        let expiry = session_expiry(
            at(0),
            at(10 * DAY),
            TimeDelta::days(30),
            TimeDelta::days(90),
        );
        assert_eq!(expiry, at(40 * DAY));
    }

    #[test]
    fn a_session_never_outlives_its_maximum_lifetime_however_often_refreshed() {
        let (ttl, max) = (TimeDelta::days(30), TimeDelta::days(90));
        assert_eq!(session_expiry(at(0), at(75 * DAY), ttl, max), at(90 * DAY));
        assert_eq!(session_expiry(at(0), at(89 * DAY), ttl, max), at(90 * DAY));
        // Once there, the session has ended: the expiry is not in the future.
        assert!(session_expiry(at(0), at(90 * DAY), ttl, max) <= at(90 * DAY));
    }

    #[test]
    fn a_maximum_lifetime_shorter_than_the_refresh_ttl_caps_the_first_expiry() {
        let expiry = session_expiry(at(0), at(0), TimeDelta::days(30), TimeDelta::seconds(4));
        assert_eq!(expiry, at(4));
    }

    #[test]
    fn an_expiry_past_the_last_representable_instant_saturates() {
        let huge = TimeDelta::MAX;
        assert_eq!(
            session_expiry(at(0), at(0), huge, huge),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            session_expiry(at(0), at(0), huge, TimeDelta::seconds(4)),
            at(4)
        );
    }

    #[test]
    fn a_token_claimed_by_someone_else_is_reuse_and_an_unknown_one_is_not() {
        assert_eq!(presented(true, true), Presented::Claimed);
        assert_eq!(presented(false, true), Presented::Reused);
        assert_eq!(presented(false, false), Presented::Unknown);
    }

    fn session(expires_at: DateTime<Utc>, revoked_at: Option<DateTime<Utc>>) -> Session {
        Session {
            id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            device: Device::default(),
            user_agent: String::new(),
            ip_address: String::new(),
            created_at: at(0),
            last_used_at: at(0),
            expires_at,
            revoked_at,
            organization_id: None,
        }
    }

    fn token(expires_at: DateTime<Utc>) -> RefreshRecord {
        RefreshRecord {
            token_hash: vec![0; 32],
            session_id: Uuid::from_u128(1),
            created_at: at(0),
            expires_at,
            rotated_at: None,
        }
    }

    #[test]
    fn a_refresh_token_rotates_only_for_a_live_session_of_an_approved_account_with_time_left() {
        let now = at(10);
        let live = session(at(100), None);
        let fresh = token(at(100));
        assert!(may_rotate(
            &fresh,
            &live,
            UserStatus::Approved,
            at(100),
            now
        ));
        assert!(!may_rotate(
            &fresh,
            &session(at(100), Some(at(5))),
            UserStatus::Approved,
            at(100),
            now
        ));
        assert!(!may_rotate(
            &fresh,
            &session(at(10), None),
            UserStatus::Approved,
            at(100),
            now
        ));
        assert!(!may_rotate(
            &token(at(10)),
            &live,
            UserStatus::Approved,
            at(100),
            now
        ));
        for status in [UserStatus::Pending, UserStatus::Disabled] {
            assert!(!may_rotate(&fresh, &live, status, at(100), now));
        }
        assert!(
            !may_rotate(&fresh, &live, UserStatus::Approved, at(10), now),
            "lifetime over"
        );
    }
}
