//! Command line and environment (API.md, "Command line and configuration").
//! Every setting is a flag and a `WARDEN_*` variable; a flag wins. A value
//! out of range stops the process with exit code 2 and a message naming it.
//!
//! Only the ranges API.md states are enforced (durations of at least 1 s,
//! counts of at least 1, the password length 8 to 64, the failure limit up
//! to 1,000,000), and the few wider ones that were always accepted. Beyond
//! them, a value is refused only when it cannot be represented: a duration
//! whose end no timestamp can name, a database timeout the database cannot
//! hold, argon2 parameters the argon2 crate refuses. Operators choose the
//! rest (a 2 s refresh TTL to test expiry, a huge failure limit to leave
//! rate limiting to a gateway).

use std::{
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    time::Duration,
};

use chrono::{TimeDelta, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum, value_parser};
use ipnet::IpNet;

use zeroize::Zeroizing;

use lettre::message::Mailbox;

use crate::{
    domain::{
        email::{EmailSettings, LinkTemplates},
        key_encryption::KeyEncryptionKey,
        password::HashingCost,
    },
    mail::{SmtpSettings, parse_from},
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://warden.db?mode=rwc";

#[derive(Debug, Parser)]
#[command(name = "warden", version, about = "gRPC authentication service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database, then serve gRPC and the HTTP side port until
    /// SIGTERM or SIGINT. The key-encryption key, if any, comes from
    /// WARDEN_KEY_ENCRYPTION_KEY or the file named by
    /// WARDEN_KEY_ENCRYPTION_KEY_FILE.
    Serve(Box<ServeArgs>),
    /// Apply pending migrations and exit.
    Migrate(MigrateArgs),
    /// Create an approved admin. The password comes from --password-stdin or
    /// WARDEN_ADMIN_PASSWORD, never from a flag.
    CreateAdmin(CreateAdminArgs),
    /// Write the binary FileDescriptorSet of the warden protos, imports and
    /// the google.rpc error details included, to stdout (for Envoy's
    /// gRPC-JSON transcoder).
    DescriptorSet,
    /// Exit 0 if the server at WARDEN_LISTEN reports SERVING, else 1.
    Healthcheck(HealthcheckArgs),
    /// Manage the keys that sign access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write a consistent copy of the SQLite database to PATH, safe while
    /// servers write to it; the copy is a whole database on its own. On
    /// PostgreSQL, prints the pg_dump command to use instead (exit 2).
    Backup(BackupArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The file to write; its directory must exist.
    pub path: PathBuf,
    /// Replace PATH if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key. Running servers sign with it within their
    /// WARDEN_KEY_RELOAD_INTERVAL (30 s by default); older keys keep
    /// verifying until no token they signed can be live, then are removed.
    /// The key-encryption key, if any, comes from WARDEN_KEY_ENCRYPTION_KEY
    /// or the file named by WARDEN_KEY_ENCRYPTION_KEY_FILE.
    Rotate(RotateArgs),
    /// List the signing keys: kid, when created, state (active: signs;
    /// verifying: replaced, still verifies tokens it signed; retired: due
    /// for removal) and when a replaced key may be removed.
    List(ListKeysArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ListKeysArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The variable that holds the key-encryption key itself.
pub const KEY_ENCRYPTION_KEY_VAR: &str = "WARDEN_KEY_ENCRYPTION_KEY";
/// The variable that names a file holding it (a mounted secret).
pub const KEY_ENCRYPTION_KEY_FILE_VAR: &str = "WARDEN_KEY_ENCRYPTION_KEY_FILE";
/// Far more than a key written as text needs; a file larger than this is
/// not a key (and `/dev/zero` by mistake is not read for ever).
const KEY_FILE_MAX_BYTES: u64 = 1024;

/// The key-encryption key: 32 bytes (base64 or hex) that seal the signing
/// keys stored in the database. Only from `WARDEN_KEY_ENCRYPTION_KEY` or
/// the file named by `WARDEN_KEY_ENCRYPTION_KEY_FILE`, never from a flag:
/// a command line shows in `ps` and in shell history.
#[derive(Debug, Clone, Args)]
pub struct KeyEncryptionArgs {
    /// The flag of earlier releases, taken only to be refused with a
    /// message saying what to do instead (its value is never read, so it is
    /// never echoed).
    #[arg(long = "key-encryption-key", hide = true, num_args = 0..=1,
          default_missing_value = "", allow_hyphen_values = true,
          value_parser = |_: &str| Ok::<_, String>(KeyOnCommandLine))]
    refused_flag: Option<KeyOnCommandLine>,
    /// Filled by `read_key` from the environment.
    #[arg(skip)]
    pub key_encryption_key: Option<KeyEncryptionKey>,
}

/// That `--key-encryption-key` was given, and nothing of what followed it.
#[derive(Debug, Clone, Copy)]
pub struct KeyOnCommandLine;

impl KeyEncryptionArgs {
    /// `read_key` from the process environment.
    pub fn read_key_from_environment(&mut self) -> Result<(), String> {
        self.read_key(|name| std::env::var_os(name))
    }

    /// Reads the key from `WARDEN_KEY_ENCRYPTION_KEY` or from the file named
    /// by `WARDEN_KEY_ENCRYPTION_KEY_FILE` (`var` looks a variable up: the
    /// process environment, or a test's). Any trouble is a settings error
    /// naming the variable, never quoting the key.
    pub fn read_key(
        &mut self,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<(), String> {
        if self.refused_flag.is_some() {
            return Err(format!(
                "--key-encryption-key is not accepted: a key on the command line shows in `ps` \
                 and in shell history; set {KEY_ENCRYPTION_KEY_VAR}, or \
                 {KEY_ENCRYPTION_KEY_FILE_VAR} to a file that holds the key"
            ));
        }
        self.key_encryption_key = match (
            var(KEY_ENCRYPTION_KEY_VAR),
            var(KEY_ENCRYPTION_KEY_FILE_VAR),
        ) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{KEY_ENCRYPTION_KEY_VAR} and {KEY_ENCRYPTION_KEY_FILE_VAR} are both set: set \
                     one of them"
                ));
            }
            (Some(text), None) => {
                let text = Zeroizing::new(
                    text.into_string()
                        .map_err(|_| format!("{KEY_ENCRYPTION_KEY_VAR} is not UTF-8"))?,
                );
                Some(
                    KeyEncryptionKey::parse(&text)
                        .map_err(|e| format!("{KEY_ENCRYPTION_KEY_VAR} {e}"))?,
                )
            }
            (None, Some(path)) => Some(read_key_file(PathBuf::from(path).as_path())?),
        };
        Ok(())
    }
}

