//! The environment lock: two runs against one environment never act at once.
//!
//! The lock is an advisory `flock` on `<state>/lock`, which the kernel releases when
//! the holder exits, however it exits. The file also records who holds it (pid, host,
//! start time, command) so that a second run can say who is in the way. A run that
//! finds a holder record but takes the lock at once knows the previous holder died
//! without releasing it cleanly, and says so.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::state::io_error;
use crate::{Error, ErrorKind, Result};

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// When it took the lock (RFC 3339).
    pub started_at: String,
    /// What it runs, e.g. `comind up`.
    pub command: String,
}

impl LockHolder {
    fn current(command: &str) -> Self {
        LockHolder {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            command: command.to_string(),
        }
    }

    /// Whether the holder is known to be dead: it ran on this host and its pid no
    /// longer exists.
    pub fn is_dead(&self) -> bool {
        let here = gethostname::gethostname().to_string_lossy().into_owned();
        self.host == here && !Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (pid {} on {}, since {})",
            self.command, self.pid, self.host, self.started_at
        )
    }
}

/// What to do when another run holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once, naming the holder.
    Fail,
    /// Wait up to this long, then fail naming the holder.
    Timeout(Duration),
}

/// A held environment lock. Released on drop.
#[derive(Debug)]
pub struct EnvironmentLock {
    file: File,
    path: PathBuf,
    recovered: Option<LockHolder>,
}

impl EnvironmentLock {
    /// Takes the lock at `path` for `command`.
    ///
    /// # Errors
    /// `Conflict` naming the holder when another run holds it (after waiting, if
    /// `wait` says so); I/O errors on the lock file.
    pub async fn acquire(path: &Path, command: &str, wait: LockWait) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_error("open lock file", path, e))?;
        let deadline = match wait {
            LockWait::Fail => None,
            LockWait::Timeout(d) => Some(Instant::now() + d),
        };
        let mut delay = Duration::from_millis(50);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file);
                    match deadline {
                        Some(deadline) if Instant::now() < deadline => {
                            tokio::time::sleep(delay.min(deadline - Instant::now())).await;
                            delay = (delay * 2).min(Duration::from_secs(1));
                        }
                        _ => return Err(busy(path, holder, wait)),
                    }
                }
                Err(TryLockError::Error(e)) => return Err(io_error("lock", path, e)),
            }
        }
        // A record left behind means the previous holder never released cleanly.
        let recovered = read_holder(&mut file);
        let me = LockHolder::current(command);
        let body = serde_json::to_vec(&me)
            .map_err(|e| Error::internal(format!("cannot encode lock record: {e}")))?;
        write_record(&mut file, &body).map_err(|e| io_error("write lock file", path, e))?;
        Ok(EnvironmentLock {
            file,
            path: path.to_path_buf(),
            recovered,
        })
    }

    /// The holder whose stale lock was taken over, if the previous run died holding it.
    pub fn recovered_from(&self) -> Option<&LockHolder> {
        self.recovered.as_ref()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who holds the lock at `path` now, if anyone.
    pub fn holder(path: &Path) -> Option<LockHolder> {
        let mut file = File::open(path).ok()?;
        match file.try_lock_shared() {
            // Free: any record is stale.
            Ok(()) => None,
            Err(_) => read_holder(&mut file),
        }
    }
}

impl Drop for EnvironmentLock {
    fn drop(&mut self) {
        // Clearing the record marks a clean release; the kernel drops the flock when the
        // file closes. A failure here only makes the next run report a stale lock.
        let _ = write_record(&mut self.file, b"");
        let _ = self.file.unlock();
    }
}

fn write_record(file: &mut File, body: &[u8]) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(body)?;
    file.sync_data()
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn busy(path: &Path, holder: Option<LockHolder>, wait: LockWait) -> Error {
    let who = match &holder {
        Some(h) => format!("another run holds it: {h}"),
        None => "another run holds it".to_string(),
    };
    let waited = match wait {
        LockWait::Fail => String::new(),
        LockWait::Timeout(d) => format!(" (waited {})", humantime::format_duration(d)),
    };
    Error::new(
        ErrorKind::Conflict,
        format!("the environment is locked: {who}{waited}"),
    )
    .with_resource(path.display().to_string())
    .with_hint(match wait {
        LockWait::Fail => "wait for that run to finish, or pass --lock-timeout to wait for it",
        LockWait::Timeout(_) => "that run is still going; wait longer with a larger --lock-timeout",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_run_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = EnvironmentLock::acquire(&path, "comind up", LockWait::Fail)
            .await
            .unwrap();
        assert!(first.recovered_from().is_none());
        let err = EnvironmentLock::acquire(&path, "comind down", LockWait::Fail)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let text = err.to_string();
        assert!(text.contains("comind up"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert_eq!(
            EnvironmentLock::holder(&path).map(|h| h.command),
            Some("comind up".to_string())
        );
        drop(first);
        assert!(EnvironmentLock::holder(&path).is_none());
        let again = EnvironmentLock::acquire(&path, "comind down", LockWait::Fail)
            .await
            .unwrap();
        assert!(
            again.recovered_from().is_none(),
            "a clean release is not stale"
        );
    }

    #[tokio::test]
    async fn waiting_gets_the_lock_when_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = EnvironmentLock::acquire(&path, "comind up", LockWait::Fail)
            .await
            .unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(first);
        });
        let second = EnvironmentLock::acquire(
            &path,
            "comind up",
            LockWait::Timeout(Duration::from_secs(5)),
        )
        .await;
        assert!(second.is_ok());
        release.await.unwrap();
    }

    #[tokio::test]
    async fn a_stale_record_from_a_dead_process_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let dead = LockHolder {
            pid: u32::MAX - 1,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            started_at: "2026-01-01T00:00:00Z".to_string(),
            command: "comind up".to_string(),
        };
        std::fs::write(&path, serde_json::to_vec(&dead).unwrap()).unwrap();
        assert!(
            EnvironmentLock::holder(&path).is_none(),
            "no one holds the flock"
        );
        let lock = EnvironmentLock::acquire(&path, "comind up", LockWait::Fail)
            .await
            .unwrap();
        let recovered = lock.recovered_from().unwrap();
        assert_eq!(recovered, &dead);
        assert!(recovered.is_dead());
    }
}
