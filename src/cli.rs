//! The commands of the `warden` binary. Exit codes: 0 success, 1 failure,
//! 2 a setting or usage error.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, FromArgMatches as _};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

mod backup;
mod report;
mod sources;

pub use report::one_line;
pub use sources::Sources;

use crate::{
    app::{self, Application},
    config::{
        Cli, Command, CreateAdminArgs, HealthcheckArgs, KeysCommand, ListKeysArgs, LogArgs,
        MigrateArgs, RotateArgs, ServeArgs,
    },
    domain::{
        accounts,
        clock::{Clock as _, SystemClock},
        error::Error,
        password::{Hasher, PasswordPolicy},
        rules::keys::KeyState,
        tokens,
    },
    proto::FILE_DESCRIPTOR_SET,
    store, telemetry,
};

/// The command line and environment of this process, then the command.
pub async fn main() -> ExitCode {
    let (cli, sources) = parse_command_line();
    run(cli, sources).await
}

/// Parses the command line and the `WARDEN_*` variables; on a bad value,
/// exits 2 with clap's message, naming the variable when the value came
/// from one.
fn parse_command_line() -> (Cli, Sources) {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    let matches = match command.try_get_matches_from_mut(&argv) {
        Ok(matches) => matches,
        Err(e) => {
            if let Some(message) =
                sources::blame_the_variable(&e, &command, &argv, |name| std::env::var_os(name))
            {
                eprint!("{message}");
                std::process::exit(2);
            }
            e.exit()
        }
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sources = Sources::of(&command, &matches);
    (cli, sources)
}

pub async fn run(cli: Cli, sources: Sources) -> ExitCode {
    let usage = Usage(sources.path.clone());
    match cli.command {
        Command::Serve(args) => serve(*args, &sources, &usage).await,
        Command::Migrate(args) => migrate(args, &usage).await,
        Command::CreateAdmin(args) => create_admin(args, &sources, &usage).await,
        Command::DescriptorSet => descriptor_set(),
        Command::Healthcheck(args) => healthcheck(args, &usage).await,
        Command::Keys(KeysCommand::Rotate(args)) => rotate_keys(args, &usage).await,
        Command::Keys(KeysCommand::List(args)) => list_keys(args, &usage).await,
        Command::Backup(args) => backup::run(args, &usage).await,
    }
}

/// The subcommand that runs (`["keys", "rotate"]`), for its usage line.
pub(crate) struct Usage(Vec<String>);

impl Usage {
    /// A setting that is wrong (in combination, or as a file): reported the
    /// way clap reports a single bad value, with the subcommand's usage
    /// and exit code 2.
    fn settings_error(&self, message: impl std::fmt::Display) -> ! {
        let mut command = Cli::command();
        command.build();
        for name in &self.0 {
            match command.find_subcommand(name) {
                Some(sub) => command = sub.clone(),
                None => break,
            }
        }
        command
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit()
    }
}

async fn rotate_keys(mut args: RotateArgs, usage: &Usage) -> ExitCode {
    init_logs(&args.log, usage);
    args.encryption
        .read_key_from_environment()
        .unwrap_or_else(|e| usage.settings_error(e));
    let kek = args.encryption.key_encryption_key;
    let result = async {
        let db =
            app::open_database(&args.database.database_url, args.database.database_timeout).await?;
        let rotated = tokens::rotate_keys(&db, SystemClock.now(), kek.as_ref()).await;
        close_database(&db).await;
        Ok::<_, anyhow::Error>(rotated?)
    }
    .await;
    match result {
        Ok(key) => {
            println!("added signing key {}", key.kid);
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `warden keys list`: one aligned line per key, newest first.
async fn list_keys(args: ListKeysArgs, usage: &Usage) -> ExitCode {
    init_logs(&args.log, usage);
    let result = async {
        let db =
            app::open_database(&args.database.database_url, args.database.database_timeout).await?;
        let listed = tokens::list_keys(&db, SystemClock.now()).await;
        close_database(&db).await;
        Ok::<_, anyhow::Error>(listed?)
    }
    .await;
    match result {
        Ok(keys) => {
            print!("{}", key_table(&keys));
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

fn key_table(keys: &[(tokens::SigningKey, KeyState)]) -> String {
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let rows: Vec<[String; 4]> = keys
        .iter()
        .map(|(key, state)| {
            [
                key.kid.clone(),
                time(key.created_at),
                state.as_str().to_owned(),
                key.retire_after.map_or_else(|| "-".to_owned(), time),
            ]
        })
        .collect();
    let header = ["KID", "CREATED", "STATE", "RETIRE AFTER"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn init_logs(log: &LogArgs, usage: &Usage) {
    if let Err(e) = telemetry::init(log) {
        usage.settings_error(e);
    }
}

/// One line on standard error, and nothing in the log: the log is for a
/// server that runs, this is why it does not.
fn failed(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", one_line(e));
    ExitCode::FAILURE
}

async fn serve(mut args: ServeArgs, sources: &Sources, usage: &Usage) -> ExitCode {
    init_logs(&args.log, usage);
    args.encryption
        .read_key_from_environment()
        .unwrap_or_else(|e| usage.settings_error(e));
    survive_file_size_limit();
    let config = args
        .into_config()
        .unwrap_or_else(|e| usage.settings_error(sources.rename(&e)));
    // Every setting is checked before the database is opened.
    let prepared = match app::preflight(&config).await {
        Ok(prepared) => prepared,
        Err(e) => usage.settings_error(sources.describe(&e)),
    };
    let app = match Application::build_prepared(config, prepared, Arc::new(SystemClock)).await {
        Ok(app) => app,
        Err(e) => return failed(&e),
    };
    tracing::info!(grpc = %app.grpc_addr(), http = %app.http_addr(), "listening");
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

/// A write past the file size limit (`ulimit -f`, RLIMIT_FSIZE) raises
/// SIGXFSZ, whose default action kills the process. Caught instead, the
/// write fails with EFBIG, the database reports it like a full disk, and
/// warden keeps serving what does not need to write.
fn survive_file_size_limit() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::from_raw(libc::SIGXFSZ)) {
            Ok(mut limit) => {
                tokio::spawn(async move {
                    while limit.recv().await.is_some() {
                        tracing::warn!(
                            "a write went past the file size limit (SIGXFSZ); the database cannot grow"
                        );
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot catch SIGXFSZ"),
        }
    }
}

/// SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

async fn migrate(args: MigrateArgs, usage: &Usage) -> ExitCode {
    init_logs(&args.log, usage);
    match app::open_database(&args.database.database_url, args.database.database_timeout).await {
        Ok(db) => {
            close_database(&db).await;
            tracing::info!("migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// A command done with the database closes it, as a stopping server does,
/// so that SQLite folds its write-ahead log into the file.
async fn close_database(db: &store::Db) {
    if let Err(e) = store::close(db).await {
        tracing::warn!(error = %e, "closing the database failed");
    }
}

async fn create_admin(args: CreateAdminArgs, sources: &Sources, usage: &Usage) -> ExitCode {
    init_logs(&args.log, usage);
    let cost = args
        .hashing()
        .unwrap_or_else(|e| usage.settings_error(sources.rename(&e)));
    let password = match admin_password(args.password_stdin) {
        Ok(p) => p,
        Err(e) => usage.settings_error(one_line(&e)),
    };
    let result = async {
        let db =
            app::open_database(&args.database.database_url, args.database.database_timeout).await?;
        let hasher = Hasher::new(cost, 1)?;
        let policy = PasswordPolicy {
            min_chars: args.password.password_min_length as usize,
        };
        let now = SystemClock.now();
        let account = accounts::NewAccount {
            email: args.email.clone(),
            password,
            display_name: args.name.clone(),
        };
        let created = accounts::create_admin(&db, &hasher, policy, account, now).await;
        close_database(&db).await;
        created.map_err(|e| match e {
            Error::EmailTaken => {
                anyhow::anyhow!("an account with email {} already exists", args.email.trim())
            }
            other => anyhow::Error::new(other),
        })
    }
    .await;
    match result {
        Ok(user) => {
            println!("created admin {} ({})", user.email, user.id);
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// From standard input (one line, its line ending removed) or from
/// `WARDEN_ADMIN_PASSWORD`; never from a flag, where it would show in `ps`.
fn admin_password(from_stdin: bool) -> anyhow::Result<SecretString> {
    if from_stdin {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read the password from standard input")?;
        let line = input.lines().next().unwrap_or_default().to_owned();
        return Ok(SecretString::from(line));
    }
    match std::env::var("WARDEN_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => Ok(SecretString::from(p)),
        _ => bail!("no password: pass --password-stdin or set WARDEN_ADMIN_PASSWORD"),
    }
}

fn descriptor_set() -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(FILE_DESCRIPTOR_SET)
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the descriptor set: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(args: HealthcheckArgs, usage: &Usage) -> ExitCode {
    let tls = args.tls.files().unwrap_or_else(|e| usage.settings_error(e));
    let check = async {
        match &tls {
            // With mTLS the gRPC port wants a client certificate the probe
            // does not have; the side port tells the same story.
            Some(files) if files.client_ca.is_some() => http_ready(args.http_listen).await,
            Some(files) => {
                let cert = tokio::fs::read(&files.cert)
                    .await
                    .with_context(|| format!("cannot read {}", files.cert.display()))?;
                grpc_serving(args.listen, Some(cert)).await
            }
            None => grpc_serving(args.listen, None).await,
        }
    };
    match tokio::time::timeout(args.timeout, check).await {
        Ok(Ok(status)) => {
            println!("{status}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("unhealthy: {}", one_line(&e));
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "unhealthy: no answer within {}",
                humantime::format_duration(args.timeout)
            );
            ExitCode::FAILURE
        }
    }
}

/// A listening address as something to connect to: "every interface"
/// becomes loopback.
fn dialable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// `SERVING`, or why not.
async fn grpc_serving(
    listen: SocketAddr,
    tls_cert: Option<Vec<u8>>,
) -> anyhow::Result<&'static str> {
    let addr = dialable(listen);
    let scheme = if tls_cert.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(Duration::from_secs(2));
    if let Some(cert) = tls_cert {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(cert)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| connect_error(addr, &e))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .context("health check failed")?
        .into_inner()
        .status();
    if status != ServingStatus::Serving {
        bail!("server reports {}", status.as_str_name());
    }
    Ok(status.as_str_name())
}

/// "cannot connect to ADDR: connection refused": the I/O error at the root
/// of a transport error, rather than its layers ("tcp connect error: tcp
/// connect error: …").
fn connect_error(addr: SocketAddr, e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return anyhow::anyhow!("cannot connect to {addr}: {}", plain_io(io));
        }
        cause = current.source();
    }
    anyhow::anyhow!("cannot connect to {addr}: {}", report::causes(chain(e)))
}

fn chain<'e>(e: &'e (dyn std::error::Error + 'static)) -> impl Iterator<Item = String> + 'e {
    std::iter::successors(Some(e), |e| e.source()).map(ToString::to_string)
}

/// An I/O error in lower case, without "(os error 111)".
fn plain_io(e: &std::io::Error) -> String {
    let text = report::causes(std::iter::once(e.to_string()));
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// `GET /readyz` on the side port, over plain HTTP/1.0: `SERVING` if it
/// answers 200.
async fn http_ready(http_listen: SocketAddr) -> anyhow::Result<&'static str> {
    let addr = dialable(http_listen);
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {}", plain_io(&e)))?;
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head = String::from_utf8_lossy(&response);
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("/readyz answered {status}");
    }
    Ok(ServingStatus::Serving.as_str_name())
}
