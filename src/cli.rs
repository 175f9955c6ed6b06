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
use clap::CommandFactory as _;
use secrecy::SecretString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

mod backup;

use crate::{
    app::{self, Application},
    config::{
        Cli, Command, CreateAdminArgs, HealthcheckArgs, KeysCommand, LogArgs, MigrateArgs,
        RotateArgs, ServeArgs,
    },
    domain::{
        accounts,
        clock::{Clock as _, SystemClock},
        error::Error,
        password::{Hasher, PasswordPolicy},
        tokens,
    },
    proto::FILE_DESCRIPTOR_SET,
    store, telemetry,
};

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::CreateAdmin(args) => create_admin(args).await,
        Command::DescriptorSet => descriptor_set(),
        Command::Healthcheck(args) => healthcheck(args).await,
        Command::Keys(KeysCommand::Rotate(args)) => rotate_keys(args).await,
        Command::Backup(args) => backup::run(args).await,
    }
}

async fn rotate_keys(mut args: RotateArgs) -> ExitCode {
    init_logs(&args.log);
    args.encryption
        .read_key_from_environment()
        .unwrap_or_else(|e| settings_error(e));
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

/// A setting that is wrong in combination: reported the way clap reports a
/// single bad value, with exit code 2.
fn settings_error(message: impl std::fmt::Display) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

fn init_logs(log: &LogArgs) {
    if let Err(e) = telemetry::init(log) {
        settings_error(e);
    }
}

fn failed(e: &anyhow::Error) -> ExitCode {
    tracing::error!(error = format!("{e:#}"), "failed");
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

async fn serve(mut args: ServeArgs) -> ExitCode {
    init_logs(&args.log);
    args.encryption
        .read_key_from_environment()
        .unwrap_or_else(|e| settings_error(e));
    survive_file_size_limit();
    let config = args.into_config().unwrap_or_else(|e| settings_error(e));
    let app = match Application::build(config, Arc::new(SystemClock)).await {
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

async fn migrate(args: MigrateArgs) -> ExitCode {
    init_logs(&args.log);
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

async fn create_admin(args: CreateAdminArgs) -> ExitCode {
    init_logs(&args.log);
    let cost = args.hashing().unwrap_or_else(|e| settings_error(e));
    let password = match admin_password(args.password_stdin) {
        Ok(p) => p,
        Err(e) => settings_error(format!("{e:#}")),
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

async fn healthcheck(args: HealthcheckArgs) -> ExitCode {
    let tls = args.tls.files().unwrap_or_else(|e| settings_error(e));
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
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("unhealthy: {e:#}");
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

async fn grpc_serving(listen: SocketAddr, tls_cert: Option<Vec<u8>>) -> anyhow::Result<()> {
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
        .with_context(|| format!("cannot connect to {addr}"))?;
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
    Ok(())
}

/// `GET /readyz` on the side port, over plain HTTP/1.0.
async fn http_ready(http_listen: SocketAddr) -> anyhow::Result<()> {
    let addr = dialable(http_listen);
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
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
    Ok(())
}
