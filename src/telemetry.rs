//! Logging set-up and the counters that `health` reports.
//!
//! Every stage updates `Metrics` (lock-free atomics, cheap on the frame path); the publisher turns a
//! snapshot of it into the periodic `health` message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

/// Counters for one camera.
#[derive(Debug, Default)]
pub struct CameraMetrics {
    pub frames: AtomicU64,
    pub frames_dropped: AtomicU64,
    /// "streaming", "absent" (no device node: waited for), "reconnecting", "ended", ...
    pub state: Mutex<String>,
}

/// Process-wide counters shared by every stage.
#[derive(Debug)]
pub struct Metrics {
    pub started: Instant,
    cameras: Mutex<BTreeMap<String, Arc<CameraMetrics>>>,
    /// Sum of inference time in microseconds, and the number of frames it covers.
    pub inference_us: AtomicU64,
    pub inferences: AtomicU64,
    pub reads_total: AtomicU64,
    /// Plate boxes found and read, over all frames.
    pub detections: AtomicU64,
    /// Detector boxes the OCR read under the model's `ocr.min_confidence` (not plates).
    pub boxes_not_plates: AtomicU64,
    /// Vehicle passes that ended without becoming a read, by reason.
    pub passes_dropped: PassDrops,
    /// Reads the tracker produced that could not be stored (each is also logged as an error).
    pub reads_lost: AtomicU64,
    /// Times the broker ended our session because another client connected with our id.
    pub session_takeovers: AtomicU64,
    /// Bumped by the recognize loops on every turn (a frame, or an idle wait for one).
    pub progress: AtomicU64,
    /// Bumped by the publisher on every turn of its loop, connected or not: it stops when the
    /// publisher task is dead or stuck.
    pub publish_progress: AtomicU64,
    /// Log events the MQTT forwarder dropped (shared with `LogStream::dropped`).
    pub logs_dropped: Arc<AtomicU64>,
    /// Per-stage durations, for Prometheus (`/metrics`, see `crate::web`).
    pub timings: StageTimings,
    /// Frames the motion gate kept from the detector (nothing changed since its last run).
    pub frames_gated: AtomicU64,
}

/// How long each stage took, as histograms (seconds). Observing takes no lock on the frame path
/// worth noting (a few atomics inside the histogram).
#[derive(Debug)]
pub struct StageTimings {
    /// The detector, per frame.
    pub detect: Histogram,
    /// Every OCR run of a frame together.
    pub ocr: Histogram,
    /// Detector and OCR of a frame.
    pub frame: Histogram,
    /// Storing one read durably (`Outbox::append`, synced).
    pub append: Histogram,
}

impl Default for StageTimings {
    fn default() -> Self {
        // 1 ms to about 16 s, doubling: a fast x86 frame to a slow ARM frame or a stuck sync.
        let new = || {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 15,
            ))
        };
        StageTimings {
            detect: new(),
            ocr: new(),
            frame: new(),
            append: new(),
        }
    }
}

impl StageTimings {
    /// The stages and their histograms, in the order `/metrics` lists them.
    pub fn stages(&self) -> [(&'static str, &Histogram); 4] {
        [
            ("detect", &self.detect),
            ("ocr", &self.ocr),
            ("frame", &self.frame),
            ("append", &self.append),
        ]
    }

    pub fn record_frame(&self, t: &crate::recognize::Timings) {
        self.detect.observe(t.detect_ms / 1e3);
        self.ocr.observe(t.ocr_ms / 1e3);
        self.frame.observe(t.total_ms / 1e3);
    }
}

/// Why passes ended without a read; each also gets a debug log line with its reason.
#[derive(Debug, Default)]
pub struct PassDrops {
    /// Seen on fewer frames than `tracking.min_frames`.
    pub noise: AtomicU64,
    /// Voted confidence under `tracking.min_confidence`.
    pub low_confidence: AtomicU64,
    /// Too few characters, or no digit where `tracking.require_digit` wants one.
    pub implausible: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            cameras: Mutex::default(),
            inference_us: AtomicU64::new(0),
            inferences: AtomicU64::new(0),
            reads_total: AtomicU64::new(0),
            detections: AtomicU64::new(0),
            boxes_not_plates: AtomicU64::new(0),
            passes_dropped: PassDrops::default(),
            reads_lost: AtomicU64::new(0),
            session_takeovers: AtomicU64::new(0),
            frames_gated: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            publish_progress: AtomicU64::new(0),
            logs_dropped: Arc::default(),
            timings: StageTimings::default(),
        }
    }
}

