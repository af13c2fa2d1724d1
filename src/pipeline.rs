//! Wiring of the stages and the shutdown order: the only module that knows every stage.
//!
//! Per camera: a `capture-<name>` thread fills a small `FrameQueue`; a `recognize-<name>` thread
//! runs detector + OCR + tracker on each frame and appends each finished read to the outbox (synced
//! before it counts as accepted), then wakes the publisher. The publisher is a tokio task, so the
//! MQTT event loop never waits on inference or disk.
//!
//! Shutdown drains from the source: cancel capture -> each queue closes -> the recognize thread
//! drains it, flushes its tracker (open tracks become reads) and ends -> the publisher gets until
//! `mqtt.drain_timeout` for outstanding acknowledgements -> exit. When every source ends by itself
//! (a replay), the publisher first gets the same time to empty the outbox.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::capture::{self, FrameQueue};
use crate::config::{CameraConfig, Config};
use crate::outbox::{OpenOutcome, Outbox, OutboxError};
use crate::publish::{self, PublishSettings};
use crate::recognize::tracker::{FrameInfo, Tracker};
use crate::recognize::{PlateRead, RecognizeError, Recognizer};
use crate::telemetry::{LogStream, Metrics};
use crate::wire::{ModelHashes, ReadMessage};

/// Frames waiting for inference, per camera. Small on purpose: a live camera's old frames are
/// worth less than new ones.
const QUEUE_FRAMES: usize = 2;
/// A pass also ends when its camera delivers nothing for this long (camera stalled or replay gap).
const IDLE_FLUSH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("models: {0}")]
    Models(#[from] RecognizeError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("cannot start thread {name}: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
    #[error("publisher: {0}")]
    Publish(#[from] publish::PublishError),
    #[error("the publisher stopped before shutdown: {0}")]
    PublisherGone(String),
}

impl PipelineError {
    /// Process exit code: unusable models are a configuration problem (78, no restart loop);
    /// anything else may heal on a restart.
    pub fn exit_code(&self) -> i32 {
        match self {
            PipelineError::Models(_) => crate::EXIT_CONFIG,
            _ => 1,
        }
    }
}

/// What a run did, for the caller's last log line.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub reads_accepted: u64,
    pub reads_unsent: u64,
}

/// Runs the daemon until `shutdown` is cancelled or every source has ended.
/// `ready` is called once the outbox, the models and the capture threads are up, with the
/// counters whose `progress` shows the pipeline is alive.
pub async fn run(
    cfg: Config,
    logs: Option<LogStream>,
    shutdown: CancellationToken,
    ready: impl FnOnce(Arc<Metrics>),
) -> Result<RunSummary, PipelineError> {
    let device = cfg.device_id();
    let mut metrics = Metrics::default();
    let logs = logs.map(|stream| {
        metrics.logs_dropped = stream.dropped;
        stream.rx
    });
    let metrics = Arc::new(metrics);

    // The audit log starts before the outbox, so key and migration events are in it.
    if let Err(e) = crate::privacy::audit::open(&cfg.storage.dir) {
        tracing::error!(error = %e, "audit log unavailable: events go to the log only");
    }
    crate::privacy::audit::record(
        "start",
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config_sha256": crate::privacy::audit::config_hash(&cfg),
        }),
    );
    let (outbox, outcome) = Outbox::open_with(&cfg.storage, &cfg.privacy)?;
    if let OpenOutcome::MovedAside { to, reason } = &outcome {
        tracing::error!(moved_to = %to.display(), %reason, "started with a fresh outbox");
    }
    let outbox = Arc::new(outbox);
    let backlog = outbox.stats().count;
    tracing::info!(dir = %outbox.dir().display(), backlog, "outbox open");
    let retention = tokio::spawn(retention(outbox.clone(), cfg.privacy.key_period));

    let recognizer = Arc::new(Recognizer::from_config(cfg.recognition.as_ref())?);
    let (detector, ocr) = recognizer.model_hashes();
    let hashes = ModelHashes { detector, ocr };
    tracing::info!(detector = %hashes.detector, ocr = %hashes.ocr, "models loaded");

    let new_reads = Arc::new(Notify::new());
    let publish_stop = CancellationToken::new();
    let mut publisher = tokio::spawn(publish::run(
        PublishSettings::new(&cfg, env!("CARGO_PKG_VERSION")),
        outbox.clone(),
        new_reads.clone(),
        metrics.clone(),
        logs,
        publish_stop.clone(),
    ));

    let capture_stop = shutdown.child_token();
    let stage = Stage {
        device,
        hashes,
        location: cfg.location.clone(),
        recognizer,
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        new_reads,
        tracking: cfg.tracking.clone(),
    };
    let mut threads = Vec::new();
    for camera in &cfg.cameras {
        threads.push(start_camera(&stage, camera, &capture_stop)?);
    }
    ready(metrics.clone());

    // Every recognize thread ends once its capture ended and its queue drained.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let accepted: u64 = threads
            .into_iter()
            .flat_map(|(capture, recognize)| {
                let _ = capture.join();
                recognize.join().ok()
            })
            .sum();
        let _ = done_tx.send(accepted);
    });
    let mut done_rx = done_rx;
    // The publisher only ends when told to: if it ends before, the unit would go on reading and
    // deliver nothing, so capture is stopped (open passes are stored for the next start) and the
    // error ends the process (non-zero: systemd restarts it).
    let accepted = tokio::select! {
        n = &mut done_rx => n.unwrap_or(0),
        _ = shutdown.cancelled() => {
            tracing::info!("shutting down: stopping capture, flushing open tracks");
            capture_stop.cancel();
            // The flushed reads must be stored before the publisher is told to stop.
            (&mut done_rx).await.unwrap_or(0)
        }
        ended = &mut publisher => {
            capture_stop.cancel();
            let _ = done_rx.await;
            return Err(publisher_gone(ended));
        }
    };
    if !shutdown.is_cancelled() {
        tracing::info!("all sources ended; delivering what is buffered");
        tokio::select! {
            _ = wait_outbox_empty(&outbox, cfg.mqtt.drain_timeout, &shutdown) => {}
            ended = &mut publisher => return Err(publisher_gone(ended)),
        }
    }
    publish_stop.cancel();
    retention.abort();
    let published = publisher.await;
    let unsent = outbox.stats().count;
    log_counts(&metrics);
    tracing::info!(
        accepted,
        unsent,
        "stopped; unsent reads stay in the outbox for the next start"
    );
    // A publisher that failed while draining makes the exit status say so.
    if !matches!(published, Ok(Ok(_))) {
        return Err(publisher_gone(published));
    }
    Ok(RunSummary {
        reads_accepted: accepted,
        reads_unsent: unsent,
    })
}

