//! Capture: frame sources (V4L2 camera, file replay) and the capture thread.
//!
//! CONTRACT:
//! - `Frame`: one decoded RGB frame with its camera name, per-camera sequence and capture time.
//! - `FrameSource`: a blocking source of frames; `open_source(&CameraConfig)` picks replay or V4L2
//!   from the `source` URI (`replay:///abs`, `replay:relative`, `v4l2:///dev/videoN`).
//! - `FrameQueue`: bounded channel between the capture thread and inference. A live source drops the
//!   oldest frame when full (and counts it); a replay source blocks instead (a file can wait).
//! - `spawn_capture(...)`: runs a source on its own named OS thread until cancelled or the source
//!   ends, then closes the queue. Live sources are reopened with capped backoff after errors.
//!
//! Invariant: nothing reachable from a file, a device or a config value panics; every failure is a
//! `CaptureError` naming the device, file or format involved.

mod clock;
pub mod decode;
mod queue;
mod replay;
mod v4l2;

pub use clock::wall_clock_synced;
pub use queue::{FrameQueue, Pop, PushError};
pub use replay::ReplaySource;
pub use v4l2::{list_devices, DeviceInfo, FormatInfo, FrameSizeInfo, V4l2Source};

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::CameraConfig;
use crate::telemetry::CameraMetrics;

/// One decoded frame, always RGB8 whatever the camera delivered.
#[derive(Clone)]
pub struct Frame {
    pub camera: String,
    /// Per-camera frame counter, starting at 0. The capture thread numbers frames itself, so the
    /// sequence keeps increasing across camera reopens.
    pub seq: u64,
    /// Monotonic capture time (a replay's synthetic timeline): what tracking measures gaps on.
    pub at: Instant,
    /// Wall-clock capture time, reported in the read (may jump when NTP first sets the clock).
    pub captured_at: SystemTime,
    /// Whether the wall clock was synchronised when the frame was taken.
    pub clock_synced: bool,
    pub image: image::RgbImage,
}

