//! Logging set-up and the counters that `health` reports.
//!
//! Every stage updates `Metrics` (lock-free atomics, cheap on the frame path); the publisher turns a
//! snapshot of it into the periodic `health` message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Counters for one camera.
#[derive(Debug, Default)]
pub struct CameraMetrics {
    pub frames: AtomicU64,
    pub frames_dropped: AtomicU64,
    /// "streaming", "reconnecting", "ended", ...
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
    /// Bumped by every stage that makes progress; the watchdog checks it moves.
    pub progress: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            cameras: Mutex::default(),
            inference_us: AtomicU64::new(0),
            inferences: AtomicU64::new(0),
            reads_total: AtomicU64::new(0),
            progress: AtomicU64::new(0),
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
}

/// Where log lines go: journald when systemd started us (it sets `JOURNAL_STREAM`), else stderr.
/// `PLATECAM_LOG` (a tracing filter) overrides the configured level.
pub fn init_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;

    let filter = EnvFilter::try_from_env("PLATECAM_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
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
}
