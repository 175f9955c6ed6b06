//! Why a database could not be opened, said so that an operator knows what
//! to do: which database (host:port/database, or the SQLite file; never the
//! password of the URL), the cause in plain words, and a hint. The driver's
//! own text ("error returned from database: …", a server source line) is
//! left out.

use std::{
    path::{Path, PathBuf},
    str::FromStr as _,
    time::Duration,
};

use sea_orm::{
    DbErr, RuntimeErr,
    sqlx::{self, postgres::PgConnectOptions, sqlite::SqliteConnectOptions},
};

use super::StoreError;

/// A database that could not be opened: what it was, why, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot open the {target}: {cause}{}", hint_suffix(.hint))]
pub struct OpenError {
    /// `PostgreSQL database at host:port/database` or `SQLite database PATH`.
    pub target: String,
    pub cause: String,
    pub hint: Option<String>,
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default()
}

/// How long the probe of a PostgreSQL server's port may take, after the
/// pool gave up: enough for a refusal or a resolver's answer, short
/// enough not to double the wait.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The reason `connect(url, …)` failed with `err`, looked into: for a
/// PostgreSQL pool that timed out, a short TCP connection attempt tells a
/// refused port or an unknown host from a server that is only slow.
pub async fn explain(url: &str, err: &StoreError) -> OpenError {
    let db_err = match err {
        StoreError::Unavailable { source, .. } => Some(source),
        StoreError::Conflict(e) | StoreError::Unique(e) | StoreError::Other(e) => Some(e),
        StoreError::NotFound => None,
    };
    let sqlx_err = db_err.and_then(sqlx_error);
    if is_postgres(url) {
        let Ok(options) = PgConnectOptions::from_str(url) else {
            return OpenError {
                target: "PostgreSQL database".into(),
                cause: "the URL is not a PostgreSQL connection URL".into(),
                hint: Some("write it as postgres://user[:password]@host[:port]/database".into()),
            };
        };
        let target = Postgres::of(&options);
        let probe = match sqlx_err {
            Some(sqlx::Error::PoolTimedOut) if options.get_socket().is_none() => {
                Some(probe(&target.host, target.port).await)
            }
            _ => None,
        };
        postgres(&target, sqlx_err, db_err, probe)
    } else {
        sqlite(url, sqlx_err, db_err)
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn sqlx_error(err: &DbErr) -> Option<&sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// What a PostgreSQL URL points at, without its password.
struct Postgres {
    host: String,
    port: u16,
    user: String,
    database: String,
}

impl Postgres {
    fn of(options: &PgConnectOptions) -> Self {
        let user = options.get_username().to_owned();
        Self {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            // PostgreSQL's own default: the database named after the user.
            database: options.get_database().unwrap_or(&user).to_owned(),
            user,
        }
    }

    fn target(&self) -> String {
        format!(
            "PostgreSQL database at {}:{}/{}",
            self.host, self.port, self.database
        )
    }
}

/// What a TCP connection attempt to the server's port met.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    Refused,
    /// The name did not resolve.
    Unresolved,
    /// No answer within `PROBE_TIMEOUT`.
    Silent,
    Failed(String),
    /// The port accepts connections: the database itself is slow or stuck.
    Open,
}

async fn probe(host: &str, port: u16) -> Probe {
    let attempt = tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::net::TcpStream::connect((host.to_owned(), port)),
    )
    .await;
    match attempt {
        Err(_) => Probe::Silent,
        Ok(Ok(_)) => Probe::Open,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        Ok(Err(e)) if is_unresolved(&e) => Probe::Unresolved,
        Ok(Err(e)) => Probe::Failed(io_cause(&e)),
    }
}

/// Whether `e` is the resolver's "no such host": tokio reports it as an
/// error of kind Other (or Uncategorized) whose text comes from
/// getaddrinfo.
fn is_unresolved(e: &std::io::Error) -> bool {
    let text = e.to_string();
    text.contains("failed to lookup address") || text.contains("Name or service not known")
}

