//! Semantic checks on a typed config, each problem with its key and line.
//!
//! Three groups, as `check-config` and `run` need them: static checks (always, part of loading),
//! run checks (only `run`: a daemon without a camera has nothing to do, but a config for tests or
//! `check-config` on a build host may leave cameras out), and machine checks (files exist here),
//! which are kept apart so a config can be validated on a machine other than the camera.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;

use super::load::{KeyLines, Problem};
use super::{Config, ModelConfig, ModelFormat, MqttEndpoint, SourceSpec};

/// Checks for `run` only (at least one camera). Lines are unknown here: use
/// [`super::Loaded::check_for_run`] to get them.
pub fn check_for_run(config: &Config) -> Vec<Problem> {
    run_checks(config, &KeyLines::default())
}

/// Checks against this machine: model, TLS, password and replay files exist and are readable.
/// Lines are unknown here: use [`super::Loaded::check_machine`] to get them.
pub fn check_machine(config: &Config) -> Vec<Problem> {
    machine_checks(config, &KeyLines::default(), true)
}

pub(super) fn run_checks(config: &Config, lines: &KeyLines) -> Vec<Problem> {
    let mut p = Vec::new();
    if config.cameras.is_empty() {
        p.push(lines.problem(
            "camera",
            "no camera configured; add a [[camera]] section with name and source",
        ));
    }
    p
}

/// Topic levels must not contain MQTT wildcards or separators, or a read would be published to
/// (or subscribed from) the wrong topic; control characters and spaces are refused as well
/// because they are invisible in logs and dashboards.
pub(crate) fn topic_level_error(s: &str) -> Option<String> {
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_whitespace() || c.is_control())
    {
        return Some(format!(
            "{s:?} contains {c:?}; it is used in MQTT topics, so `/`, `+`, `#`, spaces and control characters are not allowed"
        ));
    }
    None
}

