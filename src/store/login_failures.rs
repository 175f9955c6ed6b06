use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, prelude::*,
};

use super::{StoreResult, entities::login_failure};
use crate::domain::rules::lockout::{Admission, LockoutState};

fn state(row: &login_failure::Model) -> LockoutState {
    let count = |n: i32| u32::try_from(n).unwrap_or(0);
    LockoutState {
        failures: count(row.failures),
        streak: count(row.streak),
        lockouts: count(row.lockouts),
        last_failure_at: row.last_failure_at,
        locked_until: row.locked_until,
    }
}

fn row(email_hash: Vec<u8>, state: LockoutState) -> login_failure::ActiveModel {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    login_failure::ActiveModel {
        email_hash: Set(email_hash),
        failures: Set(count(state.failures)),
        streak: Set(count(state.streak)),
        lockouts: Set(count(state.lockouts)),
        last_failure_at: Set(state.last_failure_at),
        locked_until: Set(state.locked_until),
    }
}

/// Decides an attempt on the row of `email_hash` and stores what `decide`
/// admits, as one atomic step however many attempts arrive at once, on one
/// replica or several: the row is made to exist (a clean one, if it was
/// missing), then read under a row lock (`FOR UPDATE` on PostgreSQL; SQLite's
/// `BEGIN IMMEDIATE` holds its only write lock), decided and written before
/// the lock is released. Concurrent attempts queue on the lock instead of
/// conflicting, so a flood costs no retries.
pub async fn admit<F>(
    db: &DatabaseConnection,
    email_hash: &[u8],
    now: DateTime<Utc>,
    decide: F,
) -> StoreResult<Admission>
where
    F: Fn(Option<LockoutState>) -> Admission + Copy + Send + 'static,
{
    super::read_committed(db, |txn| {
        let key = email_hash.to_vec();
        Box::pin(async move {
            login_failure::Entity::insert(row(key.clone(), LockoutState::clean(now)))
                .on_conflict_do_nothing_on([login_failure::Column::EmailHash])
                .exec(txn)
                .await?;
            let stored = login_failure::Entity::find_by_id(key.clone())
                .lock_exclusive()
                .one(txn)
                .await?;
            let admission = decide(stored.as_ref().map(state));
            if let Admission::Admitted(next) = admission {
                login_failure::Entity::update(row(key, next))
                    .exec(txn)
                    .await?;
            }
            Ok(admission)
        })
    })
    .await
}

pub async fn clear<C: ConnectionTrait>(db: &C, email_hash: &[u8]) -> StoreResult<()> {
    login_failure::Entity::delete_by_id(email_hash.to_vec())
        .exec(db)
        .await?;
    Ok(())
}

/// Rows deleted by one statement of `prune`, so that a large backlog never
/// meets the statement timeout.
const PRUNE_BATCH: u64 = 2_000;

/// Deletes the rows whose streak was quiet since `cutoff` (last failure and
/// lockout end both no later) and that are not hard-locked (a
/// streak under `hard_lock_after`), in batches; how many went.
pub async fn prune<C: ConnectionTrait>(
    db: &C,
    cutoff: DateTime<Utc>,
    hard_lock_after: u32,
) -> StoreResult<u64> {
    let forgotten = Condition::all()
        .add(login_failure::Column::LastFailureAt.lte(cutoff))
        .add(
            Condition::any()
                .add(login_failure::Column::LockedUntil.is_null())
                .add(login_failure::Column::LockedUntil.lte(cutoff)),
        )
        .add(login_failure::Column::Streak.lt(i32::try_from(hard_lock_after).unwrap_or(i32::MAX)));
    let mut total = 0;
    loop {
        let batch: Vec<Vec<u8>> = login_failure::Entity::find()
            .select_only()
            .column(login_failure::Column::EmailHash)
            .filter(forgotten.clone())
            .limit(PRUNE_BATCH)
            .into_tuple()
            .all(db)
            .await?;
        let Some(_) = batch.first() else {
            return Ok(total);
        };
        let short = (batch.len() as u64) < PRUNE_BATCH;
        // The condition again: a row that failed again since it was read
        // stays.
        total += login_failure::Entity::delete_many()
            .filter(login_failure::Column::EmailHash.is_in(batch))
            .filter(forgotten.clone())
            .exec(db)
            .await?
            .rows_affected;
        if short {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