fn read_key_file(path: &std::path::Path) -> Result<KeyEncryptionKey, String> {
    use std::io::Read as _;
    let name = KEY_ENCRYPTION_KEY_FILE_VAR;
    let cannot_read = |e: std::io::Error| format!("{name}: cannot read {}: {e}", path.display());
    let mut text = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .map_err(cannot_read)?
        .take(KEY_FILE_MAX_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(cannot_read)?;
    if text.len() as u64 > KEY_FILE_MAX_BYTES {
        return Err(format!(
            "{name}: {} is larger than a key ({KEY_FILE_MAX_BYTES} bytes at most)",
            path.display()
        ));
    }
    let text = std::str::from_utf8(&text)
        .map_err(|_| format!("{name}: {} is not text", path.display()))?;
    KeyEncryptionKey::parse(text).map_err(|e| format!("{name}: the key in {} {e}", path.display()))
}

#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub encryption: KeyEncryptionArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH?mode=rwc` (`mode=rwc` creates the file) or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
    #[arg(long, env = "WARDEN_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_parser = parse_database_url)]
    pub database_url: String,
    /// The longest wait on the database before a call fails with
    /// DATABASE_UNAVAILABLE: connecting, waiting for a pooled connection,
    /// one statement (PostgreSQL) or the write lock (SQLite); at least
    /// 100ms, at most 2^31 - 1 ms (what both databases can hold).
    #[arg(long, env = "WARDEN_DATABASE_TIMEOUT", default_value = "5s", value_parser = parse_database_timeout)]
    pub database_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `warden=debug,info` (tracing's
    /// EnvFilter syntax; levels: error, warn, info, debug, trace).
    #[arg(long, env = "WARDEN_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub log: String,
    /// Log lines as human-readable text or as JSON objects, one a line.
    #[arg(long, env = "WARDEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// argon2id memory cost in KiB; at least 8 per lane.
    #[arg(long, env = "WARDEN_ARGON2_MEMORY_KIB", default_value_t = 19_456,
          value_parser = value_parser!(u32).range(8..))]
    pub argon2_memory_kib: u32,
    /// argon2id time cost (passes over memory); at least 1.
    #[arg(long, env = "WARDEN_ARGON2_ITERATIONS", default_value_t = 2,
          value_parser = value_parser!(u32).range(1..))]
    pub argon2_iterations: u32,
    /// argon2id lanes; 1 to 16,777,215 (what argon2 takes).
    #[arg(long, env = "WARDEN_ARGON2_PARALLELISM", default_value_t = 1,
          value_parser = value_parser!(u32).range(1..))]
    pub argon2_parallelism: u32,
    /// Minimum password length in characters; 8 to 64.
    #[arg(long, env = "WARDEN_PASSWORD_MIN_LENGTH", default_value_t = 15,
          value_parser = value_parser!(u32).range(8..=64))]
    pub password_min_length: u32,
}

