//! The unit's tamper-evident audit log: `<storage.dir>/audit.log`, append-only, one entry a line:
//! `<sha256 hex of the body> <body JSON>`, where the body is
//! `{"n":…,"at":…,"kind":…,"details":…,"prev":<hash of entry n-1>}` (the first entry's `prev` is
//! 64 zeros). Editing an entry breaks its hash; removing one breaks the next entry's `n` and
//! `prev`; editing and re-hashing one breaks the next `prev`. Only a cut-off tail is invisible on
//! the unit itself: each entry is also published (`<prefix>/<id>/audit`, QoS 1), so whoever
//! receives them holds the head. `platecam audit verify` checks a log.
//!
//! The log is bounded on the card: past `ROTATE_AT` bytes it is renamed `audit.log.1` (older ones
//! shift up to `audit.log.<KEEP>`, the oldest is deleted) and the chain goes on in a fresh
//! `audit.log`: its first entry continues `n` and `prev`. Verifying reads the kept files oldest
//! first as one chain, which then starts at the first entry still kept.
//!
//! Events: start (sha256 of the effective config), keys made and destroyed, expiries and
//! evictions (counts), an outbox moved aside, recovered or migrated, mode and hotlist changes
//! (`record`, for any stage). Never plate texts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

pub const FILE: &str = "audit.log";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Entries waiting for the publisher; past it they are only in the file (the next published
/// entry's `n` shows the gap).
const QUEUE: usize = 256;
/// Size at which the log rotates, and how many rotated files are kept: at most 20 MiB in all,
/// about 100,000 entries (years of a unit's events).
const ROTATE_AT: u64 = 4 << 20;
const KEEP: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path}: the entry at line {line} breaks the chain: {reason}")]
    Broken {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub n: u64,
    pub at: String,
    pub kind: String,
    pub details: serde_json::Value,
    pub prev: String,
}

/// What a verified log holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Files read (the rotated ones, oldest first, then the log itself).
    pub files: usize,
    /// Number of the first entry kept (0 unless older ones were rotated out).
    pub first: u64,
    pub entries: u64,
    /// Hash of the last entry (compare with the last one published).
    pub head: String,
}

struct Log {
    path: PathBuf,
    file: File,
    /// Bytes in `file`, and the size at which it rotates.
    bytes: u64,
    rotate_at: u64,
    next: u64,
    head: String,
    tx: mpsc::Sender<Vec<u8>>,
    /// Until the publisher takes it: entries queue from the start, so `start` is published too.
    rx: Option<mpsc::Receiver<Vec<u8>>>,
}

static LOG: OnceLock<Mutex<Option<Log>>> = OnceLock::new();

fn slot() -> &'static Mutex<Option<Log>> {
    LOG.get_or_init(|| Mutex::new(None))
}

/// Opens (or starts) the log at `<dir>/audit.log` for `record`, after checking its chain: a
/// broken chain is reported (logged as an error) and a new chain is not started over it; the
/// next entries chain on the last line as it is.
pub fn open(dir: &Path) -> Result<(), AuditError> {
    let log = Log::open(dir, ROTATE_AT)?;
    *slot().lock().unwrap_or_else(|e| e.into_inner()) = Some(log);
    Ok(())
}

