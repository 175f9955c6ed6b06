//! The lockout's state in the database, so every replica sees it, keyed by
//! the email whether or not an account has it, so RATE_LIMITED tells an
//! attacker nothing about which accounts exist. The rules are
//! `rules::lockout`; a success gives the attempt's place back by ending the
//! streak.

use chrono::{DateTime, Utc};

use super::Accounts;
use crate::{
    domain::{
        error::{Error, Result},
        rules::lockout::{Admission, FORGET_AFTER, HARD_LOCK_AFTER, admit, lockout_key},
    },
    store::login_failures,
};

/// An attempt that holds its place in the count until it is settled.
#[must_use = "an attempt must be settled: a success gives its place back"]
pub(super) struct Attempt {
    key: Vec<u8>,
}

impl Accounts {
    /// Takes a place in the count of `email`, or RATE_LIMITED (with the time
    /// left) when there is none: locked out, right password or not, decided
    /// before any hashing.
    pub(super) async fn begin_attempt(&self, email: &str, now: DateTime<Utc>) -> Result<Attempt> {
        let key = lockout_key(email);
        let policy = self.lockout;
        match login_failures::admit(&self.db, &key, now, move |stored| {
            admit(policy, stored, now)
        })
        .await?
        {
            Admission::Admitted(_) => Ok(Attempt { key }),
            Admission::Refused { retry_after } => Err(Error::RateLimited { retry_after }),
        }
    }

    /// The password was right: the streak ends (and the place is given
    /// back). The password was wrong: the place stays taken, a failure.
    pub(super) async fn settle_attempt(&self, attempt: Attempt, succeeded: bool) -> Result<()> {
        if succeeded {
            login_failures::clear(&self.db, &attempt.key).await?;
        }
        Ok(())
    }

    /// An admin's reset or approval (or a password reset by mail) lifts a
    /// lockout, the 100-failure lock included.
    pub(super) async fn lift_lockout(&self, email: &str) -> Result<()> {
        Ok(login_failures::clear(&self.db, &lockout_key(email)).await?)
    }

    /// Deletes forgotten failure counts, so that guessing many emails leaves
    /// bounded state. Hard locks stay.
    pub async fn prune_login_failures(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(login_failures::prune(&self.db, now - FORGET_AFTER, HARD_LOCK_AFTER).await?)
    }
}
