//! Deletes that may meet a large backlog, done in bounded batches: one
//! statement over everything that is due can run past PostgreSQL's
//! statement timeout (`WARDEN_DATABASE_TIMEOUT`) and be cancelled every
//! time, so that nothing is ever deleted, and on SQLite it holds the one
//! write lock for as long as it runs.
//!
//! Use `delete_in_batches` with the entity, its (single-column) primary key
//! and the condition that picks the rows due:
//!
//! ```ignore
//! let pruned = batches::delete_in_batches::<login_failure::Entity, _>(
//!     db,
//!     login_failure::Column::EmailHash,
//!     Condition::all().add(login_failure::Column::LastFailureAt.lt(cutoff)),
//! )
//! .await?;
//! ```

use std::{future::Future, time::Duration};

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, QueryTrait,
};

use super::StoreResult;

/// Rows per statement: a few milliseconds of work for either database,
/// far from any statement timeout, yet few statements for a large backlog.
pub const BATCH_ROWS: u64 = 2_000;
/// The least pause between two batches. The pause is as long as the batch
/// before it took (up to `MAX_PAUSE`), so that a long delete holds SQLite's
/// write lock at most about half the time and writers waiting on it (their
/// busy handler retries every 100 ms at most) get their turn.
const MIN_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Deletes the rows of `E` that match `condition`, at most `BATCH_ROWS`
/// per statement (picked by primary key, `key`, with a `LIMIT` subquery,
/// which SQLite and PostgreSQL both take), until a batch comes back short.
/// How many rows went. Each batch commits on its own: a failure leaves the
/// earlier batches deleted and the rest for the next run.
pub async fn delete_in_batches<E, C>(
    db: &C,
    key: E::Column,
    condition: Condition,
) -> StoreResult<u64>
where
    E: EntityTrait,
    E::Column: Copy,
    C: ConnectionTrait,
{
    in_batches(BATCH_ROWS, |limit| {
        let chosen = E::find()
            .select_only()
            .column(key)
            .filter(condition.clone())
            .limit(limit)
            .into_query();
        async move {
            Ok(E::delete_many()
                .filter(key.in_subquery(chosen))
                .exec(db)
                .await?
                .rows_affected)
        }
    })
    .await
}

/// Runs `batch(rows)` (which does at most `rows` rows of work and says how
/// many it did) until it does fewer than `rows`, pausing between two;
/// the total done.
pub async fn in_batches<E, F, Fut>(rows: u64, mut batch: F) -> Result<u64, E>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<u64, E>>,
{
    let mut total = 0u64;
    loop {
        let started = tokio::time::Instant::now();
        let done = batch(rows).await?;
        total = total.saturating_add(done);
        if done < rows {
            return Ok(total);
        }
        tokio::time::sleep(started.elapsed().clamp(MIN_PAUSE, MAX_PAUSE)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A table of `rows` rows that a batch deletes from; the limits asked.
    async fn drain(rows: u64, per_batch: u64) -> (Result<u64, ()>, Vec<u64>) {
        let left = Cell::new(rows);
        let mut asked = Vec::new();
        let result = in_batches(per_batch, |limit| {
            asked.push(limit);
            let done = left.get().min(limit);
            left.set(left.get() - done);
            async move { Ok(done) }
        })
        .await;
        assert_eq!(left.get(), 0, "everything deleted");
        (result, asked)
    }

    #[tokio::test]
    async fn a_backlog_of_many_batches_is_deleted_in_one_run_a_batch_at_a_time() {
        let (total, asked) = drain(12_345, 1_000).await;
        assert_eq!(total, Ok(12_345));
        assert_eq!(asked, vec![1_000; 13], "12 full batches and a short one");
    }

    #[tokio::test]
    async fn a_backlog_of_whole_batches_ends_at_the_first_empty_batch() {
        let (total, asked) = drain(3_000, 1_000).await;
        assert_eq!(total, Ok(3_000));
        assert_eq!(asked.len(), 4);
    }

    #[tokio::test]
    async fn nothing_due_is_one_statement() {
        let (total, asked) = drain(0, 1_000).await;
        assert_eq!(total, Ok(0));
        assert_eq!(asked.len(), 1);
    }

    #[tokio::test]
    async fn a_failed_batch_ends_the_run_with_its_error() {
        let mut calls = 0;
        let result = in_batches(10, |limit| {
            calls += 1;
            let outcome = if calls < 3 { Ok(limit) } else { Err("timeout") };
            async move { outcome }
        })
        .await;
        assert_eq!(result, Err("timeout"));
        assert_eq!(calls, 3);
    }
}
