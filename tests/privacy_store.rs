//! Privacy at rest (issue 11, items 1, 2, 6) on a real sled outbox in a temp dir: no plate text or
//! crop byte on disk in clear, retention that destroys reads and their period's data key, the
//! migration of a clear-text (format 1) outbox, a wrong or missing master key, and the audit log's
//! hash chain checked by `platecam audit verify`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytesize::ByteSize;
use platecam::config::{EvictionPolicy, PrivacyConfig, StorageConfig};
use platecam::outbox::{Outbox, OutboxError};
use platecam::privacy::audit;

fn storage(dir: &Path) -> StorageConfig {
    StorageConfig {
        dir: dir.to_path_buf(),
        max_bytes: ByteSize::mib(64),
        min_free_bytes: ByteSize::b(0),
        eviction: EvictionPolicy::CropsFirst,
    }
}

fn short_retention() -> PrivacyConfig {
    PrivacyConfig {
        master_key_file: None,
        max_age: Some(Duration::from_secs(2)),
        key_period: Duration::from_secs(1),
        ..PrivacyConfig::default()
    }
}

/// Crop bytes no file would hold by chance.
fn crop(n: u64) -> Vec<u8> {
    let mut x = n
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..4000)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// Every file under `dir`, recursively, with the needles found in it.
fn scan(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(scan(&path, needles));
            continue;
        }
        let bytes = std::fs::read(&path).expect("read file");
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == &needle[..]) {
                found.push(format!(
                    "{} holds {:?}",
                    path.display(),
                    String::from_utf8_lossy(&needle[..needle.len().min(12)])
                ));
            }
        }
    }
    found
}

fn needles(plates: &[&str], crops: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = plates.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Any 32 bytes of a crop would give it away; the start, middle and end are checked.
    for c in crops {
        for at in [0, c.len() / 2, c.len() - 32] {
            v.push(c[at..at + 32].to_vec());
        }
    }
    v
}

#[test]
fn nothing_in_clear_on_disk_and_expiry_destroys_reads_and_keys() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let plates = ["ZQX4821", "KVW9073", "JHT5566"];
    let crops: Vec<Vec<u8>> = (0..3).map(crop).collect();
    let (outbox, _) = Outbox::open_with(&storage(tmp.path()), &short_retention())?;
    for (plate, c) in plates.iter().zip(&crops) {
        outbox.append(support::sample_read("unit", plate), c.clone())?;
    }
    // Evicting a crop re-seals the record: the rest of it stays sealed too.
    let pending = outbox.pending(None, 10)?;
    let got: Vec<&str> = pending.iter().map(|r| r.message.plate.as_str()).collect();
    assert_eq!(got, plates, "sealed reads open again");
    assert_eq!(pending[1].crop.as_deref(), Some(&crops[1][..]));
    let found = scan(tmp.path(), &needles(&plates, &crops));
    assert!(found.is_empty(), "clear text on disk: {found:?}");

    // After max_age and the key's period: reads deleted, key destroyed.
    std::thread::sleep(Duration::from_millis(2100));
    let expired = outbox.expire(SystemTime::now())?;
    assert_eq!(expired.reads, 3, "{expired:?}");
    let later = SystemTime::now() + Duration::from_secs(3);
    let expired = outbox.expire(later)?;
    assert!(expired.keys >= 1, "the period's key destroyed: {expired:?}");
    let stats = outbox.stats();
    assert_eq!((stats.count, stats.expired), (0, 3));
    drop(outbox);
    let found = scan(tmp.path(), &needles(&plates, &crops));
    assert!(found.is_empty(), "after expiry: {found:?}");
    Ok(())
}

#[test]
fn retention_off_keeps_reads() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let privacy = PrivacyConfig {
        max_age: None,
        ..short_retention()
    };
    let (outbox, _) = Outbox::open_with(&storage(tmp.path()), &privacy)?;
    outbox.append(support::sample_read("unit", "OFF1234"), crop(9))?;
    let far = SystemTime::now() + Duration::from_secs(365 * 86400);
    assert_eq!(outbox.expire(far)?.reads, 0);
    assert_eq!(outbox.stats().count, 1);
    Ok(())
}

