//! The soak (`tests/soak/run.sh [--minutes N]`, issue 13 item 3): the daemon on a looping replay
//! for N minutes while the broker is restarted at random, the daemon is `kill -9`-ed at random
//! (100 times in the 30-minute run) and its storage, a small tmpfs, is filled to ENOSPC and
//! freed again. Then a drain run, and the checks: every accepted read delivered, evicted by the
//! logged policy or still in the outbox; the outbox within its quota; resident memory flat; no
//! panic. Ignored by `cargo test` (long, and mounting the tmpfs needs root).

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::daemon::{field, platecam, samples, Daemon, RunConfig};
use support::mosquitto::{Mosquitto, Subscriber};

use platecam::wire::ReadMessage;

/// The full run, and how many kills it has; a shorter run has proportionally fewer.
const FULL_MINUTES: f64 = 30.0;
const FULL_KILLS: f64 = 100.0;
/// The storage filesystem, and the outbox's quota and reserve on it.
const DISK: &str = "24m";
const MAX_BYTES: u64 = 4 << 20;
const MIN_FREE: &str = "1MiB";

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mkdir mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK}"), "soak"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "the soak mounts a {DISK} tmpfs as the storage filesystem and needs root for it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `path` until ENOSPC; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filler: {e}"),
        }
    }
    // The last partial page: byte by byte is not worth it, tmpfs refuses whole pages.
    written
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
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

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// What the daemons logged, over all their runs.
#[derive(Default)]
struct Ledger {
    /// seq -> id of every read logged "read accepted".
    accepted: BTreeMap<u64, String>,
    /// Seq ranges the quota policy logged as evicted.
    evicted: Vec<(u64, u64)>,
    panics: Vec<String>,
    lost_logged: u64,
}

impl Ledger {
    fn take(&mut self, lines: &[String]) {
        for l in lines {
            if l.contains("read accepted") {
                let seq = field(l, "seq").and_then(|s| s.parse().ok());
                if let (Some(seq), Some(id)) = (seq, field(l, "id")) {
                    self.accepted.insert(seq, id);
                }
            } else if l.contains("outbox quota reached") {
                let n = |k| field(l, k).and_then(|s| s.parse::<u64>().ok());
                if let (Some(a), Some(b)) = (n("first_seq"), n("last_seq")) {
                    self.evicted.push((a, b));
                }
            } else if l.contains("read lost") {
                self.lost_logged += 1;
            }
            if l.contains("panicked") {
                self.panics.push(l.clone());
            }
        }
    }

    fn evicted(&self, seq: u64) -> bool {
        self.evicted.iter().any(|&(a, b)| (a..=b).contains(&seq))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long, and needs root: tests/soak/run.sh [--minutes N]"]
async fn soak() {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .map(|m| m.parse().expect("SOAK_MINUTES: minutes"))
        .unwrap_or(FULL_MINUTES);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .map(|s| s.parse().expect("SOAK_SEED: a number"))
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("soak: {minutes} min, seed {seed} (SOAK_SEED={seed} repeats the schedule)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let kills_planned = (FULL_KILLS * minutes / FULL_MINUTES).round().max(1.0);
    let mean_life = total.as_secs_f64() / kills_planned;

    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&tmp.path().join("disk"));
    let state = disk.0.join("state");
    let filler = disk.0.join("filler");
    let mut broker = Mosquitto::start();
    let mut reads =
        Subscriber::connect_persistent(broker.port, "platecam/+/reads", "soak-reads").await;
    let (photos, _) = samples();
    let storage = format!("max_bytes = {MAX_BYTES}\nmin_free_bytes = \"{MIN_FREE}\"");
    // One frame per photo and one empty frame: a pass ends every other frame (as in
    // tests/daemon.rs's kill test), so reads are accepted all the time.
    let cfg = RunConfig {
        repeat: true,
        camera: "hold_frames = 1\ngap_frames = 1",
        storage: &storage,
        ..RunConfig::new(&state, &photos, broker.port)
    };
    let cfg_path = tmp.path().join("soak.toml");
    std::fs::write(&cfg_path, cfg.toml()).expect("write config");

    let mut ledger = Ledger::default();
    let mut delivered: HashSet<String> = HashSet::new();
    let mut rss: Vec<(Duration, u64)> = Vec::new();
    let (mut kills, mut broker_restarts, mut enospc, mut exits) = (0, 0, 0, Vec::new());
    let mut max_outbox = 0;

    let start = Instant::now();
    let life =
        |rng: &mut fastrand::Rng| Duration::from_secs_f64(mean_life * (0.2 + 1.6 * rng.f64()));
    let mut daemon = Daemon::start(&cfg_path);
    let mut next_kill = start + life(&mut rng);
    let mut next_broker = start + Duration::from_secs(rng.u64(10..40));
    let mut broker_back: Option<Instant> = None;
    let mut next_fill = start + Duration::from_secs(rng.u64(15..45));
    let mut fill_until: Option<Instant> = None;
    while start.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        while let Ok(m) = reads.rx.try_recv() {
            if let Ok(r) = serde_json::from_slice::<ReadMessage>(&m.payload) {
                delivered.insert(r.id);
            }
        }
        if let Some(kib) = rss_kib(daemon.child.id()) {
            rss.push((start.elapsed(), kib));
        }
        max_outbox = max_outbox.max(dir_bytes(&state.join("outbox")));
        if let Ok(Some(status)) = daemon.child.try_wait() {
            // A daemon that ended by itself (a full disk at open, a stage that died): systemd
            // would restart it.
            let lines = daemon.lines();
            let why = lines.iter().rev().find(|l| l.contains("ERROR")).cloned();
            exits.push((status.code(), why));
            ledger.take(&lines);
            daemon = Daemon::start(&cfg_path);
        }
        if now >= next_kill {
            daemon.kill9();
            kills += 1;
            ledger.take(&daemon.lines());
            daemon = Daemon::start(&cfg_path);
            next_kill = now + life(&mut rng);
        }
        match broker_back {
            Some(at) if now >= at => {
                broker.start_process();
                broker_back = None;
                next_broker = now + Duration::from_secs(rng.u64(10..40));
            }
            None if now >= next_broker => {
                broker.stop();
                broker_restarts += 1;
                // Mostly short outages; one in four long enough for a backlog that reaches the
                // quota (evictions), which the accounting must see logged.
                let down = if rng.u8(0..4) == 0 {
                    rng.u64(20_000..60_000)
                } else {
                    rng.u64(200..6000)
                };
                broker_back = Some(now + Duration::from_millis(down));
            }
            _ => {}
        }
        match fill_until {
            Some(at) if now >= at => {
                std::fs::remove_file(&filler).expect("remove filler");
                fill_until = None;
                next_fill = now + Duration::from_secs(rng.u64(15..45));
            }
            None if now >= next_fill => {
                fill(&filler);
                enospc += 1;
                fill_until = Some(now + Duration::from_secs(rng.u64(3..10)));
            }
            _ => {}
        }
    }
    if fill_until.is_some() {
        std::fs::remove_file(&filler).expect("remove filler");
    }
    if broker_back.is_some() {
        broker.start_process();
    }
    daemon.kill9();
    ledger.take(&daemon.lines());

    // The drain: an empty replay, the broker up; the daemon hands the backlog and exits.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let drain = RunConfig {
        drain_timeout: "60s",
        storage: &storage,
        ..RunConfig::new(&state, &empty, broker.port)
    };
    let drain_path = tmp.path().join("drain.toml");
    std::fs::write(&drain_path, drain.toml()).expect("write config");
    let mut last = Daemon::start(&drain_path);
    let drained = last.wait_exit(Duration::from_secs(120));
    ledger.take(&last.lines());
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && !ledger.accepted.values().all(|id| delivered.contains(id)) {
        if let Some(m) = reads.next(Duration::from_millis(200)).await {
            if let Ok(r) = serde_json::from_slice::<ReadMessage>(&m.payload) {
                delivered.insert(r.id);
            }
        }
    }
    let (_, listed, _) = platecam(&["outbox", "list", "--json", "--config"], Some(&drain_path));
    let stored: HashSet<String> = listed
        .lines()
        .filter_map(|l| serde_json::from_str::<ReadMessage>(l).ok())
        .map(|r| r.id)
        .collect();

