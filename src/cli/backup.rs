//! `warden backup PATH`.

use std::{path::Path, process::ExitCode};

use crate::{
    config::BackupArgs,
    store::backup::{self, BackupError},
};

/// A setting this command cannot work with (PostgreSQL): the usage exit
/// code, so that a script tells "use another tool" from "it failed".
const WRONG_DATABASE: u8 = 2;

pub async fn run(args: BackupArgs, usage: &super::Usage) -> ExitCode {
    super::init_logs(&args.log, usage);
    let url = &args.database.database_url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        eprintln!(
            "error: warden backup copies SQLite databases; back up PostgreSQL with pg_dump \
             (it takes the password from PGPASSWORD or ~/.pgpass, or asks), for example:\n  {}",
            pg_dump_command(url, &args.path)
        );
        return ExitCode::from(WRONG_DATABASE);
    }
    let result = async {
        let db = backup::open_source(url, args.database.database_timeout).await?;
        let written = backup::backup_sqlite(&db, &args.path, args.force).await;
        if let Err(e) = backup::close_source(db).await {
            tracing::warn!(error = %e, "closing the database failed");
        }
        written
    }
    .await;
    match result {
        Ok(done) => {
            println!(
                "backed up {} to {} ({} bytes)",
                done.source.display(),
                done.path.display(),
                done.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let advice = advice(&e);
            // The database's error can carry the driver's layers.
            let said = super::report::causes(std::iter::once(e.to_string()));
            eprintln!("error: {said}: {advice}");
            ExitCode::FAILURE
        }
    }
}

/// What to do about it.
fn advice(e: &BackupError) -> &'static str {
    match e {
        BackupError::NoSource(_) => "check --database-url (WARDEN_DATABASE_URL)",
        BackupError::InMemory => "point --database-url (WARDEN_DATABASE_URL) at a database file",
        BackupError::Exists(_) => "choose another path, or pass --force to replace it",
        BackupError::IsDirectory(_) => "give the path of the file to write",
        BackupError::NoDirectory(_) => "create it, or choose another path",
        BackupError::IsSource(_) | BackupError::NotUtf8(_) => "choose another path",
        BackupError::Io { .. } => {
            "check that the directory is writable and has room; nothing was written there"
        }
        BackupError::Database(_) => {
            "nothing was written; check that the database can be read, and that the target's \
             directory is writable and has room"
        }
    }
}

/// The pg_dump command for `url`, without its password (which belongs in
/// PGPASSWORD or ~/.pgpass, not in a shell history), quoted for a POSIX
/// shell.
fn pg_dump_command(url: &str, path: &Path) -> String {
    format!(
        "pg_dump --format=custom --file={} --dbname={}",
        shell_quote(&path.to_string_lossy()),
        shell_quote(&without_password(url)),
    )
}

/// `url` without a password, whether in the user info or as a parameter
/// (libpq accepts both).
fn without_password(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<the database URL without its password>".to_owned();
    };
    let _ = parsed.set_password(None);
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(key, _)| key != "password")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    parsed.to_string()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pg_dump_command_never_shows_the_password() {
        let command = pg_dump_command(
            "postgres://warden:s3cret@db.internal:5433/warden?sslmode=require&password=s3cret",
            Path::new("/backups/warden.dump"),
        );
        assert_eq!(
            command,
            "pg_dump --format=custom --file='/backups/warden.dump' \
             --dbname='postgres://warden@db.internal:5433/warden?sslmode=require'"
        );
    }

    #[test]
    fn the_pg_dump_command_keeps_a_url_without_password_as_it_is() {
        assert_eq!(
            without_password("postgresql://postgres@127.0.0.1/postgres"),
            "postgresql://postgres@127.0.0.1/postgres"
        );
    }

    #[test]
    fn quotes_in_the_path_cannot_break_out_of_the_shell_word() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
