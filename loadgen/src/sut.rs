//! The system under test for one scenario: a fresh server on a fresh
//! database, or the `--target` server, and the seeding that goes with it.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    ceiling::Argon2Cost,
    client::connect,
    seed::{self, AdminLogin, Plan, Seeded},
    server::{DbChoice, Memory, Process, ScenarioDb, WardenSettings, postgres_version},
};

/// Which server is measured, and how it is configured.
#[derive(Debug, Clone, Args)]
pub struct TargetOpts {
    /// The warden binary to start [default: `warden` next to this executable].
    #[arg(long)]
    pub warden_bin: Option<PathBuf>,
    /// Admin URL of a PostgreSQL server: each scenario runs on a database
    /// created for it and dropped after. Without it: a SQLite file in a
    /// temporary directory.
    #[arg(long, env = "LOADGEN_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Drive an already running server at HOST:PORT instead of starting one
    /// (no RSS figures, no start-time or idle measurements then).
    #[arg(long, conflicts_with = "postgres_url")]
    pub target: Option<SocketAddr>,
    /// With --target: an existing admin account (else the first account is
    /// registered, which works on an empty server only).
    #[arg(long, requires = "target")]
    pub admin_email: Option<String>,
    /// With --target: the admin's password [default: the one the load
    /// generator gives the accounts it creates, so that an admin it
    /// registered in an earlier run can be reused].
    #[arg(long, env = "LOADGEN_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// With --target: the server's database URL, to insert seeded users
    /// directly (else they are registered and approved through the API).
    #[arg(long, requires = "target")]
    pub database_url: Option<String>,
    /// argon2id memory of the started server and of the argon2 ceiling.
    #[arg(long, default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// argon2id passes.
    #[arg(long, default_value_t = 2)]
    pub argon2_iterations: u32,
    /// argon2id lanes.
    #[arg(long, default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// More settings for the started server, as KEY=VALUE (repeatable), e.g.
    /// `--server-env WARDEN_ACCESS_TOKEN_TTL=1h`.
    #[arg(long = "server-env", value_parser = parse_key_value)]
    pub server_env: Vec<(String, String)>,
    /// How long a started server may take to report SERVING.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

impl TargetOpts {
    pub fn cost(&self) -> Argon2Cost {
        Argon2Cost {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }
}

pub struct Env {
    pub cost: Argon2Cost,
    pub run_id: String,
    pub database: String,
    choice: DbChoice,
    target: Option<SocketAddr>,
    target_database_url: Option<String>,
    settings: WardenSettings,
    admin: Mutex<Option<AdminLogin>>,
    counter: AtomicUsize,
}

impl Env {
    pub async fn new(opts: &TargetOpts) -> Result<Self> {
        let bin = match &opts.warden_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("own executable has no directory")?
                .join("warden"),
        };
        if opts.target.is_none() && !bin.is_file() {
            bail!(
                "no warden binary at {} (build it with `cargo build --release --bin warden`, or \
                 pass --warden-bin)",
                bin.display()
            );
        }
        let choice = match &opts.postgres_url {
            Some(url) => DbChoice::Postgres {
                admin_url: url.clone(),
            },
            None => DbChoice::Sqlite,
        };
        let database = match (&opts.target, &choice) {
            (Some(addr), _) => format!("the server at {addr} (--target)"),
            (None, DbChoice::Postgres { admin_url }) => format!(
                "{} (127.0.0.1, a fresh database per scenario)",
                postgres_version(admin_url)
                    .await
                    .context("cannot reach PostgreSQL")?
            ),
            (None, DbChoice::Sqlite) => {
                "SQLite (WAL, a fresh file per scenario in the temporary directory)".to_owned()
            }
        };
        let admin = opts.admin_email.as_ref().map(|email| AdminLogin {
            email: email.clone(),
            password: opts
                .admin_password
                .clone()
                .unwrap_or_else(|| seed::PASSWORD.to_owned()),
        });
        let mut run_id = uuid::Uuid::new_v4().simple().to_string();
        run_id.truncate(8);
        Ok(Self {
            cost: opts.cost(),
            run_id,
            database,
            choice,
            target: opts.target,
            target_database_url: opts.database_url.clone(),
            settings: WardenSettings {
                bin,
                cost: opts.cost(),
                env: opts.server_env.iter().cloned().collect::<BTreeMap<_, _>>(),
                start_timeout: opts.start_timeout,
            },
            admin: Mutex::new(admin),
            counter: AtomicUsize::new(0),
        })
    }

