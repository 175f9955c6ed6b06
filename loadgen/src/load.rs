//! The driver: closed-loop workers, each with one call in flight at a time,
//! a warm-up that is not recorded, then a measured window (a duration or a
//! number of calls). Latencies go into HDR histograms at microsecond
//! resolution; a handful of shards keep the workers from contending on one
//! lock without giving each of a thousand workers a histogram of its own.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::{client::Failure, scenario::Worker};

/// Shards per group: more than the client's threads, so a lock is rarely
/// contended, and few enough that their histograms stay small.
const SHARDS: usize = 8;
/// Latencies above a minute are recorded as a minute.
const MAX_MICROS: u64 = 60_000_000;
/// How long workers may take to finish the call they are in once the window
/// closed (a queued login may wait for the hashing queue to drain).
const FINISH_GRACE: Duration = Duration::from_secs(60);

/// When the measured part ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Calls completing in a window of this length after the warm-up.
    After(Duration),
    /// This many calls per group, started after the warm-up.
    Requests(u64),
}

/// Calls answered since the start, warm-up included: for a soak's time series.
#[derive(Debug, Default)]
pub struct Live {
    pub ok: AtomicU64,
    pub err: AtomicU64,
}

/// Workers that are measured together: one scenario, or one side of a
/// combined run (logins and token checks at the same time).
pub struct Group {
    pub name: String,
    pub ops: &'static [&'static str],
    pub workers: Vec<Worker>,
    pub connections: usize,
    pub live: Arc<Live>,
}

impl Group {
    pub fn new(
        name: impl Into<String>,
        ops: &'static [&'static str],
        workers: Vec<Worker>,
        connections: usize,
    ) -> Self {
        Self {
            name: name.into(),
            ops,
            workers,
            connections,
            live: Arc::new(Live::default()),
        }
    }
}

/// What one group did in the measured window.
pub struct GroupResult {
    pub name: String,
    pub ops: &'static [&'static str],
    pub concurrency: usize,
    pub connections: usize,
    /// Latencies of successful calls, per operation.
    pub per_op: Vec<Histogram<u64>>,
    /// Latencies of all successful calls.
    pub total: Histogram<u64>,
    /// Failed calls by operation index and failure.
    pub errors: BTreeMap<(usize, Failure), u64>,
    pub elapsed: Duration,
    /// Calls still in flight when the grace period ended (abandoned).
    pub abandoned: usize,
}

impl GroupResult {
    pub fn ok(&self) -> u64 {
        self.total.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful calls per second.
    pub fn throughput(&self) -> f64 {
        per_second(self.ok(), self.elapsed)
    }

    pub fn error_rate(&self) -> f64 {
        per_second(self.error_count(), self.elapsed)
    }

    /// Latency quantile of successful calls, in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total.is_empty() {
            0
        } else {
            self.total.value_at_quantile(q)
        }
    }

    /// Errors summed by code and reason (over all operations).
    pub fn errors_by_kind(&self) -> BTreeMap<&Failure, u64> {
        let mut out = BTreeMap::new();
        for ((_, failure), n) in &self.errors {
            *out.entry(failure).or_default() += n;
        }
        out
    }
}

pub fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

pub fn histogram() -> Histogram<u64> {
    // Bounds and precision are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| unreachable!())
}

struct Shard {
    per_op: Vec<Histogram<u64>>,
    errors: BTreeMap<(usize, Failure), u64>,
    last_end: Option<Instant>,
}

struct Shared {
    shards: Vec<Mutex<Shard>>,
    budget: Option<u64>,
    claimed: AtomicU64,
    live: Arc<Live>,
    measure_start: Instant,
    deadline: Option<Instant>,
}

