//! What every handler of both ports shares, built once at start by `app`.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use ipnet::IpNet;
use tokio::sync::Notify;

use crate::{
    domain::{accounts::Accounts, clock::Clock, email::sender::MailSender, tokens::TokenService},
    metrics::Metrics,
    store::Db,
};

/// What every handler shares, built once at start.
pub struct AppState {
    pub db: Db,
    pub accounts: Accounts,
    pub tokens: Arc<TokenService>,
    pub clock: Arc<dyn Clock>,
    pub trusted_proxies: Vec<IpNet>,
    /// Whether the database answered the last health probe.
    pub ready: AtomicBool,
    /// Woken when a call meets an unavailable database, so that health
    /// follows at once rather than at the next periodic probe.
    pub database_trouble: Arc<Notify>,
    /// `WARDEN_DATABASE_TIMEOUT`: also the longest a health probe waits.
    pub database_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// The outbox's sender; `None` without `WARDEN_SMTP_URL`.
    pub mail: Option<Arc<MailSender>>,
}