    pub fn external(&self) -> bool {
        self.target.is_some()
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.choice, DbChoice::Postgres { .. })
    }

    pub fn postgres_admin_url(&self) -> Option<&str> {
        match &self.choice {
            DbChoice::Postgres { admin_url } => Some(admin_url),
            DbChoice::Sqlite => None,
        }
    }

    /// A fresh server on a fresh database (or the `--target` server), with
    /// the given extra settings.
    pub async fn start(&self, label: &str, extra: &[(&str, &str)]) -> Result<Sut> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", self.run_id);
        if let Some(addr) = self.target {
            return Ok(Sut {
                addr,
                process: None,
                db: None,
                database_url: self.target_database_url.clone(),
                tag,
                cached_admin: true,
            });
        }
        let db = ScenarioDb::create(&self.choice, label).await?;
        let process = match self.settings.start(&db.url, db.dir(), extra).await {
            Ok(process) => process,
            Err(e) => {
                let _ = db.remove().await;
                return Err(e);
            }
        };
        Ok(Sut {
            addr: process.addr,
            database_url: Some(db.url.clone()),
            process: Some(process),
            db: Some(db),
            tag,
            cached_admin: false,
        })
    }

    /// Seeds `users` approved users and sessions for the first `sessions`
    /// of them.
    pub async fn seed(&self, sut: &Sut, users: usize, sessions: usize) -> Result<Seeded> {
        let control = connect(sut.addr).await?;
        let admin = if sut.cached_admin {
            let cached = self.admin.lock().ok().and_then(|a| a.clone());
            match cached {
                Some(admin) => admin,
                None => {
                    let admin = seed::register_admin(&control, &sut.tag).await?;
                    println!(
                        "registered the admin {} on the target (reuse it with --admin-email)",
                        admin.email
                    );
                    if let Ok(mut slot) = self.admin.lock() {
                        *slot = Some(admin.clone());
                    }
                    admin
                }
            }
        } else {
            seed::register_admin(&control, &sut.tag).await?
        };
        seed::seed(
            &control,
            &admin,
            &Plan {
                users: users.max(sessions),
                sessions,
                tag: &sut.tag,
                database_url: sut.database_url.as_deref(),
                cost: self.cost,
            },
        )
        .await
    }

    /// Starts a server `n + 1` times on one database: the first start
    /// migrates it, the next `n` are timed (spawn to the first SERVING).
    pub async fn start_times(&self, n: usize) -> Result<Vec<Duration>> {
        let db = ScenarioDb::create(&self.choice, "start").await?;
        let outcome = async {
            self.settings
                .start(&db.url, db.dir(), &[])
                .await?
                .stop()
                .await?;
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let process = self.settings.start(&db.url, db.dir(), &[]).await?;
                times.push(process.started_in);
                process.stop().await?;
            }
            Ok::<_, anyhow::Error>(times)
        }
        .await;
        db.remove().await?;
        outcome
    }
}

pub struct Sut {
    pub addr: SocketAddr,
    pub process: Option<Process>,
    db: Option<ScenarioDb>,
    database_url: Option<String>,
    /// Unique per run and server: seeded emails carry it.
    pub tag: String,
    /// An external server: the admin is registered once per run, or given.
    cached_admin: bool,
}

impl Sut {
    pub fn memory(&self) -> Option<Memory> {
        self.process.as_ref().and_then(Process::memory)
    }

    /// What a started server logged so far.
    pub fn log_summary(&self) -> Option<crate::server::LogSummary> {
        self.process
            .as_ref()
            .map(|p| p.log_summary(3))
            .filter(|s| s.lines > 0)
    }

    /// Starts the peak-RSS reading afresh from here.
    pub fn reset_peak(&self) -> Result<()> {
        match &self.process {
            Some(process) => crate::server::reset_peak(process.pid),
            None => Ok(()),
        }
    }

    pub fn postgres_name(&self) -> Option<&str> {
        self.db.as_ref().and_then(ScenarioDb::postgres_name)
    }

    /// The SQLite file of a started server.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        self.db
            .as_ref()
            .filter(|db| db.postgres_name().is_none())
            .map(|db| db.dir().join("warden.db"))
    }

    /// Stops the server and removes its database.
    pub async fn finish(self) -> Result<()> {
        if let Some(process) = self.process {
            process.stop().await?;
        }
        if let Some(db) = self.db {
            db.remove().await?;
        }
        Ok(())
    }
}
