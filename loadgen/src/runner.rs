//! One scenario from start to end: server, seeding, connections, load,
//! memory, and the ceiling it is compared with.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use crate::{
    ceiling::{Argon2Ceiling, argon2_ceiling, hashing_threads},
    client::{connections, default_connections},
    load::{Group, GroupResult, Stop, drive},
    report,
    scenario::{self, Build, Scenario},
    seed::Seeded,
    server::{Memory, start_echo},
    sut::{Env, TargetOpts},
};

/// Users the `login` scenario rotates over at most (one per worker).
const MAX_LOGIN_USERS: usize = 1_000;
/// Sessions seeded at most: workers beyond share them round-robin. Each is
/// one login, that is one argon2id verify, so seeding stays short.
const MAX_SESSIONS: usize = 256;
/// Users seeded for `mixed`, so that its admin listing has pages to walk.
const MIXED_USERS: usize = 1_000;
/// Failed logins are part of floods: no lockout may turn them into cheap
/// refusals that would flatter the numbers.
pub const FAILURE_LIMIT: (&str, &str) = ("WARDEN_LOGIN_FAILURE_LIMIT", "1000");

#[derive(Debug, Clone, Args)]
pub struct LoadOpts {
    /// Calls in flight at once (closed loop: each worker sends its next call
    /// when the previous one is answered).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// HTTP/2 connections to spread the calls over (the server allows 200
    /// streams per connection) [default: one per 100 calls, at least 2].
    #[arg(long)]
    pub connections: Option<usize>,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Measure this many calls instead of a duration.
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Unmeasured load before the measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

/// How one load is shaped.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub concurrency: usize,
    pub connections: usize,
    pub warmup: Duration,
    pub stop: Stop,
}