pub(super) fn static_checks(c: &Config, lines: &KeyLines) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut bad = |key: &str, msg: String| p.push(lines.problem(key, msg));

    // device
    if c.device.id.is_empty() {
        if lines.contains("device.id") {
            bad(
                "device.id",
                "is empty; leave the key out to use the host name".into(),
            );
        }
    } else if let Some(e) = topic_level_error(&c.device.id) {
        bad("device.id", e);
    }

    // cameras
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, cam) in c.cameras.iter().enumerate() {
        let k = |field: &str| format!("camera[{i}].{field}");
        if cam.name.is_empty() {
            bad(&k("name"), "is empty; every camera needs a name".into());
        } else if let Some(e) = topic_level_error(&cam.name) {
            bad(&k("name"), e);
        } else if let Some(first) = seen.insert(&cam.name, i) {
            let msg = if lines.contains(&k("name")) {
                format!("{:?} is already the name of camera[{first}]", cam.name)
            } else {
                format!(
                    "not set, so it defaults to {:?}, which camera[{first}] already has; give each camera a name",
                    cam.name
                )
            };
            bad(&k("name"), msg);
        }
        if let Err(e) = SourceSpec::parse(&cam.source) {
            bad(&k("source"), e);
        }
        if !(1..=120).contains(&cam.fps) {
            bad(&k("fps"), format!("{} is outside 1..=120", cam.fps));
        }
        if cam.width == 0 || cam.height == 0 {
            let key = if cam.width == 0 { "width" } else { "height" };
            bad(&k(key), "must be at least 1".into());
        }
        if !matches!(cam.format.as_str(), "auto" | "GREY" | "YUYV" | "MJPEG") {
            bad(
                &k("format"),
                format!(
                    "{:?} is not one of \"auto\", \"GREY\", \"YUYV\", \"MJPEG\"",
                    cam.format
                ),
            );
        }
        if cam.hold_frames < 1 {
            bad(&k("hold_frames"), "must be at least 1".into());
        }
    }

    // mqtt
    let m = &c.mqtt;
    let endpoint = match MqttEndpoint::parse(&m.url) {
        Ok(e) => Some(e),
        Err(e) => {
            bad("mqtt.url", e);
            None
        }
    };
    if m.prefix.is_empty() {
        bad(
            "mqtt.prefix",
            "is empty; topics would start with `/`".into(),
        );
    } else if m.prefix.starts_with('/') || m.prefix.ends_with('/') {
        bad(
            "mqtt.prefix",
            format!("{:?} must not start or end with `/`", m.prefix),
        );
    } else if let Some(c) = m
        .prefix
        .chars()
        .find(|c| matches!(c, '+' | '#') || c.is_control())
    {
        bad(
            "mqtt.prefix",
            format!(
                "{:?} contains {c:?}, which is not allowed in an MQTT topic we publish to",
                m.prefix
            ),
        );
    }
    if m.client_id.chars().any(char::is_control) {
        bad("mqtt.client_id", "contains a control character".into());
    }
    // rumqttc asserts (panics) on a keep-alive under 1 s; MQTT carries it as u16 seconds.
    if m.keep_alive < Duration::from_secs(1) || m.keep_alive > Duration::from_secs(65535) {
        bad(
            "mqtt.keep_alive",
            format!(
                "{} is outside 1s..=65535s",
                humantime::format_duration(m.keep_alive)
            ),
        );
    }
    // rumqttc asserts on an in-flight limit of 0; more than 100 unacknowledged reads only grows
    // what is resent after a reconnect.
    if !(1..=100).contains(&m.inflight) {
        bad(
            "mqtt.inflight",
            format!("{} is outside 1..=100", m.inflight),
        );
    }
    if m.health_interval < Duration::from_secs(1) {
        bad("mqtt.health_interval", "must be at least 1s".into());
    }
    // Under a second a busy link's normal latency would look like a dead broker.
    if m.ack_timeout < Duration::from_secs(1) || m.ack_timeout > Duration::from_secs(3600) {
        bad(
            "mqtt.ack_timeout",
            format!(
                "{} is outside 1s..=1h",
                humantime::format_duration(m.ack_timeout)
            ),
        );
    }
    // A zero cap would make reconnect attempts spin (rumqttc has no delay of its own).
    if m.reconnect_max < Duration::from_secs(1) {
        bad("mqtt.reconnect_max", "must be at least 1s".into());
    }
    if m.max_packet_size < ByteSize::kib(64) || m.max_packet_size > ByteSize::mib(256) {
        bad(
            "mqtt.max_packet_size",
            format!(
                "{} is outside 64 KiB..=256 MiB",
                super::units::bytes::format_exact(m.max_packet_size)
            ),
        );
    }
    if let Some(ep) = &endpoint {
        if ep.tls && m.ca.is_none() {
            bad(
                "mqtt.ca",
                "is required with an mqtts:// url (the CA certificate that signed the broker's)"
                    .into(),
            );
        }
        // MQTT sends the password in the CONNECT packet as is: over plain TCP anyone on the path
        // (an LTE carrier, a shared VLAN) reads it. Refused rather than warned: a warning in a
        // unit's journal is read by nobody.
        if !ep.tls && m.username.is_some() {
            bad(
                "mqtt.username",
                "needs an mqtts:// url: over mqtt:// the password crosses the network in clear"
                    .into(),
            );
        }
        if !ep.tls {
            for (key, set) in [
                ("mqtt.ca", m.ca.is_some()),
                ("mqtt.cert", m.cert.is_some()),
                ("mqtt.key", m.key.is_some()),
            ] {
                if set {
                    bad(
                        key,
                        "is set but mqtt.url is mqtt:// (no TLS); use mqtts:// or remove it".into(),
                    );
                }
            }
        }
    }
    match (&m.cert, &m.key) {
        (Some(_), None) => bad(
            "mqtt.key",
            "is missing: mqtt.cert and mqtt.key go together".into(),
        ),
        (None, Some(_)) => bad(
            "mqtt.cert",
            "is missing: mqtt.cert and mqtt.key go together".into(),
        ),
        _ => {}
    }
    match (&m.username, &m.password_file) {
        (Some(_), None) => bad(
            "mqtt.password_file",
            "is missing: mqtt.username and mqtt.password_file go together".into(),
        ),
        (None, Some(_)) => bad(
            "mqtt.username",
            "is missing: mqtt.username and mqtt.password_file go together".into(),
        ),
        _ => {}
    }

    // storage
    if c.storage.dir.as_os_str().is_empty() {
        bad("storage.dir", "is empty".into());
    }
    if c.storage.max_bytes < ByteSize::mib(1) {
        bad("storage.max_bytes", "must be at least 1 MiB".into());
    }

    // privacy (at rest)
    if c.privacy.key_period < Duration::from_secs(1) {
        bad("privacy.key_period", "must be at least 1s".into());
    }
    if let Some(max_age) = c.privacy.max_age {
        if max_age < c.privacy.key_period {
            bad(
                "privacy.max_age",
                format!(
                    "is shorter than privacy.key_period ({}): a period's key would outlive its reads",
                    humantime::format_duration(c.privacy.key_period)
                ),
            );
        }
    }

    // recognition
    if let Some(r) = &c.recognition {
        for (name, model) in [("detector", &r.detector), ("ocr", &r.ocr)] {
            if let Some(model) = model {
                check_model(&format!("recognition.{name}"), name, model, &mut bad);
            }
        }
        if let Err(entry) = crate::recognize::FormatPrior::parse(&r.plate_formats) {
            bad(
                "recognition.plate_formats",
                format!(
                    "`{entry}` is neither a preset ({}) nor a pattern of L, N and A (at most 12)",
                    crate::recognize::preset_names().join(", ")
                ),
            );
        }
        if r.gate_full_every.is_zero() || r.gate_full_every > Duration::from_secs(60) {
            bad(
                "recognition.gate_full_every",
                "must be more than 0 and at most 60s (a parked car is re-read this often)".into(),
            );
        }
        if r.threads > 64 {
            bad(
                "recognition.threads",
                "must be 0 (one per core, at most 2) or 1..=64".into(),
            );
        }
    }

    // tracking
    let t = &c.tracking;
    if !(t.iou_match > 0.0 && t.iou_match <= 1.0) {
        bad(
            "tracking.iou_match",
            format!("{} is outside (0, 1]", t.iou_match),
        );
    }
    if t.max_gap.is_zero() {
        bad("tracking.max_gap", "must be more than 0s".into());
    }
    if !(0.0..=1.0).contains(&t.min_confidence) {
        bad(
            "tracking.min_confidence",
            format!("{} is outside 0..=1", t.min_confidence),
        );
    }
    if !(1..=10).contains(&t.min_chars) {
        bad(
            "tracking.min_chars",
            format!("{} is outside 1..=10", t.min_chars),
        );
    }
    if t.min_frames < 1 {
        bad("tracking.min_frames", "must be at least 1".into());
    }
    if !(1..=20).contains(&t.candidates) {
        bad(
            "tracking.candidates",
            format!("{} is outside 1..=20", t.candidates),
        );
    }

    // location
    if let Some(l) = &c.location {
        if !(-90.0..=90.0).contains(&l.lat) {
            bad("location.lat", format!("{} is outside -90..=90", l.lat));
        }
        if !(-180.0..=180.0).contains(&l.lon) {
            bad("location.lon", format!("{} is outside -180..=180", l.lon));
        }
        if let Some(h) = l.heading {
            if !(0.0..360.0).contains(&h) {
                bad(
                    "location.heading",
                    format!("{h} is outside 0..360 (degrees)"),
                );
            }
        }
    }

    // privacy (privacy-wire)
    if c.privacy.mode == super::PrivacyMode::HotlistOnly && c.privacy.hotlist.is_none() {
        bad(
            "privacy.mode",
            "\"hotlist-only\" needs privacy.hotlist (a file of plates to alert on)".into(),
        );
    }

    // logging
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.logging.level) {
        bad(
            "logging.level",
            format!(
                "{:?} is not a tracing filter ({e}); use e.g. \"info\" or \"info,platecam=debug\"",
                c.logging.level
            ),
        );
    }
    if !["off", "error", "warn", "info", "debug", "trace"].contains(&c.logging.mqtt_level.as_str())
    {
        bad(
            "logging.mqtt_level",
            format!(
                "{:?} is not one of off, error, warn, info, debug, trace",
                c.logging.mqtt_level
            ),
        );
    }
    if !(1..=1000).contains(&c.logging.mqtt_rate) {
        bad(
            "logging.mqtt_rate",
            format!(
                "{} is outside 1..=1000 events per second",
                c.logging.mqtt_rate
            ),
        );
    }

    // web
    if c.web.listen.is_none() && c.web.token_file.is_some() {
        bad(
            "web.token_file",
            "is set but web.listen is not: nothing is served; set web.listen or remove this".into(),
        );
    }
    if c.web.listen.is_some_and(|a| a.port() == 0) {
        bad(
            "web.listen",
            "port 0 would pick a random port nobody can find; name a port".into(),
        );
    }
    p
}

