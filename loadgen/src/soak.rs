//! `warden-loadgen soak` (issue 8): the `mixed` blend for minutes on one
//! server, sampled every few seconds, and a verdict: no errors, memory that
//! levels off, database connections within the pool's bound.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;
use tokio::sync::watch;

use crate::{
    client::{connections, default_connections},
    load::{Group, Live, Stop, drive, per_second},
    report::{self, mib},
    runner::FAILURE_LIMIT,
    scenario::{self, Build, Scenario},
    server::{memory_of, postgres_connections},
    sut::{Env, TargetOpts},
};

#[derive(Debug, Clone, Args)]
pub struct SoakOpts {
    #[command(flatten)]
    pub target: TargetOpts,
    /// How long the blend runs.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Time between samples.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Calls in flight (each worker has a session of its own).
    #[arg(short = 'c', long, default_value_t = 16)]
    pub concurrency: usize,
    /// HTTP/2 connections [default: one per 100 calls, at least 2].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Users seeded, so that the admin listing has pages to walk.
    #[arg(long, default_value_t = 10_000)]
    pub list_users: usize,
    /// The most database connections the server may hold [default: its
    /// pool's maximum, 16 on PostgreSQL and 8 on SQLite (src/store/mod.rs)].
    #[arg(long)]
    pub max_db_connections: Option<i64>,
    /// Also write the time series and verdict as markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    calls_per_second: f64,
    errors: u64,
    rss_kib: u64,
    peak_kib: u64,
    db_connections: Option<i64>,
}

/// Memory levels off when the highest RSS of the last third of the run is at
/// most 10 % (plus 4 MiB for allocator noise) above the highest of the
/// middle third; the first third is warm-up (pools and caches filling).
/// `None` when there are too few samples to tell.
pub fn plateaus(rss_kib: &[u64]) -> Option<bool> {
    let n = rss_kib.len();
    if n < 6 {
        return None;
    }
    let third = n / 3;
    let middle = rss_kib[third..2 * third].iter().max()?;
    let last = rss_kib[2 * third..].iter().max()?;
    Some(*last as f64 <= *middle as f64 * 1.1 + 4096.0)
}

/// Open connections of the server to its SQLite file: file descriptors of
/// the process that point at the database file itself.
fn sqlite_connections(pid: u32, file: &Path) -> Option<i64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let count = entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == file)
        .count();
    i64::try_from(count).ok()
}

pub async fn soak(opts: SoakOpts) -> Result<bool> {
    let env = Env::new(&opts.target).await?;
    let connections_n = opts
        .connections
        .unwrap_or_else(|| default_connections(opts.concurrency));
    // Tokens must outlive a long run: the blend refreshes its own, but the
    // admin's is used as issued.
    let ttl = humantime::format_duration(opts.duration + Duration::from_secs(600)).to_string();
    let sut = env
        .start("soak", &[FAILURE_LIMIT, ("WARDEN_ACCESS_TOKEN_TTL", &ttl)])
        .await?;
    let max_connections = opts
        .max_db_connections
        .unwrap_or(if env.is_postgres() { 16 } else { 8 });
    let machine = report::Machine::read();
    let mut out = format!(
        "## warden soak: mixed blend, {} concurrent, {}\n\n- date: {}\n- machine: {}\n- load average at the start: {}\n- database: {}\n- server: release `warden serve`, argon2id {}; blend: {}\n\n",
        opts.concurrency,
        humantime::format_duration(opts.duration),
        report::now_utc(),
        machine.describe(),
        report::load_average(),
        env.database,
        env.cost.describe(),
        scenario::mixed_description()
    );
    print!("{out}");

    let outcome = async {
        let (users, sessions) = (opts.list_users.max(opts.concurrency), opts.concurrency);
        let seeded = env.seed(&sut, users, sessions).await?;
        println!("seeding: {}\n", seeded.note);
        let channels = connections(sut.addr, connections_n).await?;
        let workers = scenario::workers(
            Scenario::Mixed,
            opts.concurrency,
            &Build {
                channels: &channels,
                seeded: &seeded,
                tag: &sut.tag,
            },
        )?;
        let group = Group::new(
            "soak (mixed)",
            Scenario::Mixed.ops(),
            workers,
            connections_n,
        );
        let live = group.live.clone();
        let pid = sut.process.as_ref().map(|p| p.pid);
        let postgres = env
            .postgres_admin_url()
            .zip(sut.postgres_name())
            .map(|(a, n)| (a.to_owned(), n.to_owned()));
        let sqlite_file = sut.sqlite_file();
        let (stop_tx, stop_rx) = watch::channel(false);
        let sampler = tokio::spawn(sample(
            live,
            opts.interval,
            pid,
            postgres,
            sqlite_file,
            stop_rx,
        ));
        let results = drive(vec![group], Duration::ZERO, Stop::After(opts.duration)).await;
        let _ = stop_tx.send(true);
        let samples = sampler.await?;
        let mut results = results?;
        Ok::<_, anyhow::Error>((results.remove(0), samples, sut.log_summary()))
    }
    .await;
    let finished = sut.finish().await;
    let (result, samples, log) = outcome?;
    finished?;

    out.push_str(
        "| t | calls/s | errors | server RSS | peak RSS | database connections |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in &samples {
        let _ = writeln!(
            out,
            "| {} s | {} | {} | {} | {} | {} |",
            s.at.as_secs(),
            report::rate(s.calls_per_second),
            s.errors,
            mib(s.rss_kib),
            mib(s.peak_kib),
            s.db_connections
                .map_or_else(|| "–".to_owned(), |c| c.to_string())
        );
    }
    let _ = writeln!(out);
    out.push_str(report::SCENARIO_TABLE_HEAD);
    out.push_str(&report::markdown_row(
        &result,
        samples.last().map(|s| crate::server::Memory {
            rss_kib: s.rss_kib,
            peak_kib: s.peak_kib,
        }),
    ));

    let total_errors = samples
        .iter()
        .map(|s| s.errors)
        .sum::<u64>()
        .max(result.error_count());
    let rss: Vec<u64> = samples
        .iter()
        .map(|s| s.rss_kib)
        .filter(|&k| k > 0)
        .collect();
    let plateau = plateaus(&rss);
    let max_db = samples.iter().filter_map(|s| s.db_connections).max();
    let errors_ok = total_errors == 0;
    // No RSS at all: an external server, nothing to judge.
    let memory_ok = plateau.unwrap_or(rss.is_empty());
    let connections_ok = max_db.is_none_or(|c| c <= max_connections);
    let _ = writeln!(
        out,
        "\nVerdict: {}\n\n- errors: {total_errors} ({}) — must be 0: {}\n- memory: {} — the highest RSS of the last third ≤ 1.1 × the highest of the middle third + 4 MiB: {}\n- database connections: at most {} — bound {max_connections}: {}",
        if errors_ok && memory_ok && connections_ok {
            "PASS"
        } else {
            "FAIL"
        },
        report::errors(&result),
        pass(errors_ok),
        describe_memory(&rss),
        match plateau {
            Some(ok) => pass(ok),
            None if rss.is_empty() => "not measured (--target)",
            None => "FAIL (too few samples to tell: run longer or sample more often)",
        },
        max_db.map_or_else(|| "not measured".to_owned(), |c| c.to_string()),
        pass(connections_ok),
    );
    if let Some(log) = log {
        let _ = writeln!(out, "- {}", log.describe());
    }
    println!("\n{out}");
    print!("{}", report::text(&result, None));
    if let Some(path) = &opts.markdown {
        std::fs::write(path, &out)?;
        println!("written to {}", path.display());
    }
    Ok(errors_ok && memory_ok && connections_ok)
}

