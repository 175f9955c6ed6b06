//! Refresh with rotation and reuse detection, logout, listing and revoking
//! sessions, and pruning what has ended.

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{
    Session, UserStatus,
    accounts::{Accounts, Principal, TokenPair},
    input::parse_id,
    tokens::{RefreshToken, hash_refresh_token},
};
use crate::{
    error::{Error, Result},
    store::{self, entities::refresh_token, refresh_tokens, sessions},
};

/// Ours are 43 characters; anything much longer is not ours.
const MAX_REFRESH_TOKEN_BYTES: usize = 512;

/// How long ended sessions (expired or revoked) and rotated refresh tokens
/// are kept before pruning: long enough for `ListSessions` with
/// `include_inactive` and for reuse detection to see them.
pub const RETENTION: TimeDelta = TimeDelta::days(7);

/// What a refresh transaction decided. Reuse is an outcome, not an error,
/// so that the session's revocation commits.
enum Rotation {
    Rotated {
        next: RefreshToken,
        user_id: Uuid,
        session_id: Uuid,
        expires_at: DateTime<Utc>,
    },
    Reused(Uuid),
    Invalid,
}

/// When a session (and its newest refresh token) ends: after
/// `refresh_ttl` without use (sliding), and `max_lifetime` after it began
/// however often it is used, so that a stolen refresh token kept fresh by
/// its thief still dies (OWASP ASVS v5 §7.3, absolute session timeout).
/// Past the last representable instant it stays there, never panics.
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

impl Accounts {
    /// Exchanges a refresh token for a new pair. Each token works once; one
    /// presented again (a theft signal, OAuth 2.0 Security BCP) revokes its
    /// whole session. Of several callers presenting the same token at once,
    /// at most one gets new tokens.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, token: &SecretString, now: DateTime<Utc>) -> Result<TokenPair> {
        let raw = token.expose_secret();
        if raw.is_empty() {
            return Err(Error::invalid("refresh_token", "must not be empty"));
        }
        if raw.len() > MAX_REFRESH_TOKEN_BYTES {
            return Err(Error::RefreshTokenInvalid);
        }
        let hash = hash_refresh_token(raw);
        let (ttl, max_lifetime) = (self.refresh_ttl, self.session_max_lifetime);
        // One winner per token comes from the conditional UPDATE in `claim`,
        // which holds at any isolation level. The token is claimed first, so
        // that a caller who lost the race finds it rotated (REUSED), never
        // the session its reuse revoked (INVALID).
        let rotation = store::read_committed(&self.db, |txn| {
            let hash = hash.clone();
            Box::pin(async move {
                if !refresh_tokens::claim(txn, &hash, now).await? {
                    // Unknown, or exchanged already (earlier, or just now by
                    // a concurrent caller): reuse of a rotated token.
                    let Some(row) = refresh_tokens::find(txn, &hash).await? else {
                        return Ok(Rotation::Invalid);
                    };
                    sessions::revoke(txn, row.session_id, now).await?;
                    return Ok(Rotation::Reused(row.session_id));
                }
                // An error from here on rolls the claim back: a token that
                // cannot be exchanged stays as it was, INVALID every time.
                let row = refresh_tokens::find(txn, &hash)
                    .await?
                    .ok_or(Error::RefreshTokenInvalid)?;
                let (session, user) = sessions::find_with_user(txn, row.session_id)
                    .await?
                    .ok_or(Error::RefreshTokenInvalid)?;
                let expires_at = session_expiry(session.created_at, now, ttl, max_lifetime);
                let usable = session.revoked_at.is_none()
                    && session.expires_at > now
                    && row.expires_at > now
                    && expires_at > now
                    && user.status == UserStatus::Approved;
                if !usable {
                    return Err(Error::RefreshTokenInvalid);
                }
                let next = RefreshToken::generate()?;
                refresh_tokens::insert(
                    txn,
                    refresh_token::Model {
                        token_hash: next.hash.clone(),
                        session_id: session.id,
                        created_at: now,
                        expires_at,
                        rotated_at: None,
                    },
                )
                .await?;
                sessions::touch(txn, session.id, now, expires_at).await?;
                Ok(Rotation::Rotated {
                    next,
                    user_id: user.id,
                    session_id: session.id,
                    expires_at,
                })
            })
        })
        .await?;
        match rotation {
            Rotation::Rotated {
                next,
                user_id,
                session_id,
                expires_at,
            } => self.token_pair(user_id, session_id, next.token, expires_at, now),
            Rotation::Reused(session_id) => {
                tracing::warn!(%session_id, "refresh token reused: session revoked");
                Err(Error::RefreshTokenReused)
            }
            Rotation::Invalid => Err(Error::RefreshTokenInvalid),
        }
    }

    /// Revokes the caller's session, or all of the caller's live sessions.
    pub async fn logout(
        &self,
        caller: &Principal,
        all_sessions: bool,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let revoked = if all_sessions {
            sessions::revoke_all_for_user(&self.db, caller.user.id, None, now).await?
        } else {
            sessions::revoke(&self.db, caller.session_id, now).await?
        };
        tracing::info!(user_id = %caller.user.id, revoked, "logout");
        Ok(revoked)
    }

    /// The caller's sessions, newest first.
    pub async fn sessions(
        &self,
        caller: &Principal,
        include_inactive: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>> {
        Ok(sessions::list_for_user(&self.db, caller.user.id, include_inactive, now).await?)
    }

    /// Revokes one of the caller's sessions. Someone else's session is
    /// indistinguishable from one that does not exist. Revoking a revoked
    /// session succeeds and changes nothing.
    pub async fn revoke_session(
        &self,
        caller: &Principal,
        session_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id = parse_id("session_id", session_id).map_err(|v| Error::InvalidArgument(vec![v]))?;
        match sessions::find(&self.db, id).await? {
            Some(session) if session.user_id == caller.user.id => {
                sessions::revoke(&self.db, id, now).await?;
                Ok(())
            }
            _ => Err(Error::SessionNotFound),
        }
    }

    pub async fn count_live_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(sessions::count_live(&self.db, now).await?)
    }

    /// Deletes sessions that ended more than `RETENTION` ago, and rotated
    /// refresh tokens that expired that long ago.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<(u64, u64)> {
        Ok(sessions::prune(&self.db, now - RETENTION).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