impl LoadOpts {
    pub fn spec(&self) -> Result<LoadSpec> {
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        let connections = self
            .connections
            .unwrap_or_else(|| default_connections(self.concurrency));
        if connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.concurrency > connections * 200 {
            eprintln!(
                "note: {} calls over {connections} connection(s) exceed the server's 200 streams \
                 per connection; the excess waits in the client",
                self.concurrency
            );
        }
        Ok(LoadSpec {
            concurrency: self.concurrency,
            connections,
            warmup: self.warmup,
            stop: match self.requests {
                Some(n) => Stop::Requests(n),
                None => Stop::After(self.duration),
            },
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunOpts {
    /// What to send.
    #[arg(value_enum)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub load: LoadOpts,
    #[command(flatten)]
    pub target: TargetOpts,
    /// Users seeded for `list-users`.
    #[arg(long, default_value_t = 100_000)]
    pub list_users: usize,
    /// Skip measuring the ceiling the scenario is compared with.
    #[arg(long)]
    pub no_ceiling: bool,
    /// How long the argon2 ceiling runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub argon2_duration: Duration,
    /// Exit with status 1 if any call failed or none succeeded (a smoke
    /// test; under overload RESOURCE_EXHAUSTED is the expected answer).
    #[arg(long)]
    pub strict: bool,
}

/// What a scenario measured.
pub struct Outcome {
    pub result: GroupResult,
    /// The server's memory at the end; its peak is that of the measured run.
    pub memory: Option<Memory>,
    /// How the data got there.
    pub note: String,
    /// Warnings and errors the server logged, if any.
    pub server_log: Option<crate::server::LogSummary>,
}

/// (approved users, of which with a session) a scenario needs.
pub fn needs(scenario: Scenario, concurrency: usize, list_users: usize) -> (usize, usize) {
    let sessions = concurrency.min(MAX_SESSIONS);
    match scenario {
        Scenario::Login => (concurrency.min(MAX_LOGIN_USERS), 0),
        Scenario::Register | Scenario::Echo => (0, 0),
        Scenario::Refresh | Scenario::Getme | Scenario::Validate => (sessions, sessions),
        Scenario::Mixed => (sessions.max(MIXED_USERS), sessions),
        Scenario::ListUsers | Scenario::ListMembers => (list_users, 0),
    }
}

/// A fresh server for `scenario`, seeded, driven with `spec`.
pub async fn run_scenario(
    env: &Env,
    scenario: Scenario,
    spec: LoadSpec,
    list_users: usize,
) -> Result<Outcome> {
    if scenario == Scenario::Echo {
        return Ok(Outcome {
            result: echo_ceiling(spec).await?,
            memory: None,
            note: String::new(),
            server_log: None,
        });
    }
    let sut = env.start(scenario.name(), &[FAILURE_LIMIT]).await?;
    let outcome = async {
        let (users, sessions) = needs(scenario, spec.concurrency, list_users);
        let seeded = env.seed(&sut, users, sessions).await?;
        let channels = connections(sut.addr, spec.connections).await?;
        let build = Build {
            channels: &channels,
            seeded: &seeded,
            tag: &sut.tag,
        };
        let workers = scenario::workers(scenario, spec.concurrency, &build)?;
        sut.reset_peak()?;
        let mut results = drive(
            vec![Group::new(
                scenario.name(),
                scenario.ops(),
                workers,
                spec.connections,
            )],
            spec.warmup,
            spec.stop,
        )
        .await?;
        Ok::<_, anyhow::Error>(Outcome {
            result: results.remove(0),
            memory: sut.memory(),
            note: seeded.note,
            server_log: sut.log_summary(),
        })
    }
    .await;
    let finished = sut.finish().await;
    let outcome = outcome?;
    finished?;
    Ok(outcome)
}

/// The bare echo server, driven by the same client code with `spec`.
pub async fn echo_ceiling(spec: LoadSpec) -> Result<GroupResult> {
    let dir = tempfile::tempdir()?;
    let echo = start_echo(dir.path()).await?;
    let result = async {
        let channels = connections(echo.addr, spec.connections).await?;
        let seeded = Seeded::none();
        let build = Build {
            channels: &channels,
            seeded: &seeded,
            tag: "echo",
        };
        let workers = scenario::workers(Scenario::Echo, spec.concurrency, &build)?;
        let mut results = drive(
            vec![Group::new(
                "echo ceiling",
                Scenario::Echo.ops(),
                workers,
                spec.connections,
            )],
            spec.warmup,
            spec.stop,
        )
        .await?;
        Ok::<_, anyhow::Error>(results.remove(0))
    }
    .await;
    echo.stop().await?;
    result
}

/// The argon2 ceiling off the async workers.
pub async fn argon2(env: &Env, duration: Duration) -> Result<Argon2Ceiling> {
    let cost = env.cost;
    tokio::task::spawn_blocking(move || argon2_ceiling(cost, hashing_threads(), duration)).await?
}

pub fn argon2_text(ceiling: &Argon2Ceiling, cost: crate::ceiling::Argon2Cost) -> String {
    format!(
        "argon2 ceiling: {:.1} verifies/s on {} threads ({} verifies in {:.1} s; {:.1} ms per \
         verify per thread, {})",
        ceiling.per_second,
        ceiling.threads,
        ceiling.verifies,
        ceiling.elapsed.as_secs_f64(),
        ceiling.ms_per_verify(),
        cost.describe()
    )
}

/// `warden-loadgen run <scenario>`: whether it passed (always, unless
/// `--strict`).
pub async fn run(opts: RunOpts) -> Result<bool> {
    let env = Env::new(&opts.target).await?;
    let spec = opts.load.spec()?;
    println!(
        "warden-loadgen {}: {} | {}",
        opts.scenario.name(),
        report::now_utc(),
        report::Machine::read().describe()
    );
    println!("load average: {}", report::load_average());
    println!("database: {}", env.database);
    println!("argon2id: {}\n", env.cost.describe());

    let mut ceiling = None;
    if !opts.no_ceiling && opts.scenario != Scenario::Echo {
        if opts.scenario.hashes() {
            let c = argon2(&env, opts.argon2_duration).await?;
            println!("{}\n", argon2_text(&c, env.cost));
            ceiling = Some(("argon2 verifies/s", c.per_second));
        } else {
            let echo = echo_ceiling(spec).await?;
            print!("{}", report::text(&echo, None));
            println!();
            ceiling = Some(("echo calls/s", echo.throughput()));
        }
    }

    let outcome = run_scenario(&env, opts.scenario, spec, opts.list_users).await?;
    if !outcome.note.is_empty() {
        println!("seeding: {}", outcome.note);
    }
    print!("{}", report::text(&outcome.result, outcome.memory));
    if let Some(log) = &outcome.server_log {
        println!("  server log  {}", log.describe());
    }
    if let Some((what, value)) = ceiling
        && value > 0.0
    {
        println!(
            "  vs ceiling  {:.1} % of {} {what}",
            outcome.result.throughput() / value * 100.0,
            report::rate(value)
        );
    }
    let clean = outcome.result.error_count() == 0 && outcome.result.ok() > 0;
    if opts.strict && !clean {
        println!("FAIL (--strict): calls failed, or none succeeded");
    }
    Ok(clean || !opts.strict)
}
