//! Configuration: one TOML file, typed with serde, every key documented in `default.toml`.
//!
//! Loading reports *every* problem at once, each with its key and line: serde stops at the first
//! error, so `load` removes the offending key from the document and tries again, then runs the
//! semantic checks (`validate`) on what parsed.

mod load;
mod units;
mod validate;

#[cfg(test)]
mod tests;

pub use load::{
    load, load_file, load_for, load_str, load_text, load_text_for, ConfigError, KeyLines, Loaded,
    Problem, Purpose,
};
pub use validate::{check_for_run, check_machine};

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// The commented default configuration, printed by `platecam print-default-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub device: DeviceConfig,
    #[serde(rename = "camera")]
    pub cameras: Vec<CameraConfig>,
    pub mqtt: MqttConfig,
    pub storage: StorageConfig,
    /// `None` means: the project's own models from the installed manifest.
    pub recognition: Option<RecognitionConfig>,
    pub tracking: TrackingConfig,
    pub location: Option<LocationConfig>,
    pub logging: LoggingConfig,
    pub web: WebConfig,
    pub privacy: PrivacyConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Empty means: derived from this machine (see `Config::device_id`).
    pub id: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    pub name: String,
    /// `v4l2:///dev/video0` or `replay:///path/to/folder-or-file`.
    pub source: String,
    /// Frames per second asked of the camera; the replay pace.
    pub fps: u32,
    /// Capture size asked of a V4L2 camera (the driver may choose another; we log it).
    pub width: u32,
    pub height: u32,
    /// Pixel format asked of a V4L2 camera: "auto" picks the cheapest of GREY, YUYV, MJPEG.
    pub format: String,
    /// Replay: how many frames each photo is shown for (one vehicle pass).
    pub hold_frames: u32,
    /// Replay: empty frames after each photo, so the pass ends.
    pub gap_frames: u32,
    /// Replay: start over at the end instead of stopping.
    #[serde(rename = "loop")]
    pub repeat: bool,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            name: "cam0".into(),
            source: "v4l2:///dev/video0".into(),
            fps: 10,
            width: 1280,
            height: 720,
            format: "auto".into(),
            hold_frames: 4,
            gap_frames: 4,
            repeat: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    pub url: String,
    /// Topic prefix; topics are `<prefix>/<device id>/reads` etc.
    pub prefix: String,
    /// Empty means `platecam-<device id>`.
    pub client_id: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(with = "units::duration")]
    pub keep_alive: Duration,
    /// Reads published and not yet acknowledged, at most.
    pub inflight: u16,
    #[serde(with = "units::duration")]
    pub health_interval: Duration,
    /// Longest wait between reconnect attempts (the backoff doubles up to this).
    #[serde(with = "units::duration")]
    pub reconnect_max: Duration,
    /// On shutdown, how long to wait for outstanding acknowledgements.
    #[serde(with = "units::duration")]
    pub drain_timeout: Duration,
    /// A connected session whose handed reads get no PUBACK for this long is dropped and a new
    /// one started (everything still stored is handed again).
    #[serde(with = "units::duration")]
    pub ack_timeout: Duration,
    /// Largest MQTT packet sent or accepted (a read with its crop must fit).
    #[serde(with = "units::bytes")]
    pub max_packet_size: ByteSize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://localhost:1883".into(),
            prefix: "platecam".into(),
            client_id: String::new(),
            ca: None,
            cert: None,
            key: None,
            username: None,
            password_file: None,
            keep_alive: Duration::from_secs(30),
            inflight: 32,
            health_interval: Duration::from_secs(30),
            reconnect_max: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            max_packet_size: ByteSize::mib(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub dir: PathBuf,
    /// Disk the outbox may use; past it the eviction policy applies.
    #[serde(with = "units::bytes")]
    pub max_bytes: ByteSize,
    /// Evict as well when the file system has less than this free.
    #[serde(with = "units::bytes")]
    pub min_free_bytes: ByteSize,
    pub eviction: EvictionPolicy,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("/var/lib/platecam"),
            max_bytes: ByteSize::gib(2),
            min_free_bytes: ByteSize::mib(64),
            eviction: EvictionPolicy::OldestFirst,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    /// Delete the oldest reads (with their crops) first.
    OldestFirst,
    /// Drop the crops of the oldest reads first, keeping their text; then delete oldest reads.
    CropsFirst,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecognitionConfig {
    pub detector: Option<ModelConfig>,
    pub ocr: Option<ModelConfig>,
    /// The plate formats of the unit's region: presets (`eu`) or patterns of `L`, `N`, `A`; a read
    /// that fits none is re-ranked by swapping look-alike characters. Empty: no prior.
    pub plate_formats: Vec<String>,
    /// Motion gate: skip the detector on frames where nothing changed since its last run (its
    /// result then stands for them). See docs/performance.md.
    pub gate: bool,
    /// With the gate on, the detector still runs at least this often (on the frames' timeline),
    /// so a scene that changed too slowly to notice, or a parked car, is read.
    #[serde(with = "units::duration")]
    pub gate_full_every: Duration,
    /// Detector + OCR worker threads per camera; 0: one per core, at most 2 (each worker holds
    /// its own tract state, about 30 MB at 1080p: more workers cost memory first).
    pub threads: usize,
}

impl Default for RecognitionConfig {
    fn default() -> Self {
        RecognitionConfig {
            detector: None,
            ocr: None,
            plate_formats: Vec::new(),
            gate: true,
            gate_full_every: Duration::from_secs(2),
            threads: 0,
        }
    }
}

impl RecognitionConfig {
    /// The worker threads `threads` asks for, `0` resolved to the cores this process may use.
    pub fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(2),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub format: ModelFormat,
    /// `platecam`: the models manifest (`manifest.json`); others: the ONNX file.
    pub path: PathBuf,
    /// `fast-plate-ocr`: its plate config YAML.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Overrides the model's own detection threshold.
    #[serde(default)]
    pub score_threshold: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFormat {
    /// The project's own models, described by `models/manifest.json`.
    Platecam,
    /// open-image-models YOLO detector with NMS in the graph (output rows `[b,x1,y1,x2,y2,cls,score]`).
    YoloEnd2end,
    /// fast-plate-ocr fixed-slot OCR with its plate config YAML.
    FastPlateOcr,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// A box joins a track when it overlaps the track's last box at least this much (IoU).
    pub iou_match: f32,
    /// A track ends (and its read is emitted) when unseen for this long.
    #[serde(with = "units::duration")]
    pub max_gap: Duration,
    /// Tracks seen in fewer frames are dropped as noise.
    pub min_frames: u32,
    /// Alternatives reported with each read.
    pub candidates: usize,
    /// Reads whose voted confidence (mean character probability) is below this are dropped.
    pub min_confidence: f32,
    /// Reads shorter than this are dropped (signs and stickers give short fragments).
    pub min_chars: usize,
    /// Drop reads without a digit: plates in the formats we read carry digits, while the text
    /// on signs, state names and slogans mostly does not. Vanity-plate sites turn this off.
    pub require_digit: bool,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            iou_match: 0.1,
            max_gap: Duration::from_millis(700),
            min_frames: 1,
            candidates: 5,
            min_confidence: 0.8,
            min_chars: 4,
            require_digit: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub heading: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// tracing filter for the local log (journald or stderr), e.g. "info" or "platecam=debug".
    pub level: String,
    /// Lowest level forwarded to `<prefix>/<device>/logs` over MQTT: "off", "error", "warn"
    /// (default), "info", "debug".
    pub mqtt_level: String,
    /// Log events forwarded over MQTT per second, at most (bursts of up to 5 seconds' worth).
    pub mqtt_rate: u32,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            mqtt_level: "warn".into(),
            mqtt_rate: 10,
        }
    }
}

