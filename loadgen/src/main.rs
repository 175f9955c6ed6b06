//! warden-loadgen: drives a real, separately started `warden serve` with the
//! generated tonic clients, measures throughput, latency, errors and the
//! server's memory, and compares them with two ceilings measured in the same
//! run: argon2id verify throughput, and a bare tonic unary server.
//!
//! ```text
//! warden-loadgen run validate -c 64 --duration 10s     one scenario
//! warden-loadgen suite --markdown results.md           every target of issue 7
//! warden-loadgen soak --postgres-url URL --duration 5m the soak of issue 8
//! warden-loadgen argon2                                the argon2 ceiling alone
//! ```

mod ceiling;
mod client;
mod load;
mod report;
mod runner;
mod scenario;
mod seed;
mod server;
mod soak;
mod suite;
mod sut;

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "warden-loadgen",
    version,
    about = "Load generator and benchmark suite for warden"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario on a fresh server, after the ceiling it is compared with.
    Run(Box<runner::RunOpts>),
    /// Runs the ceilings and every target of issue 7; prints a markdown table.
    Suite(Box<suite::SuiteOpts>),
    /// Runs the mixed blend for minutes and judges errors, memory and connections.
    Soak(Box<soak::SoakOpts>),
    /// Measures the argon2id verify ceiling alone.
    Argon2(Argon2Opts),
    /// The bare tonic server of the echo ceiling (started by the load generator).
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Debug, Args)]
struct Argon2Opts {
    #[arg(long, default_value_t = 19_456)]
    argon2_memory_kib: u32,
    #[arg(long, default_value_t = 2)]
    argon2_iterations: u32,
    #[arg(long, default_value_t = 1)]
    argon2_parallelism: u32,
    /// Threads [default: available parallelism, as warden hashes].
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::select! {
        outcome = execute(cli.command) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Started servers die with their handles (kill on drop); databases are
    // dropped here, whatever happened.
    server::remove_leftover_databases().await;
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether what was run passed (`soak`, and `run --strict`, can fail
/// without an error).
async fn execute(command: Command) -> Result<bool> {
    match command {
        Command::Run(opts) => runner::run(*opts).await,
        Command::Suite(opts) => suite::suite(*opts).await.map(|()| true),
        Command::Soak(opts) => soak::soak(*opts).await,
        Command::Argon2(opts) => {
            let cost = ceiling::Argon2Cost {
                memory_kib: opts.argon2_memory_kib,
                iterations: opts.argon2_iterations,
                parallelism: opts.argon2_parallelism,
            };
            let threads = opts.threads.unwrap_or_else(ceiling::hashing_threads);
            let c = tokio::task::spawn_blocking(move || {
                ceiling::argon2_ceiling(cost, threads, opts.duration)
            })
            .await??;
            println!("{}", runner::argon2_text(&c, cost));
            Ok(true)
        }
        Command::EchoServer { listen } => ceiling::serve_echo(listen).await.map(|()| true),
    }
}
