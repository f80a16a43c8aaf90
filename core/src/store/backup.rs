//! Backup and restore of a data directory's database, safe while a daemon owns the store.
//!
//! # Backup
//! [`backup`] opens the database with a connection of its own (it does not take the directory
//! lock, so it works while `meshlite run` holds it), starts one read transaction and copies the
//! pages with SQLite's online backup API inside it. Under WAL the read transaction pins one
//! snapshot: the copy holds exactly the transactions committed before it started, however many
//! the daemon commits meanwhile, and the copy never restarts (a backup that let the snapshot move
//! between steps would start over after every concurrent write, and never end on a busy node).
//! The copy goes to `FILE.partial`, is switched to a rollback journal (one self-contained file),
//! checked with `PRAGMA quick_check`, fsynced and renamed to `FILE`: a crash leaves no `FILE`.
//!
//! # Restore
//! [`restore`] copies a backup into an empty data directory (holding its lock), then decides the
//! replica id (the origin of the replica's own transactions):
//! - [`OriginChoice::New`] (the default): a new random id. The restored replica keeps everything
//!   the backup held, including the old origin's transactions, and writes under its new origin.
//!   Safe in every case: the device the backup came from may still be alive (or come back), and
//!   two live replicas with one origin would hand out the same sequence numbers for different
//!   transactions, which peers would take as already held and silently drop.
//! - [`OriginChoice::Same`]: keeps the backed-up id. Only for a device that is gone for good and
//!   whose transactions after the backup reached no peer; otherwise the same collision happens.
//!
//! Peer acknowledgements (`peer_acks`) are dropped either way: they describe what peers held
//! when the backup ran, and the GC horizon is rebuilt from fresh ones. Finally the directory is
//! opened as a store (running any migrations a backup from an older version needs) and closed.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::migrations::{meta_get, meta_set};
use super::open::{DB_FILE, LOCK_FILE, REPLICA_KEY, lock_dir};
use super::{CloseError, OpenError, OpenOptions, Store};
use crate::ids::ReplicaId;

/// Pages copied per backup step (4 MiB with SQLite's default 4 KiB pages).
const PAGES_PER_STEP: i32 = 1024;
/// Retries of a step that found a database busy or locked, 10 ms apart.
const BUSY_RETRIES: u32 = 1000;

/// How far a copy is, in database pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Pages copied.
    pub done: u64,
    /// Pages in the source.
    pub total: u64,
}

/// The replica id a restored directory gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginChoice {
    /// A new random replica id (safe whether or not the backed-up replica still runs).
    New,
    /// The backed-up replica id (only when that replica is gone for good; see the module doc).
    Same,
}

/// What [`backup`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    /// The backup file.
    pub file: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The replica id of the backed-up store.
    pub replica_id: ReplicaId,
}

/// What [`restore`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// The restored data directory.
    pub data: PathBuf,
    /// The replica id the restored store runs as.
    pub replica_id: ReplicaId,
    /// The replica id recorded in the backup.
    pub backed_up_replica_id: ReplicaId,
    /// Bytes of the restored database.
    pub bytes: u64,
}

