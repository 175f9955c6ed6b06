//! Command line and environment (API.md, "Command line and configuration").
//! Every setting is a flag and a `WARDEN_*` variable; a flag wins. A value
//! out of range stops the process with exit code 2 and a message naming it.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum, value_parser};
use ipnet::IpNet;

use zeroize::Zeroizing;

use crate::domain::{key_encryption::KeyEncryptionKey, password::HashingCost, tokens};

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
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key. Running servers sign with it within their
    /// WARDEN_KEY_RELOAD_INTERVAL (30 s by default); older keys keep
    /// verifying until no token they signed can be live, then are removed.
    /// The key-encryption key, if any, comes from WARDEN_KEY_ENCRYPTION_KEY
    /// or the file named by WARDEN_KEY_ENCRYPTION_KEY_FILE.
    Rotate(RotateArgs),
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
    /// `sqlite://…` or `postgres://…`.
    #[arg(long, env = "WARDEN_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_parser = parse_database_url)]
    pub database_url: String,
    /// The longest wait on the database before a call fails with
    /// DATABASE_UNAVAILABLE: connecting, waiting for a pooled connection,
    /// one statement (PostgreSQL) or the write lock (SQLite); 100ms to 60s.
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
    /// Log filter, e.g. `info` or `warden=debug,info`.
    #[arg(long, env = "WARDEN_LOG", default_value = "info")]
    pub log: String,
    #[arg(long, env = "WARDEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// argon2id memory cost in KiB.
    #[arg(long, env = "WARDEN_ARGON2_MEMORY_KIB", default_value_t = 19_456,
          value_parser = value_parser!(u32).range(8..=4_194_304))]
    pub argon2_memory_kib: u32,
    /// argon2id time cost (passes over memory).
    #[arg(long, env = "WARDEN_ARGON2_ITERATIONS", default_value_t = 2,
          value_parser = value_parser!(u32).range(1..=100))]
    pub argon2_iterations: u32,
    /// argon2id lanes.
    #[arg(long, env = "WARDEN_ARGON2_PARALLELISM", default_value_t = 1,
          value_parser = value_parser!(u32).range(1..=16))]
    pub argon2_parallelism: u32,
    /// Minimum password length in characters.
    #[arg(long, env = "WARDEN_PASSWORD_MIN_LENGTH", default_value_t = 15,
          value_parser = value_parser!(u32).range(8..=64))]
    pub password_min_length: u32,
}

