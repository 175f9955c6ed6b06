//! Copies of a SQLite database that are whole on their own, taken while
//! servers keep writing to it.
//!
//! `VACUUM INTO` reads the database in one read transaction (in WAL mode a
//! reader neither waits for nor blocks the writer) and writes a fresh,
//! compacted database with no log of its own: a consistent snapshot, unlike
//! a copy of the file, which misses what is still in `-wal` and may be torn
//! by a write during the copy.

use std::{
    ffi::OsString,
    io::ErrorKind,
    path::{Path, PathBuf},
    str::FromStr as _,
    time::Duration,
};

use sea_orm::{
    ConnectOptions, ConnectionTrait as _, Database, DatabaseConnection, DbBackend, DbErr,
    RuntimeErr, Statement, sqlx::sqlite::SqliteConnectOptions,
};

/// A backup written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The database file that was copied.
    pub source: PathBuf,
    /// Where the copy is, absolute.
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("there is no database at {0}")]
    NoSource(PathBuf),
    #[error("the database is in memory: there is no file to back up")]
    InMemory,
    #[error("{0} already exists")]
    Exists(PathBuf),
    #[error("{0} is a directory")]
    IsDirectory(PathBuf),
    #[error("there is no directory {0}")]
    NoDirectory(PathBuf),
    #[error("{0} is the database itself, or one of its files")]
    IsSource(PathBuf),
    #[error("{0} is not valid UTF-8, which SQLite needs of a file name")]
    NotUtf8(PathBuf),
    #[error("cannot write {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Database(#[from] DbErr),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |error| BackupError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Opens the database to back up as it is: unlike `store::connect`, it
/// neither creates a missing file (the default URL says `mode=rwc`), nor
/// sets the journal mode, nor migrates. Waits for a lock at most `timeout`.
pub async fn open_source(url: &str, timeout: Duration) -> Result<DatabaseConnection, BackupError> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(BackupError::InMemory);
    }
    let parsed = SqliteConnectOptions::from_str(url)
        .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e.into())))?;
    let file = parsed.get_filename().to_owned();
    if !tokio::fs::try_exists(&file).await.unwrap_or(false) {
        return Err(BackupError::NoSource(file));
    }
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(timeout)
        .acquire_timeout(timeout)
        .max_connections(1)
        .min_connections(0)
        .test_before_acquire(false)
        .map_sqlx_sqlite_opts(move |o| o.create_if_missing(false).busy_timeout(timeout));
    Ok(Database::connect(options).await?)
}

/// Closes the connection `open_source` made. Plainly: the explicit
/// checkpoint of `store::close` would hold off the writers of a server
/// running on the same file. When no server is, SQLite folds in and removes
/// the log this connection opened.
pub async fn close_source(db: DatabaseConnection) -> Result<(), DbErr> {
    db.close().await
}

/// Writes a consistent copy of the SQLite database `db` to `target`, which
/// must not exist unless `replace`. The copy is written next to `target`
/// under a hidden name, flushed to disk, then renamed into place, so that
/// `target` is either absent or a whole database, whatever happens midway.
pub async fn backup_sqlite(
    db: &DatabaseConnection,
    target: &Path,
    replace: bool,
) -> Result<Backup, BackupError> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return Err(DbErr::Custom("not a SQLite database".to_owned()).into());
    }
    let source = super::main_file(db).await?.ok_or(BackupError::InMemory)?;
    let (path, directory) = check_target(&source, target, replace).await?;
    let partial = partial_path(&path);
    match tokio::fs::remove_file(&partial).await {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io(&partial)(e)),
        _ => {}
    }
    let written = async {
        let name = partial
            .to_str()
            .ok_or_else(|| BackupError::NotUtf8(path.clone()))?;
        // A bound parameter: the path reaches SQLite as a value, never as
        // SQL, whatever quotes it holds. It is absolute, so SQLite cannot
        // take it for a `file:` URI.
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "VACUUM INTO ?",
            [name.into()],
        ))
        .await?;
        sync(&partial).await?;
        move_into_place(&partial, &path, replace).await?;
        #[cfg(unix)]
        sync(&directory).await?;
        let bytes = tokio::fs::metadata(&path).await.map_err(io(&path))?.len();
        Ok(Backup {
            source: source.clone(),
            path: path.clone(),
            bytes,
        })
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    written
}

/// `target` made absolute, and its directory, once it is known to be a
/// place a backup may go.
async fn check_target(
    source: &Path,
    target: &Path,
    replace: bool,
) -> Result<(PathBuf, PathBuf), BackupError> {
    let absolute = std::path::absolute(target).map_err(io(target))?;
    let (Some(directory), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(BackupError::IsDirectory(absolute));
    };
    if !tokio::fs::metadata(directory)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        return Err(BackupError::NoDirectory(directory.to_owned()));
    }
    let directory = tokio::fs::canonicalize(directory)
        .await
        .map_err(io(directory))?;
    let path = directory.join(name);
    // Through links too: `--force` must never replace the database.
    let resolved = tokio::fs::canonicalize(&path)
        .await
        .unwrap_or_else(|_| path.clone());
    let source = tokio::fs::canonicalize(source)
        .await
        .unwrap_or_else(|_| source.to_owned());
    if database_files(&source).contains(&resolved) {
        return Err(BackupError::IsSource(path));
    }
    match tokio::fs::symlink_metadata(&path).await {
        Ok(m) if m.is_dir() => Err(BackupError::IsDirectory(path)),
        Ok(_) if !replace => Err(BackupError::Exists(path)),
        _ => Ok((path, directory)),
    }
}

