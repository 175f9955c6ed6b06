//! The outbox's sender: every replica runs one. A round claims the mails
//! that are due with a lease (one conditional update: of several senders,
//! each row goes to one), delivers them one by one, deletes each delivered
//! row (and with it the body that held the token), and puts failed ones back
//! with a later due time (`rules::email::after_failure`).
//!
//! A mail is delivered more than once only if the process stops (or the
//! database fails) between the relay's acceptance and the delete: then the
//! lease runs out and another sender tries again. Each mail keeps its
//! Message-ID across attempts, so a receiver can tell the copies apart.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::{
    domain::{
        clock::Clock,
        error::Result,
        rules::email::{AfterFailure, after_failure},
        types::{MailKind, OutgoingMail},
    },
    store::{BoxFuture, Db, mail_outbox},
};

/// Mails claimed at once.
const BATCH: u64 = 8;
/// The longest one delivery may take before it counts as failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a claim holds its rows: longer than a whole batch can take, so
/// that a row is never claimed again while its first sender still works on
/// it. A sender stops before it gets near the end.
const LEASE: Duration = Duration::from_secs(BATCH * SEND_TIMEOUT.as_secs() + 60);

/// Why one delivery failed, for the log (never holds the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError(pub String);

/// What hands a mail to the relay: SMTP (`crate::mail::Mailer`), or a test's.
pub trait Deliver: Send + Sync + 'static {
    fn deliver<'a>(&'a self, mail: &'a OutgoingMail) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// What a round did, by kind, for the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub sent: Vec<MailKind>,
    pub retried: Vec<MailKind>,
    pub failed: Vec<MailKind>,
}

impl Round {
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.retried.is_empty() && self.failed.is_empty()
    }
}

/// How much the outbox holds, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub queued: u64,
    pub oldest: Option<DateTime<Utc>>,
}

pub struct MailSender {
    db: Db,
    deliver: Arc<dyn Deliver>,
    clock: Arc<dyn Clock>,
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl MailSender {
    pub fn new(db: Db, deliver: Arc<dyn Deliver>, clock: Arc<dyn Clock>) -> Self {
        Self { db, deliver, clock }
    }

    /// Claims what is due and delivers it. Returns once the batch is done;
    /// `Round::sent` full means more may be due.
    pub async fn round(&self) -> Result<Round> {
        let now = self.clock.now();
        let lease = Uuid::new_v4();
        let lease_until = now + delta(LEASE);
        let claimed = mail_outbox::claim(&self.db, lease, now, lease_until, BATCH).await?;
        let mut round = Round::default();
        let mut mails = claimed.into_iter();
        while let Some(mail) = mails.next() {
            // Never send on a lease that could run out mid-delivery: another
            // sender may claim the row then.
            if self.clock.now() + delta(SEND_TIMEOUT * 2) >= lease_until {
                let rest: Vec<Uuid> = std::iter::once(mail.id)
                    .chain(mails.map(|m| m.id))
                    .collect();
                mail_outbox::release(&self.db, lease, &rest).await?;
                break;
            }
            let outcome =
                match tokio::time::timeout(SEND_TIMEOUT, self.deliver.deliver(&mail)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(DeliveryError(format!(
                        "no answer from the relay within {}",
                        humantime::format_duration(SEND_TIMEOUT)
                    ))),
                };
            match outcome {
                Ok(()) => {
                    mail_outbox::delivered(&self.db, mail.id, lease).await?;
                    tracing::info!(
                        mail_id = %mail.id,
                        kind = mail.kind.as_str(),
                        attempts = mail.attempts + 1,
                        "mail delivered"
                    );
                    round.sent.push(mail.kind);
                }
                Err(DeliveryError(error)) => {
                    let failures = mail.attempts + 1;
                    let now = self.clock.now();
                    match after_failure(mail.created_at, failures, now) {
                        AfterFailure::RetryAt(due) => {
                            mail_outbox::retry_at(&self.db, mail.id, lease, failures, due, &error)
                                .await?;
                            tracing::warn!(
                                mail_id = %mail.id,
                                kind = mail.kind.as_str(),
                                attempts = failures,
                                error,
                                retry_in = %humantime::format_duration(
                                    (due - now).to_std().unwrap_or_default()
                                ),
                                "mail delivery failed; will retry"
                            );
                            round.retried.push(mail.kind);
                        }
                        AfterFailure::GiveUp => {
                            mail_outbox::delivered(&self.db, mail.id, lease).await?;
                            tracing::error!(
                                mail_id = %mail.id,
                                kind = mail.kind.as_str(),
                                attempts = failures,
                                error,
                                "mail given up: not delivered within 24 h"
                            );
                            round.failed.push(mail.kind);
                        }
                    }
                }
            }
        }
        Ok(round)
    }

    pub async fn backlog(&self) -> Result<Backlog> {
        let (queued, oldest) = mail_outbox::backlog(&self.db).await?;
        Ok(Backlog { queued, oldest })
    }
}