impl PasswordArgs {
    fn cost(&self) -> Result<HashingCost, String> {
        if self.argon2_memory_kib < 8 * self.argon2_parallelism {
            return Err(format!(
                "--argon2-memory-kib (WARDEN_ARGON2_MEMORY_KIB) must be at least 8 KiB per lane of \
                 --argon2-parallelism (WARDEN_ARGON2_PARALLELISM): {} < 8 × {}",
                self.argon2_memory_kib, self.argon2_parallelism
            ));
        }
        Ok(HashingCost {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        })
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
    /// Plain-HTTP side port: /healthz, /readyz, /.well-known/jwks.json.
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
    /// Access token lifetime (humantime: `2s`, `15m`, `8h`); 1s to 24h.
    #[arg(long, env = "WARDEN_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_access_ttl)]
    pub access_token_ttl: Duration,
    /// Refresh token (and session) lifetime of inactivity; 1m to 400d.
    #[arg(long, env = "WARDEN_REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_refresh_ttl)]
    pub refresh_token_ttl: Duration,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Consecutive failed logins per account before a lockout.
    #[arg(long, env = "WARDEN_LOGIN_FAILURE_LIMIT", default_value_t = 5,
          value_parser = value_parser!(u32).range(1..=1000))]
    pub login_failure_limit: u32,
    /// How long a lockout lasts; 1s to 24h.
    #[arg(long, env = "WARDEN_LOGIN_LOCKOUT", default_value = "15m", value_parser = parse_lockout)]
    pub login_lockout: Duration,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub encryption: KeyEncryptionArgs,
    /// Open gRPC connections at most; more wait to be accepted.
    #[arg(long, env = "WARDEN_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// After SIGTERM, how long calls in flight may take to finish; 0s to 10m.
    #[arg(long, env = "WARDEN_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_drain_timeout)]
    pub drain_timeout: Duration,
    /// How long one RPC may take before it is cancelled; 100ms to 10m.
    #[arg(long, env = "WARDEN_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_request_timeout)]
    pub request_timeout: Duration,
    /// How often signing keys are reloaded from the database (a key rotated
    /// anywhere signs here, and is published here, within this time);
    /// 1s to 1h. Replicas may differ: when a replaced key goes is stored
    /// with the key, not decided by this.
    #[arg(long, env = "WARDEN_KEY_RELOAD_INTERVAL", default_value = "30s", value_parser = parse_key_reload_interval)]
    pub key_reload_interval: Duration,
    /// Comma-separated CIDRs whose `x-forwarded-for` is believed.
    #[arg(long, env = "WARDEN_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<IpNet>,
    /// Comma-separated origins (`https://app.example.com`) whose browsers may
    /// call over grpc-web with credentials; `*` lets any origin call, without
    /// credentials.
    #[arg(long, env = "WARDEN_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
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
            hashing: self.password.cost()?,
            password_min_length: self.password.password_min_length as usize,
            login_failure_limit: self.login_failure_limit,
            login_lockout: self.login_lockout,
            tls: self.tls.files()?,
            key_encryption_key: self.encryption.key_encryption_key,
            cors_origins: self.cors_origins,
            drain_timeout: self.drain_timeout,
            max_connections: self.max_connections as usize,
            request_timeout: self.request_timeout,
            trusted_proxies: self.trusted_proxies,
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
    #[arg(long, env = "WARDEN_LISTEN", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,
    #[arg(long, env = "WARDEN_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN, value_parser = parse_listen)]
    pub http_listen: SocketAddr,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Give up after this long.
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
    pub hashing: HashingCost,
    pub password_min_length: usize,
    pub login_failure_limit: u32,
    pub login_lockout: Duration,
    pub tls: Option<TlsFiles>,
    pub key_encryption_key: Option<KeyEncryptionKey>,
    pub cors_origins: Vec<String>,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub request_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
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

fn duration_within(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

fn parse_access_ttl(s: &str) -> Result<Duration, String> {
    duration_within(s, SECOND, DAY)
}

fn parse_refresh_ttl(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::from_secs(60), DAY * 400)
}

fn parse_lockout(s: &str) -> Result<Duration, String> {
    duration_within(s, SECOND, DAY)
}

fn parse_drain_timeout(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::ZERO, Duration::from_secs(600))
}

fn parse_request_timeout(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::from_millis(100), Duration::from_secs(600))
}

fn parse_database_timeout(s: &str) -> Result<Duration, String> {
    duration_within(s, Duration::from_millis(100), Duration::from_secs(60))
}

fn parse_key_reload_interval(s: &str) -> Result<Duration, String> {
    // The ceiling is what key retirement counts on (`tokens::retire_after`).
    duration_within(s, SECOND, tokens::MAX_KEY_RELOAD_INTERVAL)
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
    }

    #[test]
    fn database_timeout_and_key_reload_interval_are_bounded_settings() {
        let Command::Serve(args) =
            serve(&["--database-timeout", "750ms", "--key-reload-interval", "2s"])
                .unwrap()
                .command
        else {
            panic!("not serve");
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.database_timeout, Duration::from_millis(750));
        assert_eq!(config.key_reload_interval, Duration::from_secs(2));
        for (flag, value) in [
            ("--database-timeout", "0s"),
            ("--database-timeout", "2m"),
            ("--key-reload-interval", "500ms"),
            ("--key-reload-interval", "2h"),
        ] {
            let err = serve(&[flag, value]).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(&flag[2..]), "{err}");
        }
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

    #[test]
    fn tls_needs_both_certificate_and_key() {
        let Command::Serve(args) = serve(&["--tls-cert", "c.pem"]).unwrap().command else {
            panic!("not serve");
        };
        assert!(args.into_config().unwrap_err().contains("--tls-key"));
    }
}
