//! On-wire (MQTT) message types, schema version 1 (see docs/wire-format.md). These are boundaries:
//! change them only compatibly, or bump `schema`.

use serde::{Deserialize, Serialize};

use crate::recognize::{Candidate, Direction};

pub const SCHEMA: u32 = 1;

/// `<prefix>/<device>/reads`: one message per vehicle pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadMessage {
    pub schema: u32,
    /// UUIDv7: unique and time-sortable; consumers de-duplicate on it.
    pub id: String,
    pub device: String,
    pub camera: String,
    /// Per-device counter; consumers spot gaps with it.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub captured_at: String,
    /// Whether the unit's wall clock was synchronised (NTP) when the frame was taken; if not,
    /// `captured_at` may be far off (a unit without a battery-backed clock boots in 1970).
    /// Records stored before this field existed read as false (not known to be synchronised).
    #[serde(default)]
    pub clock_synced: bool,
    pub plate: String,
    pub confidence: f32,
    pub chars: Vec<WireChar>,
    pub candidates: Vec<Candidate>,
    pub bbox: [u32; 4],
    pub frame: FrameSize,
    pub frames_seen: u32,
    pub direction: Direction,
    /// Absent when the crop was evicted to save space.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crop: Option<CropInfo>,
    pub models: ModelHashes,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<Location>,
    // --- privacy-wire: pseudonym, hotlist hit, signature ---
    /// Mode "pseudonymous", a read that matched no hotlist entry: the plate as HMAC-SHA256 under
    /// the site key (hex); `plate` is then "", `chars` and `candidates` empty, no crop.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pseudonym: Option<String>,
    /// The hotlist entry the read matched (it is then also published on `alerts`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hit: Option<HotlistHit>,
    /// ed25519 signature (hex) by the unit's key over the read's canonical encoding
    /// (docs/wire-format.md, "Signed reads"). Added when published, not stored.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sig: Option<String>,
}

/// The hotlist entry a read matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotlistHit {
    /// The plate as the hotlist lists it.
    pub listed: String,
    pub reason: String,
    /// What matched: the read's `plate` or one of its `candidates` (look-alikes folded).
    pub matched: String,
}

/// `<prefix>/<device>/identity`, retained: the public key the unit signs its reads with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityMessage {
    pub device: String,
    /// "ed25519".
    pub alg: String,
    /// The raw 32-byte public key, hex.
    pub public_key: String,
    /// The canonical encoding signed: "platecam-read-v1".
    pub canonical: String,
}

