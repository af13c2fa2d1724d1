use std::time::Duration;

use bytesize::ByteSize;

use super::*;

/// The problems of a config that should not load.
fn problems(text: &str) -> Vec<Problem> {
    match load_str(text, "t.toml") {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn keys_lines(ps: &[Problem]) -> Vec<(&str, Option<usize>)> {
    ps.iter().map(|p| (p.key.as_str(), p.line)).collect()
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn default_toml_is_valid_and_equals_the_defaults() {
    let loaded = load_str(DEFAULT_TOML, "default.toml").unwrap_or_else(|e| panic!("{e}"));
    let expected = Config {
        cameras: vec![CameraConfig::default()],
        ..Config::default()
    };
    assert_eq!(json(&loaded), json(&expected));
}

#[test]
fn default_toml_mentions_every_key() {
    let mut keys = Vec::new();
    let full = Config {
        cameras: vec![CameraConfig::default()],
        location: Some(LocationConfig {
            lat: 0.0,
            lon: 0.0,
            heading: Some(0.0),
        }),
        ..Config::default()
    };
    collect_keys(&json(&full), &mut keys);
    keys.extend(
        [
            "recognition",
            "detector",
            "ocr",
            "format",
            "path",
            "config",
            "plate_formats",
        ]
        .map(String::from),
    );
    keys.extend(
        [
            "score_threshold",
            "ca",
            "cert",
            "key",
            "username",
            "password_file",
        ]
        .map(String::from),
    );
    let docs = include_str!("../../docs/configuration.md");
    for k in keys {
        assert!(
            DEFAULT_TOML.contains(&k),
            "default.toml does not mention `{k}`"
        );
        assert!(
            docs.contains(&format!("`{k}`")) || docs.contains(&format!("[{k}]")),
            "docs/configuration.md does not mention `{k}`"
        );
    }
}

fn collect_keys(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                collect_keys(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_keys(v, out)),
        _ => {}
    }
}

#[test]
fn three_mistakes_are_all_reported_with_key_and_line() {
    let text = r#"
[device]
id = "gate"

[[camera]]
name = "a"
colour = "red"

[[camera]]
name = "b"
fps = "ten"

[mqtt]
url = "http://broker"
"#;
    let ps = problems(text);
    assert_eq!(
        keys_lines(&ps),
        vec![
            ("camera[0].colour", Some(7)),
            ("camera[1].fps", Some(11)),
            ("mqtt.url", Some(14)),
        ],
        "{ps:#?}"
    );
    assert!(ps[0].message.contains("unknown key"), "{}", ps[0].message);
    assert!(ps[2].message.contains("mqtt://"), "{}", ps[2].message);
}

#[test]
fn invalid_display_lists_every_problem_one_per_line() {
    let err = load_str("[mqtt]\ninflight = 0\nkeep_alive = \"0s\"\n", "/etc/p.toml").unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(
        lines[0].starts_with("/etc/p.toml:3: mqtt.keep_alive: "),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("/etc/p.toml:2: mqtt.inflight: "),
        "{shown}"
    );
}

#[test]
fn syntax_error_reports_its_line() {
    let ps = problems("[mqtt]\nurl = \"mqtt://x\"\nprefix = \n");
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].line, Some(3));
    assert_eq!(ps[0].key, "");
    assert!(ps[0].message.contains("TOML syntax error"));
    let ps = problems("[mqtt]\nurl = \"a\"\nurl = \"b\"\n");
    assert_eq!(ps[0].line, Some(3), "{ps:#?}");
}