/// Runs every group at once: a warm-up of `warmup`, then the measured part.
/// Groups share the clock, so a combined run measures both sides over the
/// same window.
pub async fn drive(groups: Vec<Group>, warmup: Duration, stop: Stop) -> Result<Vec<GroupResult>> {
    let measure_start = Instant::now() + warmup;
    let (deadline, budget) = match stop {
        Stop::After(window) => (Some(measure_start + window), None),
        Stop::Requests(n) => (None, Some(n)),
    };
    let mut tasks = JoinSet::new();
    let mut metas = Vec::new();
    for group in groups {
        let shared = Arc::new(Shared {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        per_op: group.ops.iter().map(|_| histogram()).collect(),
                        errors: BTreeMap::new(),
                        last_end: None,
                    })
                })
                .collect(),
            budget,
            claimed: AtomicU64::new(0),
            live: group.live.clone(),
            measure_start,
            deadline,
        });
        let concurrency = group.workers.len();
        for (i, worker) in group.workers.into_iter().enumerate() {
            tasks.spawn(run_worker(worker, shared.clone(), i % SHARDS));
        }
        metas.push((
            group.name,
            group.ops,
            concurrency,
            group.connections,
            shared,
        ));
    }

    let mut abandoned = 0;
    match deadline {
        Some(deadline) => {
            let limit = tokio::time::Instant::from_std(deadline + FINISH_GRACE);
            loop {
                match tokio::time::timeout_at(limit, tasks.join_next()).await {
                    Ok(Some(joined)) => joined.map_err(|e| anyhow!("a worker failed: {e}"))?,
                    Ok(None) => break,
                    Err(_) => {
                        abandoned = tasks.len();
                        tasks.abort_all();
                        break;
                    }
                }
            }
        }
        None => {
            while let Some(joined) = tasks.join_next().await {
                joined.map_err(|e| anyhow!("a worker failed: {e}"))?;
            }
        }
    }

    let mut results = Vec::new();
    for (name, ops, concurrency, connections, shared) in metas {
        let mut per_op: Vec<Histogram<u64>> = ops.iter().map(|_| histogram()).collect();
        let mut errors = BTreeMap::new();
        let mut last_end: Option<Instant> = None;
        for shard in &shared.shards {
            let shard = shard.lock().map_err(|_| anyhow!("a worker panicked"))?;
            for (into, from) in per_op.iter_mut().zip(&shard.per_op) {
                into.add(from)?;
            }
            for (key, n) in &shard.errors {
                *errors.entry(key.clone()).or_default() += n;
            }
            last_end = last_end.max(shard.last_end);
        }
        let mut total = histogram();
        for h in &per_op {
            total.add(h)?;
        }
        let elapsed = match stop {
            Stop::After(window) => window,
            Stop::Requests(_) => last_end.map_or(Duration::ZERO, |end| {
                end.saturating_duration_since(shared.measure_start)
            }),
        };
        results.push(GroupResult {
            name,
            ops,
            concurrency,
            connections,
            per_op,
            total,
            errors,
            elapsed,
            abandoned,
        });
    }
    Ok(results)
}

async fn run_worker(mut worker: Worker, shared: Arc<Shared>, shard: usize) {
    loop {
        worker.prepare().await;
        let start = Instant::now();
        if shared.deadline.is_some_and(|d| start >= d) {
            break;
        }
        let counted = match shared.budget {
            Some(budget) if start >= shared.measure_start => {
                if shared.claimed.fetch_add(1, Ordering::Relaxed) >= budget {
                    break;
                }
                true
            }
            _ => false,
        };
        let (op, outcome) = worker.call().await;
        let end = Instant::now();
        let live = if outcome.is_ok() {
            &shared.live.ok
        } else {
            &shared.live.err
        };
        live.fetch_add(1, Ordering::Relaxed);
        let record = match shared.deadline {
            Some(deadline) => end >= shared.measure_start && end <= deadline,
            None => counted,
        };
        if !record {
            continue;
        }
        let Ok(mut stats) = shared.shards[shard].lock() else {
            return;
        };
        match outcome {
            Ok(()) => {
                let micros = u64::try_from((end - start).as_micros()).unwrap_or(MAX_MICROS);
                stats.per_op[op].saturating_record(micros.clamp(1, MAX_MICROS));
            }
            Err(failure) => *stats.errors.entry((op, failure)).or_default() += 1,
        }
        stats.last_end = stats.last_end.max(Some(end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_successful_calls_over_the_window() {
        let mut total = histogram();
        for _ in 0..500 {
            total.record(100).unwrap();
        }
        let result = GroupResult {
            name: "x".into(),
            ops: &["x"],
            concurrency: 1,
            connections: 1,
            per_op: vec![total.clone()],
            total,
            errors: BTreeMap::from([((0, Failure::wrong_answer("NOPE")), 7)]),
            elapsed: Duration::from_secs(2),
            abandoned: 0,
        };
        assert_eq!(result.throughput(), 250.0);
        assert_eq!(result.error_count(), 7);
        assert_eq!(result.quantile_us(0.5), 100);
    }

    #[test]
    fn latencies_are_kept_within_a_tenth_of_a_percent() {
        let mut h = histogram();
        h.record(12_345).unwrap();
        let p = h.value_at_quantile(0.5);
        assert!((12_333..=12_358).contains(&p), "{p}");
    }
}