/// `[web]`: the installer's page and Prometheus `/metrics` (see `crate::web`).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address and port to serve on; `None` (the default): no listener.
    pub listen: Option<std::net::SocketAddr>,
    /// A file with the access token (0600). Beyond loopback a token is always required: this
    /// file, else the systemd credential `platecam-web-token`, else one made on first start in
    /// `<storage.dir>/web-token.key`.
    pub token_file: Option<PathBuf>,
}

impl WebConfig {
    /// Whether requests must carry the token: always beyond loopback, and wherever one is set.
    pub fn needs_token(&self) -> bool {
        self.token_file.is_some() || self.listen.is_some_and(|a| !a.ip().is_loopback())
    }
}

/// `[privacy]`: what the unit keeps, for how long, and what leaves it (docs/privacy.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// What leaves the unit and reaches its disk; see docs/privacy.md, "Modes".
    pub mode: PrivacyMode,
    /// The outbox master key (32 bytes, raw or hex, mode 0600); else the systemd credential
    /// `platecam-master`, else `<storage.dir>/master.key` made on first start.
    pub master_key_file: Option<PathBuf>,
    /// Reads and crops older than this are destroyed, sent or not; `None` ("off") keeps them
    /// until delivered or evicted.
    #[serde(with = "units::duration_or_off")]
    pub max_age: Option<Duration>,
    /// Each period gets its own data key, destroyed once the period is older than `max_age`.
    #[serde(with = "units::duration")]
    pub key_period: Duration,
    /// The unit's ed25519 signing seed (32 bytes, 0600). Default: the systemd credential
    /// `platecam-signing`, else `<storage.dir>/signing.key` made on first start.
    pub signing_key_file: Option<PathBuf>,
    /// The site's pseudonym key (32 bytes, 0600), the same on every unit of a site. Default: the
    /// credential `platecam-site`, else `<storage.dir>/site.key` (then the unit's own).
    pub site_key_file: Option<PathBuf>,
    /// Hotlist: one `plate, reason, expiry` per line.
    pub hotlist: Option<PathBuf>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            mode: PrivacyMode::All,
            master_key_file: None,
            max_age: Some(Duration::from_secs(72 * 3600)),
            key_period: Duration::from_secs(3600),
            signing_key_file: None,
            site_key_file: None,
            hotlist: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PrivacyMode {
    /// Every read, as read, with its crop.
    #[default]
    All,
    /// Only hotlist hits are kept and sent; other reads are counted per hour.
    HotlistOnly,
    /// Hits as read; other plates only as HMAC-SHA256 pseudonyms, without crops.
    Pseudonymous,
}