/// Error of [`backup`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The data directory has no database.
    #[error("no store in {0}: {DB_FILE} is missing; check --data / MESHLITE_DATA")]
    NoStore(String),
    /// The backup file exists already.
    #[error("{0} exists; choose a new file name (a backup never overwrites a file)")]
    Exists(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite failed while copying or checking.
    #[error("backup failed: {0}; nothing was written, retry (or check the disk)")]
    Storage(#[from] rusqlite::Error),
    /// The database is not a Meshlite store or the copy failed its check.
    #[error("backup refused: {0}")]
    Invalid(String),
}

/// Error of [`restore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The backup file is missing.
    #[error("backup file {0} does not exist")]
    NoBackup(String),
    /// The target directory holds files already.
    #[error(
        "data directory {0} is not empty; restore into a new or empty directory (nothing was changed)"
    )]
    NotEmpty(String),
    /// The file is not a Meshlite backup, or is damaged.
    #[error("{path} is not a usable Meshlite backup: {reason}; nothing was restored")]
    Invalid {
        /// The backup file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite failed while copying.
    #[error("restore failed: {0}; nothing was restored, retry (or check the disk)")]
    Storage(#[from] rusqlite::Error),
    /// The restored directory does not open as a store.
    #[error("the restored store does not open: {0}")]
    Open(#[from] OpenError),
    /// The restored store opened but did not close cleanly.
    #[error("the restored store did not close cleanly: {0}")]
    Close(#[from] CloseError),
}

/// Copies the database of `dir` to the new file `dest` (see the module doc).
pub fn backup(
    dir: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<BackupReport, BackupError> {
    let db = dir.join(DB_FILE);
    if !db.is_file() {
        return Err(BackupError::NoStore(dir.display().to_string()));
    }
    if dest.exists() {
        return Err(BackupError::Exists(dest.display().to_string()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let src = Connection::open_with_flags(&db, flags)?;
    src.busy_timeout(Duration::from_secs(5))?;
    src.execute_batch("PRAGMA query_only = 1; BEGIN")?;
    let replica = stored_replica(&src).map_err(BackupError::Invalid)?;
    let partial = partial_path(dest);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source: std::io::Error| BackupError::Io { path, source }
    };
    File::create_new(&partial).map_err(io(&partial))?;
    let copied = copy_into(&src, &partial, progress)
        .map_err(BackupError::from)
        .and_then(|()| finish_backup_file(&partial));
    if let Err(e) = copied {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    src.execute_batch("COMMIT")?;
    publish(&partial, dest).map_err(io(dest))?;
    let bytes = fs::metadata(dest).map_err(io(dest))?.len();
    Ok(BackupReport {
        file: dest.to_path_buf(),
        bytes,
        replica_id: replica,
    })
}

/// Restores the backup `src` into the empty (or missing) directory `dir` (see the module doc).
pub fn restore(
    src: &Path,
    dir: &Path,
    origin: OriginChoice,
    progress: &mut dyn FnMut(Progress),
) -> Result<RestoreReport, RestoreError> {
    if !src.is_file() {
        return Err(RestoreError::NoBackup(src.display().to_string()));
    }
    ensure_empty(dir)?;
    fs::create_dir_all(dir).map_err(|source| RestoreError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let lock = lock_dir(dir)?;
    let invalid = |reason: String| RestoreError::Invalid {
        path: src.display().to_string(),
        reason,
    };
    let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| invalid(e.to_string()))?;
    let backed_up = stored_replica(&source).map_err(invalid)?;
    quick_check(&source).map_err(invalid)?;
    let partial = partial_path(&dir.join(DB_FILE));
    let replica = match origin {
        OriginChoice::New => ReplicaId::random(),
        OriginChoice::Same => backed_up,
    };
    let copied = copy_into(&source, &partial, progress)
        .and_then(|()| adopt(&partial, &replica))
        .map_err(RestoreError::from);
    if let Err(e) = copied {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    let db = dir.join(DB_FILE);
    let io = |source| RestoreError::Io {
        path: db.display().to_string(),
        source,
    };
    publish(&partial, &db).map_err(io)?;
    let bytes = fs::metadata(&db).map_err(io)?.len();
    drop(lock);
    Store::open(dir, OpenOptions::default())?.close()?;
    Ok(RestoreReport {
        data: dir.to_path_buf(),
        replica_id: replica,
        backed_up_replica_id: backed_up,
        bytes,
    })
}

/// The replica id in `meta`, or why the database is not a Meshlite store.
fn stored_replica(conn: &Connection) -> Result<ReplicaId, String> {
    let bytes = meta_get(conn, REPLICA_KEY)
        .map_err(|e| format!("no Meshlite metadata ({e})"))?
        .ok_or_else(|| "the store has no replica id".to_owned())?;
    ReplicaId::from_slice(&bytes).ok_or_else(|| "the stored replica id is malformed".to_owned())
}

/// `PRAGMA quick_check`, as an error message unless it reports `ok`.
fn quick_check(conn: &Connection) -> Result<(), String> {
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(format!("integrity check: {verdict}"))
    }
}

/// Copies every page of `src` (in its current read transaction, if any) into the file `dest`.
fn copy_into(
    src: &Connection,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
) -> rusqlite::Result<()> {
    let mut out = Connection::open(dest)?;
    let copy = Backup::new(src, &mut out)?;
    let mut busy = 0;
    loop {
        let step = copy.step(PAGES_PER_STEP)?;
        let p = copy.progress();
        let total = u64::try_from(p.pagecount).unwrap_or_default();
        let remaining = u64::try_from(p.remaining).unwrap_or_default();
        progress(Progress {
            done: total.saturating_sub(remaining),
            total,
        });
        match step {
            StepResult::Done => break,
            StepResult::More => busy = 0,
            // Busy or Locked (transient; not expected from a pinned WAL snapshot).
            _ if busy < BUSY_RETRIES => {
                busy += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("the database stayed busy".into()),
                ));
            }
        }
    }
    Ok(())
}

/// Makes the copied file self-contained (rollback journal) and checks it.
fn finish_backup_file(path: &Path) -> Result<(), BackupError> {
    let conn = Connection::open(path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::Invalid(format!(
            "the copy stayed in {mode} journal mode"
        )));
    }
    quick_check(&conn).map_err(BackupError::Invalid)?;
    Ok(())
}

/// Gives the copied database its replica id, drops stale peer acknowledgements and puts it back
/// in WAL mode.
fn adopt(path: &Path, replica: &ReplicaId) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction()?;
    meta_set(&tx, REPLICA_KEY, &replica.0)?;
    tx.execute("DELETE FROM peer_acks", [])?;
    tx.commit()?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    Ok(())
}

/// `FILE.partial` beside `file`.
fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// fsyncs `partial`, renames it to `dest` and fsyncs the directory.
fn publish(partial: &Path, dest: &Path) -> std::io::Result<()> {
    File::open(partial)?.sync_all()?;
    fs::rename(partial, dest)?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Refuses a directory with anything but a lock file (left by an earlier failed restore).
fn ensure_empty(dir: &Path) -> Result<(), RestoreError> {
    let io = |source| RestoreError::Io {
        path: dir.display().to_string(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    for entry in entries {
        if entry.map_err(io)?.file_name() != LOCK_FILE {
            return Err(RestoreError::NotEmpty(dir.display().to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