/// Everything that can go wrong while opening or reading a frame source.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("camera source {uri:?}: {reason} (expected `v4l2:///dev/videoN`, `replay:///abs/path` or `replay:relative/path`)")]
    BadSource { uri: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no .jpg, .jpeg or .png photos in this folder")]
    EmptyReplay { path: PathBuf },
    #[error("{path}: not a replayable file (expected .jpg, .jpeg, .png or .y4m)")]
    UnsupportedFile { path: PathBuf },
    #[error("{path}: bad Y4M video: {reason}")]
    Y4m { path: PathBuf, reason: String },
    #[error("{device}: {op} failed: {source}")]
    Device {
        device: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{device}: {reason}")]
    DeviceUnusable { device: String, reason: String },
    #[error("{device}: pixel format {requested:?} is not supported here (the camera offers: {available}; we decode GREY, YUYV, MJPG)")]
    UnsupportedFormat {
        device: String,
        requested: String,
        available: String,
    },
    #[error("{device}: no frame for {waited:?}")]
    Timeout { device: String, waited: Duration },
    #[error("{format} frame: buffer has {actual} bytes, {expected} needed")]
    ShortBuffer {
        format: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("{format} frame: {reason}")]
    Decode {
        format: &'static str,
        reason: String,
    },
}

/// A blocking source of frames.
pub trait FrameSource: Send {
    /// The next frame; `Ok(None)` when the source has ended (a replay finished).
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError>;
    /// A camera (frames are dropped when inference lags) rather than a file (which waits).
    fn is_live(&self) -> bool;
    /// A short human description for logs: device or path, format and size.
    fn describe(&self) -> String;
    /// Frames the source knows it lost since the last call (gaps in the driver's sequence).
    fn take_dropped(&mut self) -> u64 {
        0
    }
}

/// Opens the source named by `cfg.source`.
pub fn open_source(cfg: &CameraConfig) -> Result<Box<dyn FrameSource>, CaptureError> {
    match parse_source(&cfg.source)? {
        SourceUri::Replay(path) => Ok(Box::new(ReplaySource::open(&path, cfg)?)),
        SourceUri::V4l2(path) => Ok(Box::new(V4l2Source::open(&path, cfg)?)),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SourceUri {
    Replay(PathBuf),
    V4l2(PathBuf),
}

fn parse_source(uri: &str) -> Result<SourceUri, CaptureError> {
    let bad = |reason: &str| CaptureError::BadSource {
        uri: uri.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = uri.split_once(':').ok_or_else(|| bad("no scheme"))?;
    // `scheme:///abs` keeps the leading slash; `scheme:rel` is relative to the working directory.
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() {
        return Err(bad("no path"));
    }
    match scheme {
        "replay" => Ok(SourceUri::Replay(PathBuf::from(path))),
        "v4l2" if path.starts_with('/') => Ok(SourceUri::V4l2(PathBuf::from(path))),
        "v4l2" => Err(bad("a V4L2 device needs an absolute path")),
        _ => Err(bad(&format!("unknown scheme {scheme:?}"))),
    }
}

/// First wait before reopening a failed camera; doubles up to `BACKOFF_MAX`.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A camera silent this long is treated as gone and reopened (some drivers hang after an unplug).
const STALL_AFTER: Duration = Duration::from_secs(5);
/// How often a blocked capture thread looks at the cancellation token.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Runs the camera `cfg` on an OS thread named `capture-<name>`, feeding `queue` until `cancel`
/// fires or a replay ends; the queue is closed when the thread returns.
pub fn spawn_capture(
    cfg: CameraConfig,
    queue: Arc<FrameQueue>,
    metrics: Arc<CameraMetrics>,
    cancel: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("capture-{}", cfg.name))
        .spawn(move || {
            run_capture(&cfg, &queue, &metrics, &cancel);
            queue.close();
            set_state(&metrics, "ended");
            tracing::info!(camera = %cfg.name, "capture stopped");
        })
}

/// Sets the camera's state in health; returns whether it changed.
fn set_state(metrics: &CameraMetrics, state: &str) -> bool {
    let mut s = metrics.state.lock().unwrap_or_else(|e| e.into_inner());
    let changed = *s != state;
    if changed {
        *s = state.to_string();
    }
    changed
}

/// Whether opening failed because the device node does not exist.
fn is_absent(e: &CaptureError) -> bool {
    matches!(e, CaptureError::Device { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Sleeps `total`, waking early (returning false) when cancelled.
fn sleep_unless_cancelled(cancel: &CancellationToken, total: Duration) -> bool {
    let deadline = Instant::now() + total;
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(CANCEL_POLL));
    }
}

fn run_capture(
    cfg: &CameraConfig,
    queue: &FrameQueue,
    metrics: &CameraMetrics,
    cancel: &CancellationToken,
) {
    // Whether the source is a camera is known from the URI, before any open succeeds.
    let live = matches!(parse_source(&cfg.source), Ok(SourceUri::V4l2(_)));
    let mut backoff = BACKOFF_START;
    let mut seq: u64 = 0;
    while !cancel.is_cancelled() {
        let mut source = match open_source(cfg) {
            Ok(source) => source,
            Err(e) if live => {
                // A device node that does not exist (yet) is a state, not a failure: a USB camera
                // enumerates late at boot, or was unplugged. Said once, then retried quietly.
                let state = if is_absent(&e) {
                    "absent"
                } else {
                    "reconnecting"
                };
                if set_state(metrics, state) || state != "absent" {
                    tracing::warn!(camera = %cfg.name, error = %e, state, retry_in = ?backoff, "cannot open camera");
                } else {
                    tracing::debug!(camera = %cfg.name, state, retry_in = ?backoff, "camera still absent");
                }
                if !sleep_unless_cancelled(cancel, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(e) => {
                tracing::error!(camera = %cfg.name, error = %e, "cannot open replay source");
                return;
            }
        };
        tracing::info!(camera = %cfg.name, source = %source.describe(), "capture started");
        let seq_before = seq;
        let end = stream(source.as_mut(), cfg, queue, metrics, cancel, &mut seq);
        if seq > seq_before {
            // The camera worked again: the next failure starts the backoff afresh.
            backoff = BACKOFF_START;
        }
        match end {
            StreamEnd::Cancelled | StreamEnd::Ended => return,
            StreamEnd::Failed(e) if live => {
                tracing::warn!(camera = %cfg.name, source = %source.describe(), error = %e, retry_in = ?backoff, "camera lost; reopening");
            }
            StreamEnd::Failed(e) => {
                tracing::error!(camera = %cfg.name, source = %source.describe(), error = %e, "replay failed");
                return;
            }
        }
        // Release the device before waiting, so a replugged camera can be opened again.
        drop(source);
        set_state(metrics, "reconnecting");
        if !sleep_unless_cancelled(cancel, backoff) {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum StreamEnd {
    Cancelled,
    Ended,
    Failed(CaptureError),
}

/// Moves frames from an open source into the queue until it ends, fails or is cancelled.
fn stream(
    source: &mut dyn FrameSource,
    cfg: &CameraConfig,
    queue: &FrameQueue,
    metrics: &CameraMetrics,
    cancel: &CancellationToken,
    seq: &mut u64,
) -> StreamEnd {
    let live = source.is_live();
    let mut last_frame = Instant::now();
    loop {
        // The consumer may close the queue to stop capture as well.
        if cancel.is_cancelled() || queue.is_closed() {
            return StreamEnd::Cancelled;
        }
        let next = source.next_frame();
        let lost = source.take_dropped();
        if lost > 0 {
            metrics.frames_dropped.fetch_add(lost, Ordering::Relaxed);
        }
        let mut frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => return StreamEnd::Ended,
            Err(CaptureError::Timeout { .. }) if last_frame.elapsed() < STALL_AFTER => continue,
            Err(e) => return StreamEnd::Failed(e),
        };
        last_frame = Instant::now();
        frame.seq = *seq;
        frame.camera.clone_from(&cfg.name);
        frame.clock_synced = wall_clock_synced();
        *seq += 1;
        metrics.frames.fetch_add(1, Ordering::Relaxed);
        set_state(metrics, "streaming");
        if live {
            if queue.push(frame).is_some() {
                metrics.frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let mut pending = frame;
        loop {
            match queue.push_blocking(pending, CANCEL_POLL) {
                Ok(()) => break,
                Err(PushError::Closed(_)) => return StreamEnd::Cancelled,
                Err(PushError::Full(back)) => {
                    if cancel.is_cancelled() {
                        return StreamEnd::Cancelled;
                    }
                    pending = back;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_uris_parse_or_explain() {
        assert_eq!(
            parse_source("replay:///data/photos").ok(),
            Some(SourceUri::Replay("/data/photos".into()))
        );
        assert_eq!(
            parse_source("replay:data/clip.y4m").ok(),
            Some(SourceUri::Replay("data/clip.y4m".into()))
        );
        assert_eq!(
            parse_source("v4l2:///dev/video2").ok(),
            Some(SourceUri::V4l2("/dev/video2".into()))
        );
        for bad in ["rtsp://cam/stream", "/dev/video0", "replay:", "v4l2:video0"] {
            let err = parse_source(bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(bad)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn open_source_reports_missing_camera_with_its_path() {
        let cfg = CameraConfig {
            source: "v4l2:///dev/video-platecam-missing".into(),
            ..CameraConfig::default()
        };
        let err = open_source(&cfg).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("/dev/video-platecam-missing")),
            "{err:?}"
        );
    }

    /// Waits (up to 10 s, so a loaded machine does not fail the test) for `cond` to hold.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn replay_cfg(dir: &std::path::Path, repeat: bool) -> CameraConfig {
        CameraConfig {
            name: "e2e".into(),
            source: format!("replay://{}", dir.display()),
            fps: 0,
            hold_frames: 3,
            gap_frames: 1,
            repeat,
            ..CameraConfig::default()
        }
    }

    fn photos(n: u8) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..n {
            image::RgbImage::from_pixel(6, 4, image::Rgb([i * 40, 0, 0]))
                .save(dir.path().join(format!("{i:02}.png")))
                .expect("save");
        }
        dir
    }

    #[test]
    fn replay_through_thread_and_queue_delivers_every_frame_then_ends() {
        let dir = photos(3);
        // Capacity 1 and a slow consumer: replay must wait (back-pressure), not drop.
        let queue = Arc::new(FrameQueue::new(1));
        let metrics = Arc::new(CameraMetrics::default());
        let handle = spawn_capture(
            replay_cfg(dir.path(), false),
            queue.clone(),
            metrics.clone(),
            CancellationToken::new(),
        )
        .expect("spawn");
        assert_eq!(handle.thread().name(), Some("capture-e2e"));
        let mut seqs = Vec::new();
        loop {
            match queue.pop(Duration::from_secs(10)) {
                Pop::Frame(f) => {
                    assert_eq!(f.camera, "e2e");
                    seqs.push(f.seq);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Pop::Closed => break,
                Pop::Timeout => panic!("replay stalled"),
            }
        }
        assert!(handle.join().is_ok());
        assert_eq!(
            seqs,
            (0..12).collect::<Vec<u64>>(),
            "3 photos x (3 hold + 1 gap)"
        );
        assert_eq!(metrics.frames.load(Ordering::Relaxed), 12);
        assert_eq!(metrics.frames_dropped.load(Ordering::Relaxed), 0);
        assert_eq!(
            *metrics.state.lock().unwrap_or_else(|e| e.into_inner()),
            "ended"
        );
    }

    #[test]
    fn cancel_stops_a_looping_replay_blocked_on_a_full_queue() {
        let dir = photos(1);
        let queue = Arc::new(FrameQueue::new(2));
        let metrics = Arc::new(CameraMetrics::default());
        let cancel = CancellationToken::new();
        let handle = spawn_capture(
            replay_cfg(dir.path(), true),
            queue.clone(),
            metrics,
            cancel.clone(),
        )
        .expect("spawn");
        // Nobody pops: the thread fills the queue, then blocks in push_blocking.
        assert!(eventually(|| queue.len() == 2), "queue filled");
        let started = Instant::now();
        cancel.cancel();
        assert!(handle.join().is_ok());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(queue.is_closed());
    }

    #[test]
    fn missing_camera_is_retried_until_cancelled() {
        let cfg = CameraConfig {
            name: "gone".into(),
            source: "v4l2:///dev/video-platecam-missing".into(),
            ..CameraConfig::default()
        };
        let queue = Arc::new(FrameQueue::new(2));
        let metrics = Arc::new(CameraMetrics::default());
        let cancel = CancellationToken::new();
        let handle =
            spawn_capture(cfg, queue.clone(), metrics.clone(), cancel.clone()).expect("spawn");
        assert!(
            eventually(|| *metrics.state.lock().unwrap_or_else(|e| e.into_inner()) == "absent"),
            "state becomes absent"
        );
        assert!(
            !handle.is_finished(),
            "a missing camera does not end capture"
        );
        cancel.cancel();
        assert!(handle.join().is_ok());
        assert!(matches!(queue.pop(Duration::ZERO), Pop::Closed));
        assert_eq!(
            *metrics.state.lock().unwrap_or_else(|e| e.into_inner()),
            "ended"
        );
    }
}
