//! Does a login with an unknown email take as long as one with a wrong
//! password? Runs a real server (in process, SQLite, default OWASP argon2
//! parameters), interleaves the two kinds of failed login, and prints their
//! median times and ratio. A timing comparison is a benchmark, not a test:
//! run it with `cargo bench --bench login_timing` on a quiet machine.

use std::{sync::Arc, time::Instant};

use chrono::Utc;
use warden::{
    app::Application,
    config::Config,
    domain::clock::ManualClock,
    proto::v1::{LoginRequest, RegisterRequest, auth_client::AuthClient},
};

const ROUNDS: usize = 200;
const PASSWORD: &str = "correct horse battery staple";

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        http_listen: "127.0.0.1:0".parse()?,
        database_url: format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        ),
        // Locking out would turn failures into cheap refusals.
        login_failure_limit: 1000,
        ..Config::default()
    };
    let app = Application::build(config, Arc::new(ManualClock::new(Utc::now()))).await?;
    let addr = app.grpc_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let mut client = AuthClient::connect(format!("http://{addr}")).await?;
    client
        .register(RegisterRequest {
            organization_name: None,
            invitation_token: String::new(),
            email: "known@example.com".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
        })
        .await?;

    let mut attempt = async |email: &str| {
        let started = Instant::now();
        let result = client
            .login(LoginRequest {
                organization_id: None,
                email: email.into(),
                password: "a wrong but long passphrase".into(),
                device: None,
            })
            .await;
        assert!(result.is_err(), "a wrong password never logs in");
        started.elapsed().as_secs_f64() * 1000.0
    };
    // Warm-up, then both kinds in turn so drift hits them alike.
    for i in 0..10 {
        attempt(&format!("warmup{i}@example.com")).await;
    }
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        unknown.push(attempt(&format!("nobody{i}@example.com")).await);
        wrong.push(attempt("known@example.com").await);
    }
    let (u, w) = (median(unknown), median(wrong));
    println!("login failure timing, {ROUNDS} rounds, default argon2id parameters");
    println!("  unknown email:  median {u:.2} ms");
    println!("  wrong password: median {w:.2} ms");
    println!("  ratio unknown/wrong: {:.3}", u / w);
    Ok(())
}
