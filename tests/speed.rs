//! Speed features that must not change what is read: the motion gate and the detector workers,
//! on a replayed sequence of cars (cut from samples/) entering an otherwise static scene.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image::{Rgb, RgbImage};
use platecam::capture::{Frame, FrameQueue};
use platecam::config::{RecognitionConfig, TrackingConfig};
use platecam::pipeline::{spawn_recognize, RecognizeSettings};
use platecam::recognize::{PlateRead, Recognizer};
use platecam::telemetry::Metrics;

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");
const W: u32 = 1280;
const H: u32 = 720;
/// The car patch cut around each sample's plate.
const PATCH: (u32, u32) = (480, 300);

/// A fixed, textured "empty road".
fn background() -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| {
        let v = (60 + (y * 80 / H) + ((x / 37 + y / 23) % 3) * 6) as u8;
        Rgb([v, v, v.saturating_add(8)])
    })
}

/// A patch of a sample photo around its plate (the groundtruth box), the plate's text.
fn cars() -> Vec<(RgbImage, String)> {
    let gt = std::fs::read_to_string(Path::new(SAMPLES).join("groundtruth.tsv"))
        .expect("samples/groundtruth.tsv");
    gt.lines()
        .take(3)
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let photo = image::open(Path::new(SAMPLES).join(f[0]))
                .expect("sample photo")
                .to_rgb8();
            let n = |i: usize| f[i].parse::<u32>().expect("groundtruth number");
            let (cx, cy) = (n(1) + n(3) / 2, n(2) + n(4) / 2);
            let x = cx.saturating_sub(PATCH.0 / 2).min(photo.width() - PATCH.0);
            let y = cy.saturating_sub(PATCH.1 / 2).min(photo.height() - PATCH.1);
            let patch = image::imageops::crop_imm(&photo, x, y, PATCH.0, PATCH.1).to_image();
            (patch, f[5].to_string())
        })
        .collect()
}

/// 10 fps: each car drives in from the left over 6 frames, stays parked for 2.5 s (longer than
/// the gate's full check), and is gone; static road before, between and after.
fn sequence() -> Vec<RgbImage> {
    let road = background();
    let mut frames = vec![road.clone(); 8];
    for (car, _) in cars() {
        let stop = i64::from((W - PATCH.0) / 2);
        let y = i64::from((H - PATCH.1) / 2);
        let at = |x: i64| {
            let mut f = road.clone();
            image::imageops::overlay(&mut f, &car, x, y);
            f
        };
        for step in 1..=6 {
            frames.push(at(stop * step / 6 - i64::from(PATCH.0) / 3));
        }
        let parked = at(stop);
        frames.extend(std::iter::repeat_n(parked, 25));
        // Longer than tracking.max_gap (700 ms): the next car is a new pass.
        frames.extend(std::iter::repeat_n(road.clone(), 10));
    }
    frames
}

struct Outcome {
    reads: Vec<PlateRead>,
    gated: u64,
    recognized: u64,
}

fn run(frames: &[RgbImage], gate: bool, threads: usize) -> Outcome {
    let recognizer = Arc::new(Recognizer::from_config(None).expect("our own models load"));
    let metrics = Arc::new(Metrics::default());
    let settings = RecognizeSettings {
        recognizer,
        metrics: metrics.clone(),
        tracking: TrackingConfig::default(),
        recognition: RecognitionConfig {
            gate,
            threads,
            ..Default::default()
        },
        samples: None,
        board: None,
    };
    let queue = Arc::new(FrameQueue::new(2));
    let reads = Arc::new(Mutex::new(Vec::new()));
    let sink = reads.clone();
    let threads = spawn_recognize(&settings, "cam0", queue.clone(), move |r| {
        let n = r.len() as u64;
        sink.lock().expect("reads").extend(r);
        n
    })
    .expect("recognize threads");
    let t0 = Instant::now();
    for (seq, image) in frames.iter().enumerate() {
        let frame = Frame {
            camera: "cam0".into(),
            seq: seq as u64,
            at: t0 + Duration::from_millis(100 * seq as u64),
            captured_at: SystemTime::now(),
            clock_synced: true,
            image: image.clone(),
        };
        assert!(
            queue.push_blocking(frame, Duration::from_secs(60)).is_ok(),
            "the queue takes frame {seq}"
        );
    }
    queue.close();
    threads.join();
    let reads = std::mem::take(&mut *reads.lock().expect("reads"));
    Outcome {
        reads,
        gated: metrics.frames_gated.load(Relaxed),
        recognized: metrics.inferences.load(Relaxed),
    }
}

fn summary(reads: &[PlateRead]) -> Vec<(String, u32, [u32; 4], String)> {
    reads
        .iter()
        .map(|r| {
            (
                r.plate.clone(),
                r.frames_seen,
                r.bbox,
                format!("{:.4}", r.confidence),
            )
        })
        .collect()
}

