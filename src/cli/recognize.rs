//! `platecam recognize`: one-shot reads of still images.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::recognize::Recognizer;

#[derive(Serialize)]
struct ImageResult<'a> {
    image: &'a str,
    plates: Vec<PlateJson>,
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
    let recognition = match config {
        Some(path) => match super::load_config(path, false) {
            Ok(cfg) => cfg.recognition,
            Err(code) => return Ok(code),
        },
        None => None,
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
        let result = read_image(&recognizer, path, ocr_only);
        let out = match result {
            Ok((plates, ms)) => ImageResult {
                image: &name,
                plates,
                ms,
                error: None,
            },
            Err(e) => {
                failed = true;
                ImageResult {
                    image: &name,
                    plates: vec![],
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
                println!(
                    "{name}: {} ({:.2}) at {x},{y} {w}x{h} ({:.0} ms)",
                    p.text, p.confidence, out.ms.total
                );
            }
        }
    }
    Ok(u8::from(failed))
}

fn read_image(
    recognizer: &Recognizer,
    path: &Path,
    ocr_only: bool,
) -> Result<(Vec<PlateJson>, Ms), String> {
    let started = std::time::Instant::now();
    let img = image::open(path).map_err(|e| e.to_string())?.to_rgb8();
    let decode = started.elapsed().as_secs_f64() * 1e3;
    let mut ms = Ms {
        decode,
        ..Ms::default()
    };
    let plates = if ocr_only {
        let text = recognizer.read_plate(&img).map_err(|e| e.to_string())?;
        ms.ocr = started.elapsed().as_secs_f64() * 1e3 - decode;
        vec![PlateJson {
            text: text.text,
            confidence: text.confidence,
            bbox: [0, 0, img.width(), img.height()],
            detector_score: 1.0,
        }]
    } else {
        let (detections, timings) = recognizer.recognize(&img).map_err(|e| e.to_string())?;
        ms.detect = timings.detect_ms;
        ms.ocr = timings.ocr_ms;
        detections
            .into_iter()
            .map(|d| PlateJson {
                text: d.text.text,
                confidence: d.text.confidence,
                bbox: [
                    d.bbox.x.round() as u32,
                    d.bbox.y.round() as u32,
                    d.bbox.w.round() as u32,
                    d.bbox.h.round() as u32,
                ],
                detector_score: d.bbox.score,
            })
            .collect()
    };
    ms.total = started.elapsed().as_secs_f64() * 1e3;
    Ok((plates, ms))
}
