//! `platecam recognize`: one-shot reads of still images.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::TrackingConfig;
use crate::recognize::tracker::plausible;
use crate::recognize::Recognizer;

#[derive(Serialize)]
struct ImageResult<'a> {
    image: &'a str,
    plates: Vec<PlateJson>,
    /// Detector boxes read under the model's `ocr.min_confidence`: not plates, not listed.
    not_plates: u32,
    ms: Ms,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct PlateJson {
    text: String,
    confidence: f32,
    bbox: [u32; 4],
    /// The detector's score for the box (1 with --ocr-only).
    detector_score: f32,
    /// Whether the daemon would send this read as a pass seen on this one frame: the tracker's
    /// pass rule (tracking.min_confidence, min_chars, require_digit of the config given).
    kept: bool,
    /// Why the pass rule drops it, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped: Option<&'static str>,
}

impl PlateJson {
    fn new(
        tracking: &TrackingConfig,
        text: String,
        confidence: f32,
        bbox: [u32; 4],
        detector_score: f32,
    ) -> PlateJson {
        let dropped = plausible(tracking, &text, confidence)
            .err()
            .map(|why| why.describe());
        PlateJson {
            text,
            confidence,
            bbox,
            detector_score,
            kept: dropped.is_none(),
            dropped,
        }
    }
}

#[derive(Serialize, Default)]
struct Ms {
    decode: f64,
    detect: f64,
    ocr: f64,
    total: f64,
}

/// Exit 0 when every image was read (even with no plate in it), 1 when one could not be read,
/// 78 when the models cannot be loaded.
pub fn run(
    config: Option<&Path>,
    json: bool,
    ocr_only: bool,
    images: &[PathBuf],
) -> anyhow::Result<u8> {
    let (recognition, tracking) = match config {
        Some(path) => match super::load_config(path, false) {
            Ok(cfg) => (cfg.recognition, cfg.tracking),
            Err(code) => return Ok(code),
        },
        None => (None, TrackingConfig::default()),
    };
    let recognizer = match Recognizer::from_config(recognition.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("platecam: cannot load models: {e}");
            return Ok(crate::EXIT_CONFIG as u8);
        }
    };
    let mut failed = false;
    for path in images {
        let name = path.display().to_string();
        let result = read_image(&recognizer, &tracking, path, ocr_only);
        let out = match result {
            Ok((plates, not_plates, ms)) => ImageResult {
                image: &name,
                plates,
                not_plates,
                ms,
                error: None,
            },
            Err(e) => {
                failed = true;
                ImageResult {
                    image: &name,
                    plates: vec![],
                    not_plates: 0,
                    ms: Ms::default(),
                    error: Some(e),
                }
            }
        };
        if json {
            println!("{}", serde_json::to_string(&out)?);
        } else if let Some(e) = &out.error {
            println!("{name}: error: {e}");
        } else if out.plates.is_empty() {
            println!("{name}: no plate ({:.0} ms)", out.ms.total);
        } else {
            for p in &out.plates {
                let [x, y, w, h] = p.bbox;
                let verdict = p.dropped.map(|why| format!(", not sent: {why}"));
                println!(
                    "{name}: {} ({:.2}) at {x},{y} {w}x{h} ({:.0} ms{})",
                    p.text,
                    p.confidence,
                    out.ms.total,
                    verdict.unwrap_or_default()
                );
            }
        }
        if !json && out.not_plates > 0 {
            println!(
                "{name}: {} box(es) read under the model's ocr.min_confidence: not plates",
                out.not_plates
            );
        }
    }
    Ok(u8::from(failed))
}

fn read_image(
    recognizer: &Recognizer,
    tracking: &TrackingConfig,
    path: &Path,
    ocr_only: bool,
) -> Result<(Vec<PlateJson>, u32, Ms), String> {
    let started = std::time::Instant::now();
    let img = image::open(path).map_err(|e| e.to_string())?.to_rgb8();
    let decode = started.elapsed().as_secs_f64() * 1e3;
    let mut ms = Ms {
        decode,
        ..Ms::default()
    };
    let mut not_plates = 0;
    let plates = if ocr_only {
        let text = recognizer.read_plate(&img).map_err(|e| e.to_string())?;
        ms.ocr = started.elapsed().as_secs_f64() * 1e3 - decode;
        vec![PlateJson::new(
            tracking,
            text.text,
            text.confidence,
            [0, 0, img.width(), img.height()],
            1.0,
        )]
    } else {
        let found = recognizer.recognize(&img).map_err(|e| e.to_string())?;
        ms.detect = found.timings.detect_ms;
        ms.ocr = found.timings.ocr_ms;
        not_plates = found.not_plates;
        found
            .detections
            .into_iter()
            .map(|d| {
                let bbox = [d.bbox.x, d.bbox.y, d.bbox.w, d.bbox.h].map(|v| v.round() as u32);
                PlateJson::new(tracking, d.text.text, d.text.confidence, bbox, d.bbox.score)
            })
            .collect()
    };
    ms.total = started.elapsed().as_secs_f64() * 1e3;
    Ok((plates, not_plates, ms))
}
