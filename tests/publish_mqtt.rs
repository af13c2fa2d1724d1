//! The publisher against a real mosquitto: delivery, outages, PUBACK correlation, status, health.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use platecam::config::{MqttConfig, StorageConfig};
use platecam::outbox::Outbox;
use platecam::publish::{run, PublishError, PublishReport, PublishSettings};
use platecam::telemetry::Metrics;
use platecam::wire::{HealthMessage, ReadMessage, StatusMessage};
use sha2::{Digest, Sha256};
use support::mosquitto::{Mosquitto, Subscriber};
use support::{fake_crop, sample_read};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "pctest";

/// One publisher task over an outbox in a temp dir.
struct Rig {
    outbox: Arc<Outbox>,
    notify: Arc<Notify>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<PublishReport, PublishError>>>,
    device: String,
    _dir: tempfile::TempDir,
}

fn settings(url: &str, device: &str, dir: &std::path::Path) -> PublishSettings {
    PublishSettings {
        mqtt: MqttConfig {
            url: url.to_string(),
            prefix: PREFIX.into(),
            reconnect_max: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(3),
            health_interval: Duration::from_secs(60),
            ..MqttConfig::default()
        },
        device_id: device.to_string(),
        client_id: format!("platecam-{device}"),
        version: "9.9.9-test".into(),
        storage_dir: dir.to_path_buf(),
    }
}

impl Rig {
    fn new(device: &str) -> Rig {
        Rig::new_in(device, tempfile::tempdir().expect("tempdir"))
    }

    fn new_in(device: &str, dir: tempfile::TempDir) -> Rig {
        let storage = StorageConfig {
            dir: dir.path().to_path_buf(),
            ..StorageConfig::default()
        };
        Rig {
            outbox: Arc::new(Outbox::open(&storage).expect("open outbox").0),
            notify: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::default()),
            shutdown: CancellationToken::new(),
            task: None,
            device: device.to_string(),
            _dir: dir,
        }
    }

    fn start(&mut self, url: &str, tune: impl FnOnce(&mut PublishSettings)) {
        self.start_with_logs(url, None, tune);
    }

    fn start_with_logs(
        &mut self,
        url: &str,
        logs: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
        tune: impl FnOnce(&mut PublishSettings),
    ) {
        let mut s = settings(url, &self.device, self._dir.path());
        tune(&mut s);
        self.task = Some(tokio::spawn(run(
            s,
            self.outbox.clone(),
            self.notify.clone(),
            self.metrics.clone(),
            logs,
            self.shutdown.clone(),
        )));
    }

    /// Appends `n` reads with crops; returns (seq, id, crop sha256) in append order.
    fn append(&self, n: u64) -> Vec<(u64, String)> {
        let out = (0..n)
            .map(|i| {
                let stored = self
                    .outbox
                    .append(
                        sample_read(&self.device, &format!("AB{i:04}")),
                        fake_crop(i, 1500 + (i as usize % 7) * 300),
                    )
                    .expect("append");
                (stored.seq, stored.message.id)
            })
            .collect();
        self.notify.notify_one();
        out
    }

    async fn stop(&mut self) -> PublishReport {
        self.shutdown.cancel();
        let task = self.task.take().expect("started");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("publisher stops in time")
            .expect("publisher task did not panic")
            .expect("publisher returns a report")
    }

    fn topic(&self, leaf: &str) -> String {
        format!("{PREFIX}/{}/{leaf}", self.device)
    }
}

