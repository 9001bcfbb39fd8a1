//! The lock on a SQLite data directory: one process at a time may serve
//! it or do work that must not run beside a server.
//!
//! `gatehouse serve` on SQLite takes it before it opens the database and
//! holds it for the life of the process; `copy-data` and `migrate` take it
//! for as long as they run. A second taker is refused at once, told who
//! holds it. `backup`, `keys` and `users add` do not take it: they are
//! meant to run beside the server.
//!
//! It is an advisory lock of the operating system (`flock(2)` on the file
//! `gatehouse.lock` in the data directory, as `File::try_lock` takes it),
//! so it goes away with the
//! process however the process ends: a crash or `kill -9` leaves the file
//! behind but never a held lock. The file holds the holder's description
//! (`pid N, gatehouse serve`) for the refusal message only.
//!
//! PostgreSQL deployments do not take it: several nodes share one
//! database, and may share one data directory on one host too.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "gatehouse.lock";

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock; `holder` is what it wrote down
    /// (empty when it could not be read).
    #[error("{} is in use by another Gatehouse process{}", .dir.display(), holder_suffix(.holder))]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn holder_suffix(holder: &str) -> String {
    if holder.is_empty() {
        String::new()
    } else {
        format!(" ({holder})")
    }
}

impl DataDirLock {
    /// Takes the lock on `dir` (which must exist) for `command` (how the
    /// holder is described to whoever is refused, e.g. `gatehouse serve`),
    /// without waiting.
    pub fn acquire(dir: &Path, command: &str) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        // Not truncated on open: the holder's description stays readable
        // until the lock is ours.
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(io)?;
        if !try_lock_exclusive(&file).map_err(io)? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder: holder.trim().to_string(),
            });
        }
        let description = format!("pid {}, {command}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(description.as_bytes()))
            .map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file holds
/// it. (std's `File::try_lock` does the same from Rust 1.89; Gatehouse
/// builds with 1.85.)
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a descriptor this `File` owns and keeps open for
    // the call; no memory is shared.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Elsewhere there is no lock: Gatehouse is served from Unix hosts.
#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path(), "gatehouse serve").unwrap();
        match DataDirLock::acquire(dir.path(), "gatehouse copy-data") {
            Err(LockError::Held { dir: d, holder }) => {
                assert_eq!(d, dir.path());
                assert_eq!(
                    holder,
                    format!("pid {}, gatehouse serve", std::process::id())
                );
            }
            other => panic!("a second holder: {other:?}"),
        }
        drop(held);
        let again = DataDirLock::acquire(dir.path(), "gatehouse copy-data").unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(
            text,
            format!("pid {}, gatehouse copy-data\n", std::process::id())
        );
        drop(again);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_holder() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nope");
        assert!(matches!(
            DataDirLock::acquire(&gone, "gatehouse serve"),
            Err(LockError::Io { .. })
        ));
    }
}
