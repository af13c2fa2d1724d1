//! The whole daemon, as a child process: replayed photos -> our models -> sled outbox -> a real
//! mosquitto. Each test starts its own broker on a free port.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use support::daemon::{platecam, samples, Daemon, RunConfig};
use support::mosquitto::{Mosquitto, Received, Subscriber};
use support::normalise;

use platecam::wire::{HealthMessage, ReadMessage, StatusMessage};

fn reads_of(msgs: &[Received]) -> Vec<ReadMessage> {
    msgs.iter()
        .filter(|m| m.topic.ends_with("/reads"))
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect()
}

/// Waits until `want` reads and their crops arrived (or `limit`), returning every message seen.
async fn collect_reads(sub: &mut Subscriber, want: usize, limit: Duration) -> Vec<Received> {
    let until = tokio::time::Instant::now() + limit;
    let mut all = Vec::new();
    let crops = |all: &[Received]| all.iter().filter(|m| m.topic.contains("/crops/")).count();
    while (reads_of(&all).len() < want || crops(&all) < want) && tokio::time::Instant::now() < until
    {
        if let Some(m) = sub.next(Duration::from_millis(200)).await {
            all.push(m);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_n_photos_gives_n_reads_with_crops() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "platecam/#").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, truth) = samples();
    assert!(
        truth.len() >= 5,
        "samples/groundtruth.tsv lists the sample photos"
    );
    let cfg = RunConfig {
        drain_timeout: "20s",
        ..RunConfig::new(&tmp.path().join("state"), &dir, broker.port)
    }
    .write();
    let mut daemon = Daemon::start(&cfg);
    daemon.assert_exits_0(Duration::from_secs(120));

    let msgs = collect_reads(&mut sub, truth.len(), Duration::from_secs(5)).await;
    let reads = reads_of(&msgs);
    assert_eq!(reads.len(), truth.len(), "one read per photo: {reads:#?}");
    let got: Vec<String> = reads.iter().map(|r| normalise(&r.plate)).collect();
    let want: Vec<String> = truth.iter().map(|(_, p)| normalise(p)).collect();
    assert_eq!(got, want, "plates in replay order");
    let seqs: Vec<u64> = reads.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..truth.len() as u64).collect::<Vec<_>>());

    let crops: BTreeMap<&str, &[u8]> = msgs
        .iter()
        .filter_map(|m| Some((m.topic.rsplit_once("/crops/")?.1, m.payload.as_slice())))
        .collect();
    for r in &reads {
        let info = r.crop.as_ref().expect("crop info");
        let bytes = crops.get(r.id.as_str()).expect("crop published");
        assert_eq!(hex::encode(Sha256::digest(bytes)), info.sha256);
        assert_eq!(bytes.len(), info.bytes);
        assert!(r.frames_seen >= 2, "voted over frames: {r:?}");
        assert_eq!(r.clock_synced, platecam::capture::wall_clock_synced());
    }
}