impl PasswordArgs {
    /// The argon2 parameters, refused here (exit code 2) rather than when
    /// the hasher is built, if the argon2 crate would not take them.
    fn cost(&self) -> Result<HashingCost, String> {
        if u64::from(self.argon2_memory_kib) < 8 * u64::from(self.argon2_parallelism) {
            return Err(format!(
                "--argon2-memory-kib (WARDEN_ARGON2_MEMORY_KIB) must be at least 8 KiB per lane of \
                 --argon2-parallelism (WARDEN_ARGON2_PARALLELISM): {} < 8 × {}",
                self.argon2_memory_kib, self.argon2_parallelism
            ));
        }
        let cost = HashingCost {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        };
        match argon2::Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None) {
            Ok(_) => Ok(cost),
            Err(e) => {
                let setting = match e {
                    argon2::Error::ThreadsTooFew | argon2::Error::ThreadsTooMany => {
                        "--argon2-parallelism (WARDEN_ARGON2_PARALLELISM)"
                    }
                    argon2::Error::TimeTooSmall => "--argon2-iterations (WARDEN_ARGON2_ITERATIONS)",
                    _ => "--argon2-memory-kib (WARDEN_ARGON2_MEMORY_KIB)",
                };
                Err(format!("{setting}: argon2 refuses it: {e}"))
            }
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain; turns TLS on (with --tls-key).
    #[arg(long, env = "WARDEN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WARDEN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; clients must present a certificate it signed (mTLS).
    #[arg(long, env = "WARDEN_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsArgs {
    pub fn files(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), client_ca) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
            })),
            (None, _, Some(_)) => {
                Err("--tls-client-ca (WARDEN_TLS_CLIENT_CA) needs --tls-cert and --tls-key".into())
            }
            _ => Err(
                "--tls-cert (WARDEN_TLS_CERT) and --tls-key (WARDEN_TLS_KEY) go together".into(),
            ),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// gRPC address; port 0 picks a free port (the chosen one is logged).
    #[arg(long, env = "WARDEN_LISTEN", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Plain-HTTP side port (also when gRPC uses TLS): /metrics, /healthz,
    /// /readyz, /.well-known/jwks.json; port 0 picks a free port.
    #[arg(long, env = "WARDEN_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN, value_parser = parse_listen)]
    pub http_listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// JWT `iss`.
    #[arg(long, env = "WARDEN_ISSUER", default_value = "warden", value_parser = non_empty)]
    pub issuer: String,
    /// JWT `aud`.
    #[arg(long, env = "WARDEN_AUDIENCE", default_value = "warden", value_parser = non_empty)]
    pub audience: String,
    /// Access token lifetime (humantime: `2s`, `15m`, `8h`); at least 1s.
    #[arg(long, env = "WARDEN_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration_setting)]
    pub access_token_ttl: Duration,
    /// Refresh token (and session) lifetime of inactivity; at least 1s, and
    /// not shorter than the access token TTL.
    #[arg(long, env = "WARDEN_REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_duration_setting)]
    pub refresh_token_ttl: Duration,
    /// Absolute session lifetime: a session ends this long after login
    /// however often it is refreshed; at least 1s.
    #[arg(long, env = "WARDEN_SESSION_MAX_LIFETIME", default_value = "90d", value_parser = parse_duration_setting)]
    pub session_max_lifetime: Duration,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Consecutive failed logins per email (whether or not an account has
    /// it) before a lockout; 1 to 1,000,000.
    #[arg(long, env = "WARDEN_LOGIN_FAILURE_LIMIT", default_value_t = 5,
          value_parser = value_parser!(u32).range(1..=1_000_000))]
    pub login_failure_limit: u32,
    /// How long the first lockout lasts; each further one without a
    /// successful login in between lasts twice as long, up to 24h; at
    /// least 1s.
    #[arg(long, env = "WARDEN_LOGIN_LOCKOUT", default_value = "15m", value_parser = parse_duration_setting)]
    pub login_lockout: Duration,
    /// `true`: the first account to register becomes an approved admin.
    /// `false`: it waits for approval like every other, and admins come from
    /// `warden create-admin`.
    #[arg(long, env = "WARDEN_FIRST_USER_ADMIN", default_value_t = true,
          action = clap::ArgAction::Set, value_parser = value_parser!(bool))]
    pub first_user_admin: bool,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub encryption: KeyEncryptionArgs,
    /// Open gRPC connections at most; more wait to be accepted; at least 1.
    #[arg(long, env = "WARDEN_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long a new connection (either port) may take to finish its TLS
    /// handshake and send its first complete request head before it is
    /// closed; at least 1s.
    #[arg(long, env = "WARDEN_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration_setting)]
    pub handshake_timeout: Duration,
    /// gRPC calls in flight at most, across all connections; more are
    /// answered OVERLOADED at once. Health checks have places of their own.
    /// At least 1.
    #[arg(long, env = "WARDEN_MAX_REQUESTS_IN_FLIGHT", default_value_t = 1024,
          value_parser = value_parser!(u32).range(1..))]
    pub max_requests_in_flight: u32,
    /// Open connections to the HTTP side port at most; more wait to be
    /// accepted; at least 1.
    #[arg(long, env = "WARDEN_HTTP_MAX_CONNECTIONS", default_value_t = 256,
          value_parser = value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
    /// After SIGTERM, how long calls in flight may take to finish; 0s or
    /// more.
    #[arg(long, env = "WARDEN_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_drain_timeout)]
    pub drain_timeout: Duration,
    /// How long one RPC may take before it is cancelled; at least 100ms.
    #[arg(long, env = "WARDEN_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_request_timeout)]
    pub request_timeout: Duration,
    /// How often signing keys are reloaded from the database (a key rotated
    /// anywhere signs here, and is published here, within this time); at
    /// least 1s. Replicas may differ: each reports its own, and a replaced
    /// key is kept until the slowest has switched.
    #[arg(long, env = "WARDEN_KEY_RELOAD_INTERVAL", default_value = "30s", value_parser = parse_duration_setting)]
    pub key_reload_interval: Duration,
    /// Comma-separated CIDRs (`10.0.0.0/8`, or a bare address) whose
    /// `x-forwarded-for` is believed; unset: the peer address is used.
    #[arg(long, env = "WARDEN_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<IpNet>,
    // Organizations.
    /// How long an invitation token can be accepted; at least 1s.
    #[arg(long, env = "WARDEN_INVITATION_TTL", default_value = "7d", value_parser = parse_duration_setting)]
    pub invitation_ttl: Duration,
    // End of Organizations.
    /// Comma-separated origins (`https://app.example.com`) whose browsers may
    /// call over grpc-web with credentials; `*` lets any origin call, without
    /// credentials. Unset: no CORS.
    #[arg(long, env = "WARDEN_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
    #[command(flatten)]
    pub mail: MailArgs,
}

// Email (API.md, "Email: verification, password reset, invitations").

/// Mail: the relay, the sender, the links, the tokens' lifetimes.
#[derive(Debug, Clone, Args)]
pub struct MailArgs {
    /// The SMTP relay, in lettre's URL form: `smtp://[user:pass@]host[:port]`
    /// (`?tls=required` for STARTTLS, `?tls=opportunistic`), `smtps://…` for
    /// implicit TLS. Unset: warden sends no mail. Taken as text and checked
    /// at start, so that an error never quotes it (it may hold a password).
    #[arg(long, env = "WARDEN_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// A PEM bundle of CA certificates to trust for the relay's TLS, besides
    /// the public roots (a relay with a private CA).
    #[arg(long, env = "WARDEN_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// The sender address, with or without a display name.
    #[arg(long, env = "WARDEN_MAIL_FROM", default_value = "warden@localhost")]
    pub mail_from: String,
    /// Link template of the verification mail; `{token}` is replaced.
    /// Unset: the mail carries the bare token.
    #[arg(long, env = "WARDEN_VERIFY_EMAIL_URL", value_parser = parse_link_template)]
    pub verify_email_url: Option<String>,
    /// Link template of the password reset mail; `{token}` is replaced.
    #[arg(long, env = "WARDEN_RESET_PASSWORD_URL", value_parser = parse_link_template)]
    pub reset_password_url: Option<String>,
    /// Link template of the invitation mail; `{token}` is replaced.
    #[arg(long, env = "WARDEN_INVITATION_URL", value_parser = parse_link_template)]
    pub invitation_url: Option<String>,
    /// How long a verification token works; at least 1s.
    #[arg(long, env = "WARDEN_EMAIL_VERIFICATION_TTL", default_value = "24h", value_parser = parse_duration_setting)]
    pub email_verification_ttl: Duration,
    /// How long a password reset token works; at least 1s.
    #[arg(long, env = "WARDEN_PASSWORD_RESET_TTL", default_value = "1h", value_parser = parse_duration_setting)]
    pub password_reset_ttl: Duration,
    /// At most one mail of each kind (verification, reset) per account per
    /// this time; at least 1s.
    #[arg(long, env = "WARDEN_MAIL_COOLDOWN", default_value = "60s", value_parser = parse_duration_setting)]
    pub mail_cooldown: Duration,
    /// `true`: Login of an account whose email is not verified fails with
    /// EMAIL_NOT_VERIFIED. Needs --smtp-url.
    #[arg(long, env = "WARDEN_REQUIRE_VERIFIED_EMAIL", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = value_parser!(bool))]
    pub require_verified_email: bool,
}

