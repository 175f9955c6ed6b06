//! The server under test: a fresh database per scenario (a SQLite file in a
//! temporary directory, or a PostgreSQL database created for the run and
//! dropped after), the release `warden serve` started on free ports, its
//! memory read from /proc, and the bare echo server in a process of its own.

use std::{
    collections::BTreeMap,
    fs::File,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sea_orm::{ConnectionTrait as _, Database, DbBackend, Statement};
use tokio::process::{Child, Command};

use crate::client::wait_serving;

/// How often readiness is polled: fine enough to time a start to a few ms.
pub const POLL_EVERY: Duration = Duration::from_millis(2);

/// PostgreSQL databases this process created and has not dropped yet, so
/// that an interrupted run still removes them.
static CREATED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Where scenario databases come from.
#[derive(Debug, Clone)]
pub enum DbChoice {
    Sqlite,
    Postgres { admin_url: String },
}

/// A database for one scenario, and a directory for its files and logs.
pub struct ScenarioDb {
    pub url: String,
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl ScenarioDb {
    pub async fn create(choice: &DbChoice, label: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("warden-loadgen-{label}-"))
            .tempdir()
            .context("temporary directory")?;
        match choice {
            DbChoice::Sqlite => Ok(Self {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("warden.db").display()
                ),
                dir,
                postgres: None,
            }),
            DbChoice::Postgres { admin_url } => {
                let name = format!("warden_loadgen_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(admin_url.as_str())
                    .await
                    .with_context(|| "cannot reach PostgreSQL at the --postgres-url".to_owned())?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .context("CREATE DATABASE")?;
                admin.close().await?;
                if let Ok(mut created) = CREATED.lock() {
                    created.push((admin_url.clone(), name.clone()));
                }
                Ok(Self {
                    url: with_database(admin_url, &name),
                    dir,
                    postgres: Some((admin_url.clone(), name)),
                })
            }
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PostgreSQL database's name, if it is one.
    pub fn postgres_name(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(_, name)| name.as_str())
    }

    /// Drops the PostgreSQL database (the SQLite file goes with the directory).
    pub async fn remove(self) -> Result<()> {
        if let Some((admin_url, name)) = &self.postgres {
            drop_database(admin_url, name).await?;
        }
        Ok(())
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let admin = Database::connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    admin.close().await?;
    if let Ok(mut created) = CREATED.lock() {
        created.retain(|(_, n)| n != name);
    }
    Ok(())
}

/// Drops every database this process created and still holds (after an
/// error or an interrupt).
pub async fn remove_leftover_databases() {
    let leftovers = CREATED.lock().map(|c| c.clone()).unwrap_or_default();
    for (admin_url, name) in leftovers {
        if let Err(e) = drop_database(&admin_url, &name).await {
            eprintln!("could not drop database {name}: {e:#}");
        }
    }
}

/// `admin_url` with its database name replaced by `name`.
pub fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// `SELECT version()` of the PostgreSQL server, shortened.
pub async fn postgres_version(admin_url: &str) -> Result<String> {
    let admin = Database::connect(admin_url).await?;
    let row = admin
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SHOW server_version",
        ))
        .await?
        .context("no version")?;
    let version: String = row.try_get_by_index(0)?;
    admin.close().await?;
    Ok(format!("PostgreSQL {version}"))
}

/// Connections open to database `name` (from any client).
pub async fn postgres_connections(admin_url: &str, name: &str) -> Result<i64> {
    let admin = Database::connect(admin_url).await?;
    let row = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*)::bigint FROM pg_stat_activity WHERE datname = $1",
            [name.into()],
        ))
        .await?
        .context("no count")?;
    let count: i64 = row.try_get_by_index(0)?;
    admin.close().await?;
    Ok(count)
}

/// A free port on the loopback interface (free when asked; the server binds
/// it a moment later).
pub fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(listener.local_addr()?)
}

/// Resident memory of a process, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the peak since start or since the last reset.
    pub peak_kib: u64,
}

pub fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

pub fn memory_of(pid: u32) -> Option<Memory> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Resets VmHWM to the current RSS, so the next reading is the peak of what
/// comes after.
pub fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("cannot reset the peak RSS of process {pid}"))
}

/// A started process that serves gRPC on `addr`.
pub struct Process {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// From spawn to the first SERVING answer.
    pub started_in: Duration,
    log: PathBuf,
}

impl Process {
    /// Spawns `command` (which must listen on `addr`) and waits for SERVING.
    async fn spawn(
        mut command: Command,
        addr: SocketAddr,
        log: PathBuf,
        timeout: Duration,
    ) -> Result<Self> {
        let out = File::create(&log).context("server log file")?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = command.spawn().context("cannot start the server")?;
        let pid = child.id().context("the server has no pid")?;
        let serving = wait_serving(addr, spawned + timeout, POLL_EVERY, || {
            match child.try_wait() {
                Ok(Some(status)) => bail!("the server exited ({status}) before serving"),
                _ => Ok(()),
            }
        })
        .await;
        match serving {
            Ok(at) => Ok(Self {
                child,
                pid,
                addr,
                started_in: at - spawned,
                log,
            }),
            Err(e) => {
                let _ = child.kill().await;
                Err(e.context(format!("server log:\n{}", tail(&log, 30))))
            }
        }
    }