async fn wait_for_empty(outbox: &Outbox, timeout: Duration) -> bool {
    let until = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < until {
        if outbox.stats().count == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Checks reads arrive in seq order with matching crops; returns the reads by id.
fn check_reads(
    rig: &Rig,
    msgs: &[support::mosquitto::Received],
    expected: &[(u64, String)],
) -> HashMap<String, ReadMessage> {
    let reads: Vec<ReadMessage> = msgs
        .iter()
        .filter(|m| m.topic == rig.topic("reads"))
        .map(|m| serde_json::from_slice(&m.payload).expect("read JSON"))
        .collect();
    let got: Vec<(u64, String)> = reads.iter().map(|r| (r.seq, r.id.clone())).collect();
    assert_eq!(got, expected, "reads in seq order, each once");
    let crops: HashMap<String, &Vec<u8>> = msgs
        .iter()
        .filter_map(|m| {
            m.topic
                .strip_prefix(&rig.topic("crops/"))
                .map(|id| (id.to_string(), &m.payload))
        })
        .collect();
    for r in &reads {
        let info = r.crop.as_ref().expect("crop info");
        let bytes = crops.get(&r.id).expect("crop published");
        assert_eq!(bytes.len(), info.bytes);
        assert_eq!(hex::encode(Sha256::digest(bytes)), info.sha256);
    }
    reads.into_iter().map(|r| (r.id.clone(), r)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_read_in_seq_order_with_crops_then_empties_the_outbox() {
    let broker = Mosquitto::start();
    let mut rig = Rig::new("t-deliver");
    let mut sub = Subscriber::connect(broker.port, &rig.topic("#")).await;
    let expected = rig.append(50);
    rig.start(&broker.url(), |_| {});
    let msgs = sub.collect(101, Duration::from_secs(15)).await; // 50 reads, 50 crops, online
    check_reads(&rig, &msgs, &expected);
    assert!(
        wait_for_empty(&rig.outbox, Duration::from_secs(5)).await,
        "outbox drained"
    );
    let report = rig.stop().await;
    assert_eq!(report.acked, 50);
    assert!(report.published >= 100);
    assert_eq!(report.unacked_at_shutdown, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_buffered_while_the_broker_is_down_arrive_when_it_starts() {
    let mut broker = Mosquitto::start();
    let mut rig = Rig::new("t-outage");
    // A persistent session, so the subscriber gets what is published before it is back.
    let mut sub =
        Subscriber::connect_persistent(broker.port, &rig.topic("#"), "sub-t-outage").await;
    broker.stop();
    rig.start(&broker.url(), |_| {});
    let expected = rig.append(10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.outbox.stats().count,
        10,
        "nothing removed without a broker"
    );
    broker.start_process();
    let msgs = sub.collect(21, Duration::from_secs(15)).await;
    check_reads(&rig, &msgs, &expected);
    assert!(wait_for_empty(&rig.outbox, Duration::from_secs(5)).await);
    let report = rig.stop().await;
    assert_eq!(report.acked, 10);
    assert!(report.connection_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stay_until_their_puback_arrives() {
    let broker = Mosquitto::start();
    let mut rig = Rig::new("t-puback");
    let mut sub = Subscriber::connect(broker.port, &rig.topic("#")).await;
    rig.start(&broker.url(), |_| {});
    let online = sub
        .next(Duration::from_secs(10))
        .await
        .expect("online status");
    assert_eq!(online.topic, rig.topic("status"));
    // Frozen broker: the publisher writes (the kernel buffers it) but no PUBACK comes back.
    broker.pause();
    let expected = rig.append(5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.outbox.stats().count,
        5,
        "no record removed without its PUBACK"
    );
    broker.unpause();
    assert!(
        wait_for_empty(&rig.outbox, Duration::from_secs(10)).await,
        "removed after the PUBACKs"
    );
    let msgs = sub.collect(10, Duration::from_secs(5)).await;
    check_reads(&rig, &msgs, &expected);
    assert_eq!(rig.stop().await.acked, 5);
}

async fn retained_status(port: u16, topic: &str) -> StatusMessage {
    let mut late = Subscriber::connect(port, topic).await;
    let msg = late
        .next(Duration::from_secs(5))
        .await
        .expect("retained status");
    assert!(msg.retain, "status is retained");
    serde_json::from_slice(&msg.payload).expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_online_then_offline_on_shutdown_and_last_will_on_a_dead_connection() {
    let broker = Mosquitto::start();
    let mut rig = Rig::new("t-status");
    let mut watch = Subscriber::connect(broker.port, &rig.topic("status")).await;
    rig.start(&broker.url(), |_| {});
    watch
        .next(Duration::from_secs(10))
        .await
        .expect("status published");
    let online = retained_status(broker.port, &rig.topic("status")).await;
    assert_eq!(online.state, "online");
    assert_eq!(online.version.as_deref(), Some("9.9.9-test"));
    assert!(online.started_at.is_some());
    rig.stop().await;
    let offline = retained_status(broker.port, &rig.topic("status")).await;
    assert_eq!(offline.state, "offline");

    // No goodbye at all: the task dies with its socket, the broker sends the last will.
    let mut rig = Rig::new("t-will");
    let mut watch = Subscriber::connect(broker.port, &rig.topic("status")).await;
    rig.start(&broker.url(), |_| {});
    let first = watch.next(Duration::from_secs(10)).await.expect("online");
    assert!(String::from_utf8_lossy(&first.payload).contains("online"));
    rig.task.take().expect("started").abort();
    let will = watch
        .next(Duration::from_secs(10))
        .await
        .expect("last will");
    let will: StatusMessage = serde_json::from_slice(&will.payload).expect("will JSON");
    assert_eq!(will.state, "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_metrics_outbox_and_disk() {
    let broker = Mosquitto::start();
    let mut rig = Rig::new("t-health");
    let mut sub = Subscriber::connect(broker.port, &rig.topic("health")).await;
    rig.metrics
        .camera("north")
        .frames
        .fetch_add(30, std::sync::atomic::Ordering::Relaxed);
    rig.metrics
        .reads_total
        .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
    rig.start(&broker.url(), |s| {
        s.mqtt.health_interval = Duration::from_secs(1)
    });
    let msg = sub
        .next(Duration::from_secs(8))
        .await
        .expect("health message");
    // Published retained (a fleet view sees every unit's latest health at once): a subscriber
    // that comes later gets it at once, marked retained.
    let mut late = Subscriber::connect(broker.port, &rig.topic("health")).await;
    let retained = late
        .next(Duration::from_secs(5))
        .await
        .expect("retained health");
    assert!(retained.retain, "health is retained");
    let h: HealthMessage = serde_json::from_slice(&msg.payload).expect("health JSON");
    assert_eq!(h.reads_total, 3);
    assert_eq!(h.reads_buffered, 0);
    assert_eq!(h.cameras.len(), 1);
    assert_eq!(h.cameras[0].name, "north");
    assert!(h.disk_free_bytes.is_some_and(|b| b > 0));
    assert!(h.at.ends_with('Z'));
    rig.stop().await;
}

/// A wide window makes the broker ack in bursts: more events than one handling batch at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_window_bursts_of_acks_lose_no_event() {
    let broker = Mosquitto::start();
    let mut rig = Rig::new("t-burst");
    let mut sub = Subscriber::connect(broker.port, &rig.topic("reads")).await;
    let expected = rig.append(400);
    rig.start(&broker.url(), |s| s.mqtt.inflight = 64);
    let msgs = sub.collect(400, Duration::from_secs(15)).await;
    let got: Vec<(u64, String)> = msgs
        .iter()
        .map(|m| serde_json::from_slice::<ReadMessage>(&m.payload).expect("read JSON"))
        .map(|r| (r.seq, r.id))
        .collect();
    assert_eq!(got, expected);
    assert!(
        wait_for_empty(&rig.outbox, Duration::from_secs(5)).await,
        "every PUBACK matched"
    );
    assert_eq!(rig.stop().await.acked, 400);
}

/// 12.2: a publisher that ends with an error ends the pipeline (and so the process), instead of
/// leaving a unit that reads and delivers nothing. Here the publisher fails at once (settings that
/// skipped config validation); the replay loops for ever, so only the publisher can end the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_ends_with_an_error_when_the_publisher_dies() {
    let broker = Mosquitto::start();
    let state = tempfile::tempdir().expect("tempdir");
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let text = format!(
        "[device]\nid = \"t-deadpub\"\n\n[[camera]]\nname = \"lane1\"\nsource = \"replay://{}\"\n\
         fps = 20\nloop = true\n\n[mqtt]\nurl = \"{}\"\n\n[storage]\ndir = \"{}\"\n",
        samples.display(),
        broker.url(),
        state.path().display()
    );
    let mut cfg = platecam::config::load_str(&text, "test").expect("config");
    cfg.mqtt.username = Some("u".into());
    cfg.mqtt.password_file = Some(state.path().join("no-such-password"));
    let run = platecam::pipeline::run(cfg, None, CancellationToken::new(), |_| {});
    let ended = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the pipeline ends when its publisher is gone");
    match ended {
        Err(e @ platecam::pipeline::PipelineError::Publish(_)) => assert_ne!(e.exit_code(), 0),
        other => panic!("expected a publisher error, got {other:?}"),
    }
}

/// 15.5: a burst of log events while big crops fill rumqttc's request queue drops (and counts)
/// log events; it never tears the connection down (which would re-send the whole window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_log_events_never_drops_the_connection() {
    let broker = Mosquitto::start();
    let mut rig = Rig::new("t-logburst");
    let mut sub = Subscriber::connect(broker.port, &rig.topic("reads")).await;
    let n = 40u64;
    let expected: Vec<(u64, String)> = (0..n)
        .map(|i| {
            let stored = rig
                .outbox
                .append(
                    sample_read(&rig.device, &format!("LB{i:04}")),
                    fake_crop(i, 300_000),
                )
                .expect("append");
            (stored.seq, stored.message.id)
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    for i in 0..256 {
        let event = format!(
            r#"{{"level":"WARN","message":"burst {i}","pad":"{}"}}"#,
            "x".repeat(512)
        );
        tx.try_send(event.into_bytes()).expect("queue a log event");
    }
    rig.start_with_logs(&broker.url(), Some(rx), |_| {});
    let msgs = sub.collect(n as usize, Duration::from_secs(30)).await;
    let got: Vec<(u64, String)> = msgs
        .iter()
        .map(|m| serde_json::from_slice::<ReadMessage>(&m.payload).expect("read JSON"))
        .map(|r| (r.seq, r.id))
        .collect();
    assert_eq!(got, expected, "each read once, in order: no window re-sent");
    assert!(wait_for_empty(&rig.outbox, Duration::from_secs(10)).await);
    drop(tx);
    let report = rig.stop().await;
    assert_eq!(report.connects, 1, "one session: {report:?}");
    assert_eq!(report.connection_errors, 0, "{report:?}");
    assert!(
        rig.metrics
            .logs_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the events that did not fit are counted"
    );
}

/// A TCP proxy in front of the broker whose first connection goes deaf after the CONNACK: the
/// broker's PUBACKs never reach us, the TCP connection stays up (a half-broken path). Later
/// connections pass everything.
async fn deaf_first_connection_proxy(broker_port: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("proxy addr").port();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let deaf = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await
                else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut uw).await;
                });
                if !deaf {
                    let _ = tokio::io::copy(&mut ur, &mut cw).await;
                    return;
                }
                let mut connack = [0u8; 4];
                if ur.read_exact(&mut connack).await.is_ok() {
                    let _ = cw.write_all(&connack).await;
                }
                let mut sink = vec![0u8; 64 * 1024];
                while matches!(ur.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// 12.9: a session whose PUBACKs never come is given up after `mqtt.ack_timeout`; the reads are
/// handed again on a new session and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_acknowledges_is_replaced_after_the_ack_timeout() {
    let broker = Mosquitto::start();
    let port = deaf_first_connection_proxy(broker.port).await;
    let mut rig = Rig::new("t-acktimeout");
    rig.append(5);
    rig.start(&format!("mqtt://127.0.0.1:{port}"), |s| {
        s.mqtt.ack_timeout = Duration::from_secs(2);
    });
    assert!(
        wait_for_empty(&rig.outbox, Duration::from_secs(15)).await,
        "delivered on a new session after the ack timeout"
    );
    let report = rig.stop().await;
    assert!(report.connects >= 2, "{report:?}");
    assert_eq!(report.acked, 5);
}

/// 12.9: a crop too big for `mqtt.max_packet_size` is not published, and its read does not
/// advertise it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crop_dropped_for_size_is_not_advertised_in_its_read() {
    let broker = Mosquitto::start();
    let mut rig = Rig::new("t-bigcrop");
    let mut sub = Subscriber::connect(broker.port, &rig.topic("#")).await;
    let big = rig
        .outbox
        .append(sample_read(&rig.device, "BIG001"), fake_crop(1, 100_000))
        .expect("append");
    assert!(big.message.crop.is_some(), "stored with its crop");
    let small = rig.append(1);
    rig.start(&broker.url(), |s| {
        s.mqtt.max_packet_size = bytesize::ByteSize::kib(64);
    });
    let msgs = sub.collect(4, Duration::from_secs(10)).await; // online, 2 reads, 1 crop
    let reads: Vec<ReadMessage> = msgs
        .iter()
        .filter(|m| m.topic == rig.topic("reads"))
        .map(|m| serde_json::from_slice(&m.payload).expect("read JSON"))
        .collect();
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0].id, big.message.id);
    assert!(
        reads[0].crop.is_none(),
        "no crop advertised: {:?}",
        reads[0].crop
    );
    assert_eq!(reads[1].id, small[0].1);
    assert!(reads[1].crop.is_some());
    assert!(!msgs
        .iter()
        .any(|m| m.topic == rig.topic(&format!("crops/{}", big.message.id))));
    assert!(wait_for_empty(&rig.outbox, Duration::from_secs(5)).await);
    rig.stop().await;
}

/// Publishes one retained QoS 1 message and waits for its PUBACK.
async fn publish_retained(port: u16, topic: &str, payload: &[u8]) {
    let mut opts = rumqttc::MqttOptions::new(
        format!("pub-{}", support::mosquitto::free_port()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 8);
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload.to_vec())
        .await
        .expect("queue publish");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_)) =
                eventloop.poll().await.expect("publish connection")
            {
                return;
            }
        }
    })
    .await
    .expect("PUBACK in time");
}