/// Destroys what is older than `privacy.max_age` (see `Outbox::expire`): at start, then every
/// key period (at most a minute apart), so a unit with no traffic expires too. A failed pass is
/// logged and tried again next time.
async fn retention(outbox: Arc<Outbox>, key_period: Duration) {
    let mut tick = tokio::time::interval(key_period.min(Duration::from_secs(60)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outbox = outbox.clone();
        let pass = tokio::task::spawn_blocking(move || outbox.expire(SystemTime::now())).await;
        if let Ok(Err(e)) = pass {
            tracing::error!(error = %e, "retention pass failed; trying again next period");
        }
    }
}

/// The error for a publisher task that ended before it was told to stop.
fn publisher_gone(
    ended: Result<Result<publish::PublishReport, publish::PublishError>, tokio::task::JoinError>,
) -> PipelineError {
    let error = match ended {
        Ok(Err(e)) => PipelineError::Publish(e),
        Ok(Ok(_)) => PipelineError::PublisherGone("it returned without an error".into()),
        Err(e) => PipelineError::PublisherGone(e.to_string()),
    };
    tracing::error!(error = %error, "delivery stopped; ending the process so that it restarts");
    error
}

/// One line that says where frames went, so a run with fewer reads than expected says why.
fn log_counts(metrics: &Metrics) {
    use std::sync::atomic::Ordering::Relaxed;
    for (camera, cam) in metrics.cameras() {
        tracing::info!(
            %camera,
            frames = cam.frames.load(Relaxed),
            frames_dropped = cam.frames_dropped.load(Relaxed),
            "camera counts"
        );
    }
    let drops = &metrics.passes_dropped;
    tracing::info!(
        frames_recognized = metrics.inferences.load(Relaxed),
        detections = metrics.detections.load(Relaxed),
        reads = metrics.reads_total.load(Relaxed),
        reads_lost = metrics.reads_lost.load(Relaxed),
        dropped_noise = drops.noise.load(Relaxed),
        dropped_low_confidence = drops.low_confidence.load(Relaxed),
        dropped_implausible = drops.implausible.load(Relaxed),
        "pipeline counts"
    );
}

/// What every recognize thread shares.
#[derive(Clone)]
struct Stage {
    device: String,
    hashes: ModelHashes,
    location: Option<crate::config::LocationConfig>,
    recognizer: Arc<Recognizer>,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    new_reads: Arc<Notify>,
    tracking: crate::config::TrackingConfig,
}

fn start_camera(
    stage: &Stage,
    camera: &CameraConfig,
    stop: &CancellationToken,
) -> Result<(JoinHandle<()>, JoinHandle<u64>), PipelineError> {
    let queue = Arc::new(FrameQueue::new(QUEUE_FRAMES));
    let cam_metrics = stage.metrics.camera(&camera.name);
    let capture = capture::spawn_capture(camera.clone(), queue.clone(), cam_metrics, stop.clone())
        .map_err(|source| PipelineError::Thread {
            name: format!("capture-{}", camera.name),
            source,
        })?;
    let name = format!("recognize-{}", camera.name);
    let stage = stage.clone();
    let recognize = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || recognize_loop(&stage, &queue))
        .map_err(|source| PipelineError::Thread { name, source })?;
    Ok((capture, recognize))
}