    pub fn memory(&self) -> Option<Memory> {
        memory_of(self.pid)
    }

    /// SIGTERM (warden drains and exits), then SIGKILL if it takes too long.
    pub async fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!(
                    "server {} did not stop within 30 s of SIGTERM; killing it (log: {})",
                    self.pid,
                    self.log.display()
                );
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// What the server logged (at WARDEN_LOG=warn: warnings and errors only).
#[derive(Debug, Clone, Default)]
pub struct LogSummary {
    pub lines: usize,
    /// The most frequent messages (timestamps and colours removed), with
    /// how often each came.
    pub top: Vec<(usize, String)>,
}

impl LogSummary {
    /// Counts `text`'s lines by message.
    pub fn of(text: &str, keep: usize) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut lines = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            lines += 1;
            let line = strip_ansi(line);
            // Text logs start with an RFC 3339 timestamp.
            let message = match line.split_once(' ') {
                Some((first, rest)) if first.starts_with(|c: char| c.is_ascii_digit()) => {
                    rest.trim()
                }
                _ => line.trim(),
            };
            let message: String = message.chars().take(300).collect();
            *counts.entry(message).or_default() += 1;
        }
        let mut top: Vec<(usize, String)> = counts.into_iter().map(|(m, n)| (n, m)).collect();
        top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        top.truncate(keep);
        Self { lines, top }
    }

    pub fn describe(&self) -> String {
        format!(
            "the server logged {} warning/error line(s), most often: {}",
            self.lines,
            self.top
                .iter()
                .map(|(n, m)| format!("{n}× `{m}`"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

impl Process {
    pub fn log_summary(&self, keep: usize) -> LogSummary {
        LogSummary::of(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            keep,
        )
    }
}

/// `s` without ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How the started warden is configured.
#[derive(Debug, Clone)]
pub struct WardenSettings {
    pub bin: PathBuf,
    pub cost: crate::ceiling::Argon2Cost,
    /// More settings (`WARDEN_…`), the user's `--server-env` last.
    pub env: BTreeMap<String, String>,
    pub start_timeout: Duration,
}

impl WardenSettings {
    /// `warden serve` on free ports with `database_url`; its output goes to
    /// `dir/warden-<n>.log`.
    pub async fn start(
        &self,
        database_url: &str,
        dir: &Path,
        extra: &[(&str, &str)],
    ) -> Result<Process> {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let addr = free_port()?;
        let http = free_port()?;
        let mut command = Command::new(&self.bin);
        command.arg("serve");
        // Only what is set here: a WARDEN_… variable of the caller's shell
        // must not change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WARDEN_") {
                command.env_remove(key);
            }
        }
        command
            .env("WARDEN_LISTEN", addr.to_string())
            .env("WARDEN_HTTP_LISTEN", http.to_string())
            .env("WARDEN_DATABASE_URL", database_url)
            .env("WARDEN_LOG", "warn")
            .env("WARDEN_ARGON2_MEMORY_KIB", self.cost.memory_kib.to_string())
            .env("WARDEN_ARGON2_ITERATIONS", self.cost.iterations.to_string())
            .env(
                "WARDEN_ARGON2_PARALLELISM",
                self.cost.parallelism.to_string(),
            );
        for (key, value) in extra {
            command.env(key, value);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        Process::spawn(
            command,
            addr,
            dir.join(format!("warden-{n}.log")),
            self.start_timeout,
        )
        .await
        .with_context(|| format!("starting {}", self.bin.display()))
    }
}

/// `warden-loadgen echo-server` as a child process on a free port.
pub async fn start_echo(dir: &Path) -> Result<Process> {
    let addr = free_port()?;
    let mut command = Command::new(std::env::current_exe().context("own executable")?);
    command
        .arg("echo-server")
        .arg("--listen")
        .arg(addr.to_string());
    Process::spawn(
        command,
        addr,
        dir.join("echo-server.log"),
        Duration::from_secs(30),
    )
    .await
    .context("starting the echo server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_urls_database_is_replaced_and_its_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }

    #[test]
    fn rss_and_its_peak_are_read_from_proc_status() {
        let status =
            "Name:\twarden\nVmPeak:\t  900000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                rss_kib: 20480,
                peak_kib: 40960
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn log_lines_are_counted_by_message_without_their_timestamps() {
        let log = "2026-11-29T00:33:40.1Z  WARN a: x\n2026-11-29T00:33:41.2Z  WARN a: x\n\
                   2026-11-29T00:33:42.3Z ERROR b: y\n";
        let summary = LogSummary::of(log, 5);
        assert_eq!(summary.lines, 3);
        assert_eq!(
            summary.top,
            vec![(2, "WARN a: x".to_owned()), (1, "ERROR b: y".to_owned())]
        );
    }

    #[test]
    fn colour_codes_are_stripped_from_log_lines() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m boom"),
            "2026 ERROR boom"
        );
    }

    #[test]
    fn this_process_memory_can_be_read() {
        let memory = memory_of(std::process::id()).expect("own /proc status");
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
    }
}
