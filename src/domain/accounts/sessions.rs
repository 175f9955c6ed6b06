//! Refresh with rotation and reuse detection, logout, listing and revoking
//! sessions, and pruning what has ended.

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::Accounts;
use crate::{
    domain::{
        error::{Error, Result},
        input::parse_id,
        rules::sessions::{Presented, may_rotate, presented, session_expiry},
        tokens::{RefreshToken, hash_refresh_token},
        types::{Principal, RefreshRecord, Session, TokenPair},
    },
    store::{self, refresh_tokens, sessions},
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
        organization_id: Option<Uuid>,
        expires_at: DateTime<Utc>,
    },
    Reused(Uuid),
    Invalid,
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
                let claimed = refresh_tokens::claim(txn, &hash, now).await?;
                let token = refresh_tokens::find(txn, &hash).await?;
                let token = match (presented(claimed, token.is_some()), token) {
                    (Presented::Claimed, Some(token)) => token,
                    (Presented::Reused, Some(token)) => {
                        sessions::revoke(txn, token.session_id, now).await?;
                        return Ok(Rotation::Reused(token.session_id));
                    }
                    _ => return Ok(Rotation::Invalid),
                };
                // An error from here on rolls the claim back: a token that
                // cannot be exchanged stays as it was, INVALID every time.
                let (session, user) = sessions::find_with_user(txn, token.session_id)
                    .await?
                    .ok_or(Error::RefreshTokenInvalid)?;
                let expires_at = session_expiry(session.created_at, now, ttl, max_lifetime);
                if !may_rotate(&token, &session, user.status, expires_at, now) {
                    return Err(Error::RefreshTokenInvalid);
                }
                let next = RefreshToken::generate()?;
                let record = RefreshRecord {
                    token_hash: next.hash.clone(),
                    session_id: session.id,
                    created_at: now,
                    expires_at,
                    rotated_at: None,
                };
                refresh_tokens::insert(txn, &record).await?;
                sessions::touch(txn, session.id, now, expires_at).await?;
                Ok(Rotation::Rotated {
                    next,
                    user_id: user.id,
                    session_id: session.id,
                    organization_id: session.organization_id,
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
                organization_id,
                expires_at,
            } => self.token_pair(
                user_id,
                session_id,
                organization_id,
                next.token,
                expires_at,
                now,
            ),
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
