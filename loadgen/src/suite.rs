//! `warden-loadgen suite`: the ceilings, then every target of issue 7, one
//! after another (never overlapping: the machine has two cores), each on a
//! fresh server and database; then a markdown table of measured value,
//! ceiling, ratio, target and verdict.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    ceiling::Argon2Ceiling,
    client::{connect, connections, default_connections},
    load::{Group, GroupResult, Stop, drive},
    report::{self, mib, ms, rate},
    runner::{self, FAILURE_LIMIT, LoadSpec, Outcome, run_scenario},
    scenario::{self, Build, Scenario},
    server::{LogSummary, Memory},
    sut::{Env, TargetOpts},
};

const MIB: u64 = 1024;

#[derive(Debug, Clone, Args)]
pub struct SuiteOpts {
    #[command(flatten)]
    pub target: TargetOpts,
    /// Measured time of each load phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured load before each phase (the 1,000-login flood has none).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// How long the argon2 ceiling runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub argon2_duration: Duration,
    /// Concurrency of the throughput targets (issue 7: 64).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Connections of the throughput targets and their echo ceiling
    /// [default: one per 100 calls, at least 2].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Concurrent logins of the flood.
    #[arg(long, default_value_t = 1_000)]
    pub flood: usize,
    /// Concurrent ValidateToken calls measured during the login flood, on a
    /// connection of their own.
    #[arg(long, default_value_t = 8)]
    pub validate_concurrency: usize,
    /// Users seeded for ListUsers.
    #[arg(long, default_value_t = 100_000)]
    pub list_users: usize,
    /// Timed starts (the median is the result).
    #[arg(long, default_value_t = 5)]
    pub starts: usize,
    /// Only the targets: skip the register, refresh and mixed scenarios.
    #[arg(long)]
    pub targets_only: bool,
    /// Also write the results as markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    Missed,
    /// Not measured here (an error, or not possible with --target).
    NotMeasured,
}

impl Verdict {
    fn of(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**missed**",
            Self::NotMeasured => "not measured",
        }
    }
}

struct Row {
    what: String,
    measured: String,
    ceiling: String,
    ratio: String,
    goal: &'static str,
    verdict: Verdict,
}

impl Row {
    fn failed(what: impl Into<String>, goal: &'static str, why: &str) -> Self {
        Self {
            what: what.into(),
            measured: why.to_owned(),
            ceiling: "–".into(),
            ratio: "–".into(),
            goal,
            verdict: Verdict::NotMeasured,
        }
    }
}

/// Health probes on a connection of their own during the flood.
#[derive(Debug, Default)]
struct Probes {
    sent: u64,
    failed: u64,
    max: Duration,
    failures: BTreeMap<String, u64>,
}

const PROBE_EVERY: Duration = Duration::from_millis(50);
/// Kubernetes' default probe timeout: a slower answer is a failed probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

