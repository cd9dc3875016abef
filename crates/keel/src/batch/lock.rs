//! One run per output: an exclusive lock held for the whole run.
//!
//! **Why an OS lock and not a pid file.** Two runs on the same output (a
//! cron job that overlapped the previous night's) would each read the same
//! checkpoint and answer the same items twice. A pid file needs guessing
//! after a crash (is that pid still us? was it reused?); an advisory lock
//! (`flock` on Unix, `LockFileEx` on Windows) belongs to the open file and
//! dies with the process, however it ends, so a lock left by a `kill -9` is
//! simply free again. The pid written into the file is only for the message.
//!
//! The lock file (`OUT.lock`) is never deleted: removing it while another
//! run waits to open it would let two runs lock two different files.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::BatchError;

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// `OUT` -> `OUT.lock`, in the same directory.
pub fn lock_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of `file` (the output or the dead-letter file) without
/// waiting: another live run holding it is [`BatchError::Locked`].
pub fn acquire(file: &Path) -> Result<RunLock, BatchError> {
    let path = lock_path(file);
    // Reported against the file it protects: a missing directory is the
    // output's problem, not the lock's.
    let io_err = |e: std::io::Error| BatchError::Output {
        path: file.to_path_buf(),
        message: format!("{e} (lock file {})", path.display()),
    };
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(BatchError::Locked {
                pid: if pid.is_empty() {
                    "?".into()
                } else {
                    pid.into()
                },
                path: file.to_path_buf(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_err(e)),
    }
    lock.set_len(0).map_err(io_err)?;
    lock.seek(SeekFrom::Start(0)).map_err(io_err)?;
    writeln!(lock, "{}", std::process::id()).map_err(io_err)?;
    Ok(RunLock { _file: lock })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_output_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let held = acquire(&out).unwrap();
        match acquire(&out) {
            Err(e @ BatchError::Locked { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "another keel batch (pid {}) is writing {}",
                    std::process::id(),
                    out.display()
                )
            ),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        // Released with its holder: taken again, the pid rewritten.
        let _again = acquire(&out).unwrap();
        let text = std::fs::read_to_string(lock_path(&out)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
    }

    #[test]
    fn the_lock_file_sits_next_to_the_file_it_protects() {
        assert_eq!(
            lock_path(Path::new("runs/out.jsonl")),
            PathBuf::from("runs/out.jsonl.lock")
        );
    }
}
