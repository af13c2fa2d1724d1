//! Outbox: the durable sled buffer every read passes through.
//!
//! **Invariant:** a read is *accepted* when `append` returns: it is in sled and sled's files have
//! been fdatasync'ed (sled's own `flush` uses `sync_file_range`, which does not survive a power
//! cut). `pending` never hands out a read whose append has not synced yet, so nothing is published
//! before it is durable. A sync that fails is retried for the same record (same seq, same id); the
//! read is never appended a second time.
//! **Invariant:** a read leaves the outbox only by `remove` (after the broker's PUBACK), by the
//! eviction policy (logged and counted), or by quarantine when it does not decode (logged and
//! counted). Each of these reads the record and changes it in one sled transaction, so eviction
//! and delivery cannot undo each other.
//!
//! On disk (`<storage.dir>/outbox/`, a sled database): tree `reads` maps the big-endian `seq` to a
//! record (see `record`); tree `quarantine` keeps records that did not decode, under their seq;
//! tree `meta` holds `next_seq`, `count`, `payload_bytes`, `evictions` and `quarantined`, updated
//! in the same transaction as the records they describe, so `stats` is cheap and stays right
//! across crashes, and a seq is never reused.
//!
//! A full disk (ENOSPC) latches an error inside sled until the database is reopened: `append`
//! then reopens it, applies the eviction policy and retries the same record once.
//!
//! Databases that cannot be opened because they are damaged are moved aside to
//! `outbox.corrupt-<unix secs>` (see `aside`); a database locked by another process (a running
//! daemon) is never touched.

mod aside;
mod durable;
mod keyring;
mod migrate;
mod record;
mod retention_clock;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::config::{EvictionPolicy, PrivacyConfig, StorageConfig};
use crate::privacy::audit;
use crate::privacy::crypto::{self, DataKey, KeyId};
use crate::privacy::keys::{self, KeyError, KeySource};
use crate::wire::{CropInfo, ReadMessage};
use durable::{sync_dir_tree, SyncMark};
use keyring::Keyring;
use retention_clock::RetentionClock;

pub use aside::{RecoverReport, KEEP_ASIDE};
pub use record::{Record, RECORD_VERSION};

/// sled keeps about 2-3x the live payload on disk (measured; it does not give space back), so the
/// quota is enforced on payload bytes times this factor.
pub const SPACE_AMPLIFICATION: u64 = 3;

/// Written beside sled's files once a database opened: a directory with files but without it was
/// not made by platecam (sled itself opens some garbage as an empty database, silently).
const MARKER: &str = "PLATECAM_OUTBOX";
/// Present while the daemon opens the database, holding how many opens in a row never returned.
/// Such an open means sled aborted the process (it can panic on damaged files, and the dist
/// profile aborts on panic, where `catch_unwind` cannot help), or the process was killed meanwhile
/// (a power cut, the watchdog). After `ABORTED_OPENS` of them the database is treated as corrupt:
/// a damaged file costs two restarts, not a crash loop, and one kill does not cost the backlog.
const OPENING: &str = "PLATECAM_OPENING";
const ABORTED_OPENS: u32 = 2;

const NEXT_SEQ: &[u8] = b"next_seq";
const COUNT: &[u8] = b"count";
const PAYLOAD: &[u8] = b"payload_bytes";
const EVICTIONS: &[u8] = b"evictions";
const QUARANTINED: &[u8] = b"quarantined";
const EXPIRED: &[u8] = b"expired";

/// Syncs tried for one record before its append fails (a reopen between tries).
const SYNC_ATTEMPTS: u32 = 3;

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
    #[error(
        "outbox {dir}: the last {ABORTED_OPENS} opens of this database never returned (sled aborts on damaged files)"
    )]
    OpenAborted { dir: PathBuf },
    #[error(
        "outbox {dir} is in use by another process: the daemon is running (stop it first, e.g. \
         `systemctl stop platecam`)"
    )]
    Locked { dir: PathBuf },
    #[error("outbox {dir}: no outbox here")]
    Missing { dir: PathBuf },
    #[error(
        "outbox {dir}: the master key does not open this outbox's data keys ({reason}); nothing was changed: restore the master key it was sealed with \
         (privacy.master_key_file, the systemd credential platecam-master, or \
         <storage.dir>/master.key)"
    )]
    MasterKey { dir: PathBuf, reason: String },
    #[error("outbox {dir}: {source}")]
    Key { dir: PathBuf, source: Box<KeyError> },
    #[error("outbox {dir}: read of {bytes} bytes is larger than the whole quota ({quota} bytes)")]
    TooLarge {
        dir: PathBuf,
        bytes: u64,
        quota: u64,
    },
}

