//! The two ceilings the targets are ratios of: argon2id verify throughput on
//! as many OS threads as the server hashes with, and a bare tonic unary
//! server (Health/Check only) in a process of its own.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier as _, Version};
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::seed::{PASSWORD, precomputed_hash};

/// argon2id cost, as the server is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Cost {
    pub fn params(self) -> Result<Params> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| anyhow!("argon2 parameters: {e}"))
    }

    pub fn describe(self) -> String {
        format!(
            "m={} KiB, t={}, p={}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

pub struct Argon2Ceiling {
    pub threads: usize,
    pub verifies: u64,
    pub elapsed: Duration,
    /// Sum over the threads of each one's verifies over the time to its
    /// last completed verify: no partial verify at either end is counted.
    pub per_second: f64,
}

impl Argon2Ceiling {
    /// Milliseconds of one verify on one thread.
    pub fn ms_per_verify(&self) -> f64 {
        if self.per_second > 0.0 {
            self.threads as f64 * 1000.0 / self.per_second
        } else {
            0.0
        }
    }
}

/// The threads warden hashes on: one per core it may use.
pub fn hashing_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// `argon2::Argon2::verify_password` of the right password against one PHC
/// string, on `threads` OS threads, for `duration` after one unmeasured
/// verify each. Blocking: call it off the async workers.
pub fn argon2_ceiling(
    cost: Argon2Cost,
    threads: usize,
    duration: Duration,
) -> Result<Argon2Ceiling> {
    let phc = Arc::new(precomputed_hash(cost)?);
    let params = cost.params()?;
    let ready = Arc::new(std::sync::Barrier::new(threads + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (phc, params, ready, stop) =
                (phc.clone(), params.clone(), ready.clone(), stop.clone());
            std::thread::spawn(move || -> Result<(u64, Instant)> {
                let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                // Warm-up: page in the memory and the code.
                let _ = argon2.verify_password(PASSWORD.as_bytes(), phc.as_str());
                ready.wait();
                let mut count = 0;
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    argon2
                        .verify_password(PASSWORD.as_bytes(), phc.as_str())
                        .map_err(|e| anyhow!("argon2 verify of the right password failed: {e}"))?;
                    count += 1;
                    last = Instant::now();
                }
                Ok((count, last))
            })
        })
        .collect();
    ready.wait();
    let started = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let (mut verifies, mut per_second) = (0, 0.0);
    for handle in handles {
        let (count, last) = handle
            .join()
            .map_err(|_| anyhow!("an argon2 thread panicked"))??;
        verifies += count;
        per_second += crate::load::per_second(count, last.saturating_duration_since(started));
    }
    Ok(Argon2Ceiling {
        threads,
        verifies,
        elapsed: started.elapsed(),
        per_second,
    })
}

/// The bare unary server: tonic with grpc.health.v1 only, on a default
/// multi-thread runtime (as warden's), streams per connection capped as
/// warden caps them. Runs until killed.
pub async fn serve_echo(listen: SocketAddr) -> Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(200))
        .add_service(health)
        .serve(listen)
        .await
        .context("echo server")
}