    let mut evicted = 0;
    let mut lost = Vec::new();
    for (seq, id) in &ledger.accepted {
        if delivered.contains(id) || stored.contains(id) {
            continue;
        }
        if ledger.evicted(*seq) {
            evicted += 1;
        } else {
            lost.push(*seq);
        }
    }
    let quarter = total / 4;
    let first: Vec<u64> = rss.iter().filter(|s| s.0 < quarter).map(|s| s.1).collect();
    let last_q: Vec<u64> = rss
        .iter()
        .filter(|s| s.0 >= total - quarter)
        .map(|s| s.1)
        .collect();
    let (rss_first, rss_last) = (median(first) / 1024, median(last_q) / 1024);
    let accepted = ledger.accepted.len();
    let delivered_n = ledger
        .accepted
        .values()
        .filter(|id| delivered.contains(*id))
        .count();
    eprintln!(
        "soak figures: minutes {minutes}, seed {seed}; reads accepted {accepted}, delivered \
         {delivered_n}, still stored {}, evicted by the quota {evicted}, lost {}; not accepted \
         (logged \"read lost\", disk full) {}; kill -9 {kills}, daemon exits by itself {}, \
         broker restarts {broker_restarts}, ENOSPC episodes {enospc}; outbox on disk at most \
         {max_outbox} B (quota {MAX_BYTES}); RSS median first quarter {rss_first} MiB, last \
         quarter {rss_last} MiB; drain exit {:?}",
        stored.len(),
        lost.len(),
        ledger.lost_logged,
        exits.len(),
        drained.and_then(|s| s.code()),
    );
    for (code, why) in &exits {
        eprintln!("soak: a daemon exited by itself ({code:?}): {why:?}");
    }
    assert!(ledger.panics.is_empty(), "panics: {:#?}", ledger.panics);
    assert!(accepted > 0, "no read was accepted");
    assert!(lost.is_empty(), "accepted reads lost (seqs): {lost:?}");
    // The quota counts 3x the records' bytes (sled's measured amplification), not the files:
    // sled's files were seen at up to 1.18x the quota in a 15-minute run (issue 13 note). The
    // figure is printed above; beyond this the estimate no longer holds.
    assert!(
        max_outbox <= MAX_BYTES + MAX_BYTES / 2,
        "the outbox took {max_outbox} B on disk, over 1.5x its quota of {MAX_BYTES}"
    );
    assert!(
        rss_last <= rss_first + rss_first / 4 + 16,
        "resident memory grew: {rss_first} MiB in the first quarter, {rss_last} MiB in the last"
    );
    assert_eq!(
        drained.and_then(|s| s.code()),
        Some(0),
        "the drain run: {:#?}",
        last.lines()
    );
}
