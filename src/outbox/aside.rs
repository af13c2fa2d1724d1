//! Moved-aside databases: `outbox.corrupt-<unix secs>` (a damaged outbox the daemon replaced) and
//! `outbox.recovered-<unix secs>` (one `platecam outbox recover` has read).
//!
//! Rule: they sit beside the outbox and count in its quota. At most `KEEP_ASIDE` are kept (the
//! oldest go first, at open), and when the outbox needs room they are deleted, oldest first, before
//! any read is evicted: they are older than anything in the outbox. Each deletion is logged.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{open_handles, Outbox, OutboxError, Record};

/// Moved-aside databases kept beside the outbox.
pub const KEEP_ASIDE: usize = 3;

const CORRUPT: &str = "outbox.corrupt-";
const RECOVERED: &str = "outbox.recovered-";

/// What `recover` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoverReport {
    /// New seqs of the reads copied into the outbox, in order.
    pub recovered: Vec<u64>,
    /// Records that could not be read: their old seq (if known) and why.
    pub unreadable: Vec<(Option<u64>, String)>,
    /// Where the moved-aside directory went once read.
    pub renamed_to: Option<PathBuf>,
    /// Reads not copied because they are older than `privacy.max_age`.
    pub expired: u64,
}

/// Moves `dir` to a fresh `outbox.corrupt-<secs>` under `parent`; returns where it went.
pub(super) fn move_aside(parent: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    let to = fresh_name(parent, CORRUPT);
    std::fs::rename(dir, &to)?;
    Ok(to)
}

/// Deletes all but the newest `keep` moved-aside databases; returns the bytes of those kept.
pub(super) fn prune(parent: &Path, keep: usize) -> u64 {
    let mut dirs = list(parent);
    let drop_n = dirs.len().saturating_sub(keep);
    for (path, bytes) in dirs.drain(..drop_n) {
        delete(&path, bytes, "more than the moved-aside databases kept");
    }
    dirs.iter().map(|d| d.1).sum()
}

/// Deletes the oldest moved-aside database; returns the bytes of those left.
pub(super) fn prune_oldest(parent: &Path) -> u64 {
    let mut dirs = list(parent);
    if !dirs.is_empty() {
        let (path, bytes) = dirs.remove(0);
        delete(&path, bytes, "the outbox needs its room");
    }
    dirs.iter().map(|d| d.1).sum()
}

fn delete(path: &Path, bytes: u64, why: &str) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {
            tracing::warn!(dir = %path.display(), bytes, reason = why, "deleted a moved-aside outbox")
        }
        Err(e) => {
            tracing::error!(dir = %path.display(), error = %e, "cannot delete a moved-aside outbox")
        }
    }
}

/// Moved-aside databases under `parent`, oldest first, with their size.
fn list(parent: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut dirs: Vec<(u64, String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let rest = name
                .strip_prefix(CORRUPT)
                .or_else(|| name.strip_prefix(RECOVERED))?;
            let secs = rest.split('.').next()?.parse().ok()?;
            Some((secs, name, e.path()))
        })
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|(_, _, path)| {
            let bytes = dir_bytes(&path);
            (path, bytes)
        })
        .collect()
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `<parent>/<prefix><secs>`, with `.N` added when a directory of that name exists.
fn fresh_name(parent: &Path, prefix: &str) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let base = parent.join(format!("{prefix}{secs}"));
    let mut path = base.clone();
    let mut n = 1;
    while path.exists() {
        path = base.with_extension(n.to_string());
        n += 1;
    }
    path
}

/// See `Outbox::recover`. sled may repair files as it opens them, so it opens a copy: the
/// moved-aside files stay as they were until everything readable was stored.
pub(super) fn recover(outbox: &Outbox, aside: &Path) -> Result<RecoverReport, OutboxError> {
    let parent = outbox.dir().parent().unwrap_or(Path::new("."));
    let io_err = |source| OutboxError::Io {
        dir: aside.to_path_buf(),
        source,
    };
    if !aside.join("db").is_file() {
        return Err(OutboxError::Missing {
            dir: aside.to_path_buf(),
        });
    }
    let work = parent.join("outbox.recovering");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(io_err)?;
    }
    copy_dir(aside, &work).map_err(io_err)?;
    // The copy is opened whatever marker it carries: it is read, not trusted.
    let _ = std::fs::remove_file(work.join(super::OPENING));
    let result = read_into(outbox, &work);
    let _ = std::fs::remove_dir_all(&work);
    let mut report = result?;
    let to = fresh_name(parent, RECOVERED);
    std::fs::rename(aside, &to).map_err(io_err)?;
    report.renamed_to = Some(to);
    Ok(report)
}

fn read_into(outbox: &Outbox, work: &Path) -> Result<RecoverReport, OutboxError> {
    let h = open_handles(work)?;
    let mut report = RecoverReport::default();
    for item in h.reads.iter() {
        let (key, value) = match item {
            Ok(kv) => kv,
            Err(e) => {
                // sled cannot go past a damaged page: what follows is unreadable.
                report
                    .unreadable
                    .push((None, format!("stopped reading: {e}")));
                break;
            }
        };
        let old_seq = super::be_u64(&key);
        let decoded = match value.first() {
            Some(&super::record::V1) => Record::decode_v1(&value),
            _ => super::record::key_id(&value)
                .ok_or_else(|| "record too short to name its data key".to_string())
                .and_then(|id| outbox.keyring.unwrap_from(&h.keys, &id))
                .and_then(|key| Record::open(&value, old_seq, key.opener())),
        };
        match decoded {
            Ok(rec) if outbox.is_expired(rec.stored_at) => report.expired += 1,
            Ok(rec) => report.recovered.push(outbox.store(rec)?.seq),
            Err(reason) => report.unreadable.push((Some(old_seq), reason)),
        }
    }
    for (key, _) in h.quarantine.iter().flatten() {
        let seq = super::be_u64(&key);
        report
            .unreadable
            .push((Some(seq), "in quarantine (did not decode)".into()));
    }
    Ok(report)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
