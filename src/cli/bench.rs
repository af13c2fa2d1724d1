//! `platecam bench`: the configured cameras through capture, gate, detector + OCR and tracker,
//! as `run` does, with nothing published and nothing stored (no broker, no outbox), then the
//! figures: frames per second, per-stage p50/p95, CPU per thread, frames gated, memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::capture::{self, FrameQueue};
use crate::pipeline::{spawn_recognize, RecognizeSettings, StageSamples};
use crate::recognize::Recognizer;
use crate::telemetry::Metrics;

/// The kernel reports thread CPU times in USER_HZ ticks, 100 a second on every Linux ABI.
const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, Serialize)]
pub struct Report {
    /// Wall time the pipeline ran (less than asked when every replay ended before).
    pub seconds: f64,
    /// Time to load the models (what `run` spends before READY, the outbox aside).
    pub load_ms: f64,
    /// Frames that went through the recognize stages (detector runs + frames gated).
    pub frames: u64,
    pub fps: f64,
    pub detector_runs: u64,
    pub frames_gated: u64,
    pub frames_dropped: u64,
    pub reads: u64,
    pub workers: usize,
    /// Per stage, in ms: gate, detect, ocr (frames with a plate), track.
    pub stages: BTreeMap<&'static str, Percentiles>,
    /// CPU per thread over the run, in % of one core, by thread name.
    pub cpu_percent: BTreeMap<String, f64>,
    pub cpu_percent_total: f64,
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

pub fn run(config: &Path, seconds: u64, json: bool) -> anyhow::Result<u8> {
    let cfg = match super::load_config(config, true) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let report = bench(&cfg, Duration::from_secs(seconds))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(0)
}

/// Runs the pipeline of `cfg` for at most `limit`, or until every source has ended.
pub fn bench(cfg: &crate::config::Config, limit: Duration) -> anyhow::Result<Report> {
    let load = Instant::now();
    let recognizer = Recognizer::from_config(cfg.recognition.as_ref()).context("models")?;
    let load_ms = load.elapsed().as_secs_f64() * 1e3;
    let metrics = Arc::new(Metrics::default());
    let samples = Arc::new(StageSamples::default());
    let settings = RecognizeSettings {
        recognizer: Arc::new(recognizer),
        metrics: metrics.clone(),
        tracking: cfg.tracking.clone(),
        recognition: cfg.recognition.clone().unwrap_or_default(),
        samples: Some(samples.clone()),
        board: None,
    };
    let stop = CancellationToken::new();
    let before = thread_ticks();
    let started = Instant::now();
    let mut captures = Vec::new();
    let mut stages = Vec::new();
    for camera in &cfg.cameras {
        let queue = Arc::new(FrameQueue::new(2));
        let cam = metrics.camera(&camera.name);
        captures.push(
            capture::spawn_capture(camera.clone(), queue.clone(), cam, stop.clone())
                .context("capture thread")?,
        );
        stages.push(spawn_recognize(&settings, &camera.name, queue, |reads| {
            reads.len() as u64
        })?);
    }
    // Whichever comes first: the time asked, or every source ended and drained.
    let (done_tx, done_rx) = mpsc::channel();
    let joiner = std::thread::spawn(move || {
        let reads: u64 = stages.into_iter().map(|s| s.join()).sum();
        let _ = done_tx.send(());
        reads
    });
    let ended_early = done_rx.recv_timeout(limit).is_ok();
    // CPU is read while the threads still live (a thread's times go with it).
    let after = thread_ticks();
    let seconds = started.elapsed().as_secs_f64();
    let detector_runs = metrics.inferences.load(Relaxed);
    let frames_gated = metrics.frames_gated.load(Relaxed);
    let (rss_mb, peak_rss_mb) = memory_mb();
    if !ended_early {
        stop.cancel();
    }
    for c in captures {
        let _ = c.join();
    }
    let reads = joiner
        .join()
        .map_err(|_| anyhow::anyhow!("a recognize thread panicked"))?;

    let mut cpu_percent = BTreeMap::new();
    for (tid, (name, ticks)) in &after {
        let was = before.get(tid).map_or(0, |(_, t)| *t);
        let pct = (ticks - was) as f64 / TICKS_PER_S / seconds * 100.0;
        *cpu_percent.entry(name.clone()).or_insert(0.0) += pct;
    }
    cpu_percent.retain(|_, p: &mut f64| *p > 0.0);
    let cpu_percent_total = cpu_percent.values().sum();
    let stage = |list: &std::sync::Mutex<Vec<f64>>| {
        percentiles(&list.lock().unwrap_or_else(|e| e.into_inner()))
    };
    let stages = BTreeMap::from([
        ("gate", stage(&samples.gate)),
        ("detect", stage(&samples.detect)),
        ("ocr", stage(&samples.ocr)),
        ("track", stage(&samples.track)),
    ]);
    let frames = detector_runs + frames_gated;
    Ok(Report {
        seconds,
        load_ms,
        frames,
        fps: frames as f64 / seconds,
        detector_runs,
        frames_gated,
        frames_dropped: metrics
            .cameras()
            .iter()
            .map(|(_, c)| c.frames_dropped.load(Relaxed))
            .sum(),
        reads,
        workers: settings.recognition.worker_threads(),
        stages,
        cpu_percent,
        cpu_percent_total,
        rss_mb,
        peak_rss_mb,
    })
}

fn percentiles(samples: &[f64]) -> Percentiles {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * q).round() as usize]
        }
    };
    Percentiles {
        n: v.len(),
        p50_ms: at(0.5),
        p95_ms: at(0.95),
    }
}

/// utime + stime of every thread of this process, by thread id: (name, ticks).
fn thread_ticks() -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: comm may hold spaces and parentheses, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After comm: state is field 3 of the man page, utime 14 and stime 15.
        let tick = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(u), Some(s)) = (tick(14), tick(15)) {
            out.insert(
                task.file_name().to_string_lossy().into_owned(),
                (name, u + s),
            );
        }
    }
    out
}

/// VmRSS and VmHWM of this process, in MB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn print_report(r: &Report) {
    println!(
        "{:.1} s, {} frames, {:.1} fps ({} detector runs, {} gated, {} dropped), {} reads, {} workers",
        r.seconds, r.frames, r.fps, r.detector_runs, r.frames_gated, r.frames_dropped, r.reads, r.workers
    );
    println!("models loaded in {:.0} ms", r.load_ms);
    for (stage, p) in &r.stages {
        println!(
            "  {stage:<7} p50 {:>8.2} ms  p95 {:>8.2} ms  ({} samples)",
            p.p50_ms, p.p95_ms, p.n
        );
    }
    println!("CPU {:.1}% of one core:", r.cpu_percent_total);
    for (thread, pct) in &r.cpu_percent {
        println!("  {thread:<16} {pct:>6.1}%");
    }
    println!(
        "memory: {:.1} MB resident, {:.1} MB peak",
        r.rss_mb, r.peak_rss_mb
    );
}
