//! The checks of every setting that needs more than its own value to be
//! judged: files to read and parse, values another library must accept.
//! They all run before the database is opened or a key generated, so that
//! a wrong setting stops the process at once (exit code 2, the setting
//! named) and leaves nothing behind. A new check of this kind belongs in
//! `preflight`.
//!
//! What a value parser of the command line already refused (durations,
//! counts, CORS origins, proxy CIDRs) is not checked again here.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use super::{cors::cors_layer, tls::tls_config};
use crate::{config::Config, mail::Mailer};

/// What the checks built on the way, handed on to the server so that
/// nothing is read or parsed twice.
pub struct Prepared {
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) cors: Option<tower_http::cors::CorsLayer>,
    /// The SMTP transport, when mail is configured.
    pub(super) mailer: Option<Arc<Mailer>>,
}

/// A setting refused at start. `flag` is its flag without the dashes; its
/// variable follows from it (API.md: drop `WARDEN_`, lower-case, `_` → `-`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag} ({}): {message}", self.variable())]
pub struct SettingError {
    pub flag: &'static str,
    pub message: String,
}

impl SettingError {
    pub fn new(flag: &'static str, message: impl Into<String>) -> Self {
        Self {
            flag,
            message: message.into(),
        }
    }

    /// The environment variable of the setting: `WARDEN_TLS_CERT`.
    pub fn variable(&self) -> String {
        format!("WARDEN_{}", self.flag.replace('-', "_").to_uppercase())
    }
}

/// Checks the settings as a whole; see the module's comment.
pub async fn preflight(config: &Config) -> Result<Prepared, SettingError> {
    let tls = match &config.tls {
        Some(files) => Some(tls_config(files).await?),
        None => None,
    };
    let cors = cors_layer(&config.cors_origins)?;
    // The command line refuses this too; a Config built in code must not
    // get past it either.
    if config.mail.require_verified_email && config.mail.smtp.is_none() {
        return Err(SettingError::new(
            "require-verified-email",
            "needs --smtp-url (WARDEN_SMTP_URL)",
        ));
    }
    let mailer = match &config.mail.smtp {
        Some(smtp) => Some(Arc::new(
            Mailer::new(smtp, config.mail.from.clone())
                .map_err(|e| SettingError::new("smtp-url", e.to_string()))?,
        )),
        None => None,
    };
    Ok(Prepared { tls, cors, mailer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_error_names_the_flag_and_its_variable() {
        let e = SettingError::new("tls-client-ca", "cannot read ca.pem");
        assert_eq!(e.variable(), "WARDEN_TLS_CLIENT_CA");
        assert_eq!(
            e.to_string(),
            "--tls-client-ca (WARDEN_TLS_CLIENT_CA): cannot read ca.pem"
        );
    }
}
