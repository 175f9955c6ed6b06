use std::process::ExitCode;

use clap::Parser;
use warden::{cli, config::Cli};

#[tokio::main]
async fn main() -> ExitCode {
    cli::run(Cli::parse()).await
}