impl PrivacyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PrivacyMode::All => "all",
            PrivacyMode::HotlistOnly => "hotlist-only",
            PrivacyMode::Pseudonymous => "pseudonymous",
        }
    }
}

impl Config {
    /// The device id: configured, else one that differs per unit even when every unit was
    /// flashed from one image (a shared id means a shared MQTT client id: the broker kicks one
    /// unit off for the other, over and over, and their reads mix under one topic). Worked out
    /// once per process (see [`default_device_id`]).
    pub fn device_id(&self) -> String {
        if !self.device.id.is_empty() {
            return self.device.id.clone();
        }
        static DEFAULT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| default_device_id(std::path::Path::new(MACHINE_ID), &self.storage.dir))
            .clone()
    }

    pub fn client_id(&self) -> String {
        if self.mqtt.client_id.is_empty() {
            format!("platecam-{}", self.device_id())
        } else {
            self.mqtt.client_id.clone()
        }
    }
}

/// A parsed `[[camera]] source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `v4l2:///dev/video0`: a V4L2 device node.
    V4l2(PathBuf),
    /// `replay:///path` or `replay:relative/path`: a folder of images or a video file.
    Replay(PathBuf),
}

impl SourceSpec {
    /// Parses a source string; the error says what a valid one looks like.
    pub fn parse(source: &str) -> Result<SourceSpec, String> {
        if let Some(rest) = source.strip_prefix("v4l2://") {
            if rest.starts_with('/') && rest.len() > 1 {
                return Ok(SourceSpec::V4l2(PathBuf::from(rest)));
            }
            return Err(format!(
                "{source:?} has no device path; write it like \"v4l2:///dev/video0\""
            ));
        }
        if let Some(rest) = source.strip_prefix("replay:") {
            // `replay:///abs` and `replay:rel` both name a path; `replay://` alone does not.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if !path.is_empty() {
                return Ok(SourceSpec::Replay(PathBuf::from(path)));
            }
            return Err(format!(
                "{source:?} has no path; write it like \"replay:///var/lib/platecam/samples\""
            ));
        }
        Err(format!(
            "{source:?} is not a camera source; use \"v4l2:///dev/videoN\" or \"replay:///path/to/folder-or-video\""
        ))
    }
}