async fn probe(channel: Channel, mut stop: watch::Receiver<bool>) -> Probes {
    let mut client = HealthClient::new(channel);
    let mut probes = Probes::default();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(
            PROBE_TIMEOUT,
            client.check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await;
        probes.max = probes.max.max(started.elapsed());
        probes.sent += 1;
        let failure = match answer {
            Ok(Ok(a)) if a.get_ref().status == ServingStatus::Serving as i32 => None,
            Ok(Ok(_)) => Some("NOT_SERVING".to_owned()),
            Ok(Err(status)) => Some(crate::client::code_name(status.code()).to_owned()),
            Err(_) => Some(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
        };
        if let Some(failure) = failure {
            probes.failed += 1;
            *probes.failures.entry(failure).or_default() += 1;
        }
    }
    probes
}

/// Everything the suite measured, for the text and markdown reports.
struct Suite {
    title: String,
    header: Vec<String>,
    rows: Vec<Row>,
    scenarios: Vec<(GroupResult, Option<Memory>)>,
    notes: Vec<String>,
}

pub async fn suite(opts: SuiteOpts) -> Result<()> {
    let env = Env::new(&opts.target).await?;
    let connections = opts
        .connections
        .unwrap_or_else(|| default_connections(opts.concurrency));
    let spec = LoadSpec {
        concurrency: opts.concurrency,
        connections,
        warmup: opts.warmup,
        stop: Stop::After(opts.duration),
    };
    let machine = report::Machine::read();
    let mut suite = Suite {
        title: format!(
            "warden benchmark suite on {}",
            if env.external() {
                "an external server"
            } else if env.is_postgres() {
                "PostgreSQL"
            } else {
                "SQLite"
            }
        ),
        header: vec![
            format!("date: {}", report::now_utc()),
            format!("machine: {}", machine.describe()),
            format!(
                "load average (1, 5, 15 min) at the start: {} (other work on the machine shares \
                 its cores with the server and the load generator)",
                report::load_average()
            ),
            format!("database: {}", env.database),
            format!(
                "server: release `warden serve`, argon2id {}, WARDEN_LOG=warn, \
                 WARDEN_LOGIN_FAILURE_LIMIT=1000; a fresh server and database per phase; \
                 the load generator runs on the same cores",
                env.cost.describe()
            ),
        ],
        rows: Vec::new(),
        scenarios: Vec::new(),
        notes: Vec::new(),
    };
    println!("# {}\n", suite.title);
    for line in &suite.header {
        println!("{line}");
    }
    println!();

    // Each ceiling is measured right before and right after the phases
    // compared with it, and the higher of the two counts: the machine is
    // shared, and a disturbance can only lower a throughput.
    phase("echo ceiling (before)");
    let echo_before = echo_once(spec).await;
    let mut checks = Vec::new();
    for scenario in [Scenario::Validate, Scenario::Getme] {
        phase(&format!("{} throughput", scenario.name()));
        checks.push((scenario, run_scenario(&env, scenario, spec, 0).await));
    }
    phase("echo ceiling (after)");
    let echo_after = echo_once(spec).await;
    let echo_runs: Vec<f64> = [&echo_before, &echo_after]
        .iter()
        .filter_map(|r| r.as_ref().map(GroupResult::throughput))
        .collect();
    let echo = [echo_before, echo_after]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.throughput().total_cmp(&b.throughput()));
    let echo_rate = echo.as_ref().map(GroupResult::throughput);

    phase("argon2 ceiling (before)");
    let argon2_before = argon2_once(&env, opts.argon2_duration).await;
    phase("login throughput");
    let login = run_scenario(&env, Scenario::Login, spec, 0).await;
    phase("argon2 ceiling (after)");
    let argon2_after = argon2_once(&env, opts.argon2_duration).await;
    let argon2_runs: Vec<f64> = [&argon2_before, &argon2_after]
        .iter()
        .filter_map(|c| c.as_ref().map(|c| c.per_second))
        .collect();
    let argon2 = [argon2_before, argon2_after]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.per_second.total_cmp(&b.per_second));

    suite.header.push(format!(
        "ceilings (each the better of a run before and a run after the phases compared \
         with it): {}; {}",
        argon2.as_ref().map_or_else(
            || "argon2 ceiling not measured".to_owned(),
            |c| format!(
                "argon2id verify {:.1}/s on {} threads ({:.1} ms per verify per thread; \
                 runs: {})",
                c.per_second,
                c.threads,
                c.ms_per_verify(),
                runs(&argon2_runs, "/s")
            )
        ),
        echo.as_ref().map_or_else(
            || "echo ceiling not measured".to_owned(),
            |r| format!(
                "bare tonic Health/Check server {} calls/s at {} concurrent over {} connections \
                 (p50 {}, p99 {}; runs: {})",
                rate(r.throughput()),
                r.concurrency,
                r.connections,
                ms(r.quantile_us(0.5)),
                ms(r.quantile_us(0.99)),
                runs(&echo_runs, " calls/s")
            )
        ),
    ));
    if let Some(r) = echo {
        suite.scenarios.push((r, None));
    }

    // 1. Login throughput against the argon2 ceiling.
    let what = format!("1. login throughput, {} concurrent", opts.concurrency);
    match login {
        Ok(o) => {
            let row = ratio_row(
                &what,
                &o,
                "logins/s",
                argon2
                    .as_ref()
                    .map(|c: &Argon2Ceiling| (c.per_second, "verifies/s")),
                0.90,
                "≥ 90 % of argon2",
            );
            suite.keep(o, row);
        }
        Err(e) => suite.error(what, "≥ 90 % of argon2", &e),
    }

    // 2. ValidateToken and 3. GetMe against the echo ceiling.
    for (scenario, outcome) in checks {
        let (n, name, goal, min) = if scenario == Scenario::Validate {
            (2, "ValidateToken", "≥ 50 % of echo", 0.50)
        } else {
            (3, "GetMe", "≥ 40 % of echo", 0.40)
        };
        let what = format!("{n}. {name} throughput, {} concurrent", opts.concurrency);
        match outcome {
            Ok(o) => {
                let row = ratio_row(
                    &what,
                    &o,
                    "calls/s",
                    echo_rate.map(|r| (r, "calls/s")),
                    min,
                    goal,
                );
                suite.keep(o, row);
            }
            Err(e) => suite.error(what, goal, &e),
        }
    }

    // 4. ValidateToken latency while logins saturate the hashing.
    phase("4. ValidateToken p99 during a login flood");
    let what = format!(
        "4. ValidateToken p99 ({} concurrent) while {} concurrent logins run",
        opts.validate_concurrency, opts.concurrency
    );
    match validate_during_logins(&env, spec, opts.validate_concurrency).await {
        Ok((login, validate, memory, log)) => {
            suite.log_note(&validate.name, log);
            let p99 = validate.quantile_us(0.99);
            let clean = validate.error_count() == 0 && validate.ok() > 0;
            suite.rows.push(Row {
                what,
                measured: format!(
                    "{} (p50 {}, {} calls/s; logins meanwhile {:.1}/s){}",
                    ms(p99),
                    ms(validate.quantile_us(0.5)),
                    rate(validate.throughput()),
                    login.throughput(),
                    error_suffix(&validate)
                ),
                ceiling: "–".into(),
                ratio: "–".into(),
                goal: "≤ 20 ms",
                verdict: Verdict::of(clean && p99 <= 20_000),
            });
            suite.scenarios.push((login, None));
            suite.scenarios.push((validate, memory));
        }
        Err(e) => suite.error(what, "≤ 20 ms", &e),
    }

    // 5. A flood of logins: memory, errors, health.
    phase("5. login flood");
    let what = format!("5. flood of {} concurrent logins", opts.flood);
    let goal = "RSS ≤ 256 MiB; only RESOURCE_EXHAUSTED; health answered";
    if env.external() {
        suite.rows.push(Row::failed(
            what,
            goal,
            "not measured: needs a started server (--target)",
        ));
    } else {
        match flood(&env, opts.flood, opts.duration).await {
            Ok((result, memory, probes, log)) => {
                suite.log_note(&result.name, log);
                let peak = memory.map_or(0, |m| m.peak_kib);
                let only_exhausted = result
                    .errors
                    .keys()
                    .all(|(_, f)| f.code == "RESOURCE_EXHAUSTED");
                let healthy = probes.failed == 0 && probes.sent > 0;
                suite.rows.push(Row {
                    what,
                    measured: format!(
                        "peak RSS {}; {} logins/s ok; errors: {}; health: {} of {} probes \
                         answered SERVING, slowest {}",
                        mib(peak),
                        rate(result.throughput()),
                        report::errors(&result),
                        probes.sent - probes.failed,
                        probes.sent,
                        ms(u64::try_from(probes.max.as_micros()).unwrap_or(u64::MAX))
                    ),
                    ceiling: "–".into(),
                    ratio: "–".into(),
                    goal,
                    verdict: Verdict::of(
                        peak > 0
                            && peak <= 256 * MIB
                            && only_exhausted
                            && healthy
                            && result.ok() > 0,
                    ),
                });
                if !probes.failures.is_empty() {
                    suite.notes.push(format!(
                        "flood health probe failures: {:?}",
                        probes.failures
                    ));
                }
                suite.scenarios.push((result, memory));
            }
            Err(e) => suite.error(what, goal, &e),
        }
    }

    // 6. ListUsers over 100,000 users.
    phase("6. ListUsers");
    let what = format!(
        "6. ListUsers p50, page of 50 of {} users, 1 client",
        opts.list_users
    );
    let list_spec = LoadSpec {
        concurrency: 1,
        connections: 1,
        ..spec
    };
    match run_scenario(&env, Scenario::ListUsers, list_spec, opts.list_users).await {
        Ok(o) => {
            let row = page_row(what, &o.result);
            suite.keep(o, row);
        }
        Err(e) => suite.error(what, "p50 ≤ 5 ms", &e),
    }

    // 6b. ListMembers of one organisation of 100,000 members (issue 14: as
    // fast as a ListUsers page, from the (organization_id, joined_at,
    // user_id) index).
    phase("6b. ListMembers");
    let what = format!(
        "6b. ListMembers p50, page of 50 of {} members, 1 client",
        opts.list_users
    );
    match run_scenario(&env, Scenario::ListMembers, list_spec, opts.list_users).await {
        Ok(o) => {
            let row = page_row(what, &o.result);
            suite.keep(o, row);
        }
        Err(e) => suite.error(what, "p50 ≤ 5 ms", &e),
    }

    // 7. Idle memory, 8. start time.
    phase("7. idle RSS");
    let what = "7. idle RSS, 1 s after SERVING".to_owned();
    if env.external() {
        suite
            .rows
            .push(Row::failed(what, "≤ 30 MiB", "not measured (--target)"));
    } else {
        match idle_rss(&env).await {
            Ok(memory) => suite.rows.push(Row {
                what,
                measured: mib(memory.rss_kib),
                ceiling: "–".into(),
                ratio: "–".into(),
                goal: "≤ 30 MiB",
                verdict: Verdict::of(memory.rss_kib <= 30 * MIB),
            }),
            Err(e) => suite.error(what, "≤ 30 MiB", &e),
        }
    }
    phase("8. start to SERVING");
    let what = format!(
        "8. start to SERVING, migrated {} database (median of {}{})",
        if env.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        opts.starts,
        if env.is_postgres() {
            "; the target is set for SQLite"
        } else {
            ""
        }
    );
    if env.external() {
        suite
            .rows
            .push(Row::failed(what, "≤ 300 ms", "not measured (--target)"));
    } else {
        match env.start_times(opts.starts.max(1)).await {
            Ok(mut times) => {
                times.sort();
                let median = times[times.len() / 2];
                suite.rows.push(Row {
                    what,
                    measured: format!(
                        "{} (all: {})",
                        ms(micros(median)),
                        times
                            .iter()
                            .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
                            .collect::<Vec<_>>()
                            .join(", ")
                            + " ms"
                    ),
                    ceiling: "–".into(),
                    ratio: "–".into(),
                    goal: "≤ 300 ms",
                    verdict: Verdict::of(median <= Duration::from_millis(300)),
                });
            }
            Err(e) => suite.error(what, "≤ 300 ms", &e),
        }
    }

    // Scenarios with no target of their own, for the record.
    if !opts.targets_only {
        for scenario in [Scenario::Register, Scenario::Refresh, Scenario::Mixed] {
            phase(scenario.name());
            match run_scenario(&env, scenario, spec, 0).await {
                Ok(o) => {
                    print!("{}", report::text(&o.result, o.memory));
                    suite.log_note(&o.result.name, o.server_log);
                    suite.scenarios.push((o.result, o.memory));
                }
                Err(e) => {
                    println!("{} failed: {e:#}", scenario.name());
                    suite
                        .notes
                        .push(format!("scenario {} failed: {e:#}", scenario.name()));
                }
            }
        }
    }

    suite.header.push(format!(
        "load average at the end: {}",
        report::load_average()
    ));
    let markdown = suite.markdown();
    println!("\n{markdown}");
    if let Some(path) = &opts.markdown {
        std::fs::write(path, &markdown)?;
        println!("written to {}", path.display());
    }
    Ok(())
}