/// Mail settings, checked.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `None`: no mail.
    pub smtp: Option<SmtpSettings>,
    pub from: Mailbox,
    pub links: LinkTemplates,
    pub email_verification_ttl: Duration,
    pub password_reset_ttl: Duration,
    pub cooldown: Duration,
    pub require_verified_email: bool,
}

impl MailArgs {
    fn into_config(self) -> Result<MailConfig, String> {
        let smtp = match &self.smtp_url {
            Some(url) if !url.trim().is_empty() => Some(SmtpSettings::parse(
                url.trim(),
                self.smtp_ca_file.as_deref(),
            )?),
            _ => None,
        };
        if smtp.is_none() && self.smtp_ca_file.is_some() {
            return Err(
                "--smtp-ca-file (WARDEN_SMTP_CA_FILE) needs --smtp-url (WARDEN_SMTP_URL)".into(),
            );
        }
        if self.require_verified_email && smtp.is_none() {
            return Err(
                "--require-verified-email (WARDEN_REQUIRE_VERIFIED_EMAIL) needs --smtp-url \
                 (WARDEN_SMTP_URL): without mail nobody could verify an address"
                    .into(),
            );
        }
        Ok(MailConfig {
            smtp,
            from: parse_from(&self.mail_from)?,
            links: LinkTemplates {
                verify_email: self.verify_email_url,
                reset_password: self.reset_password_url,
                invitation: self.invitation_url,
            },
            email_verification_ttl: self.email_verification_ttl,
            password_reset_ttl: self.password_reset_ttl,
            cooldown: self.mail_cooldown,
            require_verified_email: self.require_verified_email,
        })
    }
}

impl MailConfig {
    /// What the domain's mail flows need of it.
    pub fn email_settings(&self) -> EmailSettings {
        EmailSettings {
            mail_enabled: self.smtp.is_some(),
            links: self.links.clone(),
            verification_ttl: self.email_verification_ttl,
            reset_ttl: self.password_reset_ttl,
            cooldown: self.cooldown,
            require_verified: self.require_verified_email,
        }
    }
}

/// A link template: an http(s) URL with `{token}` in it.
fn parse_link_template(s: &str) -> Result<String, String> {
    if !s.contains("{token}") {
        return Err("must contain {token}".into());
    }
    let sample = s.replace("{token}", "token");
    match url::Url::parse(&sample) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(s.to_owned()),
        _ => Err("must be an http:// or https:// URL".into()),
    }
}

impl ServeArgs {
    /// The checks that involve more than one setting.
    pub fn into_config(self) -> Result<Config, String> {
        if self.refresh_token_ttl < self.access_token_ttl {
            return Err(
                "--refresh-token-ttl (WARDEN_REFRESH_TOKEN_TTL) must not be shorter than \
                 --access-token-ttl (WARDEN_ACCESS_TOKEN_TTL)"
                    .into(),
            );
        }
        Ok(Config {
            listen: self.listen,
            http_listen: self.http_listen,
            database_url: self.database.database_url,
            database_timeout: self.database.database_timeout,
            key_reload_interval: self.key_reload_interval,
            issuer: self.issuer,
            audience: self.audience,
            access_token_ttl: self.access_token_ttl,
            refresh_token_ttl: self.refresh_token_ttl,
            session_max_lifetime: self.session_max_lifetime,
            hashing: self.password.cost()?,
            password_min_length: self.password.password_min_length as usize,
            login_failure_limit: self.login_failure_limit,
            login_lockout: self.login_lockout,
            first_user_admin: self.first_user_admin,
            tls: self.tls.files()?,
            key_encryption_key: self.encryption.key_encryption_key,
            cors_origins: self.cors_origins,
            drain_timeout: self.drain_timeout,
            max_connections: self.max_connections as usize,
            handshake_timeout: self.handshake_timeout,
            max_requests_in_flight: self.max_requests_in_flight as usize,
            http_max_connections: self.http_max_connections as usize,
            request_timeout: self.request_timeout,
            trusted_proxies: self.trusted_proxies,
            // Organizations.
            invitation_ttl: self.invitation_ttl,
            mail: self.mail.into_config()?,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CreateAdminArgs {
    /// The admin's email (the input rules of Register apply).
    #[arg(long)]
    pub email: String,
    /// Display name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Read the password from standard input (one line).
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub password: PasswordArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

impl CreateAdminArgs {
    pub fn hashing(&self) -> Result<HashingCost, String> {
        self.password.cost()
    }
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The gRPC address of the server to check (0.0.0.0 means loopback).
    #[arg(long, env = "WARDEN_LISTEN", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Its HTTP side port, asked (`/readyz`) instead when mTLS is on.
    #[arg(long, env = "WARDEN_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN, value_parser = parse_listen)]
    pub http_listen: SocketAddr,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Give up after this long (humantime: `500ms`, `3s`).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// What the server runs with. Tests build one directly.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub database_url: String,
    pub database_timeout: Duration,
    pub key_reload_interval: Duration,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub session_max_lifetime: Duration,
    pub hashing: HashingCost,
    pub password_min_length: usize,
    pub login_failure_limit: u32,
    pub login_lockout: Duration,
    pub first_user_admin: bool,
    pub tls: Option<TlsFiles>,
    pub key_encryption_key: Option<KeyEncryptionKey>,
    pub cors_origins: Vec<String>,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub max_requests_in_flight: usize,
    pub http_max_connections: usize,
    pub request_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
    // Organizations.
    pub invitation_ttl: Duration,
    pub mail: MailConfig,
}

impl Default for Config {
    /// The same values as the command line's defaults.
    fn default() -> Self {
        let args = ServeArgs::parse_defaults();
        match args.into_config() {
            Ok(config) => config,
            // The defaults are constants that satisfy every check.
            Err(e) => unreachable!("default settings are valid: {e}"),
        }
    }
}

impl ServeArgs {
    /// The defaults, read without consulting the environment.
    fn parse_defaults() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let mut command = <Wrapper as clap::CommandFactory>::command();
        // Drop every `env` so the process environment cannot leak in.
        let args: Vec<clap::Id> = command
            .get_arguments()
            .map(|a| a.get_id().clone())
            .collect();
        for id in args {
            command = command.mut_arg(id, |a| a.env(None::<&str>));
        }
        let matches = command.get_matches_from(["warden"]);
        match <Wrapper as clap::FromArgMatches>::from_arg_matches(&matches) {
            Ok(w) => w.args,
            Err(e) => unreachable!("default settings parse: {e}"),
        }
    }
}

fn non_empty(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(t.to_owned())
    }
}

/// A `tracing` filter (`WARDEN_LOG`), refused here so that the error names
/// the flag or the variable it came from.
fn parse_log_filter(s: &str) -> Result<String, String> {
    match tracing_subscriber::EnvFilter::try_new(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(format!("not a log filter: {e}")),
    }
}

fn parse_database_url(s: &str) -> Result<String, String> {
    if s.starts_with("sqlite:") || s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Ok(s.to_owned())
    } else {
        Err("must start with sqlite:, postgres:// or postgresql://".into())
    }
}

/// `host:port`, `ip:port`, or `:port` for every interface.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let spec = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_owned(),
    };
    spec.to_socket_addrs()
        .map_err(|e| format!("not an address: {e}"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_owned())
}

/// `*`, or `scheme://host[:port]` exactly as a browser sends it in `Origin`.
fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(s.to_owned());
    }
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("`{s}` is not an origin such as https://app.example.com"))?;
    let valid_host = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid_host {
        return Err(format!(
            "`{s}` is not an origin (scheme://host[:port], no path)"
        ));
    }
    Ok(s.to_owned())
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not a CIDR such as 10.0.0.0/8"))
}