impl CameraConfig {
    pub fn source_spec(&self) -> Result<SourceSpec, String> {
        SourceSpec::parse(&self.source)
    }
}

/// systemd's per-installation id; an image prepared for cloning ships it empty, and systemd makes
/// a new one on each unit's first boot.
const MACHINE_ID: &str = "/etc/machine-id";
/// Kept in the storage directory when there is no machine id.
const DEVICE_ID_FILE: &str = "device-id";

/// `pc-` and the first 12 hex digits of the SHA-256 of the machine id: stable, different per
/// unit, and not the machine id itself (which systemd says must not be exposed). Without a
/// usable machine id, an id made at random on first start and kept in `state_dir`.
pub fn default_device_id(machine_id: &std::path::Path, state_dir: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let id = std::fs::read_to_string(machine_id).unwrap_or_default();
    let id = id.trim();
    // "uninitialized": the first boot of an image prepared for cloning, before systemd commits
    // the new id.
    if !id.is_empty() && id != "uninitialized" {
        return format!("pc-{}", &hex::encode(Sha256::digest(id.as_bytes()))[..12]);
    }
    let path = state_dir.join(DEVICE_ID_FILE);
    if let Ok(kept) = std::fs::read_to_string(&path) {
        let kept = kept.trim();
        if !kept.is_empty() && validate::topic_level_error(kept).is_none() {
            return kept.to_string();
        }
    }
    let made = format!("pc-{:012x}", fastrand::u64(..) >> 16);
    let tmp = state_dir.join(format!("{DEVICE_ID_FILE}.tmp"));
    let kept = std::fs::create_dir_all(state_dir)
        .and_then(|()| std::fs::write(&tmp, format!("{made}\n")))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = kept {
        tracing::error!(path = %path.display(), error = %e, device = %made, "cannot keep the device id; the next start will use another one (set device.id)");
    } else {
        tracing::info!(path = %path.display(), device = %made, "no machine id: made a device id and kept it");
    }
    made
}

/// Where `[mqtt] url` points, parsed once here so the publisher and `check-config` agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    pub tls: bool,
    /// Host name or IP address; an IPv6 address without its brackets.
    pub host: String,
    /// The URL's port, else 1883 (`mqtt://`) or 8883 (`mqtts://`).
    pub port: u16,
}

impl MqttEndpoint {
    pub fn parse(url: &str) -> Result<MqttEndpoint, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!(
                "{url:?} must start with mqtt:// or mqtts://, like \"mqtt://broker.local:1883\""
            ));
        };
        // Only `/` (or nothing) may follow the authority: rumqttc takes no path, and query
        // options here would be silently ignored.
        let authority = match rest.find(['/', '?', '#']) {
            Some(i) if rest[i..] == *"/" => &rest[..i],
            Some(_) => return Err(format!("{url:?}: a broker URL takes no path or query")),
            None => rest,
        };
        if authority.contains('@') {
            return Err(format!(
                "{url:?}: put credentials in mqtt.username and mqtt.password_file, not the URL"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Err(format!("{url:?}: unclosed '[' in IPv6 address"));
            };
            match after {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(format!("{url:?}: unexpected {p:?} after IPv6 address")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        if host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{url:?}: the host contains a space or control character"
            ));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("{url:?}: port {p:?} is not a number in 1..=65535")),
            },
        };
        Ok(MqttEndpoint {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl MqttConfig {
    pub fn endpoint(&self) -> Result<MqttEndpoint, String> {
        MqttEndpoint::parse(&self.url)
    }
}