async fn echo_once(spec: LoadSpec) -> Option<GroupResult> {
    match runner::echo_ceiling(spec).await {
        Ok(r) => {
            print!("{}", report::text(&r, None));
            Some(r)
        }
        Err(e) => {
            println!("echo ceiling failed: {e:#}");
            None
        }
    }
}

async fn argon2_once(env: &Env, duration: Duration) -> Option<Argon2Ceiling> {
    match runner::argon2(env, duration).await {
        Ok(c) => {
            println!("{}", runner::argon2_text(&c, env.cost));
            Some(c)
        }
        Err(e) => {
            println!("argon2 ceiling failed: {e:#}");
            None
        }
    }
}

fn runs(values: &[f64], unit: &str) -> String {
    values
        .iter()
        .map(|v| format!("{}{unit}", rate(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The number a target row starts with ("4. ValidateToken …" is 4).
fn target_number(what: &str) -> u32 {
    what.split('.')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

fn phase(name: &str) {
    println!("\n--- {name}");
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A listing phase's row: the p50 of a page against its 5 ms goal.
fn page_row(what: String, result: &GroupResult) -> Row {
    let p50 = result.quantile_us(0.5);
    let clean = result.error_count() == 0 && result.ok() > 0;
    Row {
        what,
        measured: format!(
            "{} (p99 {}, {:.0} pages/s){}",
            ms(p50),
            ms(result.quantile_us(0.99)),
            result.throughput(),
            error_suffix(result)
        ),
        ceiling: "–".into(),
        ratio: "–".into(),
        goal: "p50 ≤ 5 ms",
        verdict: Verdict::of(clean && p50 <= 5_000),
    }
}

fn error_suffix(result: &GroupResult) -> String {
    if result.error_count() == 0 {
        String::new()
    } else {
        format!("; errors: {}", report::errors(result))
    }
}

/// A throughput row compared with a ceiling: met when the ratio reaches
/// `min` and no call failed.
fn ratio_row(
    what: &str,
    outcome: &Outcome,
    unit: &str,
    ceiling: Option<(f64, &str)>,
    min: f64,
    goal: &'static str,
) -> Row {
    let measured = outcome.result.throughput();
    let clean = outcome.result.error_count() == 0;
    let (ceiling_text, ratio_text, verdict) = match ceiling {
        Some((c, c_unit)) if c > 0.0 => {
            let ratio = measured / c;
            (
                format!("{} {c_unit}", rate(c)),
                format!("{:.1} %", ratio * 100.0),
                Verdict::of(clean && ratio >= min),
            )
        }
        _ => ("not measured".into(), "–".into(), Verdict::NotMeasured),
    };
    Row {
        what: what.to_owned(),
        measured: format!(
            "{} {unit} (p50 {}, p99 {}){}",
            rate(measured),
            ms(outcome.result.quantile_us(0.5)),
            ms(outcome.result.quantile_us(0.99)),
            error_suffix(&outcome.result)
        ),
        ceiling: ceiling_text,
        ratio: ratio_text,
        goal,
        verdict,
    }
}

impl Suite {
    fn keep(&mut self, outcome: Outcome, row: Row) {
        print!("{}", report::text(&outcome.result, outcome.memory));
        println!("=> {}: {} [{}]", row.what, row.measured, row.verdict.text());
        self.log_note(&outcome.result.name.clone(), outcome.server_log.clone());
        if !outcome.note.is_empty() {
            self.notes.push(format!(
                "seeding for {}: {}",
                outcome.result.name, outcome.note
            ));
        }
        self.rows.push(row);
        self.scenarios.push((outcome.result, outcome.memory));
    }

    fn log_note(&mut self, phase: &str, log: Option<LogSummary>) {
        if let Some(log) = log {
            println!("server log: {}", log.describe());
            self.notes
                .push(format!("during {phase}: {}", log.describe()));
        }
    }

    fn error(&mut self, what: String, goal: &'static str, e: &anyhow::Error) {
        println!("{what} failed: {e:#}");
        self.notes.push(format!("{what}: {e:#}"));
        self.rows
            .push(Row::failed(what, goal, "failed (see notes)"));
    }

    fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n", self.title);
        for line in &self.header {
            let _ = writeln!(out, "- {line}");
        }
        out.push_str(
            "\n| target | measured | ceiling | ratio | goal | result |\n|---|---|---:|---:|---|---|\n",
        );
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| target_number(&r.what));
        for row in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.what,
                row.measured,
                row.ceiling,
                row.ratio,
                row.goal,
                row.verdict.text()
            );
        }
        let met = self
            .rows
            .iter()
            .filter(|r| r.verdict == Verdict::Met)
            .count();
        let _ = writeln!(out, "\n{met} of {} targets met.\n", self.rows.len());
        out.push_str("Every phase in detail (latencies of successful calls):\n\n");
        out.push_str(report::SCENARIO_TABLE_HEAD);
        for (result, memory) in &self.scenarios {
            out.push_str(&report::markdown_row(result, *memory));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

/// Logins saturating the hashing, and a few ValidateToken callers on a
/// connection of their own, measured over the same window.
async fn validate_during_logins(
    env: &Env,
    spec: LoadSpec,
    validate_concurrency: usize,
) -> Result<(GroupResult, GroupResult, Option<Memory>, Option<LogSummary>)> {
    let sut = env.start("login-validate", &[FAILURE_LIMIT]).await?;
    let outcome = async {
        let users = spec.concurrency.max(validate_concurrency);
        let seeded = env.seed(&sut, users, validate_concurrency).await?;
        let login_channels = connections(sut.addr, spec.connections).await?;
        let validate_channels = connections(sut.addr, 1).await?;
        let logins = scenario::workers(
            Scenario::Login,
            spec.concurrency,
            &Build {
                channels: &login_channels,
                seeded: &seeded,
                tag: &sut.tag,
            },
        )?;
        let validates = scenario::workers(
            Scenario::Validate,
            validate_concurrency,
            &Build {
                channels: &validate_channels,
                seeded: &seeded,
                tag: &sut.tag,
            },
        )?;
        sut.reset_peak()?;
        let mut results = drive(
            vec![
                Group::new(
                    "login (flood)",
                    Scenario::Login.ops(),
                    logins,
                    spec.connections,
                ),
                Group::new("validate during login flood", &["validate"], validates, 1),
            ],
            spec.warmup,
            spec.stop,
        )
        .await?;
        let validate = results.remove(1);
        let login = results.remove(0);
        print!("{}", report::text(&login, None));
        print!("{}", report::text(&validate, sut.memory()));
        Ok::<_, anyhow::Error>((login, validate, sut.memory(), sut.log_summary()))
    }
    .await;
    let finished = sut.finish().await;
    let outcome = outcome?;
    finished?;
    Ok(outcome)
}

/// `flood` concurrent logins with no warm-up, a health prober alongside.
async fn flood(
    env: &Env,
    flood: usize,
    duration: Duration,
) -> Result<(GroupResult, Option<Memory>, Probes, Option<LogSummary>)> {
    let sut = env.start("flood", &[FAILURE_LIMIT]).await?;
    let outcome = async {
        let seeded = env.seed(&sut, flood, 0).await?;
        let conns = default_connections(flood);
        let channels = connections(sut.addr, conns).await?;
        let workers = scenario::workers(
            Scenario::Login,
            flood,
            &Build {
                channels: &channels,
                seeded: &seeded,
                tag: &sut.tag,
            },
        )?;
        let prober_channel = connect(sut.addr).await?;
        sut.reset_peak()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let prober = tokio::spawn(probe(prober_channel, stop_rx));
        let results = drive(
            vec![Group::new(
                format!("login flood ({flood})"),
                Scenario::Login.ops(),
                workers,
                conns,
            )],
            Duration::ZERO,
            Stop::After(duration),
        )
        .await;
        let _ = stop_tx.send(true);
        let probes = prober.await?;
        let mut results = results?;
        let result = results.remove(0);
        let memory = sut.memory();
        print!("{}", report::text(&result, memory));
        println!(
            "  health      {} probes, {} failed, slowest {}",
            probes.sent,
            probes.failed,
            ms(micros(probes.max))
        );
        Ok::<_, anyhow::Error>((result, memory, probes, sut.log_summary()))
    }
    .await;
    let finished = sut.finish().await;
    let outcome = outcome?;
    finished?;
    Ok(outcome)
}

/// RSS of a fresh server one second after it reported SERVING.
async fn idle_rss(env: &Env) -> Result<Memory> {
    let sut = env.start("idle", &[]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = sut.memory();
    sut.finish().await?;
    let memory = memory.ok_or_else(|| anyhow::anyhow!("cannot read the server's memory"))?;
    println!(
        "idle: RSS {} (peak so far {})",
        mib(memory.rss_kib),
        mib(memory.peak_kib)
    );
    Ok(memory)
}
