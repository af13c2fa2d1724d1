//! Per-frame cost at 720p and 1080p:
//! - `recognize/<models>/<size>`: detector + OCR of every plate, with our own models and with the
//!   community models of ../shared/models-reference (said loudly when they are missing);
//! - `frame/<gated|ungated>/<size>`: what a frame of a static scene costs with the motion gate
//!   (the gate's look at it) and without (detector + OCR).

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use image::imageops::FilterType;
use image::RgbImage;
use platecam::config::{ModelConfig, ModelFormat, RecognitionConfig};
use platecam::recognize::{MotionGate, Recognizer};

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models-reference");
const PHOTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/plate2_eu.jpg");

fn model(format: ModelFormat, path: &Path) -> Option<ModelConfig> {
    Some(ModelConfig {
        format,
        path: path.to_path_buf(),
        config: None,
        score_threshold: None,
    })
}

fn frames() -> [(String, RgbImage); 2] {
    let photo = image::open(PHOTO).expect("benchmark photo").to_rgb8();
    [(1280u32, 720u32), (1920, 1080)].map(|(w, h)| {
        (
            format!("{h}p"),
            image::imageops::resize(&photo, w, h, FilterType::Triangle),
        )
    })
}

fn community() -> Option<RecognitionConfig> {
    let r = Path::new(REFERENCE);
    let detector = r.join("yolo-v9-t-416-license-plates-end2end1.onnx");
    if !detector.is_file() {
        eprintln!(
            "\n*** community models NOT benchmarked: {} is missing (they live in ../shared, \
             outside the repository) ***\n",
            detector.display()
        );
        return None;
    }
    Some(RecognitionConfig {
        detector: model(ModelFormat::YoloEnd2end, &detector),
        ocr: Some(ModelConfig {
            config: Some(r.join("cct_xs_v1_global_plate_config.yaml")),
            ..model(ModelFormat::FastPlateOcr, &r.join("cct_xs_v1_global.onnx"))?
        }),
        ..Default::default()
    })
}

fn recognize(c: &mut Criterion) {
    let frames = frames();
    let mut setups = vec![("own", None)];
    if let Some(cfg) = community() {
        setups.push(("community", Some(cfg)));
    }
    let mut group = c.benchmark_group("recognize");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for (name, cfg) in &setups {
        let rec = Recognizer::from_config(cfg.as_ref()).expect("models load");
        for (size, frame) in &frames {
            group.bench_function(format!("{name}/{size}"), |b| {
                b.iter(|| rec.recognize(frame).expect("recognize"))
            });
        }
    }
    group.finish();
}

fn gate(c: &mut Criterion) {
    let rec = Recognizer::from_config(None).expect("our own models load");
    let mut group = c.benchmark_group("frame");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (size, frame) in &frames() {
        // A static scene: after the first frame, the gate keeps every frame from the detector.
        let mut gate = MotionGate::new(true, Duration::from_secs(3600));
        let t0 = Instant::now();
        assert!(gate.must_run(frame, t0));
        group.bench_function(format!("gated/{size}"), |b| {
            b.iter(|| assert!(!gate.must_run(frame, t0)))
        });
        group.bench_function(format!("ungated/{size}"), |b| {
            b.iter(|| rec.recognize(frame).expect("recognize"))
        });
    }
    group.finish();
}

criterion_group!(benches, recognize, gate);
criterion_main!(benches);
