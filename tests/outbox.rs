//! The sled outbox on a real database in a temp dir: order, durability across reopen, quota and
//! eviction, corrupt databases.

mod support;

use std::path::Path;

use bytesize::ByteSize;
use platecam::config::{EvictionPolicy, StorageConfig};
use platecam::outbox::{OpenOutcome, Outbox};
use platecam::wire::ReadMessage;

fn read(plate: &str) -> ReadMessage {
    support::sample_read("unit-test", plate)
}

fn storage(dir: &Path, max: ByteSize, eviction: EvictionPolicy) -> StorageConfig {
    StorageConfig {
        dir: dir.to_path_buf(),
        max_bytes: max,
        min_free_bytes: ByteSize::b(0),
        eviction,
    }
}

#[test]
fn appends_in_seq_order_and_removes() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = storage(tmp.path(), ByteSize::mib(64), EvictionPolicy::OldestFirst);
    let (outbox, outcome) = Outbox::open(&cfg)?;
    assert_eq!(outcome, OpenOutcome::Opened);
    for i in 0..10 {
        let stored = outbox.append(read(&format!("ABC{i}")), vec![i as u8; 100])?;
        assert_eq!(stored.seq, i);
        assert_eq!(stored.message.seq, i);
        let crop = stored.message.crop.as_ref().map(|c| c.bytes);
        assert_eq!(crop, Some(100));
    }
    let all = outbox.pending(None, 100)?;
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    let ids: std::collections::HashSet<_> = all.iter().map(|r| r.message.id.clone()).collect();
    assert_eq!(ids.len(), 10, "ids are unique");
    assert_eq!(outbox.pending(Some(7), 100)?.len(), 2);
    assert!(outbox.remove(3)?);
    assert!(!outbox.remove(3)?);
    assert_eq!(outbox.stats().count, 9);
    Ok(())
}

#[test]
fn seq_and_reads_survive_reopen_and_never_repeat() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = storage(tmp.path(), ByteSize::mib(64), EvictionPolicy::OldestFirst);
    {
        let (outbox, _) = Outbox::open(&cfg)?;
        for _ in 0..5 {
            outbox.append(read("KEEP1"), vec![7; 50])?;
        }
        for seq in 0..5 {
            outbox.remove(seq)?;
        }
    }
    let (outbox, _) = Outbox::open(&cfg)?;
    assert_eq!(outbox.stats().count, 0);
    let next = outbox.append(read("NEXT1"), vec![1; 10])?;
    assert_eq!(
        next.seq, 5,
        "a seq is never reused, even after the outbox drained"
    );
    let back = outbox.pending(None, 10)?;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].crop.as_deref(), Some(&[1u8; 10][..]));
    Ok(())
}

#[test]
fn oldest_first_eviction_is_counted_and_keeps_newest() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // 1 MiB quota / amplification 3 leaves ~349 KB of payload: room for ~34 reads of 10 KB.
    let cfg = storage(tmp.path(), ByteSize::mib(1), EvictionPolicy::OldestFirst);
    let (outbox, _) = Outbox::open(&cfg)?;
    for i in 0..100 {
        outbox.append(read(&format!("EV{i}")), vec![0; 10_000])?;
    }
    let stats = outbox.stats();
    assert!(stats.evictions > 0, "quota reached: {stats:?}");
    assert_eq!(
        stats.count + stats.evictions,
        100,
        "every read is stored or counted as evicted"
    );
    assert!(stats.payload_bytes * 3 <= ByteSize::mib(1).as_u64());
    let pending = outbox.pending(None, 1000)?;
    assert_eq!(
        pending.last().map(|r| r.seq),
        Some(99),
        "the newest read is kept"
    );
    assert_eq!(pending.first().map(|r| r.seq), Some(stats.evictions));
    Ok(())
}

#[test]
fn crops_first_eviction_keeps_the_text() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = storage(tmp.path(), ByteSize::mib(1), EvictionPolicy::CropsFirst);
    let (outbox, _) = Outbox::open(&cfg)?;
    for i in 0..60 {
        outbox.append(read(&format!("CR{i}")), vec![0; 10_000])?;
    }
    let pending = outbox.pending(None, 1000)?;
    assert_eq!(pending.len(), 60, "no read lost while crops can be dropped");
    assert!(pending[0].crop.is_none() && pending[0].message.crop.is_none());
    assert!(pending[59].crop.is_some());
    assert!(outbox.stats().evictions > 0);
    Ok(())
}

#[test]
fn garbage_database_is_moved_aside() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("outbox");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("db"), vec![0xA5u8; 100_000])?;
    std::fs::write(dir.join("conf"), b"this is not a sled config\n")?;
    let cfg = storage(tmp.path(), ByteSize::mib(64), EvictionPolicy::OldestFirst);
    let (outbox, outcome) = Outbox::open(&cfg)?;
    let OpenOutcome::MovedAside { to, .. } = outcome else {
        panic!("garbage was opened as a database: {outcome:?}");
    };
    assert!(
        to.join("db").exists(),
        "the old files are kept for a person to look at"
    );
    assert_eq!(outbox.append(read("FRESH1"), vec![1])?.seq, 0);
    Ok(())
}

#[test]
fn disk_free_of_existing_and_missing_dirs() {
    assert!(platecam::outbox::disk_free(&std::env::temp_dir()).is_some());
    assert!(platecam::outbox::disk_free(Path::new("/nonexistent/platecam")).is_none());
}

#[test]
fn an_empty_crop_is_stored_as_no_crop() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = storage(tmp.path(), ByteSize::mib(64), EvictionPolicy::OldestFirst);
    let (outbox, _) = Outbox::open(&cfg)?;
    let stored = outbox.append(read("NOCROP1"), Vec::new())?;
    assert!(stored.message.crop.is_none() && stored.crop.is_none());
    assert!(outbox.pending(None, 1)?[0].crop.is_none());
    Ok(())
}
