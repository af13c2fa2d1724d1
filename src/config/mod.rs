//! Configuration: one TOML file, typed with serde, every key documented in `default.toml`.
//!
//! Loading reports *every* problem at once, each with its key and line: serde stops at the first
//! error, so `load` removes the offending key from the document and tries again, then runs the
//! semantic checks (`validate`) on what parsed.

mod load;

pub use load::{load_file, load_str, ConfigError, Problem};

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
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Empty means: the host name.
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
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Reads published and not yet acknowledged, at most.
    pub inflight: u16,
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Longest wait between reconnect attempts (the backoff doubles up to this).
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// On shutdown, how long to wait for outstanding acknowledgements.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
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
            inflight: 8,
            health_interval: Duration::from_secs(30),
            reconnect_max: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            max_packet_size: ByteSize::mib(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub dir: PathBuf,
    /// Disk the outbox may use; past it the eviction policy applies.
    pub max_bytes: ByteSize,
    /// Evict as well when the file system has less than this free.
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

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RecognitionConfig {
    pub detector: Option<ModelConfig>,
    pub ocr: Option<ModelConfig>,
    /// Reads whose voted confidence is below this are not emitted.
    pub min_confidence: Option<f32>,
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
    #[serde(with = "humantime_serde")]
    pub max_gap: Duration,
    /// Tracks seen in fewer frames are dropped as noise.
    pub min_frames: u32,
    /// Alternatives reported with each read.
    pub candidates: usize,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            iou_match: 0.1,
            max_gap: Duration::from_millis(700),
            min_frames: 1,
            candidates: 5,
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
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
        }
    }
}

impl Config {
    /// The device id: configured, else the host name.
    pub fn device_id(&self) -> String {
        if !self.device.id.is_empty() {
            return self.device.id.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "platecam".into())
    }

    pub fn client_id(&self) -> String {
        if self.mqtt.client_id.is_empty() {
            format!("platecam-{}", self.device_id())
        } else {
            self.mqtt.client_id.clone()
        }
    }
}