#[test]
fn gated_and_ungated_give_the_same_reads_on_cars_entering_a_static_scene() {
    let frames = sequence();
    let ungated = run(&frames, false, 1);
    let gated = run(&frames, true, 1);
    let plates: Vec<String> = cars().into_iter().map(|(_, p)| p).collect();
    let read: Vec<String> = ungated.reads.iter().map(|r| r.plate.clone()).collect();
    assert_eq!(read, plates, "the ungated run reads each car once");
    assert_eq!(summary(&gated.reads), summary(&ungated.reads));
    assert_eq!(ungated.gated, 0);
    assert_eq!(ungated.recognized, frames.len() as u64);
    // Most frames are static (parked cars, empty road): the gate keeps them from the detector.
    assert!(
        gated.recognized * 3 < frames.len() as u64,
        "gated: detector ran on {} of {} frames",
        gated.recognized,
        frames.len()
    );
    assert_eq!(gated.gated + gated.recognized, frames.len() as u64);
}

#[test]
fn two_workers_give_the_same_reads_in_the_same_order_as_one() {
    let frames = sequence();
    let one = run(&frames, false, 1);
    let two = run(&frames, false, 2);
    assert_eq!(summary(&two.reads), summary(&one.reads));
}

#[test]
fn a_static_scene_runs_the_detector_only_on_the_full_checks() {
    // 5 s of empty road at 10 fps: the first frame, then a full check every 2 s.
    let frames = vec![background(); 50];
    let out = run(&frames, true, 1);
    assert_eq!(out.recognized, 3, "detector runs");
    assert_eq!(out.gated, 47);
    assert!(out.reads.is_empty());
}

/// Writes a bench config for a looping replay of `photos` (each held `hold_frames` frames at
/// 120 fps, broker port closed) and returns what `platecam bench --json` printed. The process's
/// own malloc settings are under test, not the caller's: the environment's are removed.
fn bench_json(
    config: &Path,
    photos: &Path,
    hold_frames: u32,
    state: &Path,
    seconds: u32,
) -> serde_json::Value {
    std::fs::write(
        config,
        format!(
            "[device]\nid = \"bench\"\n\n[[camera]]\nname = \"lane1\"\nsource = \"replay://{}\"\n\
             loop = true\nfps = 120\nhold_frames = {hold_frames}\ngap_frames = 0\n\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\n[storage]\ndir = \"{}\"\n",
            photos.display(),
            state.display()
        ),
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_platecam"))
        .args([
            "bench",
            "--seconds",
            &seconds.to_string(),
            "--json",
            "--config",
        ])
        .arg(config)
        .env_remove("MALLOC_MMAP_THRESHOLD_")
        .env_remove("MALLOC_ARENA_MAX")
        .output()
        .expect("run platecam bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[test]
fn bench_prints_sane_json_for_a_replay_without_broker_or_outbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let config = dir.path().join("bench.toml");
    // The broker's port is closed and the storage folder is never created: bench needs neither.
    let r = bench_json(&config, Path::new(SAMPLES), 2, &state, 3);
    let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
    assert!((2.5..6.0).contains(&num("seconds")), "{r}");
    assert!(num("frames") >= 2.0 && num("fps") > 0.0, "{r}");
    assert_eq!(
        num("frames"),
        num("detector_runs") + num("frames_gated"),
        "{r}"
    );
    // Every photo is held for 2 frames: the second of each pair is the same scene.
    assert!(num("frames_gated") >= 1.0, "{r}");
    assert!(num("reads") >= 1.0, "{r}");
    assert!((1.0..2000.0).contains(&num("rss_mb")), "{r}");
    assert!(num("peak_rss_mb") >= num("rss_mb"), "{r}");
    for stage in ["gate", "detect", "ocr", "track"] {
        let s = &r["stages"][stage];
        let (p50, p95) = (s["p50_ms"].as_f64(), s["p95_ms"].as_f64());
        assert!(
            matches!((p50, p95), (Some(a), Some(b)) if a > 0.0 && a <= b && b < 60_000.0),
            "{stage}: {s}"
        );
    }
    let cpu = r["cpu_percent"].as_object().expect("cpu_percent");
    assert!(cpu.keys().any(|t| t.starts_with("detect-lane1")), "{r}");
    assert!(num("cpu_percent_total") > 0.0, "{r}");
    assert!(!state.exists(), "bench wrote to the storage folder");
}

/// Issue 10's memory goal: resident memory under 100 MB on a busy 1080p replay (every frame a
/// new photo) with the default recognition settings. glibc kept freed tract buffers in its heap
/// (112-140 MB here) until `main` fixed its mmap threshold and arenas.
#[test]
fn a_busy_1080p_replay_stays_under_100_mb_resident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).expect("photo folder");
    for entry in std::fs::read_dir(SAMPLES).expect("samples/") {
        let path = entry.expect("sample").path();
        if path.extension().is_some_and(|e| e == "jpg") {
            let photo = image::open(&path).expect("sample photo").to_rgb8();
            let big =
                image::imageops::resize(&photo, 1920, 1080, image::imageops::FilterType::Triangle);
            big.save(photos.join(path.file_name().expect("name")))
                .expect("write 1080p photo");
        }
    }
    let config = dir.path().join("bench.toml");
    let r = bench_json(&config, &photos, 1, &dir.path().join("state"), 8);
    let runs = r["detector_runs"].as_f64().expect("detector_runs");
    assert!(runs >= 4.0, "too few frames to load the heap: {r}");
    let peak = r["peak_rss_mb"].as_f64().expect("peak_rss_mb");
    assert!(peak < 100.0, "peak resident memory {peak:.0} MB: {r}");
}
