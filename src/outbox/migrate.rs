//! Record format 1 (clear text) to 2 (sealed): every read is re-sealed, under its own seq, into a
//! fresh database (`outbox.migrating`), which then replaces the old one. A new database rather
//! than rewriting in place, because sled keeps old pages: the clear text would stay in its files.
//! The counters (`next_seq`, evictions, quarantined) are carried over.
//!
//! Crash safety: the old database is renamed `outbox.v1` only once the new one is synced, and
//! deleted only once the new one is in place; `finish_interrupted` completes or restarts a
//! migration a power cut interrupted.

use std::fs::File;
use std::path::Path;

use super::{
    be_u64, counter, open_handles, open_marked, record, tx_err, Outbox, OutboxError, Record,
    Sealing, COUNT, EVICTIONS, NEXT_SEQ, QUARANTINED,
};
use crate::config::StorageConfig;
use crate::privacy::audit;

const WORK: &str = "outbox.migrating";
const OLD: &str = "outbox.v1";

/// Deals with what an interrupted migration left under `parent`.
pub(super) fn finish_interrupted(parent: &Path, dir: &Path) -> std::io::Result<()> {
    let old = parent.join(OLD);
    if old.exists() {
        if dir.exists() {
            // The new database was already in place.
            std::fs::remove_dir_all(&old)?;
        } else {
            std::fs::rename(&old, dir)?;
        }
    }
    let work = parent.join(WORK);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    Ok(())
}

/// Re-seals the version 1 outbox at `dir`. Returns how many reads were carried over.
pub(super) fn v1(dir: &Path, cfg: &StorageConfig, sealed: &Sealing) -> Result<u64, OutboxError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let io_err = |source| OutboxError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let old = open_handles(dir)?;
    let work = parent.join(WORK);
    let new = Outbox::with_handles(&work, cfg, open_marked(&work)?, true, sealed)?;
    let (mut carried, mut dropped) = (0u64, 0u64);
    for item in old.reads.iter() {
        let (key, value) = item.map_err(|source| OutboxError::Db {
            dir: dir.to_path_buf(),
            source,
        })?;
        let seq = be_u64(&key);
        match Record::decode_v1(&value) {
            Ok(rec) => {
                new.insert(&rec, Some(seq))?;
                carried += 1;
            }
            Err(reason) => {
                // Its bytes are clear text that does not decode: not carried into the sealed
                // outbox, counted with the quarantined ones.
                tracing::error!(seq, %reason, "outbox record does not decode: not migrated");
                dropped += 1;
            }
        }
    }
    // sled opens some damaged files as an empty database. Every format 1 outbox the daemon
    // opened holds its `count`: none, or records missing against it, mean damaged files, and
    // the old database must stay for `platecam outbox recover`.
    let stored = old.meta.get(COUNT).ok().flatten().map(|v| be_u64(&v));
    if stored != Some(carried + dropped) {
        return Err(OutboxError::Unrecognised {
            dir: dir.to_path_buf(),
            reason: format!(
                "format 1 outbox: {} reads read, its count says {stored:?}: damaged",
                carried + dropped
            ),
        });
    }
    let quarantined = old.quarantine.len() as u64;
    let counters = [
        (NEXT_SEQ, counter(&old.meta, NEXT_SEQ)),
        (EVICTIONS, counter(&old.meta, EVICTIONS)),
        (
            QUARANTINED,
            counter(&old.meta, QUARANTINED).saturating_add(dropped),
        ),
    ];
    {
        let h = new.handles()?;
        h.meta
            .transaction(|meta| {
                for (name, value) in counters {
                    let now = super::counter_tx(meta, name)?;
                    meta.insert(name, &now.max(value).to_be_bytes())?;
                }
                Ok(())
            })
            .map_err(|e| tx_err(&work, 0, e))?;
    }
    new.sync()?;
    drop(new);
    drop(old);
    std::fs::rename(dir, parent.join(OLD)).map_err(io_err)?;
    std::fs::rename(&work, dir).map_err(io_err)?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err)?;
    std::fs::remove_dir_all(parent.join(OLD)).map_err(io_err)?;
    tracing::info!(
        reads = carried,
        not_decodable = dropped,
        quarantined_dropped = quarantined,
        "outbox migrated from record format {} to {}: every read re-sealed",
        record::V1,
        record::RECORD_VERSION
    );
    audit::record(
        "outbox_migrated",
        serde_json::json!({
            "from": record::V1,
            "to": record::RECORD_VERSION,
            "reads": carried,
            "not_decodable": dropped,
            "quarantined_dropped": quarantined,
        }),
    );
    Ok(carried)
}
