//! Per-email login lockout (OWASP Authentication Cheat Sheet; NIST SP
//! 800-63B rev. 4 §3.2.2): how attempts are admitted, how long lockouts
//! last, when a streak is forgotten.
//!
//! An attempt takes its place in the count *before* its password is checked,
//! in one atomic step (see `accounts::lockout`): reading the count, checking
//! the password and then writing the failure would let every attempt in
//! flight pass the check (48 simultaneous guesses all got a password check
//! under the old scheme; the same flaw was ZITADEL's GHSA-7h8m-vrxx-vr4m).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

/// Failures in a row after which an account stays locked until an admin's
/// ResetPassword or approval (NIST SP 800-63B rev. 4 §3.2.2: at most 100).
pub const HARD_LOCK_AFTER: u32 = 100;
/// The longest a single lockout lasts once they start doubling.
pub const MAX_LOCKOUT: TimeDelta = TimeDelta::hours(24);
/// A streak with no failure and no lockout for this long is forgotten.
pub const FORGET_AFTER: TimeDelta = TimeDelta::hours(24);

/// The key of an email's failure count: SHA-256 of its normalised form
/// (the same for every spelling that logs into the same account).
pub fn lockout_key(email: &str) -> Vec<u8> {
    Sha256::digest(email.trim().to_lowercase().as_bytes()).to_vec()
}

/// The rules of the lockout, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures per round (`WARDEN_LOGIN_FAILURE_LIMIT`).
    pub failure_limit: u32,
    /// The first lockout of a streak (`WARDEN_LOGIN_LOCKOUT`).
    pub first_lockout: TimeDelta,
}

/// What is stored for one email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutState {
    /// Places taken in the current round: a round ends with its lockout.
    pub failures: u32,
    /// Failures in a row since the last success, over every round.
    pub streak: u32,
    /// Lockouts this streak has had.
    pub lockouts: u32,
    pub last_failure_at: DateTime<Utc>,
    pub locked_until: Option<DateTime<Utc>>,
}

impl LockoutState {
    /// No failure at all: what a missing row means.
    pub fn clean(now: DateTime<Utc>) -> Self {
        Self {
            failures: 0,
            streak: 0,
            lockouts: 0,
            last_failure_at: now,
            locked_until: None,
        }
    }

    /// Locked until an admin (or a password reset) clears it.
    pub fn is_hard_locked(&self) -> bool {
        self.streak >= HARD_LOCK_AFTER
    }

    /// Forgotten: nothing happened for `FORGET_AFTER` after the later of the
    /// last failure and the end of the last lockout. Never a hard lock.
    fn is_forgotten(&self, now: DateTime<Utc>) -> bool {
        let quiet_since = self.locked_until.map_or(self.last_failure_at, |until| {
            until.max(self.last_failure_at)
        });
        !self.is_hard_locked() && now >= quiet_since + FORGET_AFTER
    }
}

/// What the lockout says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The attempt may check its password. Its place is taken: `state` is
    /// what to store, counting it as a failure until it succeeds.
    Admitted(LockoutState),
    /// Refused without a password check; nothing changes.
    Refused { retry_after: Duration },
}

/// How long the lockout that follows `earlier` lockouts in a row lasts: the
/// first one `first`, each further one twice as long as the one before, up
/// to `MAX_LOCKOUT` (and never shorter than the first).
pub fn lockout_duration(first: TimeDelta, earlier: u32) -> TimeDelta {
    let doubled = 1i32
        .checked_shl(earlier)
        .filter(|factor| *factor > 0)
        .and_then(|factor| first.checked_mul(factor))
        .unwrap_or(MAX_LOCKOUT);
    if earlier == 0 {
        first
    } else {
        doubled.min(MAX_LOCKOUT).max(first)
    }
}

/// Whole seconds, rounded up: never tell a client to come back early.
fn retry_after(left: TimeDelta) -> Duration {
    let left = left.to_std().unwrap_or_default();
    Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
}

