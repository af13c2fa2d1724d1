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

/// A config for the `platecam` binary whose storage is `state`.
fn cli_config(tmp: &Path, state: &Path) -> std::path::PathBuf {
    let replay = tmp.join("replay");
    std::fs::create_dir_all(&replay).expect("replay dir");
    let path = tmp.join("platecam.toml");
    let toml = format!(
        "[device]\nid = \"outbox-test\"\n\n[[camera]]\nname = \"lane1\"\nsource = \"replay://{}\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\n[storage]\ndir = \"{}\"\n",
        replay.display(),
        state.display()
    );
    std::fs::write(&path, toml).expect("write config");
    path
}

fn moved_aside(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .expect("state dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("outbox."))
        .collect()
}

#[test]
fn outbox_stats_on_a_live_outbox_says_the_daemon_is_running() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    let cfg = storage(&state, ByteSize::mib(64), EvictionPolicy::OldestFirst);
    // This process plays the running daemon: it holds the outbox open (sled's lock).
    let (outbox, _) = Outbox::open(&cfg)?;
    outbox.append(read("LIVE1"), vec![1; 100])?;
    let config = cli_config(tmp.path(), &state);
    for action in ["stats", "list"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_platecam"))
            .args(["outbox", action, "--config"])
            .arg(&config)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{action} exits non-zero: {stderr}");
        assert!(
            stderr.contains("the daemon is running"),
            "{action} says why: {stderr}"
        );
        assert_eq!(
            moved_aside(&state),
            Vec::<String>::new(),
            "nothing moved aside"
        );
    }
    // The daemon's outbox is untouched and still works.
    assert_eq!(outbox.append(read("LIVE2"), vec![2; 100])?.seq, 1);
    assert_eq!(outbox.pending(None, 10)?.len(), 2);
    Ok(())
}

#[test]
fn the_disk_reserve_does_not_wipe_the_backlog() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let free = platecam::outbox::disk_free(tmp.path()).expect("disk_free of the temp dir");
    let mut cfg = storage(tmp.path(), ByteSize::mib(64), EvictionPolicy::OldestFirst);
    // The reserve is already breached: evicting cannot give the disk anything back (sled keeps
    // its files), it only makes room inside them. The backlog lives in what sled already holds;
    // it is not wiped for each new read.
    cfg.min_free_bytes = ByteSize::b(free + (1 << 30));
    let (outbox, _) = Outbox::open(&cfg)?;
    for i in 0..20 {
        outbox.append(read(&format!("RES{i}")), vec![3; 1000])?;
    }
    let s = outbox.stats();
    assert!(s.count >= 5, "the backlog is kept: {s:?}");
    assert_eq!(s.count + s.evictions, 20, "{s:?}");
    assert!(
        s.payload_bytes <= s.bytes_on_disk,
        "it fits in sled's files: {s:?}"
    );
    Ok(())
}

#[test]
fn counts_stay_right_across_append_remove_evict_reopen() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = storage(tmp.path(), ByteSize::mib(1), EvictionPolicy::CropsFirst);
    let expect = |outbox: &Outbox| -> anyhow::Result<()> {
        let all = outbox.pending(None, usize::MAX)?;
        let s = outbox.stats();
        assert_eq!(s.count, all.len() as u64, "{s:?}");
        assert_eq!(
            s.oldest_stored_at,
            all.first().map(|r| r.stored_at),
            "{s:?}"
        );
        Ok(())
    };
    let (bytes, evictions) = {
        let (outbox, _) = Outbox::open(&cfg)?;
        for i in 0..80 {
            outbox.append(read(&format!("CNT{i}")), vec![5; 10_000])?;
            if i % 3 == 0 {
                outbox.remove(i)?;
            }
        }
        expect(&outbox)?;
        let s = outbox.stats();
        assert!(s.evictions > 0, "the quota was reached: {s:?}");
        assert!(s.payload_bytes * 3 <= ByteSize::mib(1).as_u64(), "{s:?}");
        (s.payload_bytes, s.evictions)
    };
    let (outbox, _) = Outbox::open(&cfg)?;
    expect(&outbox)?;
    let s = outbox.stats();
    assert_eq!((s.payload_bytes, s.evictions), (bytes, evictions));
    Ok(())
}

