//! The identity of the SQLite database file, so a file deleted or replaced while the service
//! runs is noticed even while every write succeeds.
//!
//! SQLite keeps writing into a file that was unlinked (the open descriptors still point at the
//! old inode): commits succeed, nothing fails, and everything written since the deletion is
//! gone at the next start, which creates a new, empty file. The persistence actor therefore
//! identifies the file (device and inode) when it starts and compares the path against that
//! identity before and after every write and in every health check: one `stat(2)`, far cheaper
//! than the transaction it guards.

use std::path::{Path, PathBuf};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

/// The SQLite main database file as it was when identified: its path and the file the path
/// named then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFile {
    path: PathBuf,
    /// (device, inode) when identified; `None` when the path could not be read then (already
    /// gone), which every [`SqliteFile::check`] reports.
    identity: Option<(u64, u64)>,
}

impl SqliteFile {
    /// The main database file `db` has open, identified now. `None` for PostgreSQL and for an
    /// in-memory SQLite database (nothing on disk to lose).
    ///
    /// Errors: the database's (`PRAGMA database_list`).
    pub async fn identify<C: ConnectionTrait>(db: &C) -> Result<Option<SqliteFile>, DbErr> {
        if db.get_database_backend() != DbBackend::Sqlite {
            return Ok(None);
        }
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA database_list".to_owned(),
            ))
            .await?;
        for row in rows {
            let name: String = row.try_get_by_index(1).unwrap_or_default();
            let file: String = row.try_get_by_index(2).unwrap_or_default();
            if name == "main" && !file.is_empty() {
                let path = PathBuf::from(file);
                let identity = file_identity(&path).ok();
                return Ok(Some(SqliteFile { path, identity }));
            }
        }
        Ok(None)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok` while the path still names the file identified. `Err` with a message naming the
    /// file (for the log and `/readyz`) when it was deleted, or replaced by another file
    /// (moved away, restored from a backup, created anew by another process).
    pub fn check(&self) -> Result<(), String> {
        let path = self.path.display();
        match (self.identity, file_identity(&self.path)) {
            (Some(then), Ok(now)) if then == now => Ok(()),
            (Some(_), Ok(_)) => Err(format!(
                "the SQLite database file {path} was replaced by another file while in use: \
                 writes would go to the old file and be lost; nothing more is written until the \
                 service is restarted"
            )),
            (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "the SQLite database file {path} was deleted while in use: writes would go to \
                 the deleted file and be lost; nothing more is written until the service is \
                 restarted"
            )),
            (None, Ok(_)) => Err(format!(
                "the SQLite database file {path} was missing when the writer started"
            )),
            (_, Err(e)) => Err(format!(
                "the SQLite database file {path} cannot be checked: {e}"
            )),
        }
    }
}

/// (device, inode) of the file at `path`.
#[cfg(unix)]
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path)?;
    Ok((metadata.dev(), metadata.ino()))
}

/// Elsewhere only existence can be checked.
#[cfg(not(unix))]
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    std::fs::metadata(path).map(|_| (0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deleted_or_replaced_file_is_noticed() {
        let dir = std::env::temp_dir().join(format!(
            "agent-monitor-file-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let path = dir.join("f.db");
        let db = crate::db::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let file = SqliteFile::identify(&db).await.unwrap().unwrap();
        assert_eq!(
            file.path().canonicalize().unwrap(),
            path.canonicalize().unwrap()
        );
        file.check().unwrap();

        std::fs::remove_file(&path).unwrap();
        let gone = file.check().unwrap_err();
        assert!(gone.contains("deleted") && gone.contains("f.db"), "{gone}");

        std::fs::write(&path, b"").unwrap();
        let replaced = file.check().unwrap_err();
        assert!(replaced.contains("replaced"), "{replaced}");

        let memory = crate::db::connect("sqlite::memory:").await.unwrap();
        assert_eq!(SqliteFile::identify(&memory).await.unwrap(), None);
        drop(db);
        let _ = std::fs::remove_dir_all(dir);
    }
}