fn check_model(key: &str, role: &str, m: &ModelConfig, bad: &mut impl FnMut(&str, String)) {
    let fits = match role {
        "detector" => matches!(m.format, ModelFormat::Platecam | ModelFormat::YoloEnd2end),
        _ => matches!(m.format, ModelFormat::Platecam | ModelFormat::FastPlateOcr),
    };
    if !fits {
        let allowed = if role == "detector" {
            "\"platecam\" or \"yolo-end2end\""
        } else {
            "\"platecam\" or \"fast-plate-ocr\""
        };
        bad(
            &format!("{key}.format"),
            format!("{:?} is not a {role} format; use {allowed}", m.format),
        );
    }
    match (m.format, &m.config) {
        (ModelFormat::FastPlateOcr, None) => bad(
            &format!("{key}.config"),
            "is required for fast-plate-ocr (its plate config YAML)".into(),
        ),
        (ModelFormat::FastPlateOcr, Some(_)) | (_, None) => {}
        (_, Some(_)) => bad(
            &format!("{key}.config"),
            "is only used by format \"fast-plate-ocr\"; remove it".into(),
        ),
    }
    if m.path.as_os_str().is_empty() {
        bad(&format!("{key}.path"), "is empty".into());
    }
    if let Some(t) = m.score_threshold {
        if !(t > 0.0 && t < 1.0) {
            bad(
                &format!("{key}.score_threshold"),
                format!("{t} is outside (0, 1)"),
            );
        }
    }
}