fn pass(ok: bool) -> &'static str {
    if ok { "pass" } else { "FAIL" }
}

fn describe_memory(rss: &[u64]) -> String {
    match (rss.first(), rss.iter().max(), rss.last()) {
        (Some(first), Some(max), Some(last)) => format!(
            "RSS {} at the start, {} at the end, {} at most",
            mib(*first),
            mib(*last),
            mib(*max)
        ),
        _ => "not measured".to_owned(),
    }
}

async fn sample(
    live: Arc<Live>,
    every: Duration,
    pid: Option<u32>,
    postgres: Option<(String, String)>,
    sqlite_file: Option<PathBuf>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Sample> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut last_ok, mut last_err, mut last_at) = (0, 0, started);
    println!(
        "{:>6}  {:>9}  {:>6}  {:>10}  {:>10}  {:>8}",
        "t (s)", "calls/s", "errors", "RSS", "peak RSS", "db conns"
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => stopping = true,
            }
        }
        let now = Instant::now();
        // The run ended just after a tick: that tick was the last sample.
        if stopping && !samples.is_empty() && now - last_at < every / 2 {
            return samples;
        }
        let ok = live.ok.load(Ordering::Relaxed);
        let err = live.err.load(Ordering::Relaxed);
        let memory = pid.and_then(memory_of);
        let db_connections = match (&postgres, pid, &sqlite_file) {
            (Some((admin_url, name)), _, _) => postgres_connections(admin_url, name).await.ok(),
            (None, Some(pid), Some(file)) => sqlite_connections(pid, file),
            _ => None,
        };
        let s = Sample {
            at: now - started,
            calls_per_second: per_second(ok - last_ok, now - last_at),
            errors: err - last_err,
            rss_kib: memory.map_or(0, |m| m.rss_kib),
            peak_kib: memory.map_or(0, |m| m.peak_kib),
            db_connections,
        };
        println!(
            "{:>6}  {:>9}  {:>6}  {:>10}  {:>10}  {:>8}",
            s.at.as_secs(),
            report::rate(s.calls_per_second),
            s.errors,
            mib(s.rss_kib),
            mib(s.peak_kib),
            s.db_connections
                .map_or_else(|| "–".to_owned(), |c| c.to_string())
        );
        // The first tick fires at once: a baseline (RSS after seeding).
        samples.push(s);
        (last_ok, last_err, last_at) = (ok, err, now);
        if stopping {
            return samples;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024;

    #[test]
    fn memory_that_levels_off_plateaus() {
        let rss = [20, 30, 38, 40, 41, 40, 41, 42, 41, 42, 41, 42].map(|m| m * MB);
        assert_eq!(plateaus(&rss), Some(true));
    }

    #[test]
    fn memory_that_keeps_growing_does_not_plateau() {
        let rss = [20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130].map(|m| m * MB);
        assert_eq!(plateaus(&rss), Some(false));
    }

    #[test]
    fn small_wobbles_within_four_mib_are_noise() {
        let rss = [10, 10, 10, 10, 10, 10, 13, 13, 13].map(|m| m * MB);
        assert_eq!(plateaus(&rss), Some(true));
    }

    #[test]
    fn too_few_samples_cannot_be_judged() {
        assert_eq!(plateaus(&[1, 2, 3, 4, 5]), None);
    }
}
