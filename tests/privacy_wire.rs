//! Privacy on the wire, with the whole daemon (replayed photos, our models, sled, a real
//! mosquitto): signed reads checked by `platecam verify`, hotlist-only mode, pseudonymous mode.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS};
use support::daemon::{platecam, samples, Daemon, RunConfig};
use support::mosquitto::{free_port, Mosquitto, Received, Subscriber};
use support::normalise;

use platecam::privacy::sign::Signer;
use platecam::wire::{IdentityMessage, ReadMessage};

/// Runs the daemon over `replay` with `privacy` as its `[privacy]` section until it exits 0;
/// returns every message published under `platecam/` and the daemon's log lines.
async fn run_daemon(
    state: &Path,
    replay: &Path,
    privacy: &str,
    want_reads: usize,
) -> (Vec<Received>, Vec<String>) {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "platecam/#").await;
    let cfg = RunConfig::new(state, replay, broker.port);
    let path = cfg.write();
    std::fs::write(&path, format!("{}\n[privacy]\n{privacy}\n", cfg.toml())).expect("config");
    let mut daemon = Daemon::start(&path);
    daemon.assert_exits_0(Duration::from_secs(180));
    let mut msgs = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        if let Some(m) = sub.next(Duration::from_millis(200)).await {
            msgs.push(m);
        } else if on(&msgs, "/reads").len() >= want_reads {
            break;
        }
    }
    (msgs, daemon.lines())
}

fn on<'a>(msgs: &'a [Received], suffix: &str) -> Vec<&'a Received> {
    msgs.iter().filter(|m| m.topic.ends_with(suffix)).collect()
}

fn reads(msgs: &[Received], suffix: &str) -> Vec<ReadMessage> {
    on(msgs, suffix)
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("a read"))
        .collect()
}