/// `<prefix>/<device>/counts`, retained: reads per hour (mode "hotlist-only": the only trace of
/// the reads that matched nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CountsMessage {
    /// Start of the hour, RFC 3339 UTC.
    pub hour: String,
    /// Reads in that hour, hits included.
    pub reads: u64,
    pub hits: u64,
    /// Reads neither stored nor sent (mode "hotlist-only").
    pub not_kept: u64,
    /// False while the hour is still running.
    pub complete: bool,
}
// --- end privacy-wire ---

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireChar {
    pub c: char,
    pub p: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CropInfo {
    pub format: String,
    pub bytes: usize,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelHashes {
    pub detector: String,
    pub ocr: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heading: Option<f64>,
}

/// `<prefix>/<device>/status`, retained; the last will carries `state: "offline"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusMessage {
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<String>,
}

/// `<prefix>/<device>/health`, every `mqtt.health_interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthMessage {
    pub at: String,
    pub uptime_s: u64,
    pub cameras: Vec<CameraHealth>,
    /// Mean inference time per frame over the last interval.
    pub inference_ms: f64,
    pub reads_total: u64,
    pub reads_buffered: u64,
    /// Age of the oldest read not yet acknowledged by the broker.
    pub oldest_unsent_age_s: Option<f64>,
    pub evictions: u64,
    /// Stored records that no longer decode, set aside in the outbox's quarantine (see
    /// `platecam outbox recover`), in total.
    #[serde(default)]
    pub quarantined: u64,
    pub outbox_bytes: u64,
    pub disk_free_bytes: Option<u64>,
    /// Log events not forwarded over MQTT (rate limit or full queue) since start.
    #[serde(default)]
    pub logs_dropped: u64,
    /// Frames recognised and plate boxes found since start.
    #[serde(default)]
    pub frames_recognized: u64,
    #[serde(default)]
    pub detections: u64,
    /// Detector boxes read under the model's `ocr.min_confidence` since start: not plates.
    #[serde(default)]
    pub boxes_not_plates: u64,
    /// Passes that ended without a read since start, by reason.
    #[serde(default)]
    pub passes_dropped: PassesDropped,
    /// Reads that could not be stored since start (each also logged as an error).
    #[serde(default)]
    pub reads_lost: u64,
    /// Sessions the broker took over for another client with our id, since start.
    #[serde(default)]
    pub session_takeovers: u64,
    /// Frames the motion gate kept from the detector since start (see docs/performance.md).
    #[serde(default)]
    pub frames_gated: u64,
    /// Reads destroyed on the unit because they were older than `privacy.max_age`, sent or not,
    /// since the outbox was created.
    #[serde(default)]
    pub reads_expired: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PassesDropped {
    pub noise: u64,
    pub low_confidence: u64,
    pub implausible: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CameraHealth {
    pub name: String,
    pub fps: f64,
    pub frames_dropped: u64,
    pub state: String,
}

/// RFC 3339 UTC with milliseconds, as every time on the wire.
pub fn rfc3339_ms(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl ReadMessage {
    /// The wire message for a tracker's read. `id`, `seq` and `crop` are filled by the outbox when
    /// it accepts the read.
    pub fn from_read(
        read: &crate::recognize::PlateRead,
        device: &str,
        models: &ModelHashes,
        location: Option<&crate::config::LocationConfig>,
    ) -> ReadMessage {
        ReadMessage {
            schema: SCHEMA,
            id: String::new(),
            device: device.to_string(),
            camera: read.camera.clone(),
            seq: 0,
            captured_at: rfc3339_ms(read.captured_at),
            clock_synced: read.clock_synced,
            plate: read.plate.clone(),
            confidence: read.confidence,
            chars: read
                .chars
                .iter()
                .map(|c| WireChar { c: c.c, p: c.p })
                .collect(),
            candidates: read.candidates.clone(),
            bbox: read.bbox,
            frame: FrameSize {
                width: read.frame_width,
                height: read.frame_height,
            },
            frames_seen: read.frames_seen,
            direction: read.direction,
            crop: None,
            models: models.clone(),
            location: location.map(|l| Location {
                lat: l.lat,
                lon: l.lon,
                heading: l.heading,
            }),
            pseudonym: None,
            hit: None,
            sig: None,
        }
    }
}

/// `<prefix>/<device>/logs` (QoS 0): one log event, when `logging.mqtt_level` is not "off".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogMessage {
    pub at: String,
    /// "ERROR", "WARN", "INFO", "DEBUG" or "TRACE".
    pub level: String,
    /// The module that logged it, e.g. "platecam::capture::replay".
    pub target: String,
    pub message: String,
    /// The event's other fields (camera, file, error, ...).
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Events dropped so far (rate limit or full queue) since the daemon started.
    #[serde(default)]
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_synced_is_on_the_wire_and_old_records_read_as_not_synced() {
        let json = r#"{"schema":1,"id":"x","device":"d","camera":"c","seq":3,
            "captured_at":"1970-01-01T00:00:12.000Z","plate":"AB123CD","confidence":0.9,
            "chars":[],"candidates":[],"bbox":[1,2,3,4],"frame":{"width":8,"height":6},
            "frames_seen":2,"direction":"unknown","models":{"detector":"a","ocr":"b"}}"#;
        let mut old: ReadMessage = serde_json::from_str(json).expect("a record without the field");
        assert!(!old.clock_synced);
        old.clock_synced = true;
        let v = serde_json::to_value(&old).expect("json");
        assert_eq!(v["clock_synced"], serde_json::Value::Bool(true));
    }
}
