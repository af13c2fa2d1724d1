//! Per-frame recognition (detector + OCR of every plate) at 720p and 1080p, with the reference
//! models and, when present, our own.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use image::imageops::FilterType;
use platecam::config::{ModelConfig, ModelFormat, RecognitionConfig};
use platecam::recognize::Recognizer;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models-reference");
const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/openalpr-benchmarks/endtoend/eu/eu10.jpg"
);

fn model(format: ModelFormat, path: &Path) -> Option<ModelConfig> {
    Some(ModelConfig {
        format,
        path: path.to_path_buf(),
        config: None,
        score_threshold: None,
    })
}

fn bench(c: &mut Criterion) {
    let photo = image::open(PHOTO).expect("benchmark photo").to_rgb8();
    let frames = [(1280u32, 720u32), (1920, 1080)].map(|(w, h)| {
        (
            format!("{w}x{h}"),
            image::imageops::resize(&photo, w, h, FilterType::Triangle),
        )
    });

    let r = Path::new(REFERENCE);
    let mut setups = vec![(
        "reference",
        RecognitionConfig {
            detector: model(
                ModelFormat::YoloEnd2end,
                &r.join("yolo-v9-t-416-license-plates-end2end1.onnx"),
            ),
            ocr: model(ModelFormat::FastPlateOcr, &r.join("cct_xs_v1_global.onnx")),
            plate_formats: Vec::new(),
        },
    )];
    // Our own models from the default search ($PLATECAM_MODELS first, then the checkout's models/).
    match platecam::recognize::default_manifest_path() {
        Ok(manifest) => {
            let own = model(ModelFormat::Platecam, &manifest);
            setups.push((
                "platecam",
                RecognitionConfig {
                    detector: own.clone(),
                    ocr: own,
                    plate_formats: Vec::new(),
                },
            ));
        }
        Err(e) => println!("note: {e}; benchmarking the reference models only"),
    }

    let mut group = c.benchmark_group("recognize");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for (name, cfg) in &setups {
        let rec = match Recognizer::from_config(Some(cfg)) {
            Ok(rec) => rec,
            Err(e) => {
                println!("note: skipping {name}: {e}");
                continue;
            }
        };
        for (size, frame) in &frames {
            group.bench_function(format!("{name}/{size}"), |b| {
                b.iter(|| rec.recognize(frame).expect("recognize"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