impl OutboxError {
    /// Whether the disk is full (ENOSPC, or a quota's EDQUOT): it passes once space is freed, so
    /// a caller waits for it instead of ending the process, which would only restart into it.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            OutboxError::Db {
                source: sled::Error::Io(e),
                ..
            }
            | OutboxError::Io { source: e, .. } => e,
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::StorageFull
            || matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    }

    /// Whether the files are damaged (moved aside by the daemon), as opposed to an outbox that is
    /// locked, missing, or on a disk that failed a write.
    fn is_corruption(&self) -> bool {
        match self {
            OutboxError::Db { source, .. } => !matches!(source, sled::Error::Io(_)),
            OutboxError::Record { .. }
            | OutboxError::Unrecognised { .. }
            | OutboxError::OpenPanicked { .. }
            | OutboxError::OpenAborted { .. } => true,
            OutboxError::Io { .. }
            | OutboxError::MasterKey { .. }
            | OutboxError::Key { .. }
            | OutboxError::Locked { .. }
            | OutboxError::Missing { .. }
            | OutboxError::TooLarge { .. } => false,
        }
    }
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
    /// Records set aside because they did not decode, since the outbox was created.
    pub quarantined: u64,
    /// Reads destroyed because they were older than `privacy.max_age`, since the outbox was
    /// created.
    pub expired: u64,
    pub oldest_stored_at: Option<SystemTime>,
    /// How long ago the oldest read was stored, robust to steps of the wall clock (see
    /// `Outbox::age_of`).
    pub oldest_age: Option<Duration>,
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

/// sled's handles, replaced as a whole when the database is reopened.
struct Handles {
    db: sled::Db,
    reads: sled::Tree,
    meta: sled::Tree,
    quarantine: sled::Tree,
    /// Data keys, wrapped by the master key, under their id.
    keys: sled::Tree,
}

/// What one retention pass destroyed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expired {
    pub reads: u64,
    pub quarantined: u64,
    pub keys: u64,
}

pub struct Outbox {
    dir: PathBuf,
    quota: StorageConfig,
    /// `None` only between a failed reopen and the next successful one.
    handles: RwLock<Option<Handles>>,
    /// Reads with a seq below this are synced: `pending` hands out nothing above it.
    synced: AtomicU64,
    /// Crops-first policy: no read below this seq still has a crop.
    crops_from: AtomicU64,
    /// Bytes in moved-aside databases beside the outbox, counted in the quota.
    aside_bytes: AtomicU64,
    /// Serialises appends and eviction, so the quota check and the write see the same state.
    append_lock: Mutex<()>,
    /// Times the database was reopened (see `commit`).
    generation: AtomicU64,
    /// When the last sync started: files not modified since are not synced again.
    last_sync: Mutex<Option<SyncMark>>,
    keyring: Keyring,
    max_age: Option<Duration>,
    /// The wall clock as retention reads it (steps of the clock).
    retention_clock: RetentionClock,
}

impl Outbox {
    /// Opens (or creates) the daemon's outbox under `cfg.dir`. A database that is damaged is moved
    /// aside and a fresh one started: the unit keeps reading plates, and the old files stay for
    /// `platecam outbox recover`. A database locked by another process is an error, untouched.
    /// With the default `[privacy]` settings (see `open_with`).
    pub fn open(cfg: &StorageConfig) -> Result<(Outbox, OpenOutcome), OutboxError> {
        Self::open_with(cfg, &PrivacyConfig::default())
    }

    /// Opens the outbox sealed under the master key `privacy` names (see `privacy::keys`). An
    /// outbox of record format 1 (clear text) is re-sealed into a fresh database first. A master
    /// key that does not open the outbox's data keys is an error: nothing is moved or deleted.
    pub fn open_with(
        cfg: &StorageConfig,
        privacy: &PrivacyConfig,
    ) -> Result<(Outbox, OpenOutcome), OutboxError> {
        let dir = cfg.dir.join("outbox");
        let io_err = |source| OutboxError::Io {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&cfg.dir).map_err(io_err)?;
        let sealed = Sealing::load(&dir, cfg, privacy)?;
        migrate::finish_interrupted(&cfg.dir, &dir).map_err(io_err)?;
        let opened = if marker_version(&dir) == Some(record::V1) {
            let migrated = migrate::v1(&dir, cfg, &sealed);
            if migrated.is_err() {
                // Back to the old database as it was: a damaged one is moved aside below, and
                // `platecam outbox recover` reads format 1 records too.
                migrate::finish_interrupted(&cfg.dir, &dir).map_err(io_err)?;
            }
            migrated.and_then(|_| Self::open_guarded(&dir, cfg, &sealed))
        } else {
            Self::open_guarded(&dir, cfg, &sealed)
        };
        if let Err(OutboxError::MasterKey { .. }) = &opened {
            sealed.forget_created();
        }
        let (outbox, outcome) = match opened {
            Ok(outbox) => (outbox, OpenOutcome::Opened),
            Err(first) if first.is_corruption() => {
                let aside = aside::move_aside(&cfg.dir, &dir).map_err(io_err)?;
                tracing::error!(
                    dir = %dir.display(), moved_to = %aside.display(), error = %first,
                    "outbox database is unreadable: moving it aside and starting a fresh one"
                );
                let outbox = Self::open_guarded(&dir, cfg, &sealed)?;
                let reason = first.to_string();
                audit::record(
                    "outbox_moved_aside",
                    serde_json::json!({ "to": aside.display().to_string(), "reason": reason }),
                );
                (outbox, OpenOutcome::MovedAside { to: aside, reason })
            }
            Err(e) => return Err(e),
        };
        let kept = aside::prune(&cfg.dir, KEEP_ASIDE);
        outbox.aside_bytes.store(kept, Ordering::Relaxed);
        Ok((outbox, outcome))
    }

    /// Opens an existing outbox to look into it (`platecam outbox stats|list`): never creates,
    /// migrates or moves anything, and says so when the daemon holds it.
    pub fn inspect_with(
        cfg: &StorageConfig,
        privacy: &PrivacyConfig,
    ) -> Result<Outbox, OutboxError> {
        let dir = cfg.dir.join("outbox");
        if !dir.join("db").exists() {
            return Err(OutboxError::Missing { dir });
        }
        check_marker(&dir)?;
        let sealed = Sealing::existing(&dir, cfg, privacy)?;
        let handles = open_handles(&dir)?;
        Self::with_handles(&dir, cfg, handles, false, &sealed)
    }