/// The sample photos re-framed so every plate sits at the same place, on canvases of mixed sizes:
/// consecutive vehicles in one lane, as the tracker sees them.
fn photos_at_one_place(dir: &std::path::Path) -> Vec<String> {
    let (samples, _) = samples();
    let truth = std::fs::read_to_string(samples.join("groundtruth.tsv")).expect("groundtruth.tsv");
    let sizes = [
        (1280, 720),
        (1600, 900),
        (1024, 768),
        (1920, 1080),
        (800, 600),
        (1280, 960),
    ];
    let mut plates = Vec::new();
    for (i, row) in truth.lines().enumerate() {
        let f: Vec<&str> = row.split('\t').collect();
        let num = |k: usize| f[k].parse::<i64>().expect("groundtruth number");
        let (x, y, w, h) = (num(1), num(2), num(3), num(4));
        let photo = image::open(samples.join(f[0]))
            .expect("sample photo")
            .to_rgb8();
        let (cw, ch) = sizes[i % sizes.len()];
        let mut canvas = image::RgbImage::from_pixel(cw, ch, image::Rgb([90, 90, 90]));
        // Plate centre at (500, 380) on every canvas.
        image::imageops::overlay(&mut canvas, &photo, 500 - (x + w / 2), 380 - (y + h / 2));
        canvas
            .save(dir.join(format!("{i:02}.jpg")))
            .expect("save photo");
        plates.push(normalise(f[5]));
    }
    plates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_in_a_row_at_one_place_each_give_a_read_with_the_default_config() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "platecam/#").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let replay = tmp.path().join("photos");
    std::fs::create_dir_all(&replay).expect("mkdir");
    let want = photos_at_one_place(&replay);
    assert!(
        want.len() >= 5,
        "samples/groundtruth.tsv lists the sample photos"
    );
    let cfg = RunConfig {
        drain_timeout: "20s",
        ..RunConfig::new(&tmp.path().join("state"), &replay, broker.port)
    }
    .write();
    let mut daemon = Daemon::start_logging(&cfg, "info,platecam=debug");
    let status = daemon.wait_exit(Duration::from_secs(120));
    let lines = daemon.lines();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{lines:#?}");
    let reads = reads_of(&collect_reads(&mut sub, want.len(), Duration::from_secs(5)).await);
    let got: Vec<String> = reads.iter().map(|r| normalise(&r.plate)).collect();
    let dropped: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("pass dropped"))
        .collect();
    assert_eq!(
        got, want,
        "one read per photo, in order; dropped passes: {dropped:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_then_up_delivers_every_accepted_read_in_order() {
    let mut broker = Mosquitto::start();
    // A session the broker saves while it is down: the daemon may publish everything the moment
    // the broker is back, before a fresh subscriber could have subscribed.
    let mut sub =
        Subscriber::connect_persistent(broker.port, "platecam/#", "sub-broker-down").await;
    broker.stop();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, truth) = samples();
    let cfg = RunConfig {
        drain_timeout: "60s",
        ..RunConfig::new(&tmp.path().join("state"), &dir, broker.port)
    }
    .write();
    let mut daemon = Daemon::start(&cfg);
    let all_accepted = daemon.wait_for(
        |lines| lines.iter().filter(|l| l.contains("read accepted")).count() == truth.len(),
        Duration::from_secs(120),
    );
    assert!(all_accepted, "{:#?}", daemon.lines());
    std::thread::sleep(Duration::from_secs(2));
    broker.start_process();
    daemon.assert_exits_0(Duration::from_secs(60));
    let reads = reads_of(&collect_reads(&mut sub, truth.len(), Duration::from_secs(10)).await);
    let ids: Vec<String> = reads.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        ids,
        daemon.accepted_ids(),
        "every accepted read, in seq order"
    );
    let seqs: Vec<u64> = reads.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..truth.len() as u64).collect::<Vec<_>>());
    // No plate text in the logs at the default level: they go to journald and over MQTT.
    let lines = daemon.lines();
    for r in &reads {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(&r.plate)).collect();
        assert!(leaks.is_empty(), "plate {} logged: {leaks:#?}", r.plate);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_twenty_times_loses_no_accepted_read() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "platecam/+/reads").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = samples();
    let state = tmp.path().join("state");
    let looping = RunConfig {
        repeat: true,
        // One frame per photo and one empty frame: a pass ends (after the default max_gap) every
        // other frame once the first has, so reads are accepted between kills; the 6 photos
        // loop in 1.2 s on the timeline, longer than max_gap, so each loop gives new passes.
        camera: "hold_frames = 1\ngap_frames = 1",
        ..RunConfig::new(&state, &dir, broker.port)
    }
    .write();
    let mut accepted = Vec::new();
    let mut rng = fastrand::Rng::with_seed(20261126);
    for round in 0..20 {
        let mut daemon = Daemon::start(&looping);
        // Random moments: every other round from the spawn (start-up, or the first passes on a
        // fast machine), the others once reads flow (mid-pass, mid-append, mid-publish), so the
        // kills hit reads however slow the machine is.
        if round % 2 == 1 {
            let reading = |lines: &[String]| lines.iter().any(|l| l.contains("read accepted"));
            assert!(
                daemon.wait_for(reading, Duration::from_secs(60)),
                "{:#?}",
                daemon.lines()
            );
        }
        std::thread::sleep(Duration::from_millis(rng.u64(300..2500)));
        daemon.kill9();
        let ids = daemon.accepted_ids();
        eprintln!("round {round}: {} reads accepted before kill -9", ids.len());
        accepted.extend(ids);
    }
    assert!(accepted.len() >= 5, "the kills left time to accept reads");
    // A last clean run over an empty replay delivers the backlog and exits.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let drain = RunConfig {
        drain_timeout: "30s",
        ..RunConfig::new(&state, &empty, broker.port)
    };
    let drain_cfg = tmp.path().join("drain.toml");
    std::fs::write(&drain_cfg, drain.toml()).expect("write config");
    let mut daemon = Daemon::start(&drain_cfg);
    daemon.assert_exits_0(Duration::from_secs(60));

    let mut seen = HashSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !accepted.iter().all(|id| seen.contains(id)) && tokio::time::Instant::now() < until {
        if let Some(m) = sub.next(Duration::from_millis(200)).await {
            if let Ok(r) = serde_json::from_slice::<ReadMessage>(&m.payload) {
                seen.insert(r.id);
            }
        }
    }
    let missing: Vec<&String> = accepted.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "accepted reads never delivered: {missing:?}"
    );
    let (code, out, _) = platecam(&["outbox", "stats", "--json", "--config"], Some(&drain_cfg));
    assert_eq!(code, 0);
    assert!(out.contains("\"count\":0"), "outbox drained: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_reached_with_broker_down_evicts_and_reports_it() {
    let mut broker = Mosquitto::down();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = samples();
    let state = tmp.path().join("state");
    // 1 MiB of disk (about 350 KB of records) holds a few dozen reads with their crops.
    let cfg = RunConfig {
        repeat: true,
        storage: "max_bytes = \"1MiB\"",
        ..RunConfig::new(&state, &dir, broker.port)
    }
    .write();
    let mut daemon = Daemon::start(&cfg);
    let evicted = daemon.wait_for(
        |lines| lines.iter().any(|l| l.contains("outbox quota reached")),
        Duration::from_secs(120),
    );
    assert!(evicted, "eviction logged: {:#?}", daemon.lines());
    broker.start_process();
    let mut sub = Subscriber::connect(broker.port, "platecam/+/health").await;
    let mut health: Option<HealthMessage> = None;
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    while health.is_none() && tokio::time::Instant::now() < until {
        if let Some(m) = sub.next(Duration::from_millis(500)).await {
            health = serde_json::from_slice(&m.payload).ok();
        }
    }
    let health = health.expect("a health message once the broker is up");
    assert!(
        health.evictions > 0,
        "evictions counted in health: {health:?}"
    );
    assert!(
        daemon.child.try_wait().ok().flatten().is_none(),
        "still running"
    );
}