/// Writes an outbox as platecam 1 (record format 1, clear text) did.
fn write_v1_outbox(dir: &Path, plate: &str, crop: &[u8]) {
    let outbox = dir.join("outbox");
    let db = sled::open(&outbox).expect("sled");
    let reads = db.open_tree("reads").expect("reads");
    let meta = db.open_tree("meta").expect("meta");
    let mut msg = support::sample_read("unit", plate);
    msg.seq = 4;
    msg.id = "0190-old".into();
    let json = serde_json::to_vec(&msg).expect("json");
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut rec = vec![1u8, 1u8];
    rec.extend_from_slice(&ms.to_be_bytes());
    rec.extend_from_slice(&(json.len() as u32).to_be_bytes());
    rec.extend_from_slice(&json);
    rec.extend_from_slice(crop);
    reads
        .insert(4u64.to_be_bytes(), rec.clone())
        .expect("insert");
    for (name, v) in [
        (&b"next_seq"[..], 5u64),
        (b"count", 1),
        (b"payload_bytes", rec.len() as u64),
        (b"evictions", 2),
        (b"quarantined", 0),
    ] {
        meta.insert(name, &v.to_be_bytes()).expect("meta");
    }
    db.flush().expect("flush");
    drop(db);
    std::fs::write(
        outbox.join("PLATECAM_OUTBOX"),
        "platecam outbox, record format 1\n",
    )
    .expect("marker");
}

#[test]
fn a_format_1_outbox_is_resealed_on_open_with_its_counts() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = crop(42);
    write_v1_outbox(tmp.path(), "MIG7731", &c);
    let clear = needles(&["MIG7731"], std::slice::from_ref(&c));
    assert!(
        !scan(tmp.path(), &clear).is_empty(),
        "format 1 is clear text"
    );

    let (outbox, _) = Outbox::open_with(&storage(tmp.path()), &short_retention())?;
    let pending = outbox.pending(None, 10)?;
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].seq, pending[0].message.plate.as_str()),
        (4, "MIG7731")
    );
    assert_eq!(pending[0].message.id, "0190-old");
    assert_eq!(pending[0].crop.as_deref(), Some(&c[..]));
    let stats = outbox.stats();
    assert_eq!((stats.count, stats.evictions, stats.next_seq), (1, 2, 5));
    assert_eq!(
        outbox
            .append(support::sample_read("unit", "NEW1"), crop(1))?
            .seq,
        5
    );
    drop(outbox);
    let marker = std::fs::read_to_string(tmp.path().join("outbox/PLATECAM_OUTBOX"))?;
    assert!(marker.contains("record format 2"), "{marker}");
    let found = scan(tmp.path(), &clear);
    assert!(
        found.is_empty(),
        "clear text left after migration: {found:?}"
    );
    Ok(())
}

#[test]
fn a_wrong_or_missing_master_key_is_refused_and_nothing_moves() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = storage(tmp.path());
    let privacy = short_retention();
    {
        let (outbox, _) = Outbox::open_with(&cfg, &privacy)?;
        outbox.append(support::sample_read("unit", "KEY1234"), crop(3))?;
    }
    let key = tmp.path().join("master.key");
    let right = std::fs::read(&key)?;
    let listing = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(tmp.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing();

    std::fs::write(&key, [9u8; 32])?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let wrong = Outbox::open_with(&cfg, &privacy);
    assert!(
        matches!(wrong, Err(OutboxError::MasterKey { .. })),
        "{:?}",
        wrong.err()
    );
    assert_eq!(listing(), before, "nothing moved aside");

    std::fs::remove_file(&key)?;
    let missing = Outbox::open_with(&cfg, &privacy);
    let Err(e @ OutboxError::MasterKey { .. }) = missing else {
        panic!("expected a master key error, got {:?}", missing.err());
    };
    assert!(e.to_string().contains("restore the master key"), "{e}");
    assert!(!key.exists(), "a key made for nothing is taken back");

    std::fs::write(&key, &right)?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let (outbox, _) = Outbox::open_with(&cfg, &privacy)?;
    assert_eq!(outbox.pending(None, 10)?[0].message.plate, "KEY1234");
    Ok(())
}

