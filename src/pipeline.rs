//! Wiring of the stages and the shutdown order: the only module that knows every stage.
//!
//! Per camera: a `capture-<name>` thread fills a small `FrameQueue`; `recognize-<name>` runs the
//! motion gate in frame order, `detect-<name>-<i>` workers run detector + OCR on the frames that
//! changed, and `track-<name>` puts the results back in frame order, runs the tracker and appends
//! each finished read to the outbox (synced before it counts as accepted), then wakes the
//! publisher. The publisher is a tokio task, so the
//! MQTT event loop never waits on inference or disk.
//!
//! Shutdown drains from the source: cancel capture -> each queue closes -> the recognize thread
//! drains it, flushes its tracker (open tracks become reads) and ends -> the publisher gets until
//! `mqtt.drain_timeout` for outstanding acknowledgements -> exit. When every source ends by itself
//! (a replay), the publisher first gets the same time to empty the outbox.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::capture::{self, Frame, FrameQueue};
use crate::config::{CameraConfig, Config};
use crate::outbox::{OpenOutcome, Outbox, OutboxError};
use crate::privacy::policy::{self, PolicyError, ReadPolicy};
use crate::publish::{self, PrivacyLinks, PublishSettings};
use crate::recognize::tracker::{FrameInfo, Tracker};
use crate::recognize::{Detection, MotionGate, PlateRead, RecognizeError, Recognized, Recognizer};
use crate::telemetry::{LogStream, Metrics};
use crate::web;
use crate::wire::{ModelHashes, ReadMessage};

/// Frames waiting for inference, per camera. Small on purpose: a live camera's old frames are
/// worth less than new ones.
const QUEUE_FRAMES: usize = 2;
/// A pass also ends when its camera delivers nothing for this long (camera stalled or replay gap).
const IDLE_FLUSH: Duration = Duration::from_secs(1);
/// Hotlist hits waiting for the publisher (while the broker is away).
const ALERT_QUEUE: usize = 1024;

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
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error("privacy policy: {0}")]
    Privacy(#[from] PolicyError),
}