/// Frames in, reads out, until the queue closes. Returns the number of reads accepted.
fn recognize_loop(stage: &Stage, queue: &FrameQueue) -> u64 {
    let mut tracker = Tracker::new(stage.tracking.clone(), stage.metrics.clone());
    let mut accepted = 0;
    let mut last_error: Option<Instant> = None;
    let mut tracks_open = false;
    loop {
        stage.metrics.tick();
        let frame = match queue.pop(IDLE_FLUSH) {
            capture::Pop::Frame(frame) => frame,
            capture::Pop::Timeout => {
                if tracks_open {
                    accepted += accept_all(stage, tracker.flush());
                    tracks_open = false;
                }
                continue;
            }
            capture::Pop::Closed => break,
        };
        let started = Instant::now();
        let detections = match stage.recognizer.recognize(&frame.image) {
            Ok((detections, _timings)) => detections,
            Err(e) => {
                // One bad frame must not flood the log: at most one line a minute.
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(camera = %frame.camera, error = %e, "recognition failed on a frame");
                    last_error = Some(Instant::now());
                }
                continue;
            }
        };
        let took = started.elapsed();
        stage.metrics.record_inference(took);
        // Per frame, for watching a slow unit; tests/vm paces its photos on it (captured_ms: when
        // the frame was taken, by the wall clock, in ms since the epoch).
        tracing::debug!(
            camera = %frame.camera,
            seq = frame.seq,
            captured_ms = frame
                .captured_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            detections = detections.len(),
            ms = took.as_millis() as u64,
            "frame recognized"
        );
        stage.metrics.detections.fetch_add(
            detections.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        tracks_open = tracks_open || !detections.is_empty();
        let (width, height) = frame.image.dimensions();
        let info = FrameInfo {
            camera: &frame.camera,
            at: frame.at,
            captured_at: frame.captured_at,
            clock_synced: frame.clock_synced,
            width,
            height,
        };
        let reads = tracker.push(info, detections);
        accepted += accept_all(stage, reads);
    }
    accepted + accept_all(stage, tracker.flush())
}

fn accept_all(stage: &Stage, reads: Vec<PlateRead>) -> u64 {
    reads.into_iter().filter(|r| accept(stage, r)).count() as u64
}

/// Stores one read durably and wakes the publisher. Returns whether the read was accepted.
fn accept(stage: &Stage, read: &PlateRead) -> bool {
    let jpeg = match encode_jpeg(&read.crop) {
        Ok(jpeg) => jpeg,
        Err(e) => {
            tracing::error!(camera = %read.camera, error = %e, "cannot encode the plate crop; storing the read without it");
            Vec::new()
        }
    };
    let message =
        ReadMessage::from_read(read, &stage.device, &stage.hashes, stage.location.as_ref());
    // `append` does its own recovery (a reopen after a failed write, the same record synced
    // again): retrying here would block this thread and could store the read twice.
    match stage.outbox.append(message, jpeg) {
        Ok(stored) => {
            tracing::info!(
                seq = stored.seq,
                id = %stored.message.id,
                camera = %stored.message.camera,
                confidence = stored.message.confidence,
                frames_seen = stored.message.frames_seen,
                "read accepted"
            );
            stage
                .metrics
                .reads_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            stage.new_reads.notify_one();
            true
        }
        Err(e) => {
            tracing::error!(camera = %read.camera, error = %e, "read lost: the outbox cannot store it");
            tracing::debug!(plate = %read.plate, "the read lost");
            stage
                .metrics
                .reads_lost
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            false
        }
    }
}

/// The plate crop as JPEG, the format on the wire.
pub fn encode_jpeg(img: &image::RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(img)?;
    Ok(out)
}

async fn wait_outbox_empty(outbox: &Outbox, limit: Duration, shutdown: &CancellationToken) {
    let deadline = Instant::now() + limit;
    while outbox.stats().count > 0 && Instant::now() < deadline && !shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