#[test]
fn full_config_loads() {
    let text = r#"
[device]
id = "gate-north"

[[camera]]
name = "front"
source = "v4l2:///dev/video2"
fps = 15
width = 1920
height = 1080
format = "MJPEG"

[[camera]]
name = "replay"
source = "replay:///srv/samples"
hold_frames = 6
gap_frames = 2
loop = true

[mqtt]
url = "mqtts://broker.example.org"
prefix = "site/a"
client_id = "gate-north-1"
ca = "/etc/platecam/ca.pem"
cert = "/etc/platecam/client.pem"
key = "/etc/platecam/client.key"
username = "gate"
password_file = "/etc/platecam/pw"
keep_alive = "1m"
inflight = 20
health_interval = "2m"
reconnect_max = "1m 30s"
drain_timeout = "10s"
max_packet_size = "4MiB"

[storage]
dir = "/data/platecam"
max_bytes = "512 MiB"
min_free_bytes = 1048576
eviction = "crops-first"

[recognition.detector]
format = "yolo-end2end"
path = "/m/det.onnx"
score_threshold = 0.35
[recognition.ocr]
format = "fast-plate-ocr"
path = "/m/ocr.onnx"
config = "/m/ocr.yaml"

[tracking]
iou_match = 0.3
max_gap = "1s"
min_frames = 2
candidates = 3

[location]
lat = 52.1
lon = 5.2
heading = 270

[logging]
level = "info,platecam=debug"
"#;
    let loaded = load_text(text, "full.toml").unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;
    assert_eq!(c.cameras.len(), 2);
    assert_eq!(
        c.cameras[1].source_spec(),
        Ok(SourceSpec::Replay("/srv/samples".into()))
    );
    assert!(c.cameras[1].repeat);
    let ep = c.mqtt.endpoint().unwrap();
    assert_eq!(
        (ep.tls, ep.host.as_str(), ep.port),
        (true, "broker.example.org", 8883)
    );
    assert_eq!(c.mqtt.reconnect_max, Duration::from_secs(90));
    assert_eq!(c.storage.eviction, EvictionPolicy::CropsFirst);
    let ocr = c.recognition.as_ref().and_then(|r| r.ocr.as_ref()).unwrap();
    assert_eq!(ocr.format, ModelFormat::FastPlateOcr);
    assert_eq!(c.location.as_ref().and_then(|l| l.heading), Some(270.0));
    assert_eq!(loaded.lines.line("mqtt.ca"), Some(24));
    assert_eq!(loaded.lines.line("camera[1]"), Some(13));
    // None of these files exist here: every one is a machine problem, with its line.
    let machine = loaded.check_machine();
    let keys: Vec<&str> = machine.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "recognition.detector.path",
        "recognition.ocr.path",
        "recognition.ocr.config",
        "mqtt.ca",
        "mqtt.cert",
        "mqtt.key",
        "mqtt.password_file",
        "camera[1].source",
    ] {
        assert!(keys.contains(&k), "{k} missing from {machine:#?}");
    }
    assert!(machine.iter().all(|p| p.line.is_some()), "{machine:#?}");
    // /dev/video2 does not exist here either, but an absent camera is waited for, not refused.
    assert!(!keys.contains(&"camera[0].source"), "{machine:#?}");
    assert!(loaded.check_for_run().is_empty());
}

/// The problems of `text` loaded for `purpose` (it must not load).
fn problems_for(text: &str, purpose: Purpose) -> Vec<Problem> {
    match load_text_for(text, "t.toml", purpose) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn machine_problems_come_in_the_same_round_as_static_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let text = format!(
        r#"[device]
colour = "red"

[[camera]]
source = "replay://{d}/no-photos"

[mqtt]
url = "mqtts://broker"
keep_alive = "fast"
ca = "{d}/no-ca.pem"

[recognition.detector]
format = "yolo-end2end"
path = "{d}/no-det.onnx"
"#
    );
    let ps = problems_for(&text, Purpose::Run);
    assert_eq!(
        keys_lines(&ps),
        vec![
            ("device.colour", Some(2)),
            ("mqtt.keep_alive", Some(9)),
            ("recognition.detector.path", Some(14)),
            ("mqtt.ca", Some(10)),
            ("camera[0].source", Some(5)),
        ],
        "{ps:#?}"
    );
    // A key whose value was refused is not checked again at its default.
    let ps = problems_for(
        "[storage]\ndir = 5\n[[camera]]\nsource = \"replay:///nope\"\n",
        Purpose::Run,
    );
    assert_eq!(
        keys_lines(&ps),
        vec![("storage.dir", Some(2)), ("camera[0].source", Some(4))]
    );
    // `run` needs a camera: reported with the rest.
    let ps = problems_for("[device]\nx = 1\n", Purpose::Run);
    assert_eq!(
        keys_lines(&ps),
        vec![("device.x", Some(2)), ("camera", None)]
    );
}

#[test]
fn an_absent_camera_device_is_not_a_config_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[camera]]\nsource = \"v4l2://{}/video0\"\n",
        dir.path().display()
    );
    let c = load_text_for(&text, "t.toml", Purpose::Run).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.cameras.len(), 1);
}