/// An I/O error in plain lower-case words, without "(os error 111)".
fn io_cause(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn database_code(err: Option<&sqlx::Error>) -> Option<(String, String)> {
    match err? {
        sqlx::Error::Database(db) => Some((
            db.code().map(|c| c.into_owned()).unwrap_or_default(),
            db.message().to_owned(),
        )),
        _ => None,
    }
}

fn postgres(
    pg: &Postgres,
    err: Option<&sqlx::Error>,
    db_err: Option<&DbErr>,
    probe: Option<Probe>,
) -> OpenError {
    let target = pg.target();
    let (cause, hint) = if let Some((code, message)) = database_code(err) {
        match code.as_str() {
            // invalid_catalog_name
            "3D000" => (
                format!("database \"{}\" does not exist", pg.database),
                Some(format!(
                    "create it (createdb -h {} -p {} -U {} {}) or name another database in the URL",
                    pg.host, pg.port, pg.user, pg.database
                )),
            ),
            // invalid_password, invalid_authorization_specification
            "28P01" | "28000" => (
                format!("authentication failed for user \"{}\"", pg.user),
                Some("check the user and password in the database URL".into()),
            ),
            _ => (message, None),
        }
    } else {
        match (err, probe) {
            (_, Some(Probe::Refused)) => (
                format!("connection refused by {}:{}", pg.host, pg.port),
                Some("is PostgreSQL running and listening on that address?".into()),
            ),
            (_, Some(Probe::Unresolved)) => (
                format!("the host name {} does not resolve", pg.host),
                Some("check the host in the database URL".into()),
            ),
            (_, Some(Probe::Silent)) => (
                format!("no answer from {}:{}", pg.host, pg.port),
                Some("check the host and port, and any firewall in between".into()),
            ),
            (_, Some(Probe::Failed(cause))) => (
                format!("cannot reach {}:{}: {cause}", pg.host, pg.port),
                None,
            ),
            (_, Some(Probe::Open)) => (
                format!(
                    "{}:{} accepts connections but no database connection was made in time",
                    pg.host, pg.port
                ),
                Some(
                    "the server may be starting, overloaded or out of connections; \
                     WARDEN_DATABASE_TIMEOUT sets how long to wait"
                        .into(),
                ),
            ),
            (Some(sqlx::Error::Io(e)), None) if is_unresolved(e) => (
                format!("the host name {} does not resolve", pg.host),
                Some("check the host in the database URL".into()),
            ),
            (Some(sqlx::Error::Io(e)), None) => (io_cause(e), None),
            (Some(sqlx::Error::Tls(e)), None) => (format!("TLS: {e}"), None),
            (Some(other), None) => (other.to_string(), None),
            (None, None) => (
                db_err.map_or_else(|| "unknown error".into(), ToString::to_string),
                None,
            ),
        }
    };
    OpenError {
        target,
        cause,
        hint,
    }
}

/// SQLite's primary result code SQLITE_CANTOPEN.
const SQLITE_CANTOPEN: i32 = 14;

fn sqlite(url: &str, err: Option<&sqlx::Error>, db_err: Option<&DbErr>) -> OpenError {
    let file = SqliteConnectOptions::from_str(url)
        .map(|o| o.get_filename().to_owned())
        .unwrap_or_else(|_| PathBuf::from(url));
    let target = format!("SQLite database {}", file.display());
    let creates = query_has(url, "mode", "rwc");
    let code = database_code(err);
    let cannot_open = code.as_ref().is_some_and(|(code, _)| {
        code.parse::<i32>()
            .is_ok_and(|c| c & 0xff == SQLITE_CANTOPEN)
    });
    let (cause, hint) = if cannot_open {
        sqlite_cannot_open(url, &file, creates)
    } else if let Some((_, message)) = code {
        (message, None)
    } else {
        match err {
            Some(sqlx::Error::Io(e)) => (io_cause(e), None),
            Some(other) => (other.to_string(), None),
            None => (
                db_err.map_or_else(|| "unknown error".into(), ToString::to_string),
                None,
            ),
        }
    };
    OpenError {
        target,
        cause,
        hint,
    }
}

/// Why SQLite could not open `file`, found by looking at the file system.
fn sqlite_cannot_open(url: &str, file: &Path, creates: bool) -> (String, Option<String>) {
    let directory = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    if !directory.is_dir() {
        return (
            format!("the directory {} does not exist", directory.display()),
            Some(format!(
                "create it (mkdir -p {}) or choose another path",
                directory.display()
            )),
        );
    }
    match std::fs::metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !creates => (
            "the file does not exist".into(),
            Some(format!(
                "add ?mode=rwc to the URL to have it created ({})",
                with_mode_rwc(url)
            )),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            format!("cannot create the file in {}", directory.display()),
            Some("check that the directory is writable by this user".into()),
        ),
        Ok(meta) if meta.is_dir() => (
            "it is a directory".into(),
            Some("give the path of a database file".into()),
        ),
        Ok(_) => (
            "cannot open the file".into(),
            Some("check that it (and its directory) is readable and writable by this user".into()),
        ),
        Err(e) => (format!("cannot open the file: {}", io_cause(&e)), None),
    }
}