/// The last second a `google.protobuf.Timestamp` (and RFC 3339) can name,
/// 9999-12-31T23:59:59Z, in Unix seconds. Every duration setting becomes
/// some timestamp on the wire (`expires_at`, `refresh_expires_at`, a
/// token's `exp`, a lockout's end) or a deadline, so one that ends after it
/// cannot be represented.
const LAST_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// A duration setting: humantime, at least `min`, and representable: it
/// fits chrono's `TimeDelta`, and counted from now it ends by
/// `LAST_TIMESTAMP_SECONDS`, so that adding it to a time at run time can
/// neither panic nor make a timestamp clients reject.
fn duration_at_least(s: &str, min: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < min {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(min)
        ));
    }
    let ends_in_range = TimeDelta::from_std(d)
        .ok()
        .and_then(|span| Utc::now().checked_add_signed(span))
        .is_some_and(|end| end.timestamp() <= LAST_TIMESTAMP_SECONDS);
    if !ends_in_range {
        return Err(
            "is too long to represent: counted from now it ends after 9999-12-31, \
             the last day a timestamp can name"
                .into(),
        );
    }
    Ok(d)
}

/// Durations are at least 1 s (API.md, "Settings").
fn parse_duration_setting(s: &str) -> Result<Duration, String> {
    duration_at_least(s, Duration::from_secs(1))
}

/// 0s has always been accepted: a stop that does not wait.
fn parse_drain_timeout(s: &str) -> Result<Duration, String> {
    duration_at_least(s, Duration::ZERO)
}

/// 100ms has always been accepted.
fn parse_request_timeout(s: &str) -> Result<Duration, String> {
    duration_at_least(s, Duration::from_millis(100))
}

/// SQLite's busy timeout and PostgreSQL's `statement_timeout` and
/// `idle_in_transaction_session_timeout` are C ints of milliseconds: sqlx
/// panics on a longer busy timeout, and PostgreSQL refuses the connection.
const DATABASE_TIMEOUT_MAX: Duration = Duration::from_millis(i32::MAX as u64);