/// Decides an attempt at `now` given the stored state (`None`: no row). The
/// attempt that reaches the failure limit is admitted and starts the lockout
/// at once, so that no attempt after it in the count gets a check; once the
/// lockout has passed a new round of `failure_limit` places begins.
pub fn admit(policy: LockoutPolicy, stored: Option<LockoutState>, now: DateTime<Utc>) -> Admission {
    let mut state = match stored {
        Some(state) if !state.is_forgotten(now) => state,
        _ => LockoutState::clean(now),
    };
    if state.is_hard_locked() {
        return Admission::Refused {
            retry_after: retry_after(MAX_LOCKOUT),
        };
    }
    if let Some(until) = state.locked_until {
        if until > now {
            return Admission::Refused {
                retry_after: retry_after(until - now),
            };
        }
        // The lockout has passed: a new round.
        state.failures = 0;
        state.locked_until = None;
    }
    state.failures = state.failures.saturating_add(1);
    state.streak = state.streak.saturating_add(1);
    state.last_failure_at = now;
    if !state.is_hard_locked() && state.failures >= policy.failure_limit {
        state.locked_until = Some(now + lockout_duration(policy.first_lockout, state.lockouts));
        state.lockouts = state.lockouts.saturating_add(1);
    }
    Admission::Admitted(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn policy(limit: u32) -> LockoutPolicy {
        LockoutPolicy {
            failure_limit: limit,
            first_lockout: TimeDelta::seconds(60),
        }
    }

    /// Runs `n` attempts at `at` against `state`, as a series of atomic
    /// steps, and returns how many were admitted and the state after.
    fn attempts(
        policy: LockoutPolicy,
        mut state: Option<LockoutState>,
        n: usize,
        at: DateTime<Utc>,
    ) -> (usize, Option<LockoutState>) {
        let mut admitted = 0;
        for _ in 0..n {
            if let Admission::Admitted(next) = admit(policy, state, at) {
                admitted += 1;
                state = Some(next);
            }
        }
        (admitted, state)
    }

    fn refused_for(policy: LockoutPolicy, state: Option<LockoutState>, at: DateTime<Utc>) -> u64 {
        match admit(policy, state, at) {
            Admission::Refused { retry_after } => retry_after.as_secs(),
            Admission::Admitted(_) => panic!("admitted"),
        }
    }

    #[test]
    fn of_any_number_of_attempts_at_once_at_most_the_limit_are_admitted() {
        for limit in [1, 3, 5] {
            let (admitted, state) = attempts(policy(limit), None, 48, now());
            assert_eq!(admitted, limit as usize);
            let state = state.unwrap();
            assert_eq!(state.failures, limit);
            assert_eq!(state.locked_until, Some(now() + TimeDelta::seconds(60)));
        }
    }

    #[test]
    fn the_attempt_that_reaches_the_limit_starts_the_lockout_and_later_ones_are_told_the_time_left()
    {
        let (_, state) = attempts(policy(3), None, 3, now());
        assert_eq!(refused_for(policy(3), state, now()), 60);
        let later = now() + TimeDelta::milliseconds(45_500);
        assert_eq!(refused_for(policy(3), state, later), 15, "rounded up");
    }

    #[test]
    fn once_a_lockout_has_passed_a_new_round_of_attempts_begins() {
        let (_, state) = attempts(policy(3), None, 3, now());
        let after = now() + TimeDelta::seconds(60);
        let (admitted, state) = attempts(policy(3), state, 10, after);
        assert_eq!(admitted, 3);
        assert_eq!(state.unwrap().streak, 6);
    }

    #[test]
    fn each_further_lockout_in_a_streak_lasts_twice_as_long() {
        let mut state = None;
        let mut at = now();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (_, next) = attempts(policy(2), state, 2, at);
            let until = next.unwrap().locked_until.unwrap();
            seen.push((until - at).num_seconds());
            at = until;
            state = next;
        }
        assert_eq!(seen, [60, 120, 240, 480]);
    }

    #[test]
    fn lockouts_double_up_to_a_day_and_never_fall_below_the_first() {
        let minute = TimeDelta::minutes(1);
        assert_eq!(lockout_duration(minute, 0), minute);
        assert_eq!(lockout_duration(minute, 3), minute * 8);
        assert_eq!(lockout_duration(minute, 20), MAX_LOCKOUT);
        assert_eq!(lockout_duration(minute, 200), MAX_LOCKOUT);
        let two_days = TimeDelta::hours(48);
        assert_eq!(lockout_duration(two_days, 0), two_days);
        assert_eq!(lockout_duration(two_days, 1), two_days);
    }

    #[test]
    fn a_hundred_failures_in_a_row_lock_for_good() {
        let generous = policy(1_000_000);
        let (admitted, state) = attempts(generous, None, 150, now());
        assert_eq!(admitted, HARD_LOCK_AFTER as usize);
        let state = state.unwrap();
        assert!(state.is_hard_locked());
        let much_later = now() + TimeDelta::days(365);
        assert!(matches!(
            admit(generous, Some(state), much_later),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn the_hundredth_failure_counts_across_rounds_and_lockouts() {
        let mut state = None;
        let mut at = now();
        let mut admitted = 0;
        while !state.is_some_and(|s: LockoutState| s.is_hard_locked()) {
            let (n, next) = attempts(policy(5), state, 5, at);
            admitted += n;
            state = next;
            at = state.unwrap().locked_until.unwrap_or(at);
        }
        assert_eq!(admitted, HARD_LOCK_AFTER as usize);
        assert!(matches!(
            admit(policy(5), state, at + TimeDelta::days(30)),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn a_streak_is_forgotten_a_day_after_its_last_failure_or_lockout() {
        let (_, state) = attempts(policy(3), None, 2, now());
        let almost = now() + FORGET_AFTER - TimeDelta::seconds(1);
        let (_, kept) = attempts(policy(3), state, 1, almost);
        assert_eq!(kept.unwrap().failures, 3, "still counted");
        let (_, forgotten) = attempts(policy(3), state, 1, now() + FORGET_AFTER);
        assert_eq!(forgotten.unwrap().failures, 1, "counted from zero");
        assert_eq!(forgotten.unwrap().streak, 1);
    }

    #[test]
    fn a_streak_is_remembered_for_a_day_after_its_lockout_ends() {
        let long = LockoutPolicy {
            failure_limit: 1,
            first_lockout: TimeDelta::hours(10),
        };
        let (_, state) = attempts(long, None, 1, now());
        let (_, next) = attempts(long, state, 1, now() + TimeDelta::hours(30));
        assert_eq!(next.unwrap().lockouts, 2, "the second lockout doubles");
        let until = next.unwrap().locked_until.unwrap();
        assert_eq!(until - (now() + TimeDelta::hours(30)), TimeDelta::hours(20));
    }

    #[test]
    fn forgetting_never_lifts_a_hard_lock() {
        let (_, state) = attempts(policy(1_000_000), None, 100, now());
        assert!(matches!(
            admit(policy(1_000_000), state, now() + FORGET_AFTER * 10),
            Admission::Refused { .. }
        ));
    }

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