impl Metrics {
    /// The counters of camera `name`, created on first use.
    pub fn camera(&self, name: &str) -> Arc<CameraMetrics> {
        let mut cams = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        cams.entry(name.to_string()).or_default().clone()
    }

    pub fn cameras(&self) -> Vec<(String, Arc<CameraMetrics>)> {
        let cams = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        cams.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn record_inference(&self, elapsed: std::time::Duration) {
        self.inference_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.inferences.fetch_add(1, Ordering::Relaxed);
        self.tick();
    }

    pub fn tick(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// What the watchdog compares between two checks.
    pub fn progress_snapshot(&self) -> Progress {
        Progress {
            recognize: self.progress.load(Ordering::Relaxed),
            publish: self.publish_progress.load(Ordering::Relaxed),
            cameras: self
                .cameras()
                .into_iter()
                .map(|(name, cam)| {
                    let streaming =
                        *cam.state.lock().unwrap_or_else(|e| e.into_inner()) == "streaming";
                    (name, cam.frames.load(Ordering::Relaxed), streaming)
                })
                .collect(),
        }
    }
}

/// The per-stage progress counters at one moment (see [`stalled_stage`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub recognize: u64,
    pub publish: u64,
    /// Per camera: name, frames captured, and whether the capture thread says it is streaming.
    pub cameras: Vec<(String, u64, bool)>,
}

/// The watchdog's rule: the unit is working (pet) only if every stage moved between two checks.
/// Returns the first stage that did not, for the log line.
///
/// - recognize: its loop turns on every frame and at least once a second while idle, so a frozen
///   count means inference (or the outbox append) is stuck.
/// - publish: its loop turns at least once a second, connected or backing off, so a frozen count
///   means the publisher task died or hangs. A broker that is reachable but never acknowledges is
///   the publisher's own business (`mqtt.ack_timeout` ends that session), not the watchdog's.
/// - capture: a camera that was streaming at both checks must have delivered frames in between; a
///   frozen count there means the capture thread is blocked inside the driver (a hung ioctl). A
///   camera that is reconnecting or ended is in the capture thread's own retry loop and passes.
pub fn stalled_stage(before: &Progress, now: &Progress) -> Option<String> {
    if now.recognize == before.recognize {
        return Some("recognize".into());
    }
    if now.publish == before.publish {
        return Some("publish".into());
    }
    for (name, frames, streaming) in &now.cameras {
        let was = before.cameras.iter().find(|(n, _, _)| n == name);
        if let Some((_, frames_before, true)) = was {
            if *streaming && frames == frames_before {
                return Some(format!("capture-{name}"));
            }
        }
    }
    None
}

/// Log events on their way to MQTT: the publisher drains `rx` onto the `logs` topic.
pub struct LogStream {
    pub rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    pub dropped: Arc<AtomicU64>,
}

/// Events waiting for the publisher; past this they are dropped (and counted), so logging never
/// blocks a stage, even while the broker is unreachable.
const LOG_QUEUE: usize = 256;

/// Where log lines go: journald when systemd started us (it sets `JOURNAL_STREAM`), else stderr.
/// `PLATECAM_LOG` (a tracing filter) overrides the configured level. With `mqtt_level` other than
/// "off" (the default is "warn"), events at or above it are also queued for MQTT, and the queue
/// is returned.
pub fn init_logging(cfg: &crate::config::LoggingConfig) -> Option<LogStream> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;