fn platecam_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(support::daemon::bin())
        .args(args)
        .output()
        .expect("run platecam")
}

/// 15.4: `fleet` and `logs` tell scripts the truth: an unreachable broker is a non-zero exit with
/// a message on stderr, not exit 0 and an empty table.
#[test]
fn watchers_exit_non_zero_when_the_broker_cannot_be_reached() {
    let down = Mosquitto::down();
    let url = down.url();
    for args in [
        vec!["fleet", "--broker", &url, "--wait", "1s"],
        vec!["logs", "--broker", &url, "--device", "+", "--wait", "1s"],
    ] {
        let out = platecam_cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {:?}", out.status);
        assert!(
            stderr.contains("cannot reach the broker"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

/// 12.12: what any client published under the prefix reaches the operator's terminal escaped:
/// no terminal control sequence from the broker is printed as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_prints_broker_strings_escaped() {
    let broker = Mosquitto::start();
    let evil = r#"{"state":"online\u001b[2J","version":"1\u001b]0;pwned\u0007\u009b"}"#;
    publish_retained(broker.port, "platecam/evil/status", evil.as_bytes()).await;
    let url = broker.url();
    for json in [false, true] {
        let mut args: Vec<String> = ["fleet", "--broker", &url, "--wait", "1s"]
            .map(String::from)
            .into();
        if json {
            args.push("--json".into());
        }
        let out = tokio::task::spawn_blocking(move || {
            platecam_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .expect("cli thread");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("evil"), "{stdout}");
        assert!(
            !stdout.chars().any(|c| c.is_control() && c != '\n'),
            "control characters printed: {stdout:?}"
        );
    }
}

/// 15.2: two units with one id (a cloned image) on a real mosquitto: each connect closes the
/// other's session; the publishers notice, count it in `session_takeovers` and log it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_units_with_one_id_count_session_takeovers() {
    let broker = Mosquitto::start();
    let mut a = Rig::new("t-clone");
    let mut b = Rig::new("t-clone");
    a.start(&broker.url(), |_| {});
    b.start(&broker.url(), |_| {});
    let takeovers = |r: &Rig| {
        r.metrics
            .session_takeovers
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while takeovers(&a) + takeovers(&b) == 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        takeovers(&a) + takeovers(&b) > 0,
        "the fight for one client id is noticed"
    );
    a.stop().await;
    b.stop().await;
}

/// The passes flushed at shutdown are stored just before the publisher is told to stop: the drain
/// delivers them too, not only what was already in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_delivers_reads_stored_just_before_the_stop() {
    let broker = Mosquitto::start();
    let mut rig = Rig::new("t-lastreads");
    let mut sub = Subscriber::connect(broker.port, &rig.topic("status")).await;
    rig.start(&broker.url(), |_| {});
    sub.next(Duration::from_secs(10)).await.expect("online");
    // Stored without a wake-up, then the stop at once: as the pipeline does at shutdown.
    for i in 0..5u64 {
        rig.outbox
            .append(
                sample_read(&rig.device, &format!("LS{i:04}")),
                fake_crop(i, 2000),
            )
            .expect("append");
    }
    let report = rig.stop().await;
    assert_eq!(report.acked, 5, "{report:?}");
    assert_eq!(rig.outbox.stats().count, 0);
}

/// Issue 13: a full disk under the outbox makes the publisher wait (logged, with backoff) instead
/// of ending the process, which would only restart into the same full disk; once space is freed,
/// every stored read is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_publisher_wait_then_deliver() {
    let disk = support::SmallDisk::mount();
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir_in(disk.path()).expect("tempdir on the small disk");
    let mut rig = Rig::new_in("t-diskfull", dir);
    let mut sub =
        Subscriber::connect_persistent(broker.port, &rig.topic("reads"), "sub-t-diskfull").await;
    broker.stop();
    rig.start(&broker.url(), |_| {});
    let mut expected: Vec<String> = rig.append(5).into_iter().map(|(_, id)| id).collect();
    let filler = disk.fill("filler");
    // Refused on the full disk: sled latches the write error until the outbox is reopened.
    for i in 0..3 {
        let read = sample_read(&rig.device, &format!("FULL{i}"));
        if let Ok(stored) = rig.outbox.append(read, fake_crop(90 + i, 20_000)) {
            expected.push(stored.message.id);
        }
    }
    broker.start_process();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let task = rig.task.as_ref().expect("started");
    assert!(
        !task.is_finished(),
        "the publisher ended while the disk was full"
    );
    std::fs::remove_file(&filler).expect("free the disk");
    rig.notify.notify_one();
    assert!(wait_for_empty(&rig.outbox, Duration::from_secs(60)).await);
    // Room for a refused read may have been made by the eviction policy (logged, counted): those
    // reads are not expected on the broker.
    let evicted = usize::try_from(rig.outbox.stats().evictions).expect("small");
    let msgs = sub
        .collect(expected.len() - evicted, Duration::from_secs(10))
        .await;
    let got: std::collections::HashSet<String> = msgs
        .iter()
        .map(|m| {
            serde_json::from_slice::<ReadMessage>(&m.payload)
                .expect("read JSON")
                .id
        })
        .collect();
    assert!(
        got.iter().all(|id| expected.contains(id)) && got.len() + evicted == expected.len(),
        "every stored read not evicted is delivered once the disk has room: {got:?}, \
         {evicted} evicted of {expected:?}"
    );
    rig.stop().await;
}