impl PipelineError {
    /// Process exit code: unusable models are a configuration problem (78, no restart loop);
    /// anything else may heal on a restart.
    pub fn exit_code(&self) -> i32 {
        match self {
            PipelineError::Models(_) | PipelineError::Privacy(_) => crate::EXIT_CONFIG,
            // A token file that is missing, readable by others or of the wrong length.
            PipelineError::Web(crate::web::WebError::Token(_)) => crate::EXIT_CONFIG,
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
    // Keys and hotlist first: a unit that cannot enforce its policy must not read at all.
    let enforced = policy::enforce(&cfg)?;
    let hotlist_watch = CancellationToken::new();
    let _stop_hotlist_watch = hotlist_watch.clone().drop_guard();
    if let Some((list, path)) = enforced.hotlist.clone() {
        tokio::spawn(crate::privacy::hotlist::watch(list, path, hotlist_watch));
    }
    let (alerts_tx, alerts_rx) = tokio::sync::mpsc::channel(ALERT_QUEUE);

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
    let mut publisher = tokio::spawn(publish::run_with(
        PublishSettings::new(&cfg, env!("CARGO_PKG_VERSION")),
        outbox.clone(),
        new_reads.clone(),
        metrics.clone(),
        logs,
        publish_stop.clone(),
        PrivacyLinks {
            signer: Some(enforced.signer.clone()),
            alerts: Some(alerts_rx),
            counts: (cfg.privacy.mode == crate::config::PrivacyMode::HotlistOnly)
                .then(|| enforced.reads.counts.clone()),
        },
    ));

    // The installer's page: only when `[web] listen` is set. It stops with the process.
    let board = cfg
        .web
        .listen
        .map(|_| Arc::new(web::Board::new(cfg.cameras.iter().map(|c| c.name.as_str()))));
    let web_stop = CancellationToken::new();
    let _web_stop_guard = web_stop.clone().drop_guard();
    if let Some(board) = &board {
        web::start(
            &cfg,
            board.clone(),
            metrics.clone(),
            outbox.clone(),
            web_stop,
        )
        .await?;
    }

    let capture_stop = shutdown.child_token();
    let stage = Stage {
        device,
        hashes,
        location: cfg.location.clone(),
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        new_reads,
        board: board.clone(),
        policy: enforced.reads.clone(),
        alerts: alerts_tx,
    };
    let settings = RecognizeSettings {
        recognizer,
        metrics: metrics.clone(),
        tracking: cfg.tracking.clone(),
        recognition: cfg.recognition.clone().unwrap_or_default(),
        samples: None,
        board: board.clone(),
    };
    let mut threads = Vec::new();
    for camera in &cfg.cameras {
        threads.push(start_camera(&stage, &settings, camera, &capture_stop)?);
    }
    ready(metrics.clone());

    // Every recognize thread ends once its capture ended and its queue drained.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let accepted: u64 = threads
            .into_iter()
            .map(|t| {
                let _ = t.capture.join();
                t.recognize.join()
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
        boxes_not_plates = metrics.boxes_not_plates.load(Relaxed),
        reads = metrics.reads_total.load(Relaxed),
        reads_lost = metrics.reads_lost.load(Relaxed),
        dropped_noise = drops.noise.load(Relaxed),
        dropped_low_confidence = drops.low_confidence.load(Relaxed),
        dropped_implausible = drops.implausible.load(Relaxed),
        "pipeline counts"
    );
}

/// What every camera's tracking stage shares.
#[derive(Clone)]
struct Stage {
    device: String,
    hashes: ModelHashes,
    location: Option<crate::config::LocationConfig>,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    new_reads: Arc<Notify>,
    /// The web page's latest frames and reads, when `[web]` is on.
    board: Option<Arc<web::Board>>,
    policy: Arc<ReadPolicy>,
    /// Stored hotlist hits, for the publisher's `alerts`.
    alerts: tokio::sync::mpsc::Sender<ReadMessage>,
}

/// The threads of one camera: capture, then the recognize stages (the last one returns the
/// number of reads accepted).
struct CameraThreads {
    capture: JoinHandle<()>,
    recognize: RecognizeThreads,
}

fn start_camera(
    stage: &Stage,
    recognize: &RecognizeSettings,
    camera: &CameraConfig,
    stop: &CancellationToken,
) -> Result<CameraThreads, PipelineError> {
    let queue = Arc::new(FrameQueue::new(QUEUE_FRAMES));
    let cam_metrics = stage.metrics.camera(&camera.name);
    let capture = capture::spawn_capture(camera.clone(), queue.clone(), cam_metrics, stop.clone())
        .map_err(|source| PipelineError::Thread {
            name: format!("capture-{}", camera.name),
            source,
        })?;
    let stage = stage.clone();
    let recognize = spawn_recognize(recognize, &camera.name, queue, move |reads| {
        accept_all(&stage, reads)
    })?;
    Ok(CameraThreads { capture, recognize })
}

/// Per-stage times (ms) of every frame, kept only when someone asks (`platecam bench`).
#[derive(Debug, Default)]
pub struct StageSamples {
    pub gate: Mutex<Vec<f64>>,
    pub detect: Mutex<Vec<f64>>,
    pub ocr: Mutex<Vec<f64>>,
    /// Tracker and the reads' sink (JPEG + outbox append in the daemon).
    pub track: Mutex<Vec<f64>>,
}

impl StageSamples {
    fn add(list: &Mutex<Vec<f64>>, ms: f64) {
        list.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
    }
}

/// Everything the recognize stages of a camera need, whatever receives their reads.
#[derive(Clone)]
pub struct RecognizeSettings {
    pub recognizer: Arc<Recognizer>,
    pub metrics: Arc<Metrics>,
    pub tracking: crate::config::TrackingConfig,
    /// `[recognition]` as configured (or its defaults): gate and threads.
    pub recognition: crate::config::RecognitionConfig,
    pub samples: Option<Arc<StageSamples>>,
    /// The web page's latest frames, when `[web]` is on.
    pub board: Option<Arc<web::Board>>,
}

/// A frame on its way to the tracker.
enum Step {
    /// The detector ran (in a worker).
    Ran(Frame, Result<Recognized, RecognizeError>),
    /// The gate found the scene unchanged: the detector's last result stands.
    Gated(Frame),
    /// No frame came for `IDLE_FLUSH`: open passes end.
    Idle,
}

/// The recognize threads of one camera. Joining `track` gives what the sink returned, summed.
pub struct RecognizeThreads {
    helpers: Vec<JoinHandle<()>>,
    track: JoinHandle<u64>,
}

impl RecognizeThreads {
    /// Waits for every thread; the sum of the sink's returns (0 if the tracking thread died).
    pub fn join(self) -> u64 {
        let n = self.track.join().unwrap_or(0);
        for h in self.helpers {
            let _ = h.join();
        }
        n
    }
}

/// Starts the recognize stages of a camera, fed by `queue` until it closes:
/// - `recognize-<cam>`: the motion gate, in frame order; numbers every frame;
/// - `detect-<cam>-<i>` (`recognition.threads` of them): detector + OCR, frames in parallel;
/// - `track-<cam>`: puts the results back in frame order, runs the tracker and hands each
///   batch of finished reads to `sink` (which returns how many it accepted).
///
/// The tracker sees exactly the sequence a single thread would give it: reads and "one read per
/// pass" do not depend on the number of workers.
pub fn spawn_recognize<S>(
    settings: &RecognizeSettings,
    camera: &str,
    queue: Arc<FrameQueue>,
    sink: S,
) -> Result<RecognizeThreads, PipelineError>
where
    S: FnMut(Vec<PlateRead>) -> u64 + Send + 'static,
{
    let workers = settings.recognition.worker_threads().max(1);
    // Bounded, so a stuck stage stops the ones before it (and the watchdog sees it). Jobs are
    // handed over only when a worker is free: a live camera's frames wait in the `FrameQueue`,
    // which drops the oldest, not here.
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<(u64, Frame)>(0);
    let (steps_tx, steps_rx) = mpsc::sync_channel::<(u64, Step)>(2 * workers + QUEUE_FRAMES);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(f)
            .map_err(|source| PipelineError::Thread { name, source })
    };
    let mut helpers = Vec::new();
    for i in 0..workers {
        let (s, rx, tx) = (settings.clone(), jobs_rx.clone(), steps_tx.clone());
        helpers.push(spawn(
            format!("detect-{camera}-{i}"),
            Box::new(move || detect_loop(&s, &rx, &tx)),
        )?);
    }
    let s = settings.clone();
    helpers.push(spawn(
        format!("recognize-{camera}"),
        Box::new(move || gate_loop(&s, &queue, &jobs_tx, &steps_tx)),
    )?);
    let name = format!("track-{camera}");
    let s = settings.clone();
    let track = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || track_loop(&s, &steps_rx, sink))
        .map_err(|source| PipelineError::Thread { name, source })?;
    Ok(RecognizeThreads { helpers, track })
}

/// Frames from the queue, numbered in order: to a worker, or past the detector when the gate
/// says nothing changed. Ends when the queue closes or a later stage is gone.
fn gate_loop(
    s: &RecognizeSettings,
    queue: &FrameQueue,
    jobs: &mpsc::SyncSender<(u64, Frame)>,
    steps: &mpsc::SyncSender<(u64, Step)>,
) {
    let r = &s.recognition;
    let mut gate = MotionGate::new(r.gate, r.gate_full_every);
    for index in 0.. {
        s.metrics.tick();
        let sent = match queue.pop(IDLE_FLUSH) {
            capture::Pop::Frame(frame) => {
                let started = Instant::now();
                let run = gate.must_run(&frame.image, frame.at);
                if let Some(samples) = &s.samples {
                    StageSamples::add(&samples.gate, ms(started.elapsed()));
                }
                if run {
                    jobs.send((index, frame)).is_ok()
                } else {
                    s.metrics.frames_gated.fetch_add(1, Relaxed);
                    steps.send((index, Step::Gated(frame))).is_ok()
                }
            }
            capture::Pop::Timeout => steps.send((index, Step::Idle)).is_ok(),
            capture::Pop::Closed => break,
        };
        if !sent {
            break;
        }
    }
}

/// Detector + OCR on the frames it is handed, until the gate stage ends.
fn detect_loop(
    s: &RecognizeSettings,
    jobs: &Mutex<mpsc::Receiver<(u64, Frame)>>,
    steps: &mpsc::SyncSender<(u64, Step)>,
) {
    loop {
        // The lock is held only while waiting for the next job, not while working on it.
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((index, frame)) = job else { break };
        let started = Instant::now();
        let result = s.recognizer.recognize(&frame.image);
        if let Ok(r) = &result {
            let t = &r.timings;
            s.metrics.record_inference(started.elapsed());
            s.metrics.timings.record_frame(t);
            if let Some(samples) = &s.samples {
                StageSamples::add(&samples.detect, t.detect_ms);
                // A frame without plates has no OCR time to speak of.
                if !r.detections.is_empty() {
                    StageSamples::add(&samples.ocr, t.ocr_ms);
                }
            }
        }
        if steps.send((index, Step::Ran(frame, result))).is_err() {
            break;
        }
    }
}

/// Results back in frame order, through the tracker, reads to `sink`. Returns the sum of what
/// `sink` returned.
fn track_loop<S>(s: &RecognizeSettings, steps: &mpsc::Receiver<(u64, Step)>, mut sink: S) -> u64
where
    S: FnMut(Vec<PlateRead>) -> u64,
{
    let mut tracker = Tracker::new(s.tracking.clone(), s.metrics.clone());
    let mut accepted = 0;
    let mut last_error: Option<Instant> = None;
    let mut tracks_open = false;
    // What the detector found on the last frame it ran on: what a gated frame shows too.
    let mut last: Vec<Detection> = Vec::new();
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    for (index, step) in steps {
        waiting.insert(index, step);
        while let Some(step) = waiting.remove(&next) {
            next += 1;
            let started = Instant::now();
            let (frame, detections) = match step {
                Step::Idle => {
                    if tracks_open {
                        accepted += sink(tracker.flush());
                        tracks_open = false;
                    }
                    continue;
                }
                Step::Gated(frame) => {
                    // Same line as a detector run (tests/vm paces on it), marked gated, ms 0.
                    tracing::debug!(
                        camera = %frame.camera,
                        seq = frame.seq,
                        captured_ms = captured_ms(&frame),
                        detections = last.len(),
                        ms = 0,
                        gated = true,
                        "frame recognized"
                    );
                    (frame, last.clone())
                }
                Step::Ran(frame, Err(e)) => {
                    // One bad frame must not flood the log: at most one line a minute.
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(camera = %frame.camera, error = %e, "recognition failed on a frame");
                        last_error = Some(Instant::now());
                    }
                    continue;
                }
                Step::Ran(
                    frame,
                    Ok(Recognized {
                        detections,
                        not_plates,
                        timings,
                    }),
                ) => {
                    // Per frame, for watching a slow unit; tests/vm paces its photos on it
                    // (captured_ms: when the frame was taken, by the wall clock, in ms since the
                    // epoch).
                    tracing::debug!(
                        camera = %frame.camera,
                        seq = frame.seq,
                        captured_ms = captured_ms(&frame),
                        detections = detections.len(),
                        not_plates,
                        ms = timings.total_ms as u64,
                        "frame recognized"
                    );
                    s.metrics
                        .detections
                        .fetch_add(detections.len() as u64, Relaxed);
                    s.metrics
                        .boxes_not_plates
                        .fetch_add(u64::from(not_plates), Relaxed);
                    last.clone_from(&detections);
                    (frame, detections)
                }
            };
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
            let boxes = s.board.as_ref().map(|_| web::BoxView::of(&detections));
            let reads = tracker.push(info, detections);
            accepted += sink(reads);
            // The frame is done with: handed to the page by move, replacing the last one.
            if let (Some(board), Some(boxes)) = (&s.board, boxes) {
                board.offer(&frame.camera, frame.seq, frame.image, boxes);
            }
            if let Some(samples) = &s.samples {
                StageSamples::add(&samples.track, ms(started.elapsed()));
            }
        }
    }
    accepted + sink(tracker.flush())
}