/// Every file under `dir`, every byte: which of `needles` occur anywhere.
fn found_in_files(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("read");
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                    found.push(format!("{n} in {}", path.display()));
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_reads_verify_and_tampered_swapped_or_replayed_reads_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, truth) = samples();
    assert!(truth.len() >= 2, "samples/groundtruth.tsv lists the photos");
    let (msgs, _) = run_daemon(&tmp.path().join("state"), &dir, "", truth.len()).await;
    let identity = on(&msgs, "/identity");
    assert_eq!(identity.len(), 1, "one retained identity");
    assert!(identity[0].retain || !identity.is_empty());
    let id: IdentityMessage = serde_json::from_slice(&identity[0].payload).expect("identity");
    let key_file = tmp.path().join("identity.json");
    std::fs::write(&key_file, &identity[0].payload).expect("write");

    let lines: Vec<String> = on(&msgs, "/reads")
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).expect("utf8"))
        .collect();
    assert_eq!(lines.len(), truth.len(), "one read per photo");
    let crops_dir = tmp.path().join("crops");
    std::fs::create_dir(&crops_dir).expect("mkdir");
    let crops: BTreeMap<String, Vec<u8>> = msgs
        .iter()
        .filter_map(|m| {
            Some((
                m.topic.rsplit_once("/crops/")?.1.to_string(),
                m.payload.clone(),
            ))
        })
        .collect();
    for (read_id, bytes) in &crops {
        std::fs::write(crops_dir.join(format!("{read_id}.jpg")), bytes).expect("crop");
    }
    let verify = |reads: &[String], name: &str, key: &Path| {
        let file = tmp.path().join(name);
        std::fs::write(&file, reads.join("\n")).expect("write");
        let crops = crops_dir.to_string_lossy().into_owned();
        let key = key.to_string_lossy().into_owned();
        platecam(&["verify", "--key", &key, "--crops", &crops], Some(&file))
    };

    // Genuine: every read verifies, crops included.
    let (code, out, err) = verify(&lines, "genuine.jsonl", &key_file);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        truth.len(),
        "{out}"
    );

    // A tampered plate.
    let mut tampered = lines.clone();
    let first: ReadMessage = serde_json::from_str(&lines[0]).expect("read");
    tampered[0] = lines[0].replace(
        &format!("\"plate\":\"{}\"", first.plate),
        "\"plate\":\"ZZ999ZZ\"",
    );
    assert_ne!(tampered[0], lines[0]);
    let (code, out, _) = verify(&tampered, "tampered.jsonl", &key_file);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines().next().unwrap_or_default().contains("REJECTED")
            && out.contains("bad signature"),
        "{out}"
    );

    // A swapped crop: read 0's file holds read 1's crop.
    let second: ReadMessage = serde_json::from_str(&lines[1]).expect("read");
    std::fs::write(
        crops_dir.join(format!("{}.jpg", first.id)),
        &crops[&second.id],
    )
    .expect("swap");
    let (code, out, _) = verify(&lines, "swapped.jsonl", &key_file);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("crop does not match"), "{out}");
    std::fs::write(
        crops_dir.join(format!("{}.jpg", first.id)),
        &crops[&first.id],
    )
    .expect("restore");

    // A read of another unit, replayed as this one's: its own key signed it, not this unit's.
    let other = Signer::from_seed(&[9; 32], "other-unit").expect("signer");
    let mut foreign: ReadMessage = serde_json::from_str(&lines[0]).expect("read");
    foreign.device = "other-unit".into();
    other.sign(&mut foreign).expect("sign");
    let (code, out, _) = verify(
        &[serde_json::to_string(&foreign).expect("json")],
        "foreign.jsonl",
        &key_file,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REJECTED other-unit"), "{out}");
    // ... also when it claims to be this unit: the signature is not this unit's.
    foreign.device = id.device.clone();
    other.sign(&mut foreign).expect("sign");
    let hex_key = tmp.path().join("key.hex");
    std::fs::write(&hex_key, &id.public_key).expect("write");
    let (code, out, _) = verify(
        &[serde_json::to_string(&foreign).expect("json")],
        "claimed.jsonl",
        &hex_key,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad signature"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_from_the_broker_accepts_a_genuine_read_and_rejects_one_replayed_on_another_unit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = samples();
    let one = tmp.path().join("one");
    std::fs::create_dir(&one).expect("mkdir");
    std::fs::copy(dir.join("plate3_us.jpg"), one.join("plate3_us.jpg")).expect("copy");
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "platecam/#").await;
    let cfg = RunConfig::new(&tmp.path().join("state"), &one, broker.port).write();
    let mut daemon = Daemon::start(&cfg);
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(120))
            .and_then(|s| s.code()),
        Some(0),
        "{:#?}",
        daemon.lines()
    );
    // Everything the run published (status, identity and health come too).
    let msgs = sub.collect(usize::MAX, Duration::from_secs(3)).await;
    let read = on(&msgs, "/reads")
        .first()
        .map(|m| m.payload.clone())
        .expect("a read");
    let crop = msgs
        .iter()
        .find(|m| m.topic.contains("/crops/"))
        .expect("a crop");

    // Another unit with its own retained identity.
    let other = Signer::from_seed(&[5; 32], "unit-b").expect("signer");
    let mut opts = MqttOptions::new(format!("pub-{}", free_port()), "127.0.0.1", broker.port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = AsyncClient::new(opts, 16);
    let (acked_tx, mut acked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_)) = event {
                let _ = acked_tx.send(());
            }
        }
    });
    let device = serde_json::from_slice::<ReadMessage>(&read)
        .expect("read")
        .device;
    // Retained, and acknowledged before `verify` subscribes: it gets them whenever it starts.
    // The genuine read with its crop, and the same read replayed under unit-b's topic.
    let publishes = [
        (
            "platecam/unit-b/identity".to_string(),
            serde_json::to_vec(&other.identity()).expect("json"),
        ),
        (crop.topic.clone(), crop.payload.clone()),
        (format!("platecam/{device}/reads"), read.clone()),
        ("platecam/unit-b/reads".to_string(), read),
    ];
    for (topic, payload) in &publishes {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone())
            .await
            .expect("publish");
    }
    for _ in &publishes {
        tokio::time::timeout(Duration::from_secs(10), acked.recv())
            .await
            .expect("PUBACK");
    }

    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut verify = Daemon::watch(&["verify", "--broker", &url, "--wait", "3s"]);
    let status = verify.wait_exit(Duration::from_secs(20));
    let out = verify.lines();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{out:#?}");
    assert!(
        out.iter().any(|l| l.starts_with(&format!("ok {device}"))),
        "{out:#?}"
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("REJECTED") && l.contains("replayed")),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotlist_only_alerts_on_hits_and_keeps_no_trace_of_other_plates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, truth) = samples();
    let plates: Vec<String> = truth.iter().map(|(_, p)| normalise(p)).collect();
    assert!(plates.contains(&"02QA505".to_string()) && plates.contains(&"RL29823".to_string()));
    let hotlist = tmp.path().join("hotlist.csv");
    // Look-alikes and spacing: "O2QA5O5" lists 02QA505, "RL-298 23" lists RL29823.
    std::fs::write(
        &hotlist,
        "# plate, reason, expiry\nO2QA5O5, wanted, 2999-12-31\nthis line has no reason\nRL-298 23, stolen\n",
    )
    .expect("hotlist");
    let state = tmp.path().join("state");
    let privacy = format!(
        "mode = \"hotlist-only\"\nhotlist = \"{}\"",
        hotlist.display()
    );
    let (msgs, log) = run_daemon(&state, &dir, &privacy, 2).await;

    let hits = ["02QA505".to_string(), "RL29823".to_string()];
    let alerts = reads(&msgs, "/alerts");
    let mut alerted: Vec<String> = alerts.iter().map(|r| normalise(&r.plate)).collect();
    alerted.sort();
    assert_eq!(alerted, hits, "one alert per hit");
    assert!(alerts.iter().all(|r| r.sig.is_some() && r.hit.is_some()));
    let mut sent: Vec<String> = reads(&msgs, "/reads")
        .iter()
        .map(|r| normalise(&r.plate))
        .collect();
    sent.sort();
    assert_eq!(sent, hits, "only hits on reads");
    assert!(
        log.iter()
            .any(|l| l.contains("hotlist line skipped") && l.contains("line=3")),
        "bad line reported with its number: {log:#?}"
    );
    let counts = on(&msgs, "/counts");
    assert!(!counts.is_empty(), "hourly counts published");
    let counts: Vec<platecam::wire::CountsMessage> = counts
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("counts"))
        .collect();
    for c in &counts {
        assert_eq!(c.reads, c.hits + c.not_kept, "{c:?}");
    }
    assert!(counts.iter().any(|c| c.hits == 2), "{counts:?}");

    let others: Vec<String> = plates
        .iter()
        .filter(|p| !hits.contains(p))
        .cloned()
        .collect();
    assert_eq!(others.len(), plates.len() - 2);
    assert_eq!(
        found_in_files(&state, &others),
        Vec::<String>::new(),
        "non-hit plates on disk"
    );
    let leaked: Vec<&String> = log
        .iter()
        .filter(|l| others.iter().any(|p| l.contains(p.as_str())))
        .collect();
    assert!(leaked.is_empty(), "non-hit plates in the log: {leaked:#?}");
    let on_wire: Vec<&str> = msgs
        .iter()
        .filter(|m| {
            others
                .iter()
                .any(|p| m.payload.windows(p.len()).any(|w| w == p.as_bytes()))
        })
        .map(|m| m.topic.as_str())
        .collect();
    assert!(
        on_wire.is_empty(),
        "non-hit plates on the wire: {on_wire:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonymous_units_of_one_site_give_one_plate_the_same_pseudonym() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, truth) = samples();
    let photos = tmp.path().join("photos");
    std::fs::create_dir(&photos).expect("mkdir");
    for f in ["plate3_us.jpg", "plate4_eu.jpg"] {
        std::fs::copy(dir.join(f), photos.join(f)).expect("copy");
    }
    let plates: Vec<String> = truth
        .iter()
        .filter(|(f, _)| f == "plate3_us.jpg" || f == "plate4_eu.jpg")
        .map(|(_, p)| normalise(p))
        .collect();
    let site_key = tmp.path().join("site.key");
    std::fs::write(&site_key, "5a".repeat(32)).expect("key");
    std::fs::set_permissions(&site_key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let privacy = format!(
        "mode = \"pseudonymous\"\nsite_key_file = \"{}\"",
        site_key.display()
    );

    let (state_a, state_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ((a, _), (b, _)) = tokio::join!(
        run_daemon(&state_a, &photos, &privacy, 2),
        run_daemon(&state_b, &photos, &privacy, 2)
    );
    let (ra, rb) = (reads(&a, "/reads"), reads(&b, "/reads"));
    assert_eq!((ra.len(), rb.len()), (2, 2), "{ra:#?} {rb:#?}");
    assert_ne!(ra[0].device, rb[0].device, "two units");
    for (x, y) in ra.iter().zip(&rb) {
        let p = x.pseudonym.as_deref().expect("pseudonym");
        assert_eq!(
            Some(p),
            y.pseudonym.as_deref(),
            "same plate, same pseudonym"
        );
        assert_eq!(p.len(), 64);
        assert!(x.plate.is_empty() && x.chars.is_empty() && x.candidates.is_empty());
        assert!(x.crop.is_none(), "no crop kept for a pseudonymous read");
    }
    assert_ne!(
        ra[0].pseudonym, ra[1].pseudonym,
        "two plates, two pseudonyms"
    );
    assert!(
        a.iter().chain(&b).all(|m| !m.topic.contains("/crops/")),
        "no crops sent"
    );
    for state in [&state_a, &state_b] {
        assert_eq!(
            found_in_files(state, &plates),
            Vec::<String>::new(),
            "plates on disk"
        );
    }
}

#[test]
fn policy_states_mode_keys_broker_and_topics_in_words_and_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hotlist = tmp.path().join("hotlist.csv");
    std::fs::write(&hotlist, "AB123CD, stolen\n").expect("hotlist");
    let config = tmp.path().join("unit.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"gate-7\"\n[mqtt]\nurl = \"mqtts://broker.example:8883\"\nca = \"/etc/ca.pem\"\n\
             [storage]\ndir = \"{}\"\n[privacy]\nmode = \"hotlist-only\"\nhotlist = \"{}\"\n",
            tmp.path().join("state").display(),
            hotlist.display()
        ),
    )
    .expect("config");
    let (code, out, err) = platecam(&["policy", "--json", "--config"], Some(&config));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["mode"], "hotlist-only");
    assert_eq!(v["sends"]["tls"], true);
    assert_eq!(v["hotlist"]["entries"], 1);
    let topics: Vec<&str> = v["sends"]["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|t| t["topic"].as_str())
        .collect();
    assert!(topics.contains(&"platecam/gate-7/counts"), "{topics:?}");
    assert!(topics.contains(&"platecam/gate-7/alerts"), "{topics:?}");
    assert!(v["store"]["encryption"].is_string());
    assert!(
        !tmp.path().join("state").exists(),
        "stating the policy makes no keys"
    );

    let (code, words, _) = platecam(&["policy", "--config"], Some(&config));
    assert_eq!(code, 0);
    assert!(
        words.contains("only reads that match the hotlist"),
        "{words}"
    );
    assert!(
        words.contains("mqtts://broker.example:8883 over TLS"),
        "{words}"
    );
    assert!(words.contains("platecam/gate-7/counts"), "{words}");
}

#[test]
fn a_missing_key_or_an_unreadable_hotlist_stops_the_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = samples();
    let state = tmp.path().join("state");
    let cfg = RunConfig::new(&state, &dir, free_port());
    let path = cfg.write();
    for (privacy, says) in [
        (
            "signing_key_file = \"/nonexistent/signing.key\"",
            "cannot read /nonexistent/signing.key",
        ),
        (
            "hotlist = \"/nonexistent/hotlist.csv\"",
            "cannot read the hotlist /nonexistent/hotlist.csv",
        ),
    ] {
        std::fs::write(&path, format!("{}\n[privacy]\n{privacy}\n", cfg.toml())).expect("config");
        let (code, _, err) = platecam(&["run", "--config"], Some(&path));
        assert_eq!(code, 78, "{err}");
        assert!(err.contains(says), "{err}");
    }
    assert!(
        !state.join("outbox").exists(),
        "nothing opened before the policy could be enforced"
    );
}
