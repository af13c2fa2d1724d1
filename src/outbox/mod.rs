//! Outbox: the durable sled buffer every read passes through.
//!
//! **Invariant:** a read is *accepted* when `append` returns: it is in sled and sled's file has been
//! fdatasync'ed (sled's own `flush` uses `sync_file_range`, which does not survive a power cut).
//! **Invariant:** a read leaves the outbox only by `remove` (after the broker's PUBACK) or by the
//! eviction policy, which logs and counts every eviction.
//!
//! On disk (`<storage.dir>/outbox/`, a sled database): tree `reads` maps the big-endian `seq` to a
//! record (see `record`); tree `meta` holds `next_seq` and `evictions`, updated in the same
//! transaction as the record they belong to, so a seq is never reused, even after a crash.

mod record;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::config::{EvictionPolicy, StorageConfig};
use crate::wire::{CropInfo, ReadMessage};

pub use record::{Record, RECORD_VERSION};

/// sled keeps about 2-3x the live payload on disk (measured; it does not give space back), so the
/// quota is enforced on payload bytes times this factor.
pub const SPACE_AMPLIFICATION: u64 = 3;

const NEXT_SEQ: &[u8] = b"next_seq";
/// Written beside sled's files once a database opened: a directory with files but without it was
/// not made by platecam (sled itself opens some garbage as an empty database, silently).
const MARKER: &str = "PLATECAM_OUTBOX";
const EVICTIONS: &[u8] = b"evictions";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {dir}: {source}")]
    Db { dir: PathBuf, source: sled::Error },
    #[error("outbox {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("outbox {dir}: record seq {seq}: {reason}")]
    Record {
        dir: PathBuf,
        seq: u64,
        reason: String,
    },
    #[error("outbox {dir}: {reason}")]
    Unrecognised { dir: PathBuf, reason: String },
    #[error("outbox {dir}: sled panicked while opening the database")]
    OpenPanicked { dir: PathBuf },
    #[error("outbox {dir}: read of {bytes} bytes is larger than the whole quota ({quota} bytes)")]
    TooLarge {
        dir: PathBuf,
        bytes: u64,
        quota: u64,
    },
}

/// A read as stored: its wire message (with `seq` and `id` assigned) and its crop.
#[derive(Debug, Clone)]
pub struct StoredRead {
    pub seq: u64,
    pub message: ReadMessage,
    /// `None` when the crops-first eviction policy dropped it.
    pub crop: Option<Vec<u8>>,
    pub stored_at: SystemTime,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxStats {
    /// Reads stored and not yet acknowledged.
    pub count: u64,
    /// Bytes of stored records (what the quota counts, times `SPACE_AMPLIFICATION`).
    pub payload_bytes: u64,
    /// What sled really uses on disk.
    pub bytes_on_disk: u64,
    /// Reads (or crops) evicted by the policy since the outbox was created.
    pub evictions: u64,
    pub oldest_stored_at: Option<SystemTime>,
    pub next_seq: u64,
}

/// What `open` found, for the caller to report.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenOutcome {
    Opened,
    /// The old database could not be opened; it was moved here and a fresh one started.
    MovedAside {
        to: PathBuf,
        reason: String,
    },
}

pub struct Outbox {
    dir: PathBuf,
    db: sled::Db,
    reads: sled::Tree,
    meta: sled::Tree,
    /// sled's main file, kept open to fdatasync it after each flush.
    db_file: File,
    quota: StorageConfig,
    payload_bytes: AtomicU64,
    /// Crops-first policy: no read below this seq still has a crop.
    crops_from: AtomicU64,
    /// Serialises appends, so the quota check and the write see the same state.
    append_lock: Mutex<()>,
}

impl Outbox {
    /// Opens (or creates) the outbox under `cfg.dir`. A database that cannot be opened is moved
    /// aside and a fresh one started: the unit keeps reading plates, and the old files stay for a
    /// person to look at.
    pub fn open(cfg: &StorageConfig) -> Result<(Outbox, OpenOutcome), OutboxError> {
        let dir = cfg.dir.join("outbox");
        let io_err = |source| OutboxError::Io {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&cfg.dir).map_err(io_err)?;
        match Self::open_at(&dir, cfg) {
            Ok(outbox) => Ok((outbox, OpenOutcome::Opened)),
            Err(first) => {
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let aside = cfg.dir.join(format!("outbox.corrupt-{stamp}"));
                tracing::error!(
                    dir = %dir.display(), moved_to = %aside.display(), error = %first,
                    "outbox database is unreadable: moving it aside and starting a fresh one"
                );
                std::fs::rename(&dir, &aside).map_err(io_err)?;
                let outbox = Self::open_at(&dir, cfg)?;
                Ok((
                    outbox,
                    OpenOutcome::MovedAside {
                        to: aside,
                        reason: first.to_string(),
                    },
                ))
            }
        }
    }