/// 100ms has always been accepted; the database cannot hold more than
/// `DATABASE_TIMEOUT_MAX`.
fn parse_database_timeout(s: &str) -> Result<Duration, String> {
    let d = duration_at_least(s, Duration::from_millis(100))?;
    if d > DATABASE_TIMEOUT_MAX {
        return Err(format!(
            "must be at most {} (2^31 - 1 ms, the longest wait the databases can hold)",
            humantime::format_duration(DATABASE_TIMEOUT_MAX)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_those_of_the_contract() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.database_url, "sqlite://warden.db?mode=rwc");
        assert_eq!(
            (c.issuer.as_str(), c.audience.as_str()),
            ("warden", "warden")
        );
        assert_eq!(c.access_token_ttl, Duration::from_secs(15 * 60));
        assert_eq!(c.refresh_token_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.session_max_lifetime, Duration::from_secs(90 * 86_400));
        assert!(c.first_user_admin);
        assert_eq!(c.hashing, HashingCost::default());
        assert_eq!(c.password_min_length, 15);
        assert_eq!(c.login_failure_limit, 5);
        assert_eq!(c.login_lockout, Duration::from_secs(15 * 60));
        assert!(c.tls.is_none() && c.trusted_proxies.is_empty() && c.key_encryption_key.is_none());
        assert_eq!(
            (c.max_connections, c.request_timeout),
            (1024, Duration::from_secs(30))
        );
        assert_eq!(
            (c.database_timeout, c.key_reload_interval),
            (Duration::from_secs(5), Duration::from_secs(30))
        );
        assert_eq!(
            (
                c.handshake_timeout,
                c.max_requests_in_flight,
                c.http_max_connections
            ),
            (Duration::from_secs(5), 1024, 256)
        );
        let mail = &c.mail;
        assert!(mail.smtp.is_none() && !mail.require_verified_email);
        assert_eq!(mail.from.to_string(), "warden@localhost");
        assert_eq!(mail.links, LinkTemplates::default());
        assert_eq!(
            (
                mail.email_verification_ttl,
                mail.password_reset_ttl,
                mail.cooldown
            ),
            (
                Duration::from_secs(24 * 3600),
                Duration::from_secs(3600),
                Duration::from_secs(60)
            )
        );
    }

    #[test]
    fn requiring_verified_email_needs_a_relay() {
        assert_refused(
            &["--require-verified-email", "true"],
            "WARDEN_REQUIRE_VERIFIED_EMAIL",
        );
        let config = serve_config(&[
            "--require-verified-email",
            "true",
            "--smtp-url",
            "smtp://127.0.0.1:2525",
        ])
        .unwrap();
        assert!(config.mail.require_verified_email && config.mail.smtp.is_some());
        assert!(config.mail.email_settings().mail_enabled);
    }

    #[test]
    fn mail_settings_are_checked_at_start_naming_them() {
        assert_refused(
            &["--smtp-url", "http://relay.example.com"],
            "WARDEN_SMTP_URL",
        );
        assert_refused(&["--mail-from", "nobody"], "WARDEN_MAIL_FROM");
        assert_refused(
            &["--smtp-ca-file", "/nonexistent/ca.pem"],
            "WARDEN_SMTP_CA_FILE",
        );
        for (flag, var) in [
            ("--verify-email-url", "verify-email-url"),
            ("--reset-password-url", "reset-password-url"),
            ("--invitation-url", "invitation-url"),
        ] {
            assert_refused(&[flag, "https://app.example.com/verify"], var);
            assert_refused(&[flag, "javascript:{token}"], var);
        }
        for (flag, var) in [
            ("--email-verification-ttl", "email-verification-ttl"),
            ("--password-reset-ttl", "password-reset-ttl"),
            ("--mail-cooldown", "mail-cooldown"),
        ] {
            assert_refused(&[flag, "500ms"], var);
        }
        let config = serve_config(&[
            "--verify-email-url",
            "https://app.example.com/verify?token={token}",
            "--mail-from",
            "Warden <noreply@example.com>",
            "--mail-cooldown",
            "2s",
        ])
        .unwrap();
        assert_eq!(
            config.mail.links.verify_email.as_deref(),
            Some("https://app.example.com/verify?token={token}")
        );
        assert_eq!(config.mail.cooldown, Duration::from_secs(2));
    }

    #[test]
    fn the_handshake_timeout_is_at_least_a_second_with_no_upper_bound() {
        for (value, expected) in [("1s", 1), ("90s", 90), ("100years", 3_155_760_000)] {
            let Command::Serve(args) = serve(&["--handshake-timeout", value]).unwrap().command
            else {
                panic!("not serve");
            };
            assert_eq!(args.handshake_timeout, Duration::from_secs(expected));
        }
        for value in ["999ms", "0s", "soon"] {
            let err = serve(&["--handshake-timeout", value]).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains("handshake-timeout"), "{err}");
        }
        for flag in ["--max-requests-in-flight", "--http-max-connections"] {
            let err = serve(&[flag, "0"]).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(&flag[2..]), "{err}");
        }
    }

    /// The settings `serve` would run with, or the usage error (exit
    /// code 2) it stops with; a cross-setting error as its message.
    fn serve_config(args: &[&str]) -> Result<Config, String> {
        let cli = serve(args).map_err(|e| {
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        })?;
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        args.into_config()
    }

    #[track_caller]
    fn assert_refused(args: &[&str], naming: &str) {
        let err = serve_config(args).expect_err("refused");
        assert!(err.contains(naming), "{args:?}: {err}");
    }

    const DURATION_FLAGS: [&str; 5] = [
        "--access-token-ttl",
        "--refresh-token-ttl",
        "--session-max-lifetime",
        "--login-lockout",
        "--key-reload-interval",
    ];

    #[test]
    fn durations_are_accepted_from_one_second_with_no_upper_bound() {
        let c = serve_config(&[
            "--access-token-ttl",
            "1s",
            "--refresh-token-ttl",
            "1s",
            "--session-max-lifetime",
            "1s",
            "--login-lockout",
            "1s",
            "--key-reload-interval",
            "1s",
        ])
        .unwrap();
        let one = Duration::from_secs(1);
        assert_eq!(
            (
                c.access_token_ttl,
                c.refresh_token_ttl,
                c.session_max_lifetime
            ),
            (one, one, one)
        );
        assert_eq!((c.login_lockout, c.key_reload_interval), (one, one));
        let long = Duration::from_secs(1000 * 31_557_600);
        let c = serve_config(&[
            "--access-token-ttl",
            "1000y",
            "--refresh-token-ttl",
            "1000y",
            "--session-max-lifetime",
            "1000y",
            "--login-lockout",
            "1000y",
            "--key-reload-interval",
            "1000y",
            "--drain-timeout",
            "1000y",
            "--request-timeout",
            "1000y",
        ])
        .unwrap();
        assert_eq!(
            (
                c.access_token_ttl,
                c.refresh_token_ttl,
                c.session_max_lifetime
            ),
            (long, long, long)
        );
        assert_eq!((c.login_lockout, c.key_reload_interval), (long, long));
        assert_eq!((c.drain_timeout, c.request_timeout), (long, long));
    }

    #[test]
    fn a_two_second_refresh_ttl_is_accepted_above_a_shorter_access_ttl() {
        let c = serve_config(&["--refresh-token-ttl", "2s", "--access-token-ttl", "2s"]).unwrap();
        assert_eq!(c.refresh_token_ttl, Duration::from_secs(2));
    }

    #[test]
    fn durations_under_one_second_are_refused_naming_the_setting() {
        for flag in DURATION_FLAGS {
            for value in ["0s", "999ms"] {
                assert_refused(&[flag, value], &flag[2..]);
            }
        }
    }

    #[test]
    fn the_timeouts_keep_the_wider_minimums_they_always_had() {
        let c = serve_config(&[
            "--drain-timeout",
            "0s",
            "--request-timeout",
            "100ms",
            "--database-timeout",
            "100ms",
        ])
        .unwrap();
        assert_eq!(c.drain_timeout, Duration::ZERO);
        assert_eq!(c.request_timeout, Duration::from_millis(100));
        assert_eq!(c.database_timeout, Duration::from_millis(100));
        assert_refused(&["--request-timeout", "99ms"], "request-timeout");
        assert_refused(&["--database-timeout", "99ms"], "database-timeout");
    }

    #[test]
    fn a_duration_that_no_timestamp_can_name_is_refused_not_a_panic_later() {
        let flags = DURATION_FLAGS
            .iter()
            .chain(&["--drain-timeout", "--request-timeout"]);
        for flag in flags {
            // Past year 9999; past chrono's range; past TimeDelta's. Refused
            // as a value, not by the cross-setting check.
            for value in ["8000y", "300000y", "400000000y"] {
                let err = serve_config(&[flag, value]).expect_err("refused");
                assert!(err.contains(&flag[2..]), "{flag} {value}: {err}");
                assert!(
                    err.contains("too long to represent"),
                    "{flag} {value}: {err}"
                );
            }
        }
    }

    #[test]
    fn the_database_timeout_ends_where_the_databases_can_hold_it() {
        let c = serve_config(&["--database-timeout", "24d"]).unwrap();
        assert_eq!(c.database_timeout, Duration::from_secs(24 * 86_400));
        let c = serve_config(&["--database-timeout", "2147483647ms"]).unwrap();
        assert_eq!(c.database_timeout, DATABASE_TIMEOUT_MAX);
        assert_refused(&["--database-timeout", "2147483648ms"], "database-timeout");
        assert_refused(&["--database-timeout", "25d"], "database-timeout");
    }

    #[test]
    fn the_failure_limit_runs_from_one_to_a_million() {
        for ok in [1, 100_000, 1_000_000] {
            let c = serve_config(&["--login-failure-limit", &ok.to_string()]).unwrap();
            assert_eq!(c.login_failure_limit, ok);
        }
        for bad in ["0", "1000001"] {
            assert_refused(&["--login-failure-limit", bad], "login-failure-limit");
        }
    }

    #[test]
    fn the_password_minimum_runs_from_8_to_64() {
        for ok in [8, 64] {
            let c = serve_config(&["--password-min-length", &ok.to_string()]).unwrap();
            assert_eq!(c.password_min_length, ok);
        }
        for bad in ["7", "65"] {
            assert_refused(&["--password-min-length", bad], "password-min-length");
        }
    }

    #[test]
    fn counts_have_no_upper_bound_but_what_can_be_represented() {
        let c = serve_config(&["--max-connections", "4294967295"]).unwrap();
        assert_eq!(c.max_connections, 4_294_967_295);
        assert_refused(&["--max-connections", "0"], "max-connections");
        assert_refused(&["--max-connections", "4294967296"], "max-connections");
        let c = serve_config(&[
            "--argon2-iterations",
            "1000",
            "--argon2-parallelism",
            "64",
            "--argon2-memory-kib",
            "8388608",
        ])
        .unwrap();
        assert_eq!(
            c.hashing,
            HashingCost {
                memory_kib: 8_388_608,
                iterations: 1000,
                parallelism: 64
            }
        );
        assert_refused(&["--argon2-iterations", "0"], "argon2-iterations");
        assert_refused(&["--argon2-parallelism", "0"], "argon2-parallelism");
        assert_refused(&["--argon2-memory-kib", "7"], "argon2-memory-kib");
    }

    #[test]
    fn argon2_parameters_argon2_refuses_are_refused_at_start_naming_them() {
        // 8 KiB per lane.
        assert_refused(
            &["--argon2-parallelism", "2", "--argon2-memory-kib", "15"],
            "argon2-memory-kib",
        );
        // argon2 takes at most 2^24 - 1 lanes; 8 × lanes must not overflow.
        let c = serve_config(&[
            "--argon2-parallelism",
            "16777215",
            "--argon2-memory-kib",
            "134217720",
        ])
        .unwrap();
        assert_eq!(c.hashing.parallelism, 16_777_215);
        assert_refused(
            &[
                "--argon2-parallelism",
                "16777216",
                "--argon2-memory-kib",
                "4294967295",
            ],
            "argon2-parallelism",
        );
        assert_refused(
            &[
                "--argon2-parallelism",
                "4294967295",
                "--argon2-memory-kib",
                "4294967295",
            ],
            "argon2-memory-kib",
        );
    }

    #[test]
    fn a_refresh_ttl_shorter_than_the_access_ttl_is_refused() {
        assert_refused(
            &["--refresh-token-ttl", "2s", "--access-token-ttl", "15m"],
            "--refresh-token-ttl",
        );
    }

    #[test]
    fn first_user_admin_is_true_or_false() {
        assert!(Config::default().first_user_admin);
        assert!(
            !serve_config(&["--first-user-admin", "false"])
                .unwrap()
                .first_user_admin
        );
        assert!(
            serve_config(&["--first-user-admin", "true"])
                .unwrap()
                .first_user_admin
        );
        assert_refused(&["--first-user-admin", "maybe"], "first-user-admin");
    }

    fn serve(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["warden", "serve"].iter().chain(args))
    }

    #[test]
    fn an_out_of_range_setting_is_a_usage_error_naming_it() {
        let err = serve(&["--password-min-length", "4"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("password-min-length"), "{err}");
        let err = serve(&["--access-token-ttl", "0s"]).unwrap_err();
        assert!(err.to_string().contains("access-token-ttl"), "{err}");
    }

    #[test]
    fn listen_accepts_a_bare_port_and_port_zero() {
        assert_eq!(parse_listen(":0").unwrap().to_string(), "0.0.0.0:0");
        assert_eq!(parse_listen("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_listen("nonsense").is_err());
    }

    #[test]
    fn trusted_proxies_are_a_comma_separated_list() {
        let Command::Serve(args) = serve(&["--trusted-proxies", "10.0.0.0/8, 192.168.1.1"])
            .unwrap()
            .command
        else {
            panic!("not serve");
        };
        let nets: Vec<String> = args
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.168.1.1/32"]);
    }

    #[test]
    fn cors_origins_are_origins_or_a_wildcard() {
        assert!(parse_origin("https://app.example.com").is_ok());
        assert!(parse_origin("http://localhost:3000").is_ok());
        assert!(parse_origin("*").is_ok());
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://a.com/path",
            "ftp://x",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    fn rotate_args(args: &[&str]) -> KeyEncryptionArgs {
        match Cli::try_parse_from(["warden", "keys", "rotate"].iter().chain(args))
            .unwrap()
            .command
        {
            Command::Keys(KeysCommand::Rotate(rotate)) => rotate.encryption,
            _ => panic!("not keys rotate"),
        }
    }

    /// A lookup of `vars` instead of the process environment.
    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.into())
    }

    const KEK_BASE64: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

    #[test]
    fn the_key_encryption_key_flag_is_refused_naming_the_variables_and_never_echoed() {
        let secret = KEK_BASE64;
        let joined = format!("--key-encryption-key={secret}");
        for args in [
            vec!["--key-encryption-key", secret],
            vec![joined.as_str()],
            vec!["--key-encryption-key"],
        ] {
            let mut encryption = rotate_args(&args);
            let refused = encryption.read_key(env(&[])).unwrap_err();
            assert!(refused.contains("WARDEN_KEY_ENCRYPTION_KEY,"), "{refused}");
            assert!(
                refused.contains("WARDEN_KEY_ENCRYPTION_KEY_FILE"),
                "{refused}"
            );
            assert!(!refused.contains(secret), "{refused}");
            assert!(encryption.key_encryption_key.is_none());
        }
        let Command::Serve(mut serve) = serve(&["--key-encryption-key", secret]).unwrap().command
        else {
            panic!("not serve");
        };
        assert!(
            serve.encryption.read_key(env(&[])).is_err(),
            "serve refuses it too"
        );
    }

    #[test]
    fn the_key_encryption_key_comes_from_its_variable_or_a_file_it_names() {
        let mut encryption = rotate_args(&[]);
        encryption.read_key(env(&[])).unwrap();
        assert!(encryption.key_encryption_key.is_none(), "off by default");

        encryption
            .read_key(env(&[("WARDEN_KEY_ENCRYPTION_KEY", KEK_BASE64)]))
            .unwrap();
        let expected = KeyEncryptionKey::parse(KEK_BASE64).unwrap();
        assert_eq!(encryption.key_encryption_key.as_ref(), Some(&expected));

        // As `openssl rand -base64 32 > file` writes it: with a newline.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kek");
        std::fs::write(&file, format!("{KEK_BASE64}\n")).unwrap();
        let path = file.to_str().unwrap();
        let mut encryption = rotate_args(&[]);
        encryption
            .read_key(env(&[("WARDEN_KEY_ENCRYPTION_KEY_FILE", path)]))
            .unwrap();
        assert_eq!(encryption.key_encryption_key.as_ref(), Some(&expected));
    }

    #[test]
    fn a_bad_key_encryption_key_setting_is_an_error_naming_its_variable() {
        let dir = tempfile::tempdir().unwrap();
        let malformed = dir.path().join("malformed");
        std::fs::write(&malformed, "c2hvcnQ=\n").unwrap();
        let huge = dir.path().join("huge");
        std::fs::write(&huge, "A".repeat(4096)).unwrap();
        let missing = dir.path().join("missing");
        let (malformed, huge, missing) = (
            malformed.to_str().unwrap(),
            huge.to_str().unwrap(),
            missing.to_str().unwrap(),
        );
        let cases: [(&[(&str, &str)], &str); 6] = [
            (
                &[
                    ("WARDEN_KEY_ENCRYPTION_KEY", KEK_BASE64),
                    ("WARDEN_KEY_ENCRYPTION_KEY_FILE", malformed),
                ],
                "both set",
            ),
            (
                &[("WARDEN_KEY_ENCRYPTION_KEY", "c2hvcnQ=")],
                "WARDEN_KEY_ENCRYPTION_KEY must",
            ),
            (
                &[("WARDEN_KEY_ENCRYPTION_KEY", "")],
                "WARDEN_KEY_ENCRYPTION_KEY must",
            ),
            (
                &[("WARDEN_KEY_ENCRYPTION_KEY_FILE", malformed)],
                "WARDEN_KEY_ENCRYPTION_KEY_FILE",
            ),
            (
                &[("WARDEN_KEY_ENCRYPTION_KEY_FILE", huge)],
                "larger than a key",
            ),
            (
                &[("WARDEN_KEY_ENCRYPTION_KEY_FILE", missing)],
                "cannot read",
            ),
        ];
        for (vars, expected) in cases {
            let mut encryption = rotate_args(&[]);
            let refused = encryption.read_key(env(vars)).unwrap_err();
            assert!(refused.contains(expected), "{vars:?}: {refused}");
            assert!(refused.contains("WARDEN_KEY_ENCRYPTION_KEY"), "{refused}");
            assert!(
                !refused.contains("c2hvcnQ"),
                "never quotes the key: {refused}"
            );
            assert!(encryption.key_encryption_key.is_none());
        }
    }

    /// Every subcommand, with its path (`keys rotate`).
    fn subcommands(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in command.get_subcommands() {
            let name = format!("{path} {}", sub.get_name()).trim().to_owned();
            out.push((name.clone(), sub.clone()));
            subcommands(sub, name, out);
        }
    }

    #[test]
    fn every_option_of_every_subcommand_says_what_it_is_for() {
        let mut all = Vec::new();
        subcommands(
            &<Cli as clap::CommandFactory>::command(),
            String::new(),
            &mut all,
        );
        assert!(all.iter().any(|(name, _)| name == "keys list"));
        for (name, command) in all {
            for arg in command.get_arguments() {
                if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                assert!(
                    !help.trim().is_empty(),
                    "{name} --{} has no description",
                    arg.get_long().unwrap_or_default()
                );
            }
        }
    }

    #[test]
    fn the_failure_limit_is_counted_per_email_as_the_contract_says() {
        let command = <Cli as clap::CommandFactory>::command();
        let serve = command.find_subcommand("serve").unwrap();
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some("login-failure-limit"))
            .unwrap();
        let help = arg.get_help().unwrap().to_string();
        assert!(help.contains("per email"), "{help}");
        assert!(help.contains("1 to 1,000,000"), "{help}");
    }

    #[test]
    fn tls_needs_both_certificate_and_key() {
        let Command::Serve(args) = serve(&["--tls-cert", "c.pem"]).unwrap().command else {
            panic!("not serve");
        };
        assert!(args.into_config().unwrap_err().contains("--tls-key"));
    }
}