#[test]
fn recognize_does_not_check_cameras_but_checks_models() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cameras = format!(
        "[[camera]]\nsource = \"v4l2://{d}/video0\"\n[[camera]]\nname = \"r\"\nsource = \"replay://{d}/none\"\n"
    );
    assert!(load_text_for(&cameras, "t.toml", Purpose::Models).is_ok());
    assert!(load_text_for(&cameras, "t.toml", Purpose::Run).is_err());
    let model = format!(
        "{cameras}[recognition.ocr]\nformat = \"fast-plate-ocr\"\npath = \"{d}/o.onnx\"\nconfig = \"{d}/o.yaml\"\n"
    );
    let ps = problems_for(&model, Purpose::Models);
    assert_eq!(
        keys_lines(&ps),
        vec![
            ("recognition.ocr.path", Some(8)),
            ("recognition.ocr.config", Some(9))
        ]
    );
}

#[test]
fn humane_units_parse() {
    let c = load_str(
        r#"
[mqtt]
keep_alive = "2m"
health_interval = "1h 30m"
drain_timeout = "250ms"
max_packet_size = "512 KiB"
[storage]
max_bytes = "2GiB"
min_free_bytes = 10000000
[tracking]
max_gap = "1.5s"
"#,
        "u.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.mqtt.keep_alive, Duration::from_secs(120));
    assert_eq!(c.mqtt.health_interval, Duration::from_secs(5400));
    assert_eq!(c.mqtt.drain_timeout, Duration::from_millis(250));
    assert_eq!(c.mqtt.max_packet_size, ByteSize::kib(512));
    assert_eq!(c.storage.max_bytes, ByteSize::gib(2));
    assert_eq!(c.storage.min_free_bytes, ByteSize::b(10_000_000));
    assert_eq!(c.tracking.max_gap, Duration::from_millis(1500));

    let ps = problems("[mqtt]\nkeep_alive = 30\n[storage]\nmax_bytes = \"2 zebras\"\n");
    assert_eq!(
        keys_lines(&ps),
        vec![("mqtt.keep_alive", Some(2)), ("storage.max_bytes", Some(4))]
    );
    assert!(ps[0].message.contains("\"30s\""), "{}", ps[0].message);
    assert!(ps[1].message.contains("MiB"), "{}", ps[1].message);
}

#[test]
fn printed_config_reads_back() {
    let c = Config {
        // An empty id, written out, is refused ("leave the key out"), so print a set one.
        device: DeviceConfig { id: "gate".into() },
        cameras: vec![CameraConfig::default()],
        ..Config::default()
    };
    let text = toml::to_string(&c).unwrap();
    let back = load_str(&text, "printed").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(json(&back), json(&c));
}

/// Each semantic check: (config text, key, line).
#[test]
fn semantic_checks_report_key_and_line() {
    let cases: &[(&str, &str, usize)] = &[
        ("[device]\nid = \"a/b\"", "device.id", 2),
        ("[device]\nid = \"\"", "device.id", 2),
        ("[[camera]]\nname = \"\"", "camera[0].name", 2),
        (
            "[[camera]]\nname = \"a\"\n[[camera]]\nname = \"a\"",
            "camera[1].name",
            4,
        ),
        ("[[camera]]\nsource = \"rtsp://x\"", "camera[0].source", 2),
        ("[[camera]]\nsource = \"replay:\"", "camera[0].source", 2),
        ("[[camera]]\nsource = \"v4l2://\"", "camera[0].source", 2),
        ("[[camera]]\nfps = 0", "camera[0].fps", 2),
        ("[[camera]]\nfps = 121", "camera[0].fps", 2),
        ("[[camera]]\nhold_frames = 0", "camera[0].hold_frames", 2),
        ("[[camera]]\nformat = \"RGB3\"", "camera[0].format", 2),
        ("[[camera]]\nwidth = 0", "camera[0].width", 2),
        ("[mqtt]\nurl = \"mqtt://\"", "mqtt.url", 2),
        ("[mqtt]\nurl = \"mqtt://host:99999\"", "mqtt.url", 2),
        ("[mqtt]\nurl = \"mqtt://u:p@host\"", "mqtt.url", 2),
        ("[mqtt]\nprefix = \"/a\"", "mqtt.prefix", 2),
        ("[mqtt]\nprefix = \"a/\"", "mqtt.prefix", 2),
        ("[mqtt]\nprefix = \"a/#\"", "mqtt.prefix", 2),
        ("[mqtt]\nprefix = \"\"", "mqtt.prefix", 2),
        ("[mqtt]\nkeep_alive = \"500ms\"", "mqtt.keep_alive", 2),
        ("[mqtt]\ninflight = 0", "mqtt.inflight", 2),
        ("[mqtt]\ninflight = 101", "mqtt.inflight", 2),
        ("[mqtt]\nhealth_interval = \"0s\"", "mqtt.health_interval", 2),
        ("[mqtt]\nreconnect_max = \"0s\"", "mqtt.reconnect_max", 2),
        ("[mqtt]\nack_timeout = \"500ms\"", "mqtt.ack_timeout", 2),
        ("[mqtt]\nack_timeout = \"2h\"", "mqtt.ack_timeout", 2),
        // A password over plain TCP is refused, not warned about.
        (
            "[mqtt]\nusername = \"u\"\npassword_file = \"/pw\"",
            "mqtt.username",
            2,
        ),
        ("[mqtt]\nmax_packet_size = \"1 KiB\"", "mqtt.max_packet_size", 2),
        ("[mqtt]\nmax_packet_size = \"1 GiB\"", "mqtt.max_packet_size", 2),
        // Absent keys point at their table.
        ("\n[mqtt]\nurl = \"mqtts://broker\"", "mqtt.ca", 2),
        ("[mqtt]\nca = \"/ca.pem\"", "mqtt.ca", 2),
        (
            "[mqtt]\nurl = \"mqtts://b\"\nca = \"/c\"\ncert = \"/c.pem\"",
            "mqtt.key",
            1,
        ),
        ("[mqtt]\nusername = \"u\"", "mqtt.password_file", 1),
        ("[mqtt]\n\npassword_file = \"/pw\"", "mqtt.username", 1),
        ("[storage]\nmax_bytes = \"1 KiB\"", "storage.max_bytes", 2),
        ("[tracking]\niou_match = 0.0", "tracking.iou_match", 2),
        ("[tracking]\niou_match = 1.5", "tracking.iou_match", 2),
        ("[tracking]\ncandidates = 0", "tracking.candidates", 2),
        ("[tracking]\ncandidates = 21", "tracking.candidates", 2),
        ("[tracking]\nmin_frames = 0", "tracking.min_frames", 2),
        (
            "[recognition.ocr]\nformat = \"fast-plate-ocr\"\npath = \"/o.onnx\"",
            "recognition.ocr.config",
            1,
        ),
        (
            "[recognition.detector]\nformat = \"yolo-end2end\"\npath = \"/d\"\nscore_threshold = 1.0",
            "recognition.detector.score_threshold",
            4,
        ),
        (
            "[recognition.detector]\nformat = \"fast-plate-ocr\"\npath = \"/d\"\nconfig = \"/c\"",
            "recognition.detector.format",
            2,
        ),
        (
            "[recognition]\nplate_formats = [\"eu\", \"LL-NNN\"]",
            "recognition.plate_formats",
            2,
        ),

        ("[tracking]\nmin_confidence = 2.0", "tracking.min_confidence", 2),
        ("[location]\nlat = 91.0\nlon = 0.0", "location.lat", 2),
        ("[logging]\nlevel = \"platecam=loud\"", "logging.level", 2),
    ];
    for (text, key, line) in cases {
        let ps = problems(text);
        assert!(
            ps.iter().any(|p| p.key == *key && p.line == Some(*line)),
            "expected {key} at line {line} for:\n{text}\ngot {ps:#?}"
        );
    }
}

#[test]
fn missing_required_key_is_reported_on_that_key() {
    let ps = problems("[recognition.detector]\nformat = \"platecam\"\n");
    assert_eq!(
        keys_lines(&ps),
        vec![("recognition.detector.path", Some(1))]
    );
    let ps = problems("[storage]\neviction = \"newest-first\"\n");
    assert_eq!(keys_lines(&ps), vec![("storage.eviction", Some(2))]);
}

#[test]
fn errors_in_inline_tables_and_dotted_keys_are_located() {
    let ps = problems("camera = [{ name = \"a\" }, { fps = \"x\" }]\nmqtt.inflight = \"many\"\n");
    assert_eq!(
        keys_lines(&ps),
        vec![("camera[1].fps", Some(1)), ("mqtt.inflight", Some(2))]
    );
    let ps = problems("mqtt = 5\n");
    assert_eq!(keys_lines(&ps), vec![("mqtt", Some(1))]);
}

#[test]
fn run_needs_a_camera() {
    let loaded =
        load_text("[mqtt]\nurl = \"mqtt://b\"\n", "r.toml").unwrap_or_else(|e| panic!("{e}"));
    let ps = loaded.check_for_run();
    assert_eq!(keys_lines(&ps), vec![("camera", None)]);
    assert_eq!(check_for_run(&loaded.config).len(), 1);
    assert!(loaded.into_result(ps).is_err());
}

#[test]
fn machine_checks_pass_when_files_exist() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ca.pem");
    std::fs::write(&f, "x").unwrap();
    let text = format!(
        "[[camera]]\nsource = \"replay://{d}\"\n[mqtt]\nurl = \"mqtts://b\"\nca = \"{f}\"\n[storage]\ndir = \"{d}\"\n",
        d = dir.path().display(),
        f = f.display()
    );
    let loaded = load_text(&text, "m.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.check_machine(), vec![]);

    let text = format!("[storage]\ndir = \"{}\"\n", f.display());
    let loaded = load_text(&text, "m.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        keys_lines(&loaded.check_machine()),
        vec![("storage.dir", Some(2))]
    );
}

#[test]
fn endpoint_parsing() {
    let p = |u: &str| MqttEndpoint::parse(u).map(|e| (e.tls, e.host, e.port));
    assert_eq!(p("mqtt://b"), Ok((false, "b".into(), 1883)));
    assert_eq!(p("mqtt://b:1884/"), Ok((false, "b".into(), 1884)));
    assert_eq!(p("mqtts://[::1]:8884"), Ok((true, "::1".into(), 8884)));
    assert!(p("mqtt://b:0").is_err());
    assert!(p("mqtt://b/topic").is_err());
    assert!(p("tcp://b").is_err());
}

#[test]
fn odd_shapes_end_with_problems_not_a_hang() {
    for text in [
        "camera = [1, 2]\n",
        "camera = \"x\"\n",
        "camera = [[1], {fps = []}]\n",
        "[location]\nheading = 3.0\n",
        "[mqtt]\nurl = 1\nprefix = []\ninflight = -1\nkeep_alive = {a = 1}\n",
        "recognition = { detector = { format = 1, path = 2, x = 3 } }\n",
    ] {
        let ps = problems(text);
        assert!(!ps.is_empty() && ps.len() < 10, "{text}: {ps:#?}");
    }
}

#[test]
fn default_device_id_differs_per_machine_and_is_kept_without_a_machine_id() {
    let dir = tempfile::tempdir().unwrap();
    let mid = dir.path().join("machine-id");
    std::fs::write(&mid, "0123456789abcdef0123456789abcdef\n").unwrap();
    let state = dir.path().join("state");
    let a = super::default_device_id(&mid, &state);
    // The same as `printf %s "$(cat /etc/machine-id)" | sha256sum | cut -c1-12` (deploy/flash.sh).
    assert_eq!(a, "pc-3eb1bd439947");
    assert!(!a.contains("0123456789ab"), "never the raw machine id: {a}");
    assert_eq!(super::default_device_id(&mid, &state), a, "stable");
    std::fs::write(&mid, "fedcba9876543210fedcba9876543210\n").unwrap();
    assert_ne!(
        super::default_device_id(&mid, &state),
        a,
        "a cloned image's new id"
    );
    assert!(
        !state.exists(),
        "nothing written when there is a machine id"
    );

    // No machine id (or an image's first boot): made once, kept in the state directory.
    std::fs::write(&mid, "uninitialized\n").unwrap();
    let made = super::default_device_id(&mid, &state);
    assert!(made.starts_with("pc-") && made.len() == 15, "{made}");
    assert_eq!(
        super::default_device_id(&dir.path().join("none"), &state),
        made
    );
    let other = super::default_device_id(&mid, &dir.path().join("state2"));
    assert_ne!(other, made, "another unit makes another id");
}

// [web] (issue 14)

#[test]
fn web_is_off_by_default_and_loopback_needs_no_token() {
    let c = load_str("", "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(c.web.listen.is_none() && !c.web.needs_token());
    let c = load_str("[web]\nlisten = \"127.0.0.1:8080\"\n", "t.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.web.needs_token());
    let c =
        load_str("[web]\nlisten = \"[::1]:8080\"\n", "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.web.needs_token());
    // Beyond loopback a token is always needed (a file, a credential, or one made at start).
    for listen in ["0.0.0.0:8080", "192.0.2.7:8080", "[::]:8080"] {
        let c = load_str(&format!("[web]\nlisten = \"{listen}\"\n"), "t.toml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.web.needs_token(), "{listen}");
    }
}

#[test]
fn web_mistakes_are_reported_with_key_and_line() {
    let p = problems("[web]\nlisten = \"localhost\"\n\n[logging]\nmqtt_level = \"loud\"\n");
    assert_eq!(
        keys_lines(&p),
        vec![("web.listen", Some(2)), ("logging.mqtt_level", Some(5))]
    );
    let p = problems("[web]\nlisten = \"127.0.0.1:0\"\n");
    assert_eq!(keys_lines(&p), vec![("web.listen", Some(2))]);
    let p = problems("[web]\ntoken_file = \"/etc/platecam/web-token\"\n");
    assert_eq!(keys_lines(&p), vec![("web.token_file", Some(2))]);
    let p = problems("[web]\nlisten = \"127.0.0.1:8080\"\npassword = \"x\"\n");
    assert_eq!(keys_lines(&p).first().map(|k| k.0), Some("web.password"));
}

#[test]
fn warnings_are_forwarded_over_mqtt_by_default() {
    assert_eq!(LoggingConfig::default().mqtt_level, "warn");
    let c = load_str("", "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.logging.mqtt_level, "warn");
}

// speed (issue 10): the motion gate and the workers
#[test]
fn speed_keys_load_and_bad_values_are_reported() {
    let base = "[device]\nid = \"u\"\n\n[mqtt]\nurl = \"mqtt://b\"\n\n[recognition]\n";
    let cfg = load_str(
        &format!("{base}gate = false\ngate_full_every = \"500ms\"\nthreads = 3\n"),
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = cfg.recognition.expect("recognition");
    assert!(!r.gate);
    assert_eq!(r.gate_full_every, Duration::from_millis(500));
    assert_eq!(r.worker_threads(), 3);
    let ps = problems(&format!("{base}gate_full_every = \"0s\"\nthreads = 65\n"));
    assert_eq!(
        keys_lines(&ps),
        vec![
            ("recognition.gate_full_every", Some(8)),
            ("recognition.threads", Some(9))
        ],
        "{ps:#?}"
    );
    let auto = RecognitionConfig::default().worker_threads();
    assert!((1..=2).contains(&auto), "{auto}");
}

#[test]
fn privacy_retention_can_be_off_only_when_written_and_not_shorter_than_a_key_period() {
    let off =
        load_str("[privacy]\nmax_age = \"off\"\n", "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(off.privacy.max_age, None);
    assert_eq!(
        Config::default().privacy.max_age,
        Some(Duration::from_secs(72 * 3600))
    );
    let ps = problems("[privacy]\nmax_age = \"10m\"\nkey_period = \"1h\"\n");
    assert_eq!(keys_lines(&ps), vec![("privacy.max_age", Some(2))]);
    let ps = problems("[privacy]\nmax_age = 72\n");
    assert_eq!(ps[0].key, "privacy.max_age", "{ps:?}");
}

/// Region presets (issue 9) load; an unknown one is named with its key and line, and the
/// message lists the presets there are.
#[test]
fn region_presets_load_and_an_unknown_one_is_refused_with_key_and_line() {
    let c = load_str(
        "[recognition]\nplate_formats = [\"br\", \"sk\", \"DE\", \"nl\", \"LLNNNLL\"]\n",
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let formats = c.recognition.map(|r| r.plate_formats).unwrap_or_default();
    assert_eq!(formats.len(), 5);
    let ps = problems("[recognition]\ngate = true\nplate_formats = [\"sk\", \"xx\"]\n");
    let p = ps
        .iter()
        .find(|p| p.key == "recognition.plate_formats")
        .unwrap_or_else(|| panic!("no plate_formats problem in {ps:#?}"));
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("`xx`"), "{}", p.message);
    assert!(
        p.message.contains("br") && p.message.contains("sk"),
        "{}",
        p.message
    );
}
