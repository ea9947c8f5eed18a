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

/// How long a contender waits for the holder to write its record, so that a lost race
/// still names the winner (it writes the record just after taking the lock).
const RECORD_GRACE: Duration = Duration::from_secs(2);
/// How often the record is read again meanwhile.
const RECORD_POLL: Duration = Duration::from_millis(10);

/// Whether, and by whom, a lock is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Held by this run, which recorded itself.
    By(LockHolder),
    /// Held by a process that has not recorded itself: a run that took the lock a
    /// moment ago and has not written its record yet, or a process that is not a
    /// Comind run holding the file locked. `stale` is a record left by an earlier
    /// holder that is no longer running, if one is there.
    Unrecorded {
        /// The dead earlier holder whose record is still in the file.
        stale: Option<LockHolder>,
    },
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
            LockWait::Fail => Instant::now(),
            LockWait::Timeout(d) => Instant::now() + d,
        };
        let mut delay = Duration::from_millis(50);
        // Set once the wait is over and the holder is being identified.
        let mut identify_until: Option<Instant> = None;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(io_error("lock", path, e)),
            }
            let now = Instant::now();
            if now < deadline {
                tokio::time::sleep(delay.min(deadline - now)).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                continue;
            }
            // The winner of a race writes its record just after taking the lock, so a
            // contender may read the file before it is written, or still read the
            // record of a holder that died before. Give the winner a moment; keep
            // trying the lock meanwhile, since it may also have been released.
            let until = *identify_until.get_or_insert(now + RECORD_GRACE);
            let record = read_holder(&mut file);
            match record {
                Some(holder) if !holder.is_dead() => {
                    return Err(busy(path, Held::By(holder), wait));
                }
                _ if now >= until => {
                    return Err(busy(path, Held::Unrecorded { stale: record }, wait));
                }
                _ => tokio::time::sleep(RECORD_POLL).await,
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

    /// Who holds the lock at `path` now; `None` when it is free (or the file cannot
    /// be read). Does not wait for a holder that has not recorded itself yet.
    pub fn holder(path: &Path) -> Option<Held> {
        let mut file = File::open(path).ok()?;
        match file.try_lock_shared() {
            // Free: any record is stale.
            Ok(()) => None,
            Err(_) => Some(match read_holder(&mut file) {
                Some(holder) if !holder.is_dead() => Held::By(holder),
                stale => Held::Unrecorded { stale },
            }),
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

fn busy(path: &Path, held: Held, wait: LockWait) -> Error {
    let waited = match wait {
        LockWait::Fail => String::new(),
        LockWait::Timeout(d) => format!(" (waited {})", humantime::format_duration(d)),
    };
    let message = format!("the environment is locked{waited}: {held}");
    let hint = match (&held, wait) {
        (Held::Unrecorded { .. }, _) => format!(
            "find the process with `fuser -v {}`; if it is a Comind run, wait for it to \
             finish",
            path.display()
        ),
        (Held::By(_), LockWait::Fail) => {
            "wait for that run to finish, or pass --lock-timeout to wait for it".to_string()
        }
        (Held::By(_), LockWait::Timeout(_)) => {
            "that run is still going; wait longer with a larger --lock-timeout".to_string()
        }
    };
    Error::new(ErrorKind::Conflict, message)
        .with_resource(path.display().to_string())
        .with_hint(hint)
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::By(holder) => write!(f, "another run holds it: {holder}"),
            Held::Unrecorded { stale } => {
                write!(
                    f,
                    "a process holds it but has not recorded who it is within {} (a Comind \
                     run records itself as soon as it takes the lock, so this is most \
                     likely not a Comind run)",
                    humantime::format_duration(RECORD_GRACE)
                )?;
                if let Some(stale) = stale {
                    write!(
                        f,
                        "; the record left in the file is of {stale}, which is no longer running"
                    )?;
                }
                Ok(())
            }
        }
    }
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
        match EnvironmentLock::holder(&path) {
            Some(Held::By(holder)) => assert_eq!(holder.command, "comind up"),
            other => panic!("expected the recorded holder, got {other:?}"),
        }
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
        let dead = dead_holder("comind up");
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

    /// A holder that has taken the flock but not yet written its record: the race a
    /// second run loses when both start at the same instant.
    fn locked_without_record(path: &Path) -> File {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        file.try_lock().unwrap();
        file
    }

    /// The record of a holder on this host whose process is gone.
    fn dead_holder(command: &str) -> LockHolder {
        LockHolder {
            pid: u32::MAX - 1,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            started_at: "2026-01-01T00:00:00Z".to_string(),
            command: command.to_string(),
        }
    }

    #[tokio::test]
    async fn a_loser_of_the_race_names_a_holder_that_records_itself_late() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        // The previous holder died without a clean release: its record is still there.
        let dead = dead_holder("comind down");
        std::fs::write(&path, serde_json::to_vec(&dead).unwrap()).unwrap();
        let mut winner = locked_without_record(&path);
        let (read_once_tx, read_once) = tokio::sync::oneshot::channel();
        let contender = {
            let path = path.clone();
            tokio::spawn(async move {
                let _ = read_once_tx.send(());
                EnvironmentLock::acquire(&path, "comind up", LockWait::Fail).await
            })
        };
        read_once.await.unwrap();
        // The winner writes its record only after the contender has started looking.
        tokio::task::yield_now().await;
        let me = LockHolder::current("comind up --winner");
        write_record(&mut winner, &serde_json::to_vec(&me).unwrap()).unwrap();
        let err = contender.await.unwrap().unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(text.contains("comind up --winner"), "{text}");
        assert!(text.contains(&format!("pid {}", me.pid)), "{text}");
        assert!(
            !text.contains("comind down"),
            "the dead record is not the holder: {text}"
        );
    }

    #[tokio::test]
    async fn a_holder_that_never_records_itself_is_reported_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _foreign = locked_without_record(&path);
        assert_eq!(
            EnvironmentLock::holder(&path),
            Some(Held::Unrecorded { stale: None })
        );
        let started = Instant::now();
        let err = EnvironmentLock::acquire(&path, "comind up", LockWait::Fail)
            .await
            .unwrap_err();
        assert!(started.elapsed() >= RECORD_GRACE);
        let text = err.to_string();
        assert!(text.contains("has not recorded who it is"), "{text}");
        assert!(
            err.hint().is_some_and(|h| h.contains("fuser -v")),
            "{:?}",
            err.hint()
        );
    }

    #[tokio::test]
    async fn a_lock_released_while_its_holder_is_looked_up_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let holder = locked_without_record(&path);
        let contender = {
            let path = path.clone();
            tokio::spawn(async move {
                EnvironmentLock::acquire(&path, "comind up", LockWait::Fail).await
            })
        };
        tokio::task::yield_now().await;
        drop(holder);
        assert!(contender.await.unwrap().is_ok());
    }
}
