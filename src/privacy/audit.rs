//! The unit's tamper-evident audit log: `<storage.dir>/audit.log`, append-only, one entry a line:
//! `<sha256 hex of the body> <body JSON>`, where the body is
//! `{"n":…,"at":…,"kind":…,"details":…,"prev":<hash of entry n-1>}` (the first entry's `prev` is
//! 64 zeros). Editing an entry breaks its hash; removing one breaks the next entry's `n` and
//! `prev`; editing and re-hashing one breaks the next `prev`. Only a cut-off tail is invisible on
//! the unit itself: each entry is also published (`<prefix>/<id>/audit`, QoS 1), so whoever
//! receives them holds the head. `platecam audit verify` checks a log.
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
    pub entries: u64,
    /// Hash of the last entry (compare with the last one published).
    pub head: String,
}

struct Log {
    path: PathBuf,
    file: File,
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
    let path = dir.join(FILE);
    let io_err = |source| AuditError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let (next, head) = match verify(&path) {
        Ok(v) => (v.entries, v.head),
        Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            (0, GENESIS.to_string())
        }
        Err(e @ AuditError::Broken { .. }) => {
            tracing::error!(error = %e, "the audit log does not verify; appending after its last entry");
            last_entry(&path).map_err(io_err)?
        }
        Err(e) => return Err(e),
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    *slot().lock().unwrap_or_else(|e| e.into_inner()) = Some(Log {
        path,
        file,
        next,
        head,
        tx,
        rx: Some(rx),
    });
    Ok(())
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
    let entry = Entry {
        n: log.next,
        at: crate::wire::rfc3339_ms(SystemTime::now()),
        kind: kind.into(),
        details,
        prev: log.head.clone(),
    };
    let Ok(body) = serde_json::to_string(&entry) else {
        return;
    };
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    let written = writeln!(log.file, "{hash} {body}").and_then(|()| log.file.sync_data());
    if let Err(e) = written {
        tracing::error!(path = %log.path.display(), error = %e, kind, "cannot append to the audit log");
        return;
    }
    log.next += 1;
    log.head = hash.clone();
    let published = serde_json::json!({ "hash": hash, "entry": entry });
    if let Ok(payload) = serde_json::to_vec(&published) {
        // A full queue (or no publisher): the entry is in the file; the gap in `n` shows.
        let _ = log.tx.try_send(payload);
    }
}

/// Checks the chain of the log at `path`; names the first entry that breaks it.
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.into(),
        source,
    })?;
    let mut head = GENESIS.to_string();
    let mut entries = 0u64;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let broken = |reason: String| AuditError::Broken {
            path: path.into(),
            line: i + 1,
            reason,
        };
        let line = line.map_err(|source| AuditError::Io {
            path: path.into(),
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
        if entry.n != entries {
            return Err(broken(format!(
                "numbered {} where {entries} was expected (entries removed or reordered)",
                entry.n
            )));
        }
        if entry.prev != head {
            return Err(broken(
                "does not chain on the entry before it (removed or edited)".into(),
            ));
        }
        head = hash.to_string();
        entries += 1;
    }
    Ok(Verified { entries, head })
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
