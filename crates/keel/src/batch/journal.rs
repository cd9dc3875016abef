//! The output file is the checkpoint.
//!
//! **Why no separate checkpoint store.** An item is finished when its line
//! is in the output (or the dead-letter) file; a second record of the same
//! fact, in redb or SQLite, could disagree with the first after a `kill -9`
//! between the two writes. With one append-only file there is nothing to
//! reconcile: each line is written with a single `write` and the file is
//! `fsync`ed after every group of lines (group commit), so a crash at any
//! instant leaves complete lines plus at most one torn, unterminated last
//! line. On
//! restart, [`recover`] reads the file, cuts the torn tail, and returns the
//! `custom_id`s already finished; the run skips them, so each `custom_id` is
//! written exactly once and nothing already answered is asked again.
//!
//! A complete (newline-terminated) line that is not JSON is not a torn
//! write; it means the file is not what we think, so the run refuses to
//! touch it rather than append to (or cut) someone else's data.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::Deserialize;

use super::BatchError;

/// What a previous run left in one file.
#[derive(Debug, Default)]
pub struct Recovered {
    /// `custom_id`s with a complete line.
    pub done: HashSet<String>,
    /// Raw input lines already dead-lettered as malformed.
    pub malformed_done: HashSet<String>,
    /// Complete lines kept.
    pub lines: u64,
    /// Bytes of a torn last line that were cut.
    pub truncated_bytes: u64,
}

#[derive(Deserialize)]
struct Key {
    #[serde(default)]
    custom_id: Option<String>,
    #[serde(default)]
    keel_raw_line: Option<String>,
}

/// Opens (creating it if needed) `path` for appending, after cutting a torn
/// last line, and reports what it already holds.
pub fn recover(path: &Path) -> Result<(File, Recovered), BatchError> {
    let io_err = |e: std::io::Error| BatchError::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if path.is_dir() {
        return Err(BatchError::Output {
            path: path.to_path_buf(),
            message: "is a directory".into(),
        });
    }
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_err)?;
    if !existed {
        // Make the new file's directory entry durable too.
        sync_parent(path);
    }
    let mut rec = Recovered::default();
    let mut reader = BufReader::new(&mut file);
    let mut offset: u64 = 0;
    let mut good_end: u64 = 0;
    let mut line_no: u64 = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            // End, or a torn write: the process died in the middle of this line.
            break;
        }
        line_no += 1;
        offset += n as u64;
        let text = String::from_utf8_lossy(&buf[..buf.len() - 1]);
        if text.trim().is_empty() {
            good_end = offset;
            continue;
        }
        // A complete line is never torn: one that does not parse means this
        // is not (only) a batch output.
        let key = serde_json::from_str::<Key>(&text).map_err(|e| BatchError::OutputCorrupt {
            path: path.to_path_buf(),
            line: line_no,
            message: format!("not a Keel batch line ({e})"),
        })?;
        rec.lines += 1;
        good_end = offset;
        if let Some(raw) = key.keel_raw_line {
            rec.malformed_done.insert(raw);
        } else if let Some(id) = key.custom_id {
            rec.done.insert(id);
        }
    }
    drop(reader);
    let len = file.metadata().map_err(io_err)?.len();
    if good_end < len {
        rec.truncated_bytes = len - good_end;
        file.set_len(good_end).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
    }
    file.seek(SeekFrom::End(0)).map_err(io_err)?;
    Ok((file, rec))
}

fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Which file a line goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The output file.
    Output,
    /// The dead-letter file.
    DeadLetter,
}

/// A write that failed: the run must stop, since nothing more can be recorded.
#[derive(Debug, Clone)]
pub struct WriteFailure {
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    pub message: String,
}

/// Appends lines from a dedicated thread, with one `fsync` per group.
pub struct Journal {
    tx: Option<mpsc::Sender<(Target, String)>>,
    thread: Option<std::thread::JoinHandle<Result<(), WriteFailure>>>,
}

struct Sink {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
}

impl Sink {
    fn flush(&mut self) -> Result<(), WriteFailure> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let fail = |e: std::io::Error| WriteFailure {
            path: self.path.clone(),
            message: e.to_string(),
        };
        self.file.write_all(&self.buf).map_err(fail)?;
        self.file.sync_data().map_err(fail)?;
        self.buf.clear();
        Ok(())
    }
}

/// Lines per group commit, at most.
const GROUP: usize = 512;

impl Journal {
    /// Starts the writer over two files opened by [`recover`].
    /// `failed` is told (once) when a write fails.
    pub fn start(
        out: (File, PathBuf),
        dead: (File, PathBuf),
        failed: tokio::sync::mpsc::UnboundedSender<WriteFailure>,
    ) -> Result<Journal, BatchError> {
        let (tx, rx) = mpsc::channel::<(Target, String)>();
        let mut sinks = [
            Sink {
                file: out.0,
                path: out.1,
                buf: Vec::new(),
            },
            Sink {
                file: dead.0,
                path: dead.1,
                buf: Vec::new(),
            },
        ];
        let thread = std::thread::Builder::new()
            .name("keel-batch-journal".into())
            .spawn(move || {
                let result = write_loop(&rx, &mut sinks);
                if let Err(e) = &result {
                    let _ = failed.send(e.clone());
                }
                result
            })
            .map_err(|e| BatchError::Output {
                path: PathBuf::from("(journal thread)"),
                message: e.to_string(),
            })?;
        Ok(Journal {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues one line (without its newline). Durable at the next group commit.
    pub fn append(&self, target: Target, line: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((target, line));
        }
    }

    /// Writes everything queued, `fsync`s, and stops the thread.
    pub fn finish(mut self) -> Result<(), WriteFailure> {
        self.tx = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(WriteFailure {
                path: PathBuf::from("(journal thread)"),
                message: "the writer thread panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

fn write_loop(
    rx: &mpsc::Receiver<(Target, String)>,
    sinks: &mut [Sink; 2],
) -> Result<(), WriteFailure> {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut n = 0;
        while let Some((target, line)) = next.take() {
            let sink = &mut sinks[target as usize];
            sink.buf.extend_from_slice(line.as_bytes());
            sink.buf.push(b'\n');
            n += 1;
            if n < GROUP {
                next = rx.try_recv().ok();
            }
        }
        for s in sinks.iter_mut() {
            s.flush()?;
        }
    }
    Ok(())
}
