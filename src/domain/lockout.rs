//! Per-account login lockout (OWASP Authentication Cheat Sheet). The state
//! lives in the database, so every replica sees it, and is keyed by the
//! email whether or not an account has it, so RATE_LIMITED tells an
//! attacker nothing about which accounts exist.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::accounts::Accounts;
use crate::{
    error::{Error, Result},
    store::{self, entities::login_failure, login_failures},
};

/// The key of an email's failure count: SHA-256 of its normalised form
/// (the same for every spelling that logs into the same account).
pub fn lockout_key(email: &str) -> Vec<u8> {
    Sha256::digest(email.trim().to_lowercase().as_bytes()).to_vec()
}

/// What a lockout check found.
pub(super) struct Failures {
    key: Vec<u8>,
    recorded: bool,
}

impl Accounts {
    /// RATE_LIMITED (with the time left) while the email is locked out.
    pub(super) async fn ensure_not_locked(
        &self,
        email: &str,
        now: DateTime<Utc>,
    ) -> Result<Failures> {
        let key = lockout_key(email);
        let row = login_failures::find(&self.db, &key).await?;
        if let Some(until) = row.as_ref().and_then(|r| r.locked_until)
            && until > now
        {
            let left = (until - now).to_std().unwrap_or_default();
            // Whole seconds, rounded up: never tell a client to come back early.
            let retry_after =
                std::time::Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
            return Err(Error::RateLimited { retry_after });
        }
        Ok(Failures {
            key,
            recorded: row.is_some(),
        })
    }

    /// Counts a failure. The one that reaches the limit starts a lockout; a
    /// count with no new failure for a lockout period starts from zero.
    pub(super) async fn record_failure(
        &self,
        failures: Failures,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (limit, window) = (self.lockout.failure_limit, self.lockout.duration);
        let key = failures.key;
        store::serializable(&self.db, |txn| {
            let key = key.clone();
            Box::pin(async move {
                let existing = login_failures::find(txn, &key).await?;
                let failures = match &existing {
                    Some(row) if row.last_failure_at > now - window => {
                        row.failures.saturating_add(1)
                    }
                    _ => 1,
                };
                let locked_until =
                    (u32::try_from(failures).unwrap_or(u32::MAX) >= limit).then_some(now + window);
                let row = login_failure::Model {
                    email_hash: key,
                    failures,
                    last_failure_at: now,
                    locked_until,
                };
                login_failures::save(txn, row, existing.is_some()).await?;
                Ok(())
            })
        })
        .await
    }

    /// After a success: the count starts again.
    pub(super) async fn forget_failures(&self, failures: Failures) -> Result<()> {
        if failures.recorded {
            login_failures::clear(&self.db, &failures.key).await?;
        }
        Ok(())
    }

    /// An admin's reset or approval lifts a lockout.
    pub(super) async fn lift_lockout(&self, email: &str) -> Result<()> {
        Ok(login_failures::clear(&self.db, &lockout_key(email)).await?)
    }

    /// Deletes failure counts that expired, so that guessing many emails
    /// leaves bounded state.
    pub async fn prune_login_failures(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(login_failures::prune(&self.db, now - self.lockout.duration, now).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_email_shares_one_key() {
        assert_eq!(
            lockout_key(" Ada@Example.com "),
            lockout_key("ada@example.com")
        );
        assert_ne!(
            lockout_key("ada@example.com"),
            lockout_key("bob@example.com")
        );
        assert_eq!(lockout_key("x").len(), 32);
    }
}