    /// Opens with the `OPENING` marker around sled's open (see `OPENING`).
    fn open_guarded(
        dir: &Path,
        cfg: &StorageConfig,
        sealed: &Sealing,
    ) -> Result<Outbox, OutboxError> {
        let handles = open_marked(dir)?;
        Self::with_handles(dir, cfg, handles, true, sealed)
    }

    fn with_handles(
        dir: &Path,
        cfg: &StorageConfig,
        h: Handles,
        writable: bool,
        sealed: &Sealing,
    ) -> Result<Outbox, OutboxError> {
        let db_err = |source| OutboxError::Db {
            dir: dir.to_path_buf(),
            source,
        };
        let keyring = Keyring::new(&sealed.master, sealed.key_period).map_err(|e| {
            OutboxError::MasterKey {
                dir: dir.to_path_buf(),
                reason: format!("{}: {e}", sealed.describe()),
            }
        })?;
        keyring
            .check_master(&h.keys)
            .map_err(|reason| OutboxError::MasterKey {
                dir: dir.to_path_buf(),
                reason: format!("{}: {reason}", sealed.describe()),
            })?;
        if writable && h.meta.get(COUNT).map_err(db_err)?.is_none() {
            // An outbox written before the counters were kept: count once.
            migrate_counters(&h).map_err(|e| tx_err(dir, 0, e))?;
        }
        let next_seq = counter(&h.meta, NEXT_SEQ);
        let outbox = Outbox {
            dir: dir.to_path_buf(),
            quota: cfg.clone(),
            handles: RwLock::new(Some(h)),
            synced: AtomicU64::new(next_seq),
            crops_from: AtomicU64::new(0),
            aside_bytes: AtomicU64::new(0),
            append_lock: Mutex::new(()),
            last_sync: Mutex::new(None),
            generation: AtomicU64::new(0),
            keyring,
            max_age: sealed.max_age,
            retention_clock: RetentionClock::default(),
        };
        if writable {
            // Files written since the last start may not have been synced by the process that
            // wrote them: everything handed out from now on is durable.
            outbox.sync()?;
        }
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
        message.id = uuid::Uuid::now_v7().to_string();
        // An empty crop (one that could not be encoded) is no crop: the read goes without one.
        let crop = (!crop_jpeg.is_empty()).then_some(crop_jpeg);
        message.crop = crop.as_ref().map(|jpeg| CropInfo {
            format: "jpeg".into(),
            bytes: jpeg.len(),
            sha256: hex::encode(Sha256::digest(jpeg)),
        });
        let rec = Record {
            message,
            crop,
            stored_at: SystemTime::now(),
        };
        self.store(rec)
    }

    /// Stores a record that already has its id (a new one, or one recovered from a moved-aside
    /// database) under the next seq, durably.
    fn store(&self, mut rec: Record) -> Result<StoredRead, OutboxError> {
        let _guard = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        // The seq goes into the encoded JSON, so encode inside the transaction once it is known;
        // the size does not depend on it by more than a few bytes, so estimate with seq 0 first.
        let estimate = rec
            .sealed_len()
            .map_err(|reason| self.record_err(0, reason))? as u64
            + 16;
        let generation = self.generation.load(Ordering::Acquire);
        let seq = match self
            .make_room(estimate)
            .and_then(|()| self.insert(&rec, None))
        {
            Ok(seq) => seq,
            Err(e @ (OutboxError::Db { .. } | OutboxError::Io { .. })) => {
                // sled latches a failed write (a full disk) until it is reopened.
                tracing::warn!(error = %e, "outbox write failed: reopening it and retrying once");
                self.reopen()?;
                self.make_room(estimate)?;
                self.insert(&rec, None)?
            }
            Err(e) => return Err(e),
        };
        rec.message.seq = seq;
        self.commit(seq, &rec, generation)?;
        self.synced.fetch_max(seq + 1, Ordering::Release);
        Ok(StoredRead {
            seq,
            message: rec.message,
            crop: rec.crop,
            stored_at: rec.stored_at,
        })
    }

    /// Inserts `rec` under `seq` (or the next seq) with its counters, in one transaction.
    fn insert(&self, rec: &Record, seq: Option<u64>) -> Result<u64, OutboxError> {
        let key = self.sealing_key()?;
        let h = self.handles()?;
        let result = (&h.reads, &h.meta).transaction(|(reads, meta)| {
            let seq = match seq {
                Some(seq) => seq,
                None => counter_tx(meta, NEXT_SEQ)?,
            };
            let mut rec = rec.clone();
            rec.message.seq = seq;
            let bytes = rec
                .seal(seq, &key)
                .map_err(ConflictableTransactionError::Abort)?;
            let len = bytes.len() as u64;
            if let Some(old) = reads.insert(&seq.to_be_bytes(), bytes)? {
                add(meta, PAYLOAD, -(old.len() as i64))?;
            } else {
                add(meta, COUNT, 1)?;
            }
            add(meta, PAYLOAD, len as i64)?;
            let next = counter_tx(meta, NEXT_SEQ)?.max(seq + 1);
            meta.insert(NEXT_SEQ, &next.to_be_bytes())?;
            Ok(seq)
        });
        result.map_err(|e| tx_err(&self.dir, seq.unwrap_or(0), e))
    }