/// When the frame was taken, by the wall clock, in ms since the epoch.
fn captured_ms(frame: &Frame) -> u64 {
    frame
        .captured_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn accept_all(stage: &Stage, reads: Vec<PlateRead>) -> u64 {
    reads.into_iter().filter(|r| accept(stage, r)).count() as u64
}

/// Stores one read durably and wakes the publisher. Returns whether the read was accepted.
fn accept(stage: &Stage, read: &PlateRead) -> bool {
    // The privacy policy decides before anything of the read is stored or logged.
    let Some(keep) =
        stage
            .policy
            .decide(&read.plate, &read.candidates, std::time::SystemTime::now())
    else {
        return false;
    };
    let jpeg = if keep.crop() {
        match encode_jpeg(&read.crop) {
            Ok(jpeg) => jpeg,
            Err(e) => {
                tracing::error!(camera = %read.camera, error = %e, "cannot encode the plate crop; storing the read without it");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let mut message =
        ReadMessage::from_read(read, &stage.device, &stage.hashes, stage.location.as_ref());
    let page_crop = stage.board.as_ref().map(|_| jpeg.clone());
    keep.shape(&mut message);
    // What the policy let through (empty for a pseudonymous read), for the debug line below.
    let kept_plate = message.plate.clone();
    // `append` does its own recovery (a reopen after a failed write, the same record synced
    // again): retrying here would block this thread and could store the read twice.
    let started = Instant::now();
    let appended = stage.outbox.append(message, jpeg);
    stage
        .metrics
        .timings
        .append
        .observe(started.elapsed().as_secs_f64());
    match appended {
        Ok(stored) => {
            if let Some(board) = &stage.board {
                board.read(web::RecentRead::of(stored.seq, &stored.message, page_crop));
            }
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
            if let Some(hit) = &stored.message.hit {
                tracing::info!(seq = stored.seq, id = %stored.message.id, reason = %hit.reason, "hotlist hit");
                if stage.alerts.try_send(stored.message.clone()).is_err() {
                    tracing::warn!(
                        seq = stored.seq,
                        "alert queue full; the hit goes out on reads only"
                    );
                }
            }
            stage.new_reads.notify_one();
            true
        }
        Err(e) => {
            tracing::error!(camera = %read.camera, error = %e, "read lost: the outbox cannot store it");
            tracing::debug!(plate = %kept_plate, "the read lost");
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