fn verify_cli(file: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_platecam"))
        .args(["audit", "verify", "--file"])
        .arg(file)
        .output()
        .expect("run platecam");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn audit_verify_names_a_removed_or_edited_entry() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    audit::open(tmp.path())?;
    for i in 0..4 {
        audit::record("expired", serde_json::json!({ "reads": i }));
    }
    let log = tmp.path().join(audit::FILE);
    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 4, "{text}");
    let (code, out) = verify_cli(&log);
    assert_eq!(code, 0, "{out}");

    let removed = tmp.path().join("removed.log");
    let mut kept = lines.clone();
    kept.remove(1);
    std::fs::write(&removed, kept.join("\n") + "\n")?;
    let (code, out) = verify_cli(&removed);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("line 2"), "names the first bad entry: {out}");

    let edited = tmp.path().join("edited.log");
    let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    // Other tests in this binary may add entries meanwhile: edit one of ours past the first.
    let at = (1..changed.len())
        .find(|&i| changed[i].contains("\"reads\":"))
        .expect("an expired entry");
    changed[at] = changed[at].replacen("\"reads\":", "\"reads\":1", 1);
    std::fs::write(&edited, changed.join("\n") + "\n")?;
    let (code, out) = verify_cli(&edited);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("line {}", at + 1)),
        "names the edited entry: {out}"
    );
    Ok(())
}

/// The daemon end to end: its audit entries reach the broker (`start` with the config's hash
/// first), its audit log verifies, and its storage holds no plate it read in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_publishes_its_audit_log_and_keeps_no_plate_in_clear() {
    use support::daemon::{platecam, samples, Daemon, RunConfig};
    use support::mosquitto::{Mosquitto, Subscriber};

    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "platecam/#").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let (dir, truth) = samples();
    let cfg = RunConfig {
        drain_timeout: "20s",
        ..RunConfig::new(&state, &dir, broker.port)
    }
    .write();
    let mut daemon = Daemon::start(&cfg);
    daemon.assert_exits_0(Duration::from_secs(120));

    let mut msgs = Vec::new();
    while let Some(m) = sub.next(Duration::from_millis(500)).await {
        msgs.push(m);
    }
    let entries: Vec<serde_json::Value> = msgs
        .iter()
        .filter(|m| m.topic.ends_with("/audit"))
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect();
    let kinds: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["entry"]["kind"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert!(kinds.contains(&"key_created"), "{kinds:?}");
    assert_eq!(
        entries[0]["entry"]["details"]["config_sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    let (code, out, err) = platecam(&["audit", "verify", "--config"], Some(&cfg));
    assert_eq!(code, 0, "{out}{err}");
    let head = entries
        .last()
        .and_then(|e| e["hash"].as_str())
        .expect("hash");
    assert!(
        out.contains(head),
        "published head is the log's head: {out}"
    );

    let mut plates: Vec<String> = msgs
        .iter()
        .filter(|m| m.topic.ends_with("/reads"))
        .filter_map(|m| serde_json::from_slice::<platecam::wire::ReadMessage>(&m.payload).ok())
        .map(|r| r.plate)
        .collect();
    assert!(!plates.is_empty(), "reads were delivered");
    plates.extend(truth.iter().map(|(_, p)| p.replace(' ', "")));
    let plates: Vec<&str> = plates.iter().map(String::as_str).collect();
    let found = scan(&state, &needles(&plates, &[]));
    assert!(found.is_empty(), "clear text on disk: {found:?}");
}

#[test]
fn a_damaged_format_1_outbox_is_moved_aside_not_a_crash_loop() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("outbox");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("db"), vec![0xA5u8; 100_000])?;
    std::fs::write(
        dir.join("PLATECAM_OUTBOX"),
        "platecam outbox, record format 1\n",
    )?;
    let (outbox, outcome) = Outbox::open_with(&storage(tmp.path()), &short_retention())?;
    assert!(
        matches!(outcome, platecam::outbox::OpenOutcome::MovedAside { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        outbox
            .append(support::sample_read("unit", "FRESH1"), crop(5))?
            .seq,
        0
    );
    assert!(!tmp.path().join("outbox.migrating").exists());
    Ok(())
}