    /// Makes record `seq` durable. A failed sync is retried for the same record (after a reopen,
    /// which may lose the unsynced insert: it is then written again under the same seq and id).
    /// When every try fails the record is taken out again, so a read reported lost is not
    /// delivered later. `generation` is the reopen count seen before the insert: a reopen by any
    /// caller since then may have dropped it too.
    fn commit(&self, seq: u64, rec: &Record, mut generation: u64) -> Result<(), OutboxError> {
        let mut last = None;
        for attempt in 1..=SYNC_ATTEMPTS {
            if attempt > 1 && generation == self.generation.load(Ordering::Acquire) {
                if let Err(e) = self.reopen() {
                    last = Some(e);
                    continue;
                }
            }
            let now = self.generation.load(Ordering::Acquire);
            if now != generation {
                generation = now;
                if let Err(e) = self.ensure_present(seq, rec) {
                    last = Some(e);
                    continue;
                }
            }
            match self.sync() {
                Ok(()) if self.generation.load(Ordering::Acquire) == generation => return Ok(()),
                Ok(()) => {} // Reopened meanwhile: check the record again.
                Err(e) => {
                    tracing::warn!(seq, attempt, error = %e, "outbox sync failed");
                    last = Some(e);
                }
            }
        }
        if let Err(e) = self.take(seq, Take::Failed) {
            tracing::warn!(seq, error = %e, "cannot take back a read whose sync failed");
        }
        Err(last.unwrap_or_else(|| self.record_err(seq, "sync did not complete".into())))
    }

    /// Writes record `seq` again (same seq, same id) if a reopen lost it.
    fn ensure_present(&self, seq: u64, rec: &Record) -> Result<(), OutboxError> {
        let present = self
            .handles()?
            .reads
            .contains_key(seq.to_be_bytes())
            .map_err(|e| self.db_err(e))?;
        if !present {
            self.insert(rec, Some(seq))?;
        }
        Ok(())
    }

    /// Runs `op`; after an I/O error (sled latches one until it is reopened, e.g. a full disk)
    /// reopens the database and runs it once more.
    fn recovering<T>(&self, op: impl Fn() -> Result<T, OutboxError>) -> Result<T, OutboxError> {
        match op() {
            Err(
                e @ OutboxError::Db {
                    source: sled::Error::Io(_),
                    ..
                },
            ) => {
                tracing::warn!(error = %e, "outbox I/O error: reopening it and retrying once");
                self.reopen()?;
                op()
            }
            other => other,
        }
    }

