//! The loops that run beside the servers (database health, pruning, key
//! reloads), and how they stop: between two rounds, before the database is
//! closed.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};
use tonic_health::{ServingStatus, server::HealthReporter};

use super::set_health;
use crate::{
    domain::email::sender::MailSender,
    state::AppState,
    store::{self, Db},
};

/// How often the database is pinged to keep health status current.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How often it is pinged while it does not answer, so that the service is
/// back soon after the database.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);
/// The least time between two pings, however many calls meet a failing
/// database meanwhile.
const MIN_PROBE_GAP: Duration = Duration::from_millis(250);
/// How often ended sessions are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often expired login-failure counts are pruned: often, because an
/// attacker guessing emails creates them at request rate.
const FAILURE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Waits for the background loops, which stop between two rounds once told
/// to: a prune or a key reload under way finishes rather than being cut off
/// mid-transaction, and none of them touches the database once it is
/// closed. Each round is a few statements, each bounded by the database
/// timeout; one that still runs at `limit` is cancelled (its transaction
/// rolls back).
pub(super) async fn finish_background(
    tasks: impl IntoIterator<Item = JoinHandle<()>>,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    for task in tasks {
        let cancel = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "a background task failed"),
            Err(_) => {
                cancel.abort();
                tracing::warn!(
                    limit = %humantime::format_duration(limit),
                    "a background task did not stop in time; cancelled"
                );
            }
        }
    }
}

/// Closes the pool once nothing needs it any more. On SQLite this is what
/// folds the write-ahead log back into the database file and removes it,
/// so that after a stop the file alone is the whole database; a process
/// that exits with the pool open leaves recent writes in `-wal`, and a copy
/// of the file without it is incomplete or corrupt. Waits for connections
/// still checked out (calls cut off by the drain timeout) for at most
/// `limit`.
pub(super) async fn close_database(db: &Db, limit: Duration) {
    match tokio::time::timeout(limit, store::close(db)).await {
        Ok(Ok(store::Closed::Plain)) => tracing::info!("database closed"),
        Ok(Ok(store::Closed::LogFoldedIn)) => {
            tracing::info!("database closed; its write-ahead log is folded into the file");
        }
        Ok(Ok(store::Closed::LogRemains { wal, reason })) => tracing::warn!(
            wal = %wal.display(),
            reason,
            "database closed, but its write-ahead log remains: the database file alone is not \
             a complete copy (use `warden backup`)"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "closing the database failed"),
        Err(_) => tracing::warn!(
            limit = %humantime::format_duration(limit),
            "the database did not close in time (connections still in use); \
             its write-ahead log may remain"
        ),
    }
}

/// SERVING while the database answers, NOT_SERVING while it does not. It
/// is asked every `HEALTH_INTERVAL`, every `RECOVERY_INTERVAL` while it is
/// down, and at once when a call met it unavailable.
pub(super) async fn watch_database(
    state: Arc<AppState>,
    reporter: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let probed_at = tokio::time::Instant::now();
        let up = tokio::time::timeout(state.database_timeout, store::ping(&state.db))
            .await
            .is_ok_and(|r| r.is_ok());
        if last != Some(up) && !*stop.borrow() {
            state.ready.store(up, Ordering::SeqCst);
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&reporter, status).await;
            if up {
                tracing::info!("database answers: serving");
            } else {
                tracing::warn!("database does not answer: not serving");
            }
            last = Some(up);
        }
        let interval = if up {
            HEALTH_INTERVAL
        } else {
            RECOVERY_INTERVAL
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = state.database_trouble.notified() => {
                tokio::time::sleep_until(probed_at + MIN_PROBE_GAP).await;
            }
            _ = stop.changed() => {}
        }
    }
}

/// Deletes ended sessions now and then, so the tables do not grow without
/// bound. Every replica may do it; the deletes are idempotent.
pub(super) async fn prune_periodically(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut sessions_due = tokio::time::Instant::now();
    loop {
        let now = state.clock.now();
        if tokio::time::Instant::now() >= sessions_due {
            match state.accounts.prune(now).await {
                Ok((0, 0)) => {}
                Ok((sessions, tokens)) => tracing::info!(sessions, tokens, "pruned ended sessions"),
                Err(e) => tracing::warn!(error = %e, "pruning sessions failed"),
            }
            match state.accounts.prune_email_tokens(now).await {
                Ok(0) => {}
                Ok(tokens) => tracing::info!(tokens, "pruned expired email tokens"),
                Err(e) => tracing::warn!(error = %e, "pruning email tokens failed"),
            }
            sessions_due += PRUNE_INTERVAL;
        }
        match state.accounts.prune_login_failures(now).await {
            Ok(0) => {}
            Ok(entries) => tracing::debug!(entries, "pruned expired login failure counts"),
            Err(e) => tracing::warn!(error = %e, "pruning login failures failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(FAILURE_PRUNE_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often the sender looks for due mail when nothing woke it: the bound
/// on how late a retry, or a mail queued on another replica, goes out.
const MAIL_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Drains the outbox: every replica runs this; the claims make each mail go
/// out once. Woken at once when this replica queued mail.
pub(super) async fn send_mail_periodically(
    state: Arc<AppState>,
    sender: Arc<MailSender>,
    mut stop: watch::Receiver<bool>,
) {
    let queued = state.accounts.mail_queued();
    loop {
        if *stop.borrow() {
            return;
        }
        let busy = match sender.round().await {
            Ok(round) => {
                state.metrics.observe_mail_round(&round);
                !round.is_empty()
            }
            Err(e) => {
                tracing::warn!(error = %e, "sending mail failed");
                false
            }
        };
        match sender.backlog().await {
            Ok(backlog) => {
                let age = backlog
                    .oldest
                    .and_then(|t| (state.clock.now() - t).to_std().ok())
                    .unwrap_or_default();
                state.metrics.observe_mail_backlog(backlog.queued, age);
            }
            Err(e) => tracing::debug!(error = %e, "cannot measure the outbox"),
        }
        if busy {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(MAIL_POLL_INTERVAL) => {}
            _ = queued.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Picks up keys rotated by `warden keys rotate` (or on another replica)
/// and retires keys no live token needs.
pub(super) async fn reload_keys_periodically(
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state.tokens.reload_interval()) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = state.tokens.reload(&state.db, state.clock.now()).await {
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A prune or key reload under way when the stop comes must end by
    /// itself, not be cut off mid-transaction, before the database closes.
    #[tokio::test]
    async fn a_background_round_under_way_is_waited_for_not_cut_off() {
        let finished = Arc::new(AtomicUsize::new(0));
        let round = |finished: Arc<AtomicUsize>| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            })
        };
        let tasks = [
            round(finished.clone()),
            round(finished.clone()),
            round(finished.clone()),
        ];
        finish_background(tasks, Duration::from_secs(30)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 3);
    }

    /// One that hangs must not keep the process from stopping.
    #[tokio::test]
    async fn a_background_task_that_hangs_is_cancelled_at_the_limit() {
        let hung = tokio::spawn(std::future::pending::<()>());
        let probe = hung.abort_handle();
        let started = tokio::time::Instant::now();
        let tasks = [hung, tokio::spawn(async {}), tokio::spawn(async {})];
        finish_background(tasks, Duration::from_millis(100)).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::task::yield_now().await;
        assert!(probe.is_finished(), "cancelled");
    }
}
