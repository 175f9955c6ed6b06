use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    warden::cli::main().await
}
