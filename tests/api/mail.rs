//! A real SMTP server for the mail tests: aiosmtpd (PyPI, installed by
//! `.ci/run`), run by `mail_sink.py` next to this file, listening on a
//! port of this machine. Warden delivers to it over a real socket; tests
//! read what it received. It can be stopped and started again on the same
//! port, which is how tests take the relay down.
//!
//! Without Python's aiosmtpd a mail test is skipped, with a note; under CI
//! (`CI=true`) it fails instead.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::io::AsyncBufReadExt as _;
use warden::{config::Config, mail::SmtpSettings};

/// One mail as the server received it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The whole message, headers and body, as sent.
    pub data: String,
    /// Sent over TLS (after STARTTLS).
    pub tls: bool,
    pub authenticated: bool,
}

impl ReceivedMail {
    pub fn head(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .or_else(|| self.data.split_once("\n\n"))
            .map_or(self.data.as_str(), |(head, _)| head)
    }

    /// The body, decoded when it travelled quoted-printable.
    pub fn body(&self) -> String {
        let raw = self
            .data
            .split_once("\r\n\r\n")
            .or_else(|| self.data.split_once("\n\n"))
            .map_or("", |(_, body)| body);
        let quoted = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        if quoted {
            decode_quoted_printable(raw)
        } else {
            raw.to_owned()
        }
    }

    /// The value of the first header `name` (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let mut lines = self.head().lines().peekable();
        while let Some(line) = lines.next() {
            if line.to_ascii_lowercase().starts_with(&prefix) {
                let mut value = line[prefix.len()..].trim().to_owned();
                while let Some(next) = lines.peek() {
                    if next.starts_with(' ') || next.starts_with('\t') {
                        value.push(' ');
                        value.push_str(next.trim());
                        lines.next();
                    } else {
                        break;
                    }
                }
                return Some(value);
            }
        }
        None
    }

    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    pub fn is_to(&self, address: &str) -> bool {
        self.rcpt_tos.iter().any(|to| to == address)
    }

    /// The one-time token the body carries (43 characters of URL-safe
    /// base64, on a line of its own or at the end of a link).
    pub fn token(&self) -> Option<String> {
        self.body().lines().find_map(|line| {
            let line = line.to_owned();
            let line = line.trim();
            let candidate = line.rsplit(['=', '/', '#']).next().unwrap_or(line);
            let candidate = candidate.to_owned();
            (candidate.len() == 43
                && candidate
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .then_some(candidate)
        })
    }
}

/// RFC 2045 quoted-printable: soft line breaks joined, `=XX` decoded.
fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// TLS and AUTH for the server.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Certificate (chain) and key files: STARTTLS offered and required.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// AUTH required with this user and password.
    pub auth: Option<(String, String)>,
}

pub struct MailSink {
    port: u16,
    options: SinkOptions,
    python: String,
    child: Option<tokio::process::Child>,
    received: Arc<Mutex<Vec<ReceivedMail>>>,
}

/// A port nobody listens on now (the OS picked it; it stays free unless
/// something else binds it meanwhile).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// A Python that has aiosmtpd: the one on PATH (CI puts its tools' first),
/// or the CI tools' own.
fn python_with_aiosmtpd() -> Option<String> {
    let mut candidates = vec!["python3".to_owned()];
    if let Ok(tools) = std::env::var("WARDEN_CI_TOOLS") {
        candidates.push(format!("{tools}/venv/bin/python3"));
    }
    candidates.push("/var/tmp/warden-ci/tools/venv/bin/python3".to_owned());
    candidates.into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/mail_sink.py")
}

impl MailSink {
    /// A plain SMTP server, started; `None` (the test skips) where
    /// aiosmtpd is missing, except under CI, where that fails the test.
    pub async fn start() -> Option<Self> {
        let mut sink = Self::stopped(SinkOptions::default())?;
        sink.up().await;
        Some(sink)
    }

    pub async fn start_with(options: SinkOptions) -> Option<Self> {
        let mut sink = Self::stopped(options)?;
        sink.up().await;
        Some(sink)
    }

    /// A server on a port of its own that is not listening yet: the relay
    /// is down until `up`.
    pub fn stopped(options: SinkOptions) -> Option<Self> {
        let Some(python) = python_with_aiosmtpd() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "CI=true but no Python with aiosmtpd: the mail tests need it (.ci/run installs it)"
                );
            }
            eprintln!(
                "skipped: no Python with aiosmtpd (pip install aiosmtpd) for the SMTP server"
            );
            return None;
        };
        Some(Self {
            port: free_port(),
            options,
            python,
            child: None,
            received: Arc::default(),
        })
    }

    /// `smtp://127.0.0.1:PORT` (with STARTTLS required when the server has
    /// TLS, and the credentials when it wants them).
    pub fn url(&self) -> String {
        let auth = match &self.options.auth {
            Some((user, password)) => format!("{user}:{password}@"),
            None => String::new(),
        };
        let tls = if self.options.tls.is_some() {
            "?tls=required"
        } else {
            ""
        };
        format!("smtp://{auth}127.0.0.1:{}{tls}", self.port)
    }

    /// Points `config` at this server, with the given CA file to trust.
    pub fn configure(&self, config: &mut Config, ca_file: Option<&std::path::Path>) {
        config.mail.smtp = Some(SmtpSettings::parse(&self.url(), ca_file).expect("SMTP URL"));
    }

    /// Starts listening (again, on the same port).
    pub async fn up(&mut self) {
        assert!(self.child.is_none(), "already up");
        let mut command = tokio::process::Command::new(&self.python);
        command
            .arg(script())
            .arg("--port")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some((cert, key)) = &self.options.tls {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some((user, password)) = &self.options.auth {
            command.args(["--user", user, "--password", password]);
        }
        let mut child = command.spawn().expect("the SMTP server starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read") {
                if line.contains("\"ready\"") {
                    return;
                }
            }
            panic!("the SMTP server exited before it listened");
        })
        .await
        .expect("the SMTP server listens");
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mail) = serde_json::from_str::<ReceivedMail>(&line) {
                    received.lock().unwrap().push(mail);
                }
            }
        });
        self.child = Some(child);
    }

    /// Stops listening; what was received stays.
    pub async fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` mails have arrived (at most `within`).
    pub async fn wait_for_count(&self, n: usize, within: Duration) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mails = self.received();
            if mails.len() >= n || tokio::time::Instant::now() >= deadline {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The first mail to `address` whose subject is `subject`, waiting for
    /// it for at most 20 s.
    pub async fn wait_for(&self, address: &str, subject: &str) -> ReceivedMail {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(mail) = self
                .received()
                .into_iter()
                .find(|m| m.is_to(address) && m.subject() == subject)
            {
                return mail;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no mail {subject:?} to {address} arrived; got {:?}",
                self.received()
                    .iter()
                    .map(|m| (m.rcpt_tos.clone(), m.subject()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The mails to `address`, after giving stragglers `settle` to arrive.
    pub async fn mails_to(&self, address: &str, settle: Duration) -> Vec<ReceivedMail> {
        tokio::time::sleep(settle).await;
        self.received()
            .into_iter()
            .filter(|m| m.is_to(address))
            .collect()
    }
}