#[test]
fn eviction_and_delivery_do_not_race() -> anyhow::Result<()> {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    let tmp = tempfile::tempdir()?;
    // A small quota: every append evicts (crops first, then reads) while a drainer delivers.
    let cfg = storage(tmp.path(), ByteSize::kib(300), EvictionPolicy::CropsFirst);
    let (outbox, _) = Outbox::open(&cfg)?;
    let outbox = Arc::new(outbox);
    let delivered = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Like the publisher: a window of the oldest reads in flight, removed on their "PUBACK" a
    // moment later, while the appender evicts from the same end.
    let drainers: Vec<_> = (0..2)
        .map(|_| {
            let (outbox, delivered, stop) = (outbox.clone(), delivered.clone(), stop.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let window = outbox.pending(None, 4)?;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    for r in window {
                        if outbox.remove(r.seq)? {
                            assert!(delivered.lock().expect("lock").insert(r.seq));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    const READS: u64 = 1000;
    for i in 0..READS {
        outbox.append(read(&format!("RACE{i}")), vec![9; 8_000])?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for d in drainers {
        d.join().expect("drainer")?;
    }
    let delivered = delivered.lock().expect("lock");
    let left = outbox.pending(None, usize::MAX)?;
    let s = outbox.stats();
    for r in &left {
        assert!(
            !delivered.contains(&r.seq),
            "seq {} came back after its removal",
            r.seq
        );
    }
    assert!(s.evictions > 0, "eviction ran while delivering: {s:?}");
    assert_eq!(s.count, left.len() as u64, "{s:?}");
    let stored: u64 = left
        .iter()
        .map(|r| platecam::outbox::Record {
            message: r.message.clone(),
            crop: r.crop.clone(),
            stored_at: r.stored_at,
        })
        .map(|r| r.sealed_len().expect("encode") as u64)
        .sum();
    assert_eq!(s.payload_bytes, stored, "payload bytes match the records");
    let evicted_reads = READS - delivered.len() as u64 - left.len() as u64;
    assert!(
        evicted_reads <= s.evictions,
        "every read gone undelivered was counted as evicted: {evicted_reads} > {s:?}"
    );
    Ok(())
}

#[test]
fn a_full_disk_loses_only_the_reads_while_it_is_full() -> anyhow::Result<()> {
    let disk = support::SmallDisk::mount();
    let state = disk.path().join("state");
    let cfg = storage(&state, ByteSize::mib(64), EvictionPolicy::OldestFirst);
    let (outbox, _) = Outbox::open(&cfg)?;
    let mut accepted = Vec::new();
    for i in 0..5 {
        accepted.push(
            outbox
                .append(read(&format!("FULL{i}")), vec![4; 20_000])?
                .message
                .id,
        );
    }
    let filler = disk.fill("filler");
    let mut refused = 0;
    for i in 0..30 {
        let started = std::time::Instant::now();
        match outbox.append(read(&format!("NOSPC{i}")), vec![4; 20_000]) {
            Ok(stored) => accepted.push(stored.message.id),
            Err(_) => refused += 1,
        }
        // The recognize thread waits for this: a refusal is quick, not seconds of retries.
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(500),
            "append took {took:?}"
        );
        // A read whose sync failed is never handed out for publishing. (While nothing can be
        // written sled may not even reopen: then nothing is handed out at all.)
        for r in outbox.pending(None, usize::MAX).unwrap_or_default() {
            assert!(
                accepted.contains(&r.message.id),
                "unsynced seq {} handed out",
                r.seq
            );
        }
    }
    assert!(refused > 0, "the full disk refused some reads");
    std::fs::remove_file(&filler)?;
    // Space is back: appends work again without a restart.
    for i in 0..5 {
        let stored = outbox
            .append(read(&format!("BACK{i}")), vec![4; 20_000])
            .map_err(|e| anyhow::anyhow!("append after the disk has room again: {e}"))?;
        accepted.push(stored.message.id);
    }
    let check = |outbox: &Outbox| -> anyhow::Result<()> {
        let ids: Vec<String> = outbox
            .pending(None, usize::MAX)?
            .into_iter()
            .map(|r| r.message.id)
            .collect();
        // Every accepted read is there once, and none that was refused (no second copy), but for
        // the oldest the policy evicted (counted) to reuse sled's space while the disk was full.
        let s = outbox.stats();
        assert!(s.evictions < 5, "the backlog was not wiped: {s:?}");
        assert_eq!(
            ids,
            accepted[s.evictions as usize..],
            "stored reads are the accepted ones: {s:?}"
        );
        assert_eq!(s.count, ids.len() as u64);
        Ok(())
    };
    check(&outbox)?;
    drop(outbox);
    let (outbox, outcome) = Outbox::open(&cfg)?;
    assert_eq!(outcome, OpenOutcome::Opened);
    check(&outbox)
}

/// Overwrites record `seq` of a closed outbox with bytes that do not decode.
fn damage_record(state: &Path, seq: u64) {
    let db = sled::open(state.join("outbox")).expect("open sled");
    let reads = db.open_tree("reads").expect("reads tree");
    reads
        .insert(seq.to_be_bytes(), &b"\x01\x00garbage"[..])
        .expect("insert");
    db.flush().expect("flush");
}

#[test]
fn a_record_that_does_not_decode_is_quarantined() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = storage(tmp.path(), ByteSize::mib(64), EvictionPolicy::OldestFirst);
    {
        let (outbox, _) = Outbox::open(&cfg)?;
        for i in 0..3 {
            outbox.append(read(&format!("Q{i}")), vec![1; 100])?;
        }
    }
    damage_record(tmp.path(), 1);
    let (outbox, outcome) = Outbox::open(&cfg)?;
    assert_eq!(
        outcome,
        OpenOutcome::Opened,
        "one bad record is not a bad database"
    );
    let seqs: Vec<u64> = outbox.pending(None, 10)?.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![0, 2], "delivery goes on around the bad record");
    let s = outbox.stats();
    assert_eq!((s.count, s.quarantined), (2, 1), "{s:?}");
    Ok(())
}

#[test]
fn opens_that_never_returned_move_the_database_aside() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = storage(tmp.path(), ByteSize::mib(64), EvictionPolicy::OldestFirst);
    drop(Outbox::open(&cfg)?);
    // What one start killed inside sled's open leaves behind: tolerated (a power cut).
    let opening = tmp.path().join("outbox/PLATECAM_OPENING");
    std::fs::write(&opening, b"1")?;
    let (outbox, outcome) = Outbox::open(&cfg)?;
    assert_eq!(outcome, OpenOutcome::Opened);
    assert!(!opening.exists());
    drop(outbox);
    // Two in a row: sled aborts the process on these files (panic = "abort").
    std::fs::write(&opening, b"2")?;
    let (outbox, outcome) = Outbox::open(&cfg)?;
    assert!(
        matches!(outcome, OpenOutcome::MovedAside { .. }),
        "{outcome:?}"
    );
    assert_eq!(outbox.append(read("AFTER1"), vec![1])?.seq, 0);
    Ok(())
}

#[test]
fn a_moved_aside_outbox_is_recovered_under_new_seqs() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = storage(tmp.path(), ByteSize::mib(64), EvictionPolicy::OldestFirst);
    let mut old_ids = Vec::new();
    {
        let (outbox, _) = Outbox::open(&cfg)?;
        for i in 0..4 {
            old_ids.push(
                outbox
                    .append(read(&format!("OLD{i}")), vec![i as u8; 50])?
                    .message
                    .id,
            );
        }
    }
    damage_record(tmp.path(), 2);
    let aside = tmp.path().join("outbox.corrupt-1700000000");
    std::fs::rename(tmp.path().join("outbox"), &aside)?;
    let (outbox, _) = Outbox::open(&cfg)?;
    for i in 0..3 {
        outbox.append(read(&format!("NEW{i}")), vec![9; 50])?;
    }
    let report = outbox.recover(&aside)?;
    assert_eq!(
        report.recovered,
        vec![3, 4, 5],
        "new seqs above the live ones"
    );
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert_eq!(report.unreadable[0].0, Some(2));
    assert!(!aside.exists() && report.renamed_to.as_ref().is_some_and(|p| p.exists()));
    let back = outbox.pending(Some(2), 10)?;
    let ids: Vec<_> = back.iter().map(|r| r.message.id.clone()).collect();
    assert_eq!(
        ids,
        vec![old_ids[0].clone(), old_ids[1].clone(), old_ids[3].clone()]
    );
    assert_eq!(back[0].crop.as_deref(), Some(&[0u8; 50][..]));
    assert_eq!(outbox.stats().count, 6);
    Ok(())
}

#[test]
fn old_moved_aside_outboxes_are_pruned() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    for secs in [1_000, 2_000, 3_000, 4_000, 5_000] {
        let dir = tmp.path().join(format!("outbox.corrupt-{secs}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("db"), vec![0u8; 100_000])?;
    }
    // 1 MiB quota: 300 KB of moved-aside files leave ~240 KB of payload.
    let cfg = storage(tmp.path(), ByteSize::mib(1), EvictionPolicy::OldestFirst);
    let (outbox, _) = Outbox::open(&cfg)?;
    let mut left = moved_aside(tmp.path());
    left.sort();
    assert_eq!(
        left,
        [
            "outbox.corrupt-3000",
            "outbox.corrupt-4000",
            "outbox.corrupt-5000"
        ],
        "the newest {} are kept",
        platecam::outbox::KEEP_ASIDE
    );
    // Past the quota, moved-aside files go (oldest first) before any read is evicted.
    for i in 0..30 {
        outbox.append(read(&format!("PR{i}")), vec![0; 10_000])?;
    }
    assert!(moved_aside(tmp.path()).len() < 3);
    assert_eq!(outbox.stats().evictions, 0, "{:?}", outbox.stats());
    Ok(())
}

#[test]
fn outbox_commands_exit_non_zero_on_failure_and_recover_reports() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    let config = cli_config(tmp.path(), &state);
    let platecam = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_platecam"))
            .args(["outbox"])
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run platecam")
    };
    let out = platecam(&["stats"]);
    assert_eq!(out.status.code(), Some(1), "no outbox yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no outbox here"));
    assert!(!state.join("outbox").exists(), "stats creates nothing");

    let cfg = storage(&state, ByteSize::mib(64), EvictionPolicy::OldestFirst);
    {
        let (outbox, _) = Outbox::open(&cfg)?;
        outbox.append(read("ASIDE0"), vec![1; 10])?;
        outbox.append(read("ASIDE1"), vec![1; 10])?;
    }
    damage_record(&state, 1);
    let aside = state.join("outbox.corrupt-1700000000");
    std::fs::rename(state.join("outbox"), &aside)?;
    let out = platecam(&["recover", aside.to_str().expect("utf-8 path")]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "partial: {stdout} {stderr}");
    assert!(stdout.contains("recovered 1 reads"), "{stdout}");
    assert!(stderr.contains("old seq 1"), "{stderr}");
    let out = platecam(&["recover", aside.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "already recovered and renamed");
    let out = platecam(&["stats", "--json"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"count\":1"));
    Ok(())
}