/// Whether the query of `url` sets `key` to `value`.
fn query_has(url: &str, key: &str, value: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split_once('=') == Some((key, value)))
    })
}

/// `url` with `mode=rwc` in its query (replacing another mode).
fn with_mode_rwc(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("mode="))
        .collect();
    pairs.push("mode=rwc");
    format!("{base}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg() -> Postgres {
        Postgres::of(
            &PgConnectOptions::from_str("postgres://ada:s3cret@db.example:6543/auth").unwrap(),
        )
    }

    #[test]
    fn a_postgres_target_is_host_port_and_database_without_the_password() {
        let target = pg().target();
        assert_eq!(target, "PostgreSQL database at db.example:6543/auth");
        let err = postgres(&pg(), None, None, Some(Probe::Refused));
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(
            err.to_string()
                .contains("connection refused by db.example:6543")
        );
    }

    #[test]
    fn a_refused_port_an_unknown_host_and_a_slow_server_are_told_apart() {
        let timed_out = sqlx::Error::PoolTimedOut;
        let cause = |probe| postgres(&pg(), Some(&timed_out), None, Some(probe)).cause;
        assert!(cause(Probe::Refused).contains("connection refused"));
        assert!(cause(Probe::Unresolved).contains("does not resolve"));
        assert!(cause(Probe::Silent).contains("no answer"));
        assert!(cause(Probe::Open).contains("accepts connections"));
    }

    #[test]
    fn an_unknown_database_and_a_refused_login_say_what_to_do() {
        use crate::store::error::tests::Coded;
        let refused = |code| sqlx::Error::Database(Box::new(Coded(code)));
        let err = postgres(&pg(), Some(&refused("3D000")), None, None);
        assert_eq!(err.cause, "database \"auth\" does not exist");
        assert!(
            err.hint
                .unwrap()
                .contains("createdb -h db.example -p 6543 -U ada auth")
        );
        for code in ["28P01", "28000"] {
            let err = postgres(&pg(), Some(&refused(code)), None, None);
            assert_eq!(err.cause, "authentication failed for user \"ada\"");
            assert!(!err.to_string().contains("s3cret"));
        }
    }

    #[test]
    fn io_causes_lose_the_os_error_number() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!io_cause(&e).contains("os error"));
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_cause(&e), "no such file or directory");
    }

    #[test]
    fn the_mode_hint_adds_or_replaces_the_mode() {
        assert_eq!(with_mode_rwc("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            with_mode_rwc("sqlite://a.db?mode=rw&cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert!(query_has("sqlite://a.db?x=1&mode=rwc", "mode", "rwc"));
        assert!(!query_has("sqlite://a.db?mode=rw", "mode", "rwc"));
    }

    #[test]
    fn a_sqlite_file_in_a_missing_directory_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nope").join("warden.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let (cause, hint) = sqlite_cannot_open(&url, &file, true);
        assert!(cause.contains("does not exist"), "{cause}");
        assert!(cause.contains(&dir.path().join("nope").display().to_string()));
        assert!(hint.unwrap().contains("mkdir"));
        let file = dir.path().join("fresh.db");
        let url = format!("sqlite://{}", file.display());
        let (cause, hint) = sqlite_cannot_open(&url, &file, false);
        assert_eq!(cause, "the file does not exist");
        assert!(hint.unwrap().contains("?mode=rwc"));
    }
}