    /// Stored, synced reads with `seq > after`, in seq order, at most `limit`. A record that does
    /// not decode is moved to quarantine (logged, counted) and skipped.
    pub fn pending(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredRead>, OutboxError> {
        self.recovering(|| self.pending_once(after, limit))
    }

    fn pending_once(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredRead>, OutboxError> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let end = self.synced.load(Ordering::Acquire);
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let mut bad = Vec::new();
        {
            let h = self.handles()?;
            for item in h.reads.range(start.to_be_bytes()..end.to_be_bytes()) {
                let (key, value) = item.map_err(|e| self.db_err(e))?;
                match self.decode(&h.keys, &key, &value) {
                    Ok(read) => out.push(read),
                    Err(e) => bad.push((be_u64(&key), e)),
                }
                if out.len() >= limit {
                    break;
                }
            }
        }
        for (seq, e) in bad {
            tracing::error!(seq, error = %e, "outbox record does not decode: moved to quarantine");
            self.take(seq, Take::Quarantine)?;
        }
        Ok(out)
    }

    /// Deletes a read once the broker acknowledged it. Returns whether it was still there.
    pub fn remove(&self, seq: u64) -> Result<bool, OutboxError> {
        // Not synced here: a removal lost in a crash only means the read is sent again, and the
        // consumer de-duplicates on its id.
        self.recovering(|| self.take(seq, Take::Delivered))
    }

    /// Takes record `seq` out, reading and writing it in one transaction. Returns whether it was
    /// there.
    fn take(&self, seq: u64, why: Take) -> Result<bool, OutboxError> {
        let h = self.handles()?;
        let key = seq.to_be_bytes();
        let result = (&h.reads, &h.meta, &h.quarantine).transaction(|(reads, meta, q)| {
            let Some(old) = reads.remove(&key)? else {
                return Ok(false);
            };
            add(meta, COUNT, -1)?;
            add(meta, PAYLOAD, -(old.len() as i64))?;
            match why {
                Take::Evicted => add(meta, EVICTIONS, 1)?,
                Take::Quarantine => {
                    q.insert(&key, old)?;
                    add(meta, QUARANTINED, 1)?;
                }
                Take::Expired => add(meta, EXPIRED, 1)?,
                Take::Delivered | Take::Failed => {}
            }
            Ok(true)
        });
        result.map_err(|e| tx_err(&self.dir, seq, e))
    }

    /// How long ago a read stamped `at` was stored. Read off the retention clock, which never
    /// steps back, with a stamp from before the clock was set counting from when it was first
    /// seen set: after NTP steps a clock that booted in 1970, a read stored before the step is
    /// minutes old, not 56 years (its true age is unknown: a lower bound). 0 for a stamp ahead.
    fn age_of(&self, at: SystemTime) -> Duration {
        let wall = SystemTime::now();
        match self.retention_clock.now(wall, std::time::Instant::now()) {
            Some(now) => now
                .duration_since(self.retention_clock.stored(at))
                .unwrap_or_default(),
            // The clock was never set: the stamp and now are on the same unset clock.
            None => wall.duration_since(at).unwrap_or_default(),
        }
    }

    /// Counts kept with the records: no scan, whatever the backlog.
    pub fn stats(&self) -> OutboxStats {
        let Ok(h) = self.handles() else {
            return OutboxStats::default();
        };
        let oldest_stored_at = h
            .reads
            .first()
            .ok()
            .flatten()
            .and_then(|(_, v)| record::stored_at(&v));
        OutboxStats {
            oldest_age: oldest_stored_at.map(|at| self.age_of(at)),
            count: counter(&h.meta, COUNT),
            payload_bytes: counter(&h.meta, PAYLOAD),
            bytes_on_disk: h.db.size_on_disk().unwrap_or(0),
            evictions: counter(&h.meta, EVICTIONS),
            quarantined: counter(&h.meta, QUARANTINED),
            expired: counter(&h.meta, EXPIRED),
            oldest_stored_at,
            next_seq: counter(&h.meta, NEXT_SEQ),
        }
    }

    /// Reads what `aside` (a moved-aside outbox) still holds into this one, under new seqs above
    /// the current ones, keeping each read's id; then renames `aside` to `outbox.recovered-*`
    /// (pruned with the corrupt ones).
    pub fn recover(&self, aside: &Path) -> Result<RecoverReport, OutboxError> {
        aside::recover(self, aside)
    }

    /// Applies the eviction policy until `incoming` more bytes fit in the quota and, as far as
    /// eviction can help, the disk keeps its reserve.
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
        loop {
            let room = self.room()?;
            let used = room.used;
            if used + incoming <= room.quota_budget.min(room.disk_budget) {
                break;
            }
            if used + incoming > room.quota_budget && self.prune_aside() {
                continue;
            }
            if used + incoming <= room.quota_budget && incoming > room.disk_budget {
                // Only the disk reserve is short, and evicting everything would not make room:
                // keep the backlog (sled never gives space back to the disk).
                tracing::warn!(
                    dir = %self.dir.display(),
                    min_free_bytes = self.quota.min_free_bytes.as_u64(),
                    "disk below its reserve and the outbox cannot free enough: storing anyway"
                );
                break;
            }
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

    /// Payload in use and what it may grow to. The disk budget is what sled's files already hold
    /// (evicting frees room inside them, which sled reuses; it never gives space back to the
    /// disk) plus the free space above the reserve, of which new records take about
    /// `SPACE_AMPLIFICATION` times their size.
    fn room(&self) -> Result<Room, OutboxError> {
        let h = self.handles()?;
        let used = counter(&h.meta, PAYLOAD);
        let aside = self.aside_bytes.load(Ordering::Relaxed);
        let quota_budget =
            self.quota.max_bytes.as_u64().saturating_sub(aside) / SPACE_AMPLIFICATION;
        let disk_budget = match disk_free(&self.dir) {
            Some(free) => {
                let on_disk = h.db.size_on_disk().unwrap_or(0);
                let above_reserve = free.saturating_sub(self.quota.min_free_bytes.as_u64());
                on_disk + above_reserve / SPACE_AMPLIFICATION
            }
            None => u64::MAX,
        };
        Ok(Room {
            used,
            quota_budget,
            disk_budget,
        })
    }

    /// Deletes the oldest moved-aside database (older than anything in the outbox). Returns
    /// whether one was deleted.
    fn prune_aside(&self) -> bool {
        let Some(parent) = self.dir.parent() else {
            return false;
        };
        let before = self.aside_bytes.load(Ordering::Relaxed);
        if before == 0 {
            return false;
        }
        let kept = aside::prune_oldest(parent);
        self.aside_bytes.store(kept, Ordering::Relaxed);
        kept < before
    }

    /// Removes the crop of the oldest read that still has one; returns its seq, or `None` when
    /// no read has a crop left.
    fn strip_oldest_crop(&self) -> Result<Option<u64>, OutboxError> {
        loop {
            let from = self.crops_from.load(Ordering::Relaxed);
            let candidate = {
                let h = self.handles()?;
                let mut found = None;
                for item in h.reads.range(from.to_be_bytes()..) {
                    let (key, value) = item.map_err(|e| self.db_err(e))?;
                    let seq = be_u64(&key);
                    // Reads before this one have no crop left: later scans start here.
                    self.crops_from.store(seq, Ordering::Relaxed);
                    if value
                        .get(1)
                        .is_some_and(|flags| flags & record::FLAG_CROP != 0)
                    {
                        found = Some(seq);
                        break;
                    }
                }
                found
            };
            let Some(seq) = candidate else {
                return Ok(None);
            };
            match self.strip_crop(seq)? {
                Strip::Done => return Ok(Some(seq)),
                // Delivered (or stripped) meanwhile: look again.
                Strip::Gone => continue,
                Strip::Undecodable => {
                    tracing::error!(seq, "outbox record does not decode: moved to quarantine");
                    self.take(seq, Take::Quarantine)?;
                }
            }
        }
    }

    /// Strips the crop of record `seq`, reading and rewriting it in one transaction.
    fn strip_crop(&self, seq: u64) -> Result<Strip, OutboxError> {
        let sealing = self.sealing_key()?;
        let h = self.handles()?;
        let key = seq.to_be_bytes();
        let result = (&h.reads, &h.meta).transaction(|(reads, meta)| {
            let Some(value) = reads.get(key)? else {
                return Ok(Strip::Gone);
            };
            let Ok(mut record) = self.open_record(&h.keys, seq, &value) else {
                return Ok(Strip::Undecodable);
            };
            if record.crop.is_none() {
                return Ok(Strip::Gone);
            }
            record.crop = None;
            record.message.crop = None;
            let bytes = record
                .seal(seq, &sealing)
                .map_err(ConflictableTransactionError::Abort)?;
            add(meta, PAYLOAD, bytes.len() as i64 - value.len() as i64)?;
            reads.insert(&key, bytes)?;
            add(meta, EVICTIONS, 1)?;
            Ok(Strip::Done)
        });
        result.map_err(|e| tx_err(&self.dir, seq, e))
    }

    /// Deletes the oldest read; returns its seq, or `None` when the outbox is empty.
    fn evict_oldest(&self) -> Result<Option<u64>, OutboxError> {
        loop {
            let first = self.handles()?.reads.first().map_err(|e| self.db_err(e))?;
            let Some((key, _)) = first else {
                return Ok(None);
            };
            let seq = be_u64(&key);
            if self.take(seq, Take::Evicted)? {
                return Ok(Some(seq));
            }
            // Delivered meanwhile: the next one is now the oldest.
        }
    }

    /// The durable commit point: sled's flush, then fdatasync of its files (the main file and
    /// the large values sled keeps in `blobs/`) and of the directories that name them.
    fn sync(&self) -> Result<(), OutboxError> {
        let started = SyncMark::now();
        self.handles()?.db.flush().map_err(|e| self.db_err(e))?;
        let mut last = self.last_sync.lock().unwrap_or_else(|e| e.into_inner());
        let since = last.and_then(|mark| mark.since(&started));
        let files = sync_dir_tree(&self.dir, since).map_err(|source| OutboxError::Io {
            dir: self.dir.clone(),
            source,
        })?;
        tracing::trace!(files, "outbox synced");
        *last = Some(started);
        Ok(())
    }

    /// Drops sled's handles and opens the database again: the only way to clear an error sled
    /// latched (a full disk).
    fn reopen(&self) -> Result<(), OutboxError> {
        let mut slot = self.handles.write().unwrap_or_else(|e| e.into_inner());
        drop(slot.take());
        // sled's background threads may hold the file lock for a moment after the drop.
        let mut tries = 0;
        loop {
            match open_marked(&self.dir) {
                Ok(h) => {
                    *slot = Some(h);
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    tracing::info!(dir = %self.dir.display(), "outbox reopened");
                    return Ok(());
                }
                Err(OutboxError::Locked { .. }) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn handles(&self) -> Result<HandlesRef<'_>, OutboxError> {
        {
            let guard = self.handles.read().unwrap_or_else(|e| e.into_inner());
            if guard.is_some() {
                return Ok(HandlesRef(guard));
            }
        }
        self.reopen()?;
        Ok(HandlesRef(
            self.handles.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }

    fn decode(
        &self,
        keys: &sled::Tree,
        key: &[u8],
        value: &[u8],
    ) -> Result<StoredRead, OutboxError> {
        let seq = be_u64(key);
        let r = self
            .open_record(keys, seq, value)
            .map_err(|reason| self.record_err(seq, reason))?;
        Ok(StoredRead {
            seq,
            message: r.message,
            crop: r.crop,
            stored_at: r.stored_at,
        })
    }

    /// Opens a sealed record with the data key it names.
    fn open_record(&self, keys: &sled::Tree, seq: u64, value: &[u8]) -> Result<Record, String> {
        let id = record::key_id(value).ok_or("record too short to name its data key")?;
        let key = self.keyring.opening(keys, &id)?;
        Record::open(value, seq, key.opener())
    }

    /// The data key to seal with: this process's key for the current period, made (wrapped by
    /// the master key, stored and synced before anything is sealed with it) when the period
    /// starts or the process first seals. Callers hold `append_lock` (or are alone: migration).
    fn sealing_key(&self) -> Result<Arc<DataKey>, OutboxError> {
        let now = SystemTime::now();
        if let Some(key) = self.keyring.current(now) {
            return Ok(key);
        }
        let crypto_err = |e: crypto::CryptoError| self.record_err(0, format!("data key: {e}"));
        let (key, wrapped) = loop {
            let (key, wrapped) = self.keyring.make(now).map_err(crypto_err)?;
            // Ids are random within a period: one already stored is not reused.
            let taken = self
                .handles()?
                .keys
                .contains_key(key.id())
                .map_err(|e| self.db_err(e))?;
            if !taken {
                break (key, wrapped);
            }
        };
        self.handles()?
            .keys
            .insert(key.id(), wrapped.as_slice())
            .map_err(|e| self.db_err(e))?;
        self.sync()?;
        let period = key.period();
        let id = hex::encode(key.id());
        let key = self.keyring.install(key, &wrapped).map_err(crypto_err)?;
        tracing::info!(period, key = %id, "outbox data key made for a new key period");
        audit::record(
            "key_created",
            serde_json::json!({ "period": period, "key": id }),
        );
        Ok(key)
    }

    /// Retention (`privacy.max_age`): deletes the reads stored longer ago than that (sent or
    /// not) and quarantined records as old, and destroys the data keys of periods that ended
    /// longer ago, so what sled still keeps of them in old pages can no longer be read. Logged
    /// and counted (`expired`); the key destructions are in the audit log.
    ///
    /// Reads are taken oldest seq first and the pass stops at the first one still young: seq
    /// order is storage order, except for reads recovered from a moved-aside outbox (stored
    /// after newer ones: they go when those before them do, and their key is the current one).
    pub fn expire(&self, now: SystemTime) -> Result<Expired, OutboxError> {
        let Some(max_age) = self.max_age else {
            return Ok(Expired::default());
        };
        let Some(now) = self.retention_clock.now(now, std::time::Instant::now()) else {
            tracing::debug!("retention waits for the wall clock to be set");
            return Ok(Expired::default());
        };
        let stored =
            |value: &[u8]| record::stored_at(value).map(|at| self.retention_clock.stored(at));
        let cutoff = now.checked_sub(max_age).unwrap_or(UNIX_EPOCH);
        let _guard = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Expired::default();
        loop {
            let first = self.handles()?.reads.first().map_err(|e| self.db_err(e))?;
            let Some((key, value)) = first else {
                break;
            };
            if stored(&value).is_some_and(|at| at > cutoff) {
                break;
            }
            if self.take(be_u64(&key), Take::Expired)? {
                out.reads += 1;
            }
        }
        let h = self.handles()?;
        for item in h.quarantine.iter() {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            if stored(&value).is_none_or(|at| at <= cutoff) {
                h.quarantine.remove(key).map_err(|e| self.db_err(e))?;
                out.quarantined += 1;
            }
        }
        let current = self.keyring.current(now).map(|k| *k.id());
        for item in h.keys.iter() {
            let (id, _) = item.map_err(|e| self.db_err(e))?;
            let Ok(id) = KeyId::try_from(id.as_ref()) else {
                continue;
            };
            let period = crypto::period_of(&id);
            // A key made before the clock was set sealed reads that count from when it was.
            let expires = self.keyring.expires_at(period, max_age);
            let expires = expires.checked_sub(max_age).map_or(expires, |end| {
                expires.max(self.retention_clock.stored(end) + max_age)
            });
            if Some(id) != current && expires <= now {
                h.keys.remove(id).map_err(|e| self.db_err(e))?;
                self.keyring.forget(&id);
                out.keys += 1;
            }
        }
        drop(h);
        if out != Expired::default() {
            self.sync()?;
            tracing::info!(
                reads = out.reads,
                quarantined = out.quarantined,
                keys_destroyed = out.keys,
                max_age = %humantime::format_duration(max_age),
                "retention: destroyed what is older than privacy.max_age"
            );
            audit::record(
                "expired",
                serde_json::json!({
                    "reads": out.reads,
                    "quarantined": out.quarantined,
                    "keys_destroyed": out.keys,
                }),
            );
        }
        Ok(out)
    }

    /// Whether a read stored at `at` is older than `privacy.max_age`.
    fn is_expired(&self, at: SystemTime) -> bool {
        let now = self
            .retention_clock
            .now(SystemTime::now(), std::time::Instant::now());
        self.max_age
            .zip(now)
            .and_then(|(max_age, now)| now.checked_sub(max_age))
            .is_some_and(|cutoff| self.retention_clock.stored(at) <= cutoff)
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
}

/// Why a record leaves the outbox.
#[derive(Clone, Copy)]
enum Take {
    Delivered,
    Evicted,
    Quarantine,
    /// Older than `privacy.max_age`.
    Expired,
    /// Its sync failed: it was never accepted.
    Failed,
}

enum Strip {
    Done,
    Gone,
    Undecodable,
}

struct Room {
    used: u64,
    quota_budget: u64,
    disk_budget: u64,
}

/// A read guard on handles known to be there.
struct HandlesRef<'a>(RwLockReadGuard<'a, Option<Handles>>);

impl std::ops::Deref for HandlesRef<'_> {
    type Target = Handles;
    fn deref(&self) -> &Handles {
        match self.0.as_ref() {
            Some(h) => h,
            // `handles()` returns a guard only after seeing `Some`, and a reopen needs the write
            // lock this guard excludes.
            None => unreachable!("outbox handles checked before the guard was returned"),
        }
    }
}

/// Opens sled with the `OPENING` marker around it (see `OPENING`), then writes our marker.
fn open_marked(dir: &Path) -> Result<Handles, OutboxError> {
    let io_err = |source| OutboxError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let opening = dir.join(OPENING);
    // Unreadable counts as one: the file was there, its content may not have been synced.
    let aborted = match std::fs::read_to_string(&opening) {
        Ok(text) => text.trim().parse().unwrap_or(1),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(_) => 1,
    };
    if aborted >= ABORTED_OPENS {
        // Kept: until the move-aside deals with it, every open refuses.
        return Err(OutboxError::OpenAborted {
            dir: dir.to_path_buf(),
        });
    }
    check_marker(dir)?;
    std::fs::create_dir_all(dir).map_err(io_err)?;
    write_synced(&opening, (aborted + 1).to_string().as_bytes()).map_err(io_err)?;
    let opened = open_handles(dir);
    // The open returned (well or not): the process was not aborted by it.
    std::fs::remove_file(&opening).map_err(io_err)?;
    let h = opened?;
    if !dir.join(MARKER).exists() {
        let marker = format!("platecam outbox, record format {RECORD_VERSION}\n");
        write_synced(&dir.join(MARKER), marker.as_bytes()).map_err(io_err)?;
    }
    Ok(h)
}

/// sled's open, with its lock and panics told apart. The caller checks our marker first.
fn open_handles(dir: &Path) -> Result<Handles, OutboxError> {
    let db_err = |source: sled::Error| match &source {
        sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
            OutboxError::Locked {
                dir: dir.to_path_buf(),
            }
        }
        _ => OutboxError::Db {
            dir: dir.to_path_buf(),
            source,
        },
    };
    // sled has been seen to panic on some damaged files; that must not take the daemon down
    // (where panics unwind; see `OPENING` for the dist profile, where they abort).
    let opened =
        std::panic::catch_unwind(|| sled::Config::new().path(dir).cache_capacity(8 << 20).open())
            .map_err(|_| OutboxError::OpenPanicked {
            dir: dir.to_path_buf(),
        })?;
    let db = opened.map_err(db_err)?;
    let reads = db.open_tree("reads").map_err(db_err)?;
    let meta = db.open_tree("meta").map_err(db_err)?;
    let quarantine = db.open_tree("quarantine").map_err(db_err)?;
    let keys = db.open_tree("keys").map_err(db_err)?;
    Ok(Handles {
        db,
        reads,
        meta,
        quarantine,
        keys,
    })
}

/// Counts an outbox written before the counters were kept, once.
fn migrate_counters(h: &Handles) -> Result<(), TransactionError<String>> {
    let (mut count, mut bytes) = (0u64, 0u64);
    for item in h.reads.iter() {
        let (_, value) = item.map_err(TransactionError::Storage)?;
        count += 1;
        bytes += value.len() as u64;
    }
    h.meta.transaction(|meta| {
        meta.insert(COUNT, &count.to_be_bytes())?;
        meta.insert(PAYLOAD, &bytes.to_be_bytes())?;
        Ok(())
    })
}

/// Writes a small file and syncs it and its directory entry.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)?;
    File::open(path)?.sync_all()?;
    match path.parent() {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// The master key and the `[privacy]` settings an outbox is opened with.
pub(crate) struct Sealing {
    master: keys::Secret,
    source: KeySource,
    key_period: Duration,
    max_age: Option<Duration>,
}

impl Sealing {
    /// Loads (or, first start, makes) the master key.
    fn load(
        dir: &Path,
        cfg: &StorageConfig,
        privacy: &PrivacyConfig,
    ) -> Result<Sealing, OutboxError> {
        let (master, source) = keys::load_or_create(
            "master",
            privacy.master_key_file.as_deref(),
            &cfg.dir,
            crypto::KEY_LEN,
        )
        .map_err(|source| OutboxError::Key {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(Sealing {
            master,
            source,
            key_period: privacy.key_period,
            max_age: privacy.max_age,
        })
    }

    /// For looking into an outbox: the key must exist already (nothing is made).
    fn existing(
        dir: &Path,
        cfg: &StorageConfig,
        privacy: &PrivacyConfig,
    ) -> Result<Sealing, OutboxError> {
        let sealing = Self::load(dir, cfg, privacy)?;
        if let KeySource::Created(_) = sealing.source {
            sealing.forget_created();
            return Err(OutboxError::MasterKey {
                dir: dir.to_path_buf(),
                reason: "no master key found".into(),
            });
        }
        Ok(sealing)
    }

    /// A master key made by this open that does not fit the outbox is taken back, so the unit
    /// stays as it was until the right key is restored.
    fn forget_created(&self) {
        if let KeySource::Created(path) = &self.source {
            let _ = std::fs::remove_file(path);
        }
    }

    fn describe(&self) -> String {
        match &self.source {
            KeySource::Configured(p) => format!("privacy.master_key_file {}", p.display()),
            KeySource::Credential(p) => format!("systemd credential {}", p.display()),
            KeySource::Kept(p) => format!("{}", p.display()),
            KeySource::Created(p) => format!("none found; a new one was made at {}", p.display()),
        }
    }
}

/// The record format the outbox's marker names, if it has a readable one.
fn marker_version(dir: &Path) -> Option<u8> {
    let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    text.trim().rsplit(' ').next()?.parse().ok()
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

fn tx_err(dir: &Path, seq: u64, e: TransactionError<String>) -> OutboxError {
    match e {
        TransactionError::Abort(reason) => OutboxError::Record {
            dir: dir.to_path_buf(),
            seq,
            reason,
        },
        TransactionError::Storage(source) => OutboxError::Db {
            dir: dir.to_path_buf(),
            source,
        },
    }
}

fn counter(meta: &sled::Tree, name: &[u8]) -> u64 {
    meta.get(name)
        .ok()
        .flatten()
        .map(|v| be_u64(&v))
        .unwrap_or(0)
}

fn counter_tx(
    meta: &TransactionalTree,
    name: &[u8],
) -> Result<u64, ConflictableTransactionError<String>> {
    Ok(meta.get(name)?.map(|v| be_u64(&v)).unwrap_or(0))
}

/// Adds `delta` to a counter, saturating at 0 (a counter never wraps).
fn add(
    meta: &TransactionalTree,
    name: &[u8],
    delta: i64,
) -> Result<(), ConflictableTransactionError<String>> {
    let n = counter_tx(meta, name)?.saturating_add_signed(delta);
    meta.insert(name, &n.to_be_bytes())?;
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