#[test]
fn config_with_three_mistakes_reports_all_with_lines_and_exits_78() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[device]\nid = \"unit-1\"\ncolour = \"red\"\n\n[mqtt]\nurl = \"http://broker\"\nkeep_alive = 30\n",
    )
    .expect("write");
    for cmd in ["check-config", "run"] {
        let (code, _, err) = platecam(&[cmd, "--config"], Some(&cfg));
        assert_eq!(code, 78, "{cmd}: {err}");
        for (key, line) in [
            ("device.colour", 3),
            ("mqtt.url", 6),
            ("mqtt.keep_alive", 7),
        ] {
            assert!(
                err.contains(&format!(":{line}: {key}")),
                "{cmd}: {key} at line {line} missing in:\n{err}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_outbox_and_corrupt_photo_are_survived() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "platecam/#").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, truth) = samples();
    let replay = tmp.path().join("photos");
    std::fs::create_dir_all(&replay).expect("mkdir");
    for (file, _) in truth.iter().take(2) {
        std::fs::copy(dir.join(file), replay.join(file)).expect("copy sample");
    }
    std::fs::write(replay.join("0-corrupt.jpg"), b"\xFF\xD8 not really a jpeg").expect("write");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(state.join("outbox")).expect("mkdir");
    std::fs::write(state.join("outbox").join("db"), vec![0x5Au8; 65536]).expect("garbage");
    std::fs::write(state.join("outbox").join("conf"), b"garbage").expect("garbage");
    // [logging] left at its defaults: warnings go over MQTT without being asked for (14.5).
    let cfg = RunConfig {
        drain_timeout: "20s",
        ..RunConfig::new(&state, &replay, broker.port)
    }
    .write();
    let port = broker.port.to_string();
    let url = format!("mqtt://127.0.0.1:{port}");
    let device = format!("test-{port}");
    let watcher = Daemon::watch(&["logs", "--broker", &url, "--device", &device, "--follow"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut daemon = Daemon::start(&cfg);
    daemon.assert_exits_0(Duration::from_secs(120));
    let lines = daemon.lines();
    assert!(
        lines.iter().any(|l| l.contains("moving it aside")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("0-corrupt.jpg")),
        "corrupt photo named in a warning: {lines:#?}"
    );
    let moved = std::fs::read_dir(&state)
        .expect("state dir")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("outbox.corrupt-")
        });
    assert!(moved, "old outbox kept aside");
    let reads = reads_of(&collect_reads(&mut sub, 2, Duration::from_secs(10)).await);
    assert_eq!(reads.len(), 2, "both good photos read: {reads:?}");
    let remote = watcher.lines();
    assert!(
        remote
            .iter()
            .any(|l| l.contains("WARN") && l.contains("0-corrupt.jpg")),
        "`platecam logs --follow` printed the warning: {remote:#?}"
    );
}

/// The camera's state in the next health message.
async fn camera_state(sub: &mut Subscriber, limit: Duration) -> Option<String> {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        let Some(m) = sub.next(Duration::from_millis(200)).await else {
            continue;
        };
        if let Ok(h) = serde_json::from_slice::<HealthMessage>(&m.payload) {
            return h.cameras.first().map(|c| c.state.clone());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_absent_at_start_is_reported_and_waited_for() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "platecam/+/health").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let device = tmp.path().join("dev").join("video0");
    let cfg = RunConfig {
        source: Some(format!("v4l2://{}", device.display())),
        ..RunConfig::new(&tmp.path().join("state"), tmp.path(), broker.port)
    }
    .write();
    let mut daemon = Daemon::start_logging(&cfg, "info,platecam=debug");
    let absent = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("camera still absent"))
            .count()
            >= 2
    };
    assert!(
        daemon.wait_for(absent, Duration::from_secs(30)),
        "retried while absent: {:#?}",
        daemon.lines()
    );
    assert!(
        daemon.child.try_wait().expect("wait").is_none(),
        "still running"
    );
    let lines = daemon.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("state=\"absent\"") && l.contains("video0")),
        "{lines:#?}"
    );
    assert_eq!(
        camera_state(&mut sub, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("absent")
    );

    // The node appears (here a plain file, not a camera: the real reopen is the VM test's).
    std::fs::create_dir_all(device.parent().expect("parent")).expect("mkdir");
    std::fs::write(&device, b"").expect("create the node");
    let tried = |lines: &[String]| {
        lines
            .iter()
            .any(|l| l.contains("cannot open camera") && l.contains("state=\"reconnecting\""))
    };
    assert!(
        daemon.wait_for(tried, Duration::from_secs(30)),
        "opened again once it existed: {:#?}",
        daemon.lines()
    );
    let mut state = None;
    for _ in 0..5 {
        state = camera_state(&mut sub, Duration::from_secs(5)).await;
        if state.as_deref() == Some("reconnecting") {
            break;
        }
    }
    assert_eq!(state.as_deref(), Some("reconnecting"));
    daemon.signal(Signal::SIGTERM);
    daemon.assert_exits_0(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_harmless_and_sigterm_drains_and_exits_0() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "platecam/+/#").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = samples();
    let cfg = RunConfig {
        repeat: true,
        ..RunConfig::new(&tmp.path().join("state"), &dir, broker.port)
    }
    .write();
    let mut daemon = Daemon::start(&cfg);
    let reading = daemon.wait_for(
        |lines| lines.iter().any(|l| l.contains("read accepted")),
        Duration::from_secs(120),
    );
    assert!(reading, "{:#?}", daemon.lines());
    // `systemctl reload` sends SIGHUP; with no hotlist configured it must not stop the unit.
    daemon.signal(Signal::SIGHUP);
    let heard = daemon.wait_for(
        |lines| lines.iter().any(|l| l.contains("SIGHUP")),
        Duration::from_secs(10),
    );
    assert!(
        heard && daemon.child.try_wait().ok().flatten().is_none(),
        "still running after SIGHUP: {:#?}",
        daemon.lines()
    );
    daemon.signal(Signal::SIGTERM);
    daemon.assert_exits_0(Duration::from_secs(30));

    let accepted = daemon.accepted_ids();
    let mut msgs = collect_reads(&mut sub, accepted.len(), Duration::from_secs(5)).await;
    while let Some(m) = sub.next(Duration::from_millis(500)).await {
        msgs.push(m);
    }
    let delivered: HashSet<String> = reads_of(&msgs).into_iter().map(|r| r.id).collect();
    assert!(
        accepted.iter().all(|id| delivered.contains(id)),
        "reads flushed at shutdown were delivered before exit"
    );
    let offline = msgs.iter().any(|m| {
        m.topic.ends_with("/status")
            && serde_json::from_slice::<StatusMessage>(&m.payload)
                .is_ok_and(|s| s.state == "offline")
    });
    assert!(
        offline,
        "a clean stop publishes the retained offline status"
    );
}
