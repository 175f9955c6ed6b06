//! The rules of mail and one-time email tokens (API.md, "Email"): when a
//! failed delivery is tried again and when it is given up, the per-account
//! cooldown, what makes a token good, and how a link is made from its
//! template.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::{
    error::{Error, Result},
    types::{EmailTokenPurpose, EmailTokenRecord, User},
};

/// The pause after the first failed attempt; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(10 * 60);
/// A mail not delivered this long after it was queued is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What to do with a mail whose delivery just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again then.
    RetryAt(DateTime<Utc>),
    /// Drop it (and log it): it has been failing for `GIVE_UP_AFTER`.
    GiveUp,
}

/// The pause after the `failures`-th failed attempt in a row (1 s, 2 s, 4 s
/// … up to 10 min): quick retries for a relay that blinked, and no flood of
/// connections at one that is down for hours.
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    FIRST_RETRY.saturating_mul(1u32 << doublings).min(MAX_RETRY)
}

/// The decision after a failed attempt of a mail queued at `queued_at`,
/// `failures` failures in all (this one included).
pub fn after_failure(queued_at: DateTime<Utc>, failures: u32, now: DateTime<Utc>) -> AfterFailure {
    if now - queued_at >= delta(GIVE_UP_AFTER) {
        return AfterFailure::GiveUp;
    }
    AfterFailure::RetryAt(now + delta(retry_delay(failures)))
}

/// How long the account must still wait before another mail of a kind, if
/// the last one of that kind went out at `last_mailed`: at most one per
/// `cooldown` (WARDEN_MAIL_COOLDOWN). `None`: it may have one now.
pub fn cooldown_left(
    last_mailed: Option<DateTime<Utc>>,
    cooldown: Duration,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let next = last_mailed? + delta(cooldown);
    (next > now).then(|| (next - now).to_std().unwrap_or(cooldown))
}

/// A token is good for `purpose` only while it is unused (neither used nor
/// killed by a newer one), unexpired, and its user still has the address it
/// was sent to. Every failure is the same error: the answer must not tell a
/// guesser which tokens exist.
pub fn check_token(
    token: Option<&EmailTokenRecord>,
    purpose: EmailTokenPurpose,
    user: Option<&User>,
    now: DateTime<Utc>,
) -> Result<()> {
    let good = match (token, user) {
        (Some(token), Some(user)) => {
            token.purpose == purpose
                && token.used_at.is_none()
                && token.expires_at > now
                && token.user_id == user.id
                && token.email == user.email
        }
        _ => false,
    };
    if good {
        Ok(())
    } else {
        Err(Error::EmailTokenInvalid)
    }
}

/// What a mail says to follow: the configured template with `{token}`
/// replaced, or the bare token when there is none. Links come only from the
/// templates, never from anything a request carried (a Host header, say),
/// so a request cannot point a mail at a site of its choosing.
pub fn link(template: Option<&str>, token: &str) -> String {
    match template {
        Some(template) => template.replace("{token}", token),
        None => token.to_owned(),
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::types::UserStatus;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn retries_back_off_from_one_second_doubling_to_ten_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
        assert_eq!(retry_delay(0), FIRST_RETRY);
    }

    #[test]
    fn a_failed_mail_is_retried_until_it_has_failed_for_a_day() {
        assert_eq!(after_failure(at(0), 1, at(0)), AfterFailure::RetryAt(at(1)));
        assert_eq!(
            after_failure(at(0), 3, at(10)),
            AfterFailure::RetryAt(at(14))
        );
        let almost = 24 * 3600 - 1;
        assert_eq!(
            after_failure(at(0), 200, at(almost)),
            AfterFailure::RetryAt(at(almost + 600))
        );
        assert_eq!(
            after_failure(at(0), 200, at(24 * 3600)),
            AfterFailure::GiveUp
        );
    }

    #[test]
    fn one_mail_of_a_kind_per_cooldown() {
        let cooldown = Duration::from_secs(60);
        assert_eq!(cooldown_left(None, cooldown, at(0)), None);
        assert_eq!(
            cooldown_left(Some(at(0)), cooldown, at(0)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            cooldown_left(Some(at(0)), cooldown, at(45)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(cooldown_left(Some(at(0)), cooldown, at(60)), None);
    }

    fn user() -> User {
        User {
            id: Uuid::from_u128(1),
            email: "ada@example.com".into(),
            display_name: String::new(),
            is_admin: false,
            status: UserStatus::Approved,
            created_at: at(0),
            updated_at: at(0),
            approved_at: None,
            approved_by: None,
            email_verified: false,
            email_verified_at: None,
        }
    }

    fn token() -> EmailTokenRecord {
        EmailTokenRecord {
            token_hash: vec![1; 32],
            purpose: EmailTokenPurpose::VerifyEmail,
            user_id: Uuid::from_u128(1),
            email: "ada@example.com".into(),
            mailed: true,
            created_at: at(0),
            expires_at: at(3600),
            used_at: None,
        }
    }

    #[test]
    fn a_fresh_token_of_its_purpose_for_its_users_address_is_good() {
        let purpose = EmailTokenPurpose::VerifyEmail;
        assert!(check_token(Some(&token()), purpose, Some(&user()), at(10)).is_ok());
    }

    #[test]
    fn a_token_is_bound_to_purpose_use_time_user_and_address() {
        let purpose = EmailTokenPurpose::VerifyEmail;
        let bad = |t: EmailTokenRecord, u: Option<User>, now, purpose| {
            matches!(
                check_token(Some(&t), purpose, u.as_ref(), now),
                Err(Error::EmailTokenInvalid)
            )
        };
        assert!(bad(
            token(),
            Some(user()),
            at(10),
            EmailTokenPurpose::ResetPassword
        ));
        let used = EmailTokenRecord {
            used_at: Some(at(5)),
            ..token()
        };
        assert!(bad(used, Some(user()), at(10), purpose));
        assert!(bad(token(), Some(user()), at(3600), purpose), "expired");
        let other = User {
            id: Uuid::from_u128(2),
            ..user()
        };
        assert!(bad(token(), Some(other), at(10), purpose));
        let moved = User {
            email: "ada@elsewhere.example".into(),
            ..user()
        };
        assert!(
            bad(token(), Some(moved), at(10), purpose),
            "address changed"
        );
        assert!(bad(token(), None, at(10), purpose), "user deleted");
        assert!(check_token(None, purpose, Some(&user()), at(10)).is_err());
    }

    #[test]
    fn links_come_from_the_template_or_are_the_bare_token() {
        assert_eq!(
            link(Some("https://app.example.com/verify?t={token}"), "abc_-1"),
            "https://app.example.com/verify?t=abc_-1"
        );
        assert_eq!(link(None, "abc_-1"), "abc_-1");
    }
}