impl Log {
    fn open(dir: &Path, rotate_at: u64) -> Result<Log, AuditError> {
        let path = dir.join(FILE);
        let io_err = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let (next, head) = match verify(&path) {
            Ok(v) => (v.first + v.entries, v.head),
            Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                (0, GENESIS.to_string())
            }
            Err(e @ AuditError::Broken { .. }) => {
                tracing::error!(error = %e, "the audit log does not verify; appending after its last entry");
                last_entry(&path).map_err(io_err)?
            }
            Err(e) => return Err(e),
        };
        let file = open_append(&path).map_err(io_err)?;
        let bytes = file.metadata().map_err(io_err)?.len();
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok(Log {
            path,
            file,
            bytes,
            rotate_at,
            next,
            head,
            tx,
            rx: Some(rx),
        })
    }

    /// Appends an event (synced) and rotates the file once it is full; returns the entry as
    /// published.
    fn append(&mut self, kind: &str, details: serde_json::Value) -> Option<Vec<u8>> {
        let entry = Entry {
            n: self.next,
            at: crate::wire::rfc3339_ms(SystemTime::now()),
            kind: kind.into(),
            details,
            prev: self.head.clone(),
        };
        let body = serde_json::to_string(&entry).ok()?;
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        let line = format!("{hash} {body}\n");
        let written = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, kind, "cannot append to the audit log");
            return None;
        }
        self.bytes += line.len() as u64;
        self.next += 1;
        self.head = hash.clone();
        if self.bytes >= self.rotate_at {
            match self.rotate() {
                Ok(()) => self.bytes = 0,
                // Keeps appending to the full file; the next entry tries again.
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the audit log")
                }
            }
        }
        serde_json::to_vec(&serde_json::json!({ "hash": hash, "entry": entry })).ok()
    }

    /// `audit.log.<k>` -> `.<k+1>` (the oldest is replaced), `audit.log` -> `.1`, a fresh
    /// `audit.log`; the directory is synced so a power cut leaves one of the two states.
    fn rotate(&mut self) -> std::io::Result<()> {
        for k in (1..KEEP).rev() {
            let from = rotated(&self.path, k);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, k + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `<log>.<k>`: the k-th newest rotated file.
fn rotated(path: &Path, k: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

/// The entries recorded since the log was opened, as published (`{"hash":…,"entry":…}`), for
/// the publisher; `None` when no log is open or they were taken already.
pub fn subscribe() -> Option<mpsc::Receiver<Vec<u8>>> {
    slot()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|log| log.rx.take())
}

/// Appends an event (synced). A no-op when no log is open (tools, tests). A failed write is
/// logged, never a reason to stop a stage.
pub fn record(kind: &str, details: serde_json::Value) {
    let mut guard = slot().lock().unwrap_or_else(|e| e.into_inner());
    let Some(log) = guard.as_mut() else {
        return;
    };
    if let Some(payload) = log.append(kind, details) {
        // A full queue (or no publisher): the entry is in the file; the gap in `n` shows.
        let _ = log.tx.try_send(payload);
    }
}

/// Checks the chain of the log at `path` and of its rotated files beside it (oldest first);
/// names the first entry that breaks it. Where rotated files are kept the chain starts at the
/// oldest entry kept; a lone `audit.log` must start at entry 0 (`prev` of 64 zeros).
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let mut files: Vec<PathBuf> = (1..=KEEP)
        .rev()
        .map(|k| rotated(path, k))
        .filter(|p| p.exists())
        .collect();
    files.push(path.to_path_buf());
    let mut chain: Option<(u64, String)> = None;
    let mut first = 0;
    let mut entries = 0u64;
    for file_path in &files {
        let file = File::open(file_path).map_err(|source| AuditError::Io {
            path: file_path.clone(),
            source,
        })?;
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let broken = |reason: String| AuditError::Broken {
                path: file_path.clone(),
                line: i + 1,
                reason,
            };
            let line = line.map_err(|source| AuditError::Io {
                path: file_path.clone(),
                source,
            })?;
            let (hash, body) = line
                .split_once(' ')
                .ok_or_else(|| broken("not `<hash> <entry>`".into()))?;
            if hex::encode(Sha256::digest(body.as_bytes())) != hash {
                return Err(broken(
                    "its hash does not match its content (edited)".into(),
                ));
            }
            let entry: Entry =
                serde_json::from_str(body).map_err(|e| broken(format!("not an entry: {e}")))?;
            let (want_n, want_prev) = match &chain {
                Some((n, prev)) => (*n, prev.clone()),
                // The first entry kept starts the chain where rotation deleted older files; a
                // log with no rotated file beside it must start at entry 0.
                None if entry.n > 0 && files.len() > 1 => {
                    first = entry.n;
                    (entry.n, entry.prev.clone())
                }
                None => (0, GENESIS.to_string()),
            };
            if entry.n != want_n {
                return Err(broken(format!(
                    "numbered {} where {want_n} was expected (entries removed or reordered)",
                    entry.n
                )));
            }
            if entry.prev != want_prev {
                return Err(broken(
                    "does not chain on the entry before it (removed or edited)".into(),
                ));
            }
            chain = Some((entry.n + 1, hash.to_string()));
            entries += 1;
        }
    }
    Ok(Verified {
        files: files.len(),
        first,
        entries,
        head: chain.map_or_else(|| GENESIS.to_string(), |(_, head)| head),
    })
}

/// The number after and the hash of the last line, as they are (for a log that does not verify).
fn last_entry(path: &Path) -> std::io::Result<(u64, String)> {
    let text = std::fs::read_to_string(path)?;
    let last = text.lines().rev().find_map(|line| {
        let (hash, body) = line.split_once(' ')?;
        let entry: Entry = serde_json::from_str(body).ok()?;
        Some((entry.n + 1, hash.to_string()))
    });
    Ok(last.unwrap_or((0, GENESIS.to_string())))
}

/// sha256 of the effective configuration, for the `start` entry.
pub fn config_hash(config: &impl Serialize) -> String {
    let text = toml::to_string(config).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_rotates_keeps_one_chain_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        // About 13 entries a file: 200 entries rotate 15 times.
        let rotate_at = 2000;
        let mut log = Log::open(dir.path(), rotate_at).expect("open");
        for i in 0..200 {
            assert!(log
                .append("expired", serde_json::json!({ "reads": i }))
                .is_some());
        }
        assert!(rotated(&path, KEEP).exists() && !rotated(&path, KEEP + 1).exists());
        let v = verify(&path).expect("the kept files verify as one chain");
        assert_eq!((v.files, v.first + v.entries), (KEEP + 1, 200));
        assert!(v.first > 0, "older entries were rotated out: {v:?}");
        let total: u64 = (1..=KEEP)
            .map(|k| rotated(&path, k))
            .chain([path.clone()])
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        assert!(
            total <= (KEEP as u64 + 1) * (rotate_at + 200),
            "{total} bytes"
        );

        // A restart goes on with the same chain.
        drop(log);
        let mut log = Log::open(dir.path(), rotate_at).expect("reopen");
        log.append("start", serde_json::json!({}));
        let after = verify(&path).expect("verifies after a restart");
        assert_eq!(after.first + after.entries, 201);

        // A rotated file removed from the middle breaks the chain; so does removing them all.
        std::fs::remove_file(rotated(&path, 2)).expect("remove a rotated file");
        assert!(matches!(verify(&path), Err(AuditError::Broken { .. })));
        for k in 1..=KEEP {
            let _ = std::fs::remove_file(rotated(&path, k));
        }
        assert!(matches!(verify(&path), Err(AuditError::Broken { .. })));
    }
}
