//! A PostgreSQL cluster of a test's own (`initdb` into a temporary
//! directory, a free port, its own socket directory), so that a test can
//! stop and start it without disturbing the machine's shared server.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use tokio::process::Command;

pub struct PostgresCluster {
    bin: PathBuf,
    /// PostgreSQL refuses to run as root: then it runs as this user.
    run_as: Option<String>,
    port: u16,
    // Dropped last: the cluster is stopped first.
    dir: tempfile::TempDir,
}

impl PostgresCluster {
    /// A running cluster. The tests that need one are `#[ignore]`d (with
    /// the reason "needs PostgreSQL server binaries"), so that a machine
    /// without the binaries says it skipped them; once asked to run
    /// (`--include-ignored`, as CI does), a missing piece is a failure.
    pub async fn start() -> Self {
        let bin = server_binaries().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server binaries (initdb, pg_ctl) in PATH, in \
                 WARDEN_TEST_PG_BIN or under /usr/lib/postgresql/*/bin"
            )
        });
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = if root {
            assert!(
                user_exists("postgres").await,
                "running as root and there is no `postgres` user to run PostgreSQL"
            );
            Some("postgres".to_owned())
        } else {
            None
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        if let Some(user) = &run_as {
            let (uid, gid) = ids_of(user).await;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("address").port()
        };
        let cluster = Self {
            bin,
            run_as,
            port,
            dir,
        };
        let data = cluster.data_dir();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    path_str(&data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            )
            .await;
        cluster.start_again().await;
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops at once, as a crash would: server processes killed, no
    /// checkpoint, open connections cut.
    pub async fn stop(&self) {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
        )
        .await;
    }

    /// Starts (again) on the same port and data, waiting until it accepts
    /// connections.
    pub async fn start_again(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            path_str(self.dir.path())
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .await;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => std::process::Command::new(program),
        };
        command.args(args).current_dir(self.dir.path());
        command
    }

    async fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = Command::from(self.command(program, args))
            .output()
            .await
            .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command(
                "pg_ctl",
                &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
            )
            .output();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The directory holding `initdb` and `pg_ctl`.
fn server_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("WARDEN_TEST_PG_BIN").map(PathBuf::from) {
        return has_both(&dir).then_some(dir);
    }
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has_both(d))
    {
        return Some(dir);
    }
    // Debian and Ubuntu keep them out of PATH; take the newest version.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

async fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg(user)
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

async fn ids_of(user: &str) -> (u32, u32) {
    let id = |flag: &'static str| async move {
        let output = Command::new("id")
            .args([flag, user])
            .output()
            .await
            .expect("id runs");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<u32>()
            .expect("a numeric id")
    };
    (id("-u").await, id("-g").await)
}