/// The database file and the files SQLite keeps next to it.
fn database_files(file: &Path) -> [PathBuf; 4] {
    let with = |suffix: &str| {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [
        file.to_owned(),
        with("-wal"),
        with("-shm"),
        with("-journal"),
    ]
}

/// Where the copy is written before it takes its name: hidden, in the same
/// directory (a rename within one file system is atomic), and per process.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.partial", std::process::id()));
    path.with_file_name(name)
}

/// Flushes a file, or a directory's entries, to disk.
async fn sync(path: &Path) -> Result<(), BackupError> {
    tokio::fs::File::open(path)
        .await
        .map_err(io(path))?
        .sync_all()
        .await
        .map_err(io(path))
}

/// Renames `partial` to `path`; without `replace`, a hard link first, which
/// fails if `path` appeared meanwhile instead of replacing it.
async fn move_into_place(partial: &Path, path: &Path, replace: bool) -> Result<(), BackupError> {
    if !replace {
        match tokio::fs::hard_link(partial, path).await {
            Ok(()) => return tokio::fs::remove_file(partial).await.map_err(io(partial)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(path.to_owned()));
            }
            // A file system without hard links: one more look, then rename.
            Err(_) => {
                if tokio::fs::try_exists(path).await.unwrap_or(true) {
                    return Err(BackupError::Exists(path.to_owned()));
                }
            }
        }
    }
    tokio::fs::rename(partial, path).await.map_err(io(path))
}

#[cfg(test)]
mod tests {
    use sea_orm::ConnectionTrait as _;

    use super::*;

    async fn database(dir: &Path) -> (DatabaseConnection, PathBuf) {
        let file = dir.join("source.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let db = crate::store::connect(&url, Duration::from_secs(5))
            .await
            .unwrap();
        db.execute_unprepared("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('a'), ('b');")
            .await
            .unwrap();
        (db, file)
    }

    async fn rows(file: &Path) -> i64 {
        let url = format!("sqlite://{}?mode=ro", file.display());
        let db = Database::connect(url.as_str()).await.unwrap();
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT COUNT(*) FROM t",
            ))
            .await
            .unwrap()
            .unwrap();
        let n = row.try_get_by_index(0).unwrap();
        db.close().await.unwrap();
        n
    }

    #[tokio::test]
    async fn a_backup_holds_what_is_still_only_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (db, file) = database(dir.path()).await;
        assert!(
            std::fs::metadata(crate::store::wal_path(&file))
                .unwrap()
                .len()
                > 0,
            "the rows are in the log"
        );
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("copy.db");
        let backup = backup_sqlite(&db, &target, false).await.unwrap();
        assert_eq!(backup.path, std::fs::canonicalize(&target).unwrap());
        assert_eq!(backup.bytes, std::fs::metadata(&target).unwrap().len());
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            1,
            "the copy alone, nothing beside it"
        );
        assert_eq!(rows(&target).await, 2);
    }

    #[tokio::test]
    async fn a_path_with_quotes_is_a_value_not_sql() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = database(dir.path()).await;
        let target = dir.path().join("it's a \"copy\"; DROP TABLE t; --.db");
        backup_sqlite(&db, &target, false).await.unwrap();
        assert_eq!(rows(&target).await, 2);
        let left = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT COUNT(*) FROM t",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(left.try_get_by_index::<i64>(0).unwrap(), 2);
    }

    #[tokio::test]
    async fn an_existing_target_is_kept_unless_replace_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = database(dir.path()).await;
        let target = dir.path().join("copy.db");
        std::fs::write(&target, b"keep me").unwrap();
        let err = backup_sqlite(&db, &target, false).await.unwrap_err();
        assert!(matches!(err, BackupError::Exists(_)), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        backup_sqlite(&db, &target, true).await.unwrap();
        assert_eq!(rows(&target).await, 2);
    }

    #[tokio::test]
    async fn the_database_and_its_log_are_never_a_target_even_with_replace() {
        let dir = tempfile::tempdir().unwrap();
        let (db, file) = database(dir.path()).await;
        let before = std::fs::read(&file).unwrap();
        let link = dir.path().join("link.db");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&file, &link).unwrap();
        #[cfg(not(unix))]
        let link = file.clone();
        for target in [file.clone(), crate::store::wal_path(&file), link] {
            let err = backup_sqlite(&db, &target, true).await.unwrap_err();
            assert!(matches!(err, BackupError::IsSource(_)), "{err}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }

    #[tokio::test]
    async fn what_an_interrupted_backup_left_does_not_stop_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = database(dir.path()).await;
        let target = dir.path().join("copy.db");
        // SQLite refuses to write into an existing file that is not empty.
        std::fs::write(partial_path(&target), b"half a copy").unwrap();
        backup_sqlite(&db, &target, false).await.unwrap();
        assert!(!partial_path(&target).exists());
        assert_eq!(rows(&target).await, 2);
    }

    #[tokio::test]
    async fn a_missing_directory_or_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = database(dir.path()).await;
        let missing = dir.path().join("nowhere");
        let err = backup_sqlite(&db, &missing.join("copy.db"), false)
            .await
            .unwrap_err();
        assert!(matches!(&err, BackupError::NoDirectory(d) if d.ends_with("nowhere")));
        let absent = dir.path().join("absent.db");
        let url = format!("sqlite://{}?mode=rwc", absent.display());
        let err = open_source(&url, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(&err, BackupError::NoSource(f) if f.ends_with("absent.db")));
        assert!(!absent.exists(), "not created");
    }
}
