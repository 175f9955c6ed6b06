//! What state each signing key is in, as `warden keys list` shows it.

use chrono::{DateTime, Utc};

use crate::domain::tokens::SigningKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// The newest key: servers sign with it (from their next reload on).
    Active,
    /// Replaced by a newer key; still verifies the tokens it signed.
    Verifying,
    /// No token it signed can be live any more; the next prune removes it.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Verifying => "verifying",
            Self::Retired => "retired",
        }
    }
}

/// The state of each of `keys` at `now`. The newest key that is not
/// retired signs (the servers' choice: newest `created_at`, then the
/// greatest `kid`); a replaced key verifies until its retire-after time,
/// then is retired; one marked retired stays so.
pub fn key_states(keys: &[SigningKey], now: DateTime<Utc>) -> Vec<KeyState> {
    let retired =
        |k: &SigningKey| k.retired_at.is_some() || k.retire_after.is_some_and(|at| at <= now);
    let signer = keys
        .iter()
        .filter(|k| k.retired_at.is_none())
        .max_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)))
        .map(|k| k.kid.as_str());
    keys.iter()
        .map(|k| {
            if Some(k.kid.as_str()) == signer {
                KeyState::Active
            } else if retired(k) {
                KeyState::Retired
            } else {
                KeyState::Verifying
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn key(kid: &str, created_minutes_ago: i64, now: DateTime<Utc>) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            algorithm: "EdDSA".into(),
            private_key: vec![],
            public_key: vec![],
            created_at: now - TimeDelta::minutes(created_minutes_ago),
            retired_at: None,
            retire_after: None,
        }
    }

    #[test]
    fn the_newest_key_signs_and_older_ones_verify_until_their_retire_after_time() {
        let now = Utc::now();
        let mut replaced = key("b", 20, now);
        replaced.retire_after = Some(now + TimeDelta::minutes(5));
        let mut done = key("c", 30, now);
        done.retire_after = Some(now);
        let keys = [replaced, key("a", 10, now), done];
        assert_eq!(
            key_states(&keys, now),
            [KeyState::Verifying, KeyState::Active, KeyState::Retired]
        );
        assert_eq!(
            key_states(&keys, now + TimeDelta::minutes(5))[0],
            KeyState::Retired
        );
    }

    #[test]
    fn a_key_marked_retired_never_signs() {
        let now = Utc::now();
        let mut newest = key("a", 1, now);
        newest.retired_at = Some(now);
        let keys = [newest, key("b", 2, now)];
        assert_eq!(
            key_states(&keys, now),
            [KeyState::Retired, KeyState::Active]
        );
    }

    #[test]
    fn of_keys_created_at_once_the_greatest_kid_signs() {
        let now = Utc::now();
        let keys = [key("a", 1, now), key("b", 1, now)];
        assert_eq!(
            key_states(&keys, now),
            [KeyState::Verifying, KeyState::Active]
        );
    }
}