    let filter = EnvFilter::try_from_env("PLATECAM_LOG")
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (forwarder, stream) = match cfg.mqtt_level.parse::<tracing::Level>() {
        Ok(level) => {
            let (tx, rx) = tokio::sync::mpsc::channel(LOG_QUEUE);
            let dropped = Arc::new(AtomicU64::new(0));
            let layer = MqttLogLayer {
                tx,
                level,
                bucket: Mutex::new(TokenBucket::new(cfg.mqtt_rate)),
                dropped: dropped.clone(),
            };
            (Some(layer), Some(LogStream { rx, dropped }))
        }
        // "off" (config validation allows nothing else that fails to parse).
        Err(_) => (None, None),
    };
    let registry = tracing_subscriber::registry().with(filter).with(forwarder);
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    // A second init (tests calling the CLI twice in one process) is harmless: keep the first.
    let _ = match journald {
        Some(layer) => registry.with(layer).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init(),
    };
    stream
}

/// Turns tracing events into `wire::LogMessage` JSON on a bounded queue. Never blocks, never logs.
struct MqttLogLayer {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    level: tracing::Level,
    bucket: Mutex<TokenBucket>,
    dropped: Arc<AtomicU64>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MqttLogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        // The MQTT client's own chatter would feed back into itself.
        if *meta.level() > self.level || meta.target().starts_with("rumqttc") {
            return;
        }
        let allowed = self.bucket.lock().map(|mut b| b.take()).unwrap_or(false);
        if !allowed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut fields = FieldsJson::default();
        event.record(&mut fields);
        let message = crate::wire::LogMessage {
            at: crate::wire::rfc3339_ms(std::time::SystemTime::now()),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: fields.message,
            fields: fields.fields,
            dropped: self.dropped.load(Ordering::Relaxed),
        };
        let sent = serde_json::to_vec(&message)
            .ok()
            .is_some_and(|json| self.tx.try_send(json).is_ok());
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct FieldsJson {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl tracing::field::Visit for FieldsJson {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .insert(field.name().to_string(), serde_json::Value::from(value));
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.fields
            .insert(field.name().to_string(), serde_json::Value::from(value));
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.fields
            .insert(field.name().to_string(), serde_json::Value::from(value));
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.fields
            .insert(field.name().to_string(), serde_json::Value::from(value));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.fields
            .insert(field.name().to_string(), serde_json::Value::from(value));
    }
}

/// At most `rate` events a second on average, in bursts of up to five seconds' worth.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> TokenBucket {
        let rate = f64::from(rate.max(1));
        TokenBucket {
            rate,
            tokens: rate * 5.0,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate * 5.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{stalled_stage, Progress, TokenBucket};

    fn progress(recognize: u64, publish: u64, frames: u64, streaming: bool) -> Progress {
        Progress {
            recognize,
            publish,
            cameras: vec![("lane1".into(), frames, streaming)],
        }
    }

    #[test]
    fn watchdog_pets_only_when_every_stage_moved() {
        let before = progress(10, 10, 100, true);
        assert_eq!(stalled_stage(&before, &progress(11, 11, 130, true)), None);
        // A dead or stuck publisher, while capture and recognition go on.
        assert_eq!(
            stalled_stage(&before, &progress(11, 10, 130, true)).as_deref(),
            Some("publish")
        );
        assert_eq!(
            stalled_stage(&before, &progress(10, 11, 130, true)).as_deref(),
            Some("recognize")
        );
        // A camera hung inside an ioctl: still "streaming", no frame, while recognize idles on.
        assert_eq!(
            stalled_stage(&before, &progress(11, 11, 100, true)).as_deref(),
            Some("capture-lane1")
        );
        // Reconnecting (its own backoff) or just started streaming: not a stall.
        assert_eq!(stalled_stage(&before, &progress(11, 11, 100, false)), None);
        let reconnecting = progress(10, 10, 100, false);
        assert_eq!(
            stalled_stage(&reconnecting, &progress(11, 11, 100, true)),
            None
        );
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10);
        let burst = (0..200).filter(|_| b.take()).count();
        assert_eq!(burst, 50, "five seconds' worth at once");
        assert!(!b.take());
    }
}