/// `cameras`: whether the replay files of the cameras are checked too (not for a command that
/// does not capture). A V4L2 device is never checked: a camera that is absent (unplugged, or
/// enumerating late at boot) is a state the daemon reports and waits out, not a config error.
pub(super) fn machine_checks(c: &Config, lines: &KeyLines, cameras: bool) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut file = |key: &str, path: &Path| {
        if let Some(msg) = readable_file(path) {
            p.push(lines.problem(key, msg));
        }
    };
    if let Some(r) = &c.recognition {
        for (name, model) in [("detector", &r.detector), ("ocr", &r.ocr)] {
            if let Some(m) = model {
                file(&format!("recognition.{name}.path"), &m.path);
                if let Some(cfg) = &m.config {
                    file(&format!("recognition.{name}.config"), cfg);
                }
            }
        }
    }
    for (key, path) in [
        ("mqtt.ca", &c.mqtt.ca),
        ("mqtt.cert", &c.mqtt.cert),
        ("mqtt.key", &c.mqtt.key),
        ("mqtt.password_file", &c.mqtt.password_file),
        ("web.token_file", &c.web.token_file),
    ] {
        if let Some(path) = path {
            file(key, path);
        }
    }
    for (i, cam) in c.cameras.iter().enumerate().filter(|_| cameras) {
        if let Ok(SourceSpec::Replay(path)) = cam.source_spec() {
            if let Err(e) = std::fs::metadata(&path) {
                let key = format!("camera[{i}].source");
                p.push(lines.problem(&key, format!("{}: {e}", path.display())));
            }
        }
    }
    // The outbox creates its directory, but a file in the way cannot become one.
    let dir = &c.storage.dir;
    if dir.exists() && !dir.is_dir() {
        p.push(lines.problem(
            "storage.dir",
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    p
}

/// Why `path` cannot be read as a file, if it cannot.
fn readable_file(path: &Path) -> Option<String> {
    match std::fs::File::open(path) {
        Err(e) => Some(format!("{}: {e}", path.display())),
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_dir() => Some(format!("{} is a directory, not a file", path.display())),
            Ok(_) => None,
            Err(e) => Some(format!("{}: {e}", path.display())),
        },
    }
}