    fn open_at(dir: &Path, cfg: &StorageConfig) -> Result<Outbox, OutboxError> {
        let db_err = |source| OutboxError::Db {
            dir: dir.to_path_buf(),
            source,
        };
        let io_err = |source| OutboxError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        check_marker(dir)?;
        // sled has been seen to panic on some damaged files; that must not take the daemon down.
        let opened = std::panic::catch_unwind(|| {
            sled::Config::new().path(dir).cache_capacity(8 << 20).open()
        })
        .map_err(|_| OutboxError::OpenPanicked {
            dir: dir.to_path_buf(),
        })?;
        let db = opened.map_err(db_err)?;
        let reads = db.open_tree("reads").map_err(db_err)?;
        let meta = db.open_tree("meta").map_err(db_err)?;
        let db_file = File::open(dir.join("db")).map_err(io_err)?;
        if !dir.join(MARKER).exists() {
            let marker = format!("platecam outbox, record format {RECORD_VERSION}\n");
            std::fs::write(dir.join(MARKER), marker).map_err(io_err)?;
        }
        let outbox = Outbox {
            dir: dir.to_path_buf(),
            db,
            reads,
            meta,
            db_file,
            quota: cfg.clone(),
            payload_bytes: AtomicU64::new(0),
            crops_from: AtomicU64::new(0),
            append_lock: Mutex::new(()),
        };
        // Decode every record once: a database whose records do not decode is as corrupt as one
        // that does not open, and the sum gives the quota its starting point.
        let mut bytes = 0u64;
        for item in outbox.reads.iter() {
            let (key, value) = item.map_err(db_err)?;
            outbox.decode(&key, &value)?;
            bytes += value.len() as u64;
        }
        outbox.payload_bytes.store(bytes, Ordering::Relaxed);
        Ok(outbox)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a read with its crop and makes it durable. Assigns `seq` and `id`, fills `crop`
    /// (`None` when `crop_jpeg` is empty).
    /// When the quota is reached, the eviction policy makes room first (logged and counted).
    pub fn append(
        &self,
        mut message: ReadMessage,
        crop_jpeg: Vec<u8>,
    ) -> Result<StoredRead, OutboxError> {
        let _guard = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        message.id = uuid::Uuid::now_v7().to_string();
        // An empty crop (one that could not be encoded) is no crop: the read goes without one.
        let crop = (!crop_jpeg.is_empty()).then_some(crop_jpeg);
        message.crop = crop.as_ref().map(|jpeg| CropInfo {
            format: "jpeg".into(),
            bytes: jpeg.len(),
            sha256: hex::encode(Sha256::digest(jpeg)),
        });
        let stored_at = SystemTime::now();
        let mut rec = Record {
            message,
            crop,
            stored_at,
        };
        // The seq goes into the encoded JSON, so encode inside the transaction once it is known;
        // the size does not depend on it by more than a few bytes, so estimate with seq 0 first.
        let estimate = rec
            .encode()
            .map_err(|reason| self.record_err(0, reason))?
            .len() as u64
            + 16;
        self.make_room(estimate)?;

        let result = (&self.reads, &self.meta).transaction(|(reads, meta)| {
            let seq = meta.get(NEXT_SEQ)?.map(|v| be_u64(&v)).unwrap_or(0);
            let mut rec = rec.clone();
            rec.message.seq = seq;
            let bytes = rec.encode().map_err(ConflictableTransactionError::Abort)?;
            reads.insert(&seq.to_be_bytes(), bytes.as_slice())?;
            meta.insert(NEXT_SEQ, &(seq + 1).to_be_bytes())?;
            Ok((seq, bytes.len() as u64))
        });
        let (seq, len) = match result {
            Ok(v) => v,
            Err(TransactionError::Abort(reason)) => return Err(self.record_err(0, reason)),
            Err(TransactionError::Storage(e)) => return Err(self.db_err(e)),
        };
        self.sync()?;
        self.payload_bytes.fetch_add(len, Ordering::Relaxed);
        rec.message.seq = seq;
        Ok(StoredRead {
            seq,
            message: rec.message,
            crop: rec.crop,
            stored_at,
        })
    }

    /// Stored reads with `seq > after`, in seq order, at most `limit`.
    pub fn pending(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredRead>, OutboxError> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for item in self.reads.range(start.to_be_bytes()..).take(limit) {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            out.push(self.decode(&key, &value)?);
        }
        Ok(out)
    }

    /// Deletes a read once the broker acknowledged it. Returns whether it was still there.
    pub fn remove(&self, seq: u64) -> Result<bool, OutboxError> {
        let old = self
            .reads
            .remove(seq.to_be_bytes())
            .map_err(|e| self.db_err(e))?;
        if let Some(v) = &old {
            self.payload_bytes
                .fetch_sub(v.len() as u64, Ordering::Relaxed);
        }
        // Not synced here: a removal lost in a crash only means the read is sent again, and the
        // consumer de-duplicates on its id.
        Ok(old.is_some())
    }

    pub fn stats(&self) -> OutboxStats {
        let oldest_stored_at = self
            .reads
            .first()
            .ok()
            .flatten()
            .and_then(|(k, v)| self.decode(&k, &v).ok())
            .map(|r| r.stored_at);
        OutboxStats {
            count: self.reads.len() as u64,
            payload_bytes: self.payload_bytes.load(Ordering::Relaxed),
            bytes_on_disk: self.db.size_on_disk().unwrap_or(0),
            evictions: self.counter(EVICTIONS),
            oldest_stored_at,
            next_seq: self.counter(NEXT_SEQ),
        }
    }

    /// Applies the eviction policy until `incoming` more bytes fit in the quota and the disk keeps
    /// its reserve.
    fn make_room(&self, incoming: u64) -> Result<(), OutboxError> {
        let budget = self.quota.max_bytes.as_u64() / SPACE_AMPLIFICATION;
        if incoming > budget {
            return Err(OutboxError::TooLarge {
                dir: self.dir.clone(),
                bytes: incoming,
                quota: budget,
            });
        }
        let mut evicted = Vec::new();
        while self.over_quota(incoming, budget) {
            let stripped = match self.quota.eviction {
                EvictionPolicy::CropsFirst => self.strip_oldest_crop()?,
                EvictionPolicy::OldestFirst => None,
            };
            match stripped {
                Some(seq) => evicted.push((seq, true)),
                None => match self.evict_oldest()? {
                    Some(seq) => evicted.push((seq, false)),
                    None => break,
                },
            }
        }
        if let (Some(first), Some(last)) = (evicted.first(), evicted.last()) {
            let crops_only = evicted.iter().filter(|e| e.1).count();
            let count = evicted.len();
            tracing::warn!(
                dir = %self.dir.display(),
                policy = ?self.quota.eviction,
                evicted = count,
                crops_only,
                first_seq = first.0,
                last_seq = last.0,
                quota_bytes = self.quota.max_bytes.as_u64(),
                "outbox quota reached: evicted reads to make room for new ones"
            );
        }
        Ok(())
    }

    fn over_quota(&self, incoming: u64, budget: u64) -> bool {
        let used = self.payload_bytes.load(Ordering::Relaxed);
        if used + incoming > budget {
            return true;
        }
        match disk_free(&self.dir) {
            Some(free) => free < self.quota.min_free_bytes.as_u64() && used > 0,
            None => false,
        }
    }

    /// Removes the crop of the oldest read that still has one; returns its seq, or `None` when
    /// no read has a crop left.
    fn strip_oldest_crop(&self) -> Result<Option<u64>, OutboxError> {
        let from = self.crops_from.load(Ordering::Relaxed);
        for item in self.reads.range(from.to_be_bytes()..) {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            let seq = be_u64(&key);
            let mut record = self.decode_record(seq, &value)?;
            // Reads before this one have no crop left: later scans start here.
            self.crops_from.store(seq, Ordering::Relaxed);
            if record.crop.is_none() {
                continue;
            }
            record.crop = None;
            record.message.crop = None;
            let bytes = record.encode().map_err(|r| self.record_err(seq, r))?;
            let freed = value.len().saturating_sub(bytes.len()) as u64;
            let seq_key = seq.to_be_bytes();
            (&self.reads, &self.meta)
                .transaction(|(reads, meta)| {
                    reads.insert(&seq_key, bytes.as_slice())?;
                    bump(meta, EVICTIONS)?;
                    Ok::<_, ConflictableTransactionError<String>>(())
                })
                .map_err(|e| self.tx_err(seq, e))?;
            self.payload_bytes.fetch_sub(freed, Ordering::Relaxed);
            return Ok(Some(seq));
        }
        Ok(None)
    }

    /// Deletes the oldest read; returns its seq, or `None` when the outbox is empty.
    fn evict_oldest(&self) -> Result<Option<u64>, OutboxError> {
        let Some((key, value)) = self.reads.first().map_err(|e| self.db_err(e))? else {
            return Ok(None);
        };
        let seq = be_u64(&key);
        let seq_key = seq.to_be_bytes();
        (&self.reads, &self.meta)
            .transaction(|(reads, meta)| {
                reads.remove(&seq_key)?;
                bump(meta, EVICTIONS)?;
                Ok::<_, ConflictableTransactionError<String>>(())
            })
            .map_err(|e| self.tx_err(seq, e))?;
        self.payload_bytes
            .fetch_sub(value.len() as u64, Ordering::Relaxed);
        Ok(Some(seq))
    }

    /// The durable commit point: sled's flush, then fdatasync of its file.
    fn sync(&self) -> Result<(), OutboxError> {
        self.db.flush().map_err(|e| self.db_err(e))?;
        self.db_file.sync_data().map_err(|source| OutboxError::Io {
            dir: self.dir.clone(),
            source,
        })
    }

    fn counter(&self, name: &[u8]) -> u64 {
        self.meta
            .get(name)
            .ok()
            .flatten()
            .map(|v| be_u64(&v))
            .unwrap_or(0)
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<StoredRead, OutboxError> {
        let seq = be_u64(key);
        let r = self.decode_record(seq, value)?;
        Ok(StoredRead {
            seq,
            message: r.message,
            crop: r.crop,
            stored_at: r.stored_at,
        })
    }

    fn decode_record(&self, seq: u64, value: &[u8]) -> Result<Record, OutboxError> {
        Record::decode(value).map_err(|reason| self.record_err(seq, reason))
    }

    fn record_err(&self, seq: u64, reason: String) -> OutboxError {
        OutboxError::Record {
            dir: self.dir.clone(),
            seq,
            reason,
        }
    }

    fn db_err(&self, source: sled::Error) -> OutboxError {
        OutboxError::Db {
            dir: self.dir.clone(),
            source,
        }
    }

    fn tx_err(&self, seq: u64, e: TransactionError<String>) -> OutboxError {
        match e {
            TransactionError::Abort(reason) => self.record_err(seq, reason),
            TransactionError::Storage(e) => self.db_err(e),
        }
    }
}

/// A non-empty outbox directory must carry our marker, with a record format this build reads.
fn check_marker(dir: &Path) -> Result<(), OutboxError> {
    let unrecognised = |reason: String| OutboxError::Unrecognised {
        dir: dir.to_path_buf(),
        reason,
    };
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(()); // Not there yet: sled creates it.
    };
    if entries.next().is_none() {
        return Ok(());
    }
    let text = std::fs::read_to_string(dir.join(MARKER)).map_err(|e| {
        unrecognised(format!(
            "holds files but no readable {MARKER} marker ({e}): not an outbox platecam wrote"
        ))
    })?;
    let version = text
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse::<u8>().ok());
    match version {
        Some(RECORD_VERSION) => Ok(()),
        Some(v) => Err(unrecognised(format!(
            "record format {v}, this platecam reads format {RECORD_VERSION} (a rollback?)"
        ))),
        None => Err(unrecognised(format!("{MARKER} says {text:?}"))),
    }
}

fn bump(
    meta: &sled::transaction::TransactionalTree,
    name: &[u8],
) -> Result<(), ConflictableTransactionError<String>> {
    let n = meta.get(name)?.map(|v| be_u64(&v)).unwrap_or(0);
    meta.insert(name, &(n + 1).to_be_bytes())?;
    Ok(())
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(buf)
}

/// Space available to unprivileged writers on the file system holding `dir`; `None` if it cannot
/// be read (the directory may not exist yet). The disk reserve and `health` use it.
pub fn disk_free(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    let (avail, frsize) = (
        u64::from(st.blocks_available()),
        u64::from(st.fragment_size()),
    );
    Some(avail.saturating_mul(frsize))
}
