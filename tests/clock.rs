//! Clock jumps (issue 13 item 4): a unit without a battery-backed clock boots in 1970, NTP steps
//! it to now, and sometimes back. The daemon runs under libfaketime (Debian's `faketime`) with
//! only the wall clock faked (the kernel's monotonic clock is never stepped), re-read from a file
//! the test rewrites: reads go on being accepted and delivered, each carries the wall time of its
//! frame, ids stay unique and in seq order, and the reconnect backoff is not stretched by a step.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::daemon::{samples, Daemon, RunConfig};
use support::mosquitto::{Mosquitto, Subscriber};

use platecam::wire::ReadMessage;

/// libfaketime's multi-threaded build, where Debian puts it.
fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime not found under /usr/lib/*/faketime: install Debian's faketime")
}

/// Sets the daemon's wall clock to `at` (from the next time libfaketime re-reads the file).
fn set_clock(file: &Path, at: SystemTime) {
    let real = SystemTime::now();
    let offset = match at.duration_since(real) {
        Ok(ahead) => format!("+{}", ahead.as_secs()),
        Err(behind) => format!("-{}", behind.duration().as_secs()),
    };
    std::fs::write(file, offset).expect("write the faked clock");
    // libfaketime re-reads the file at most every FAKETIME_CACHE_DURATION (1 s).
    std::thread::sleep(Duration::from_millis(1500));
}

/// Reads received until `enough` holds or `limit` passes, added to `got` (seq -> read).
async fn collect(
    sub: &mut Subscriber,
    got: &mut BTreeMap<u64, ReadMessage>,
    enough: impl Fn(&BTreeMap<u64, ReadMessage>) -> bool,
    limit: Duration,
) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while !enough(got) && tokio::time::Instant::now() < until {
        if let Some(m) = sub.next(Duration::from_millis(200)).await {
            if let Ok(r) = serde_json::from_slice::<ReadMessage>(&m.payload) {
                got.insert(r.seq, r);
            }
        }
    }
    enough(got)
}

/// `platecam_outbox_oldest_age_seconds` from the daemon's `/metrics`.
fn oldest_age_metric(port: u16) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the web port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read the reply");
    reply
        .lines()
        .find_map(|l| l.strip_prefix("platecam_outbox_oldest_age_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no outbox_oldest_age_seconds in /metrics: {reply}"))
}

/// When the read was stored, by the daemon's wall clock: a UUIDv7 starts with it (ms since the
/// epoch, 48 bits).
fn stored_ms(read: &ReadMessage) -> u64 {
    let hex: String = read.id.chars().filter(|c| *c != '-').take(12).collect();
    u64::from_str_radix(&hex, 16).expect("a UUIDv7 starts with its time")
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_in_1970_then_ntp_steps_forward_then_back() {
    let lib = libfaketime();
    let mut broker = Mosquitto::start();
    let mut sub =
        Subscriber::connect_persistent(broker.port, "platecam/+/reads", "clock-reads").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = tmp.path().join("faketime");
    let (photos, _) = samples();
    let state = tmp.path().join("state");
    let web_port = support::mosquitto::free_port();
    let cfg = tmp.path().join("platecam.toml");
    let base = RunConfig {
        repeat: true,
        camera: "hold_frames = 1\ngap_frames = 1",
        ..RunConfig::new(&state, &photos, broker.port)
    }
    .toml();
    // The web listener's /metrics shows the outbox's oldest age while the broker is away.
    std::fs::write(
        &cfg,
        format!("{base}\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n"),
    )
    .expect("write config");
    set_clock(&clock, UNIX_EPOCH + Duration::from_secs(100));
    let daemon = Daemon::start_env(
        &cfg,
        &[
            ("LD_PRELOAD", lib.to_str().expect("utf-8 path")),
            (
                "FAKETIME_TIMESTAMP_FILE",
                clock.to_str().expect("utf-8 path"),
            ),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let mut got = BTreeMap::new();

    // Booted in 1970.
    let booted = collect(
        &mut sub,
        &mut got,
        |g| g.values().filter(|r| stored_ms(r) < 86_400_000).count() >= 2,
        Duration::from_secs(90),
    )
    .await;
    assert!(booted, "reads from 1970: {got:#?}\n{:#?}", daemon.lines());

    // NTP steps the clock to now while the broker is away, with reads from 1970 unsent; the
    // broker is back 2 s later.
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    let now = SystemTime::now();
    set_clock(&clock, now);
    // Counted from when the clock was set, not 56 years.
    let age = oldest_age_metric(web_port);
    assert!(
        age < 600.0,
        "outbox_oldest_age_seconds {age} after the step from 1970"
    );
    std::thread::sleep(Duration::from_secs(2));
    let year = &platecam::wire::rfc3339_ms(now)[..5];
    broker.start_process();
    let stepped = collect(
        &mut sub,
        &mut got,
        // A replay's `captured_at` moves with the step too (its timeline started in 1970).
        |g| {
            g.values()
                .filter(|r| stored_ms(r) >= ms(now) && r.captured_at.starts_with(year))
                .count()
                >= 2
        },
        // Reconnects back off up to `mqtt.reconnect_max` (1 s here) on the monotonic clock: a
        // backoff measured on the wall clock would wait 56 years.
        Duration::from_secs(30),
    )
    .await;
    assert!(
        stepped,
        "reads stored and captured after the step to now: {:#?}\n{:#?}",
        got.values()
            .map(|r| (r.seq, &r.id, &r.captured_at))
            .collect::<Vec<_>>(),
        daemon.lines()
    );

    // And back an hour: reads go on (and their ids stay ordered, below).
    let before_back = got.len();
    set_clock(&clock, SystemTime::now() - Duration::from_secs(3600));
    let after_back = collect(
        &mut sub,
        &mut got,
        |g| g.len() >= before_back + 3,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        after_back,
        "reads after the step back: {:#?}",
        daemon.lines()
    );

    // Ids: unique, and in seq order across both steps (consumers may sort by them).
    let ids: Vec<&String> = got.values().map(|r| &r.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids out of seq order: {:#?}",
        got.values().map(|r| (r.seq, &r.id)).collect::<Vec<_>>()
    );
    let lines = daemon.lines();
    let bad: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("panicked") || l.contains("ERROR"))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}
