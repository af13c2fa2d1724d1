//! Recognition: plate detector, OCR, and the tracker that turns per-frame results into one read per
//! vehicle pass. `engine` is the only module that calls tract.
//!
//! Data types name the stage: `Frame` -> `PlateBox` (detector) -> `PlateText` (OCR) ->
//! `Detection` (both, per frame) -> `PlateRead` (tracker, one per vehicle pass).

mod dequantize;
mod detector;
mod engine;
mod formats;
mod gate;
pub(crate) mod manifest;
mod ocr;
mod preprocess;
pub mod tracker;

pub use detector::{decode_grid, iou, nms};
pub use engine::Quantized;
pub use gate::MotionGate;
pub use manifest::Manifest;
pub use tracker::{FrameInfo, Tracker};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use image::RgbImage;

use crate::config::{ModelConfig, ModelFormat, RecognitionConfig};
use detector::Detector;
pub use formats::{preset_names, FormatPrior};
use ocr::Ocr;

/// Everything that can go wrong loading or running the models, with what it takes to fix it.
#[derive(Debug, thiserror::Error)]
pub enum RecognizeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model {path} is unusable: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("model {path}: {what} has shape {actual}, expected {expected}")]
    Shape {
        path: PathBuf,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{path}: `{key}`: {reason}")]
    Manifest {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{path} does not match `{key}` in the manifest: sha256 {actual}, expected {expected}")]
    Checksum {
        path: PathBuf,
        key: String,
        expected: String,
        actual: String,
    },
    #[error("no models manifest found; looked at: {}", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoManifest { tried: Vec<PathBuf> },
    #[error("config `{key}`: {reason}")]
    Config { key: &'static str, reason: String },
}

/// Time spent on one frame, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    pub detect_ms: f64,
    /// All OCR runs of the frame together.
    pub ocr_ms: f64,
    pub total_ms: f64,
}

/// What [`Recognizer::recognize`] found on one frame.
#[derive(Debug)]
pub struct Recognized {
    pub detections: Vec<Detection>,
    /// Detector boxes the OCR read under the model's `ocr.min_confidence`: not plates (signs,
    /// grilles, text), counted so an operator can see what the floor removes.
    pub not_plates: u32,
    pub timings: Timings,
}

/// Detector + OCR: frame in, every plate with its text out.
#[derive(Debug)]
pub struct Recognizer {
    detector: Detector,
    ocr: Ocr,
    formats: FormatPrior,
}

impl Recognizer {
    /// Loads the configured models; `None`, or a stage left out, uses our own models from the
    /// default manifest (see [`default_manifest_path`]).
    pub fn from_config(cfg: Option<&RecognitionConfig>) -> Result<Recognizer, RecognizeError> {
        Recognizer::from_config_with(cfg, Quantized::default())
    }

    /// [`Recognizer::from_config`], choosing what happens to dynamically quantised models.
    pub fn from_config_with(
        cfg: Option<&RecognitionConfig>,
        q: Quantized,
    ) -> Result<Recognizer, RecognizeError> {
        let det_cfg = cfg.and_then(|c| c.detector.as_ref());
        let ocr_cfg = cfg.and_then(|c| c.ocr.as_ref());
        // Loaded once when either stage needs it; the default manifest may not exist otherwise.
        let mut default: Option<Manifest> = None;
        let mut default_manifest = || -> Result<Manifest, RecognizeError> {
            if let Some(m) = &default {
                return Ok(m.clone());
            }
            let m = Manifest::load(&default_manifest_path()?)?;
            default = Some(m.clone());
            Ok(m)
        };
        let detector = match det_cfg {
            None => Detector::platecam(&default_manifest()?, None, q)?,
            Some(mc) => match mc.format {
                ModelFormat::Platecam => {
                    Detector::platecam(&Manifest::load(&mc.path)?, mc.score_threshold, q)?
                }
                ModelFormat::YoloEnd2end => {
                    Detector::yolo_end2end(&mc.path, mc.score_threshold, q)?
                }
                ModelFormat::FastPlateOcr => {
                    return Err(RecognizeError::Config {
                        key: "recognition.detector.format",
                        reason: "fast-plate-ocr is an OCR format, not a detector".into(),
                    })
                }
            },
        };
        let ocr = match ocr_cfg {
            None => Ocr::platecam(&default_manifest()?, q)?,
            Some(mc) => match mc.format {
                ModelFormat::Platecam => Ocr::platecam(&Manifest::load(&mc.path)?, q)?,
                ModelFormat::FastPlateOcr => {
                    Ocr::fast_plate_ocr(&mc.path, &plate_config_path(mc), q)?
                }
                ModelFormat::YoloEnd2end => {
                    return Err(RecognizeError::Config {
                        key: "recognition.ocr.format",
                        reason: "yolo-end2end is a detector format, not an OCR".into(),
                    })
                }
            },
        };
        let formats = match cfg
            .map(|c| FormatPrior::parse(&c.plate_formats))
            .transpose()
        {
            Ok(f) => f.unwrap_or_default(),
            Err(entry) => {
                return Err(RecognizeError::Config {
                    key: "recognition.plate_formats",
                    reason: format!("`{entry}` is neither a preset nor a pattern"),
                })
            }
        };
        Ok(Recognizer {
            detector,
            ocr,
            formats,
        })
    }

    /// Every plate in the frame, each read by the OCR.
    pub fn recognize(&self, img: &RgbImage) -> Result<Recognized, RecognizeError> {
        let start = Instant::now();
        let boxes = self.detector.detect(img)?;
        let detected = Instant::now();
        let mut detections = Vec::with_capacity(boxes.len());
        let mut not_plates = 0;
        for bbox in boxes {
            let r = self.ocr.crop_rect(&bbox, img.width(), img.height());
            let mut text = self.ocr.read(img, r)?;
            self.formats.apply(&mut text);
            // a box the OCR cannot read with confidence is no plate (calibrated with the
            // detector's threshold: models/README.md, "Precision")
            if !self.ocr.is_plate(&text) {
                tracing::debug!(
                    confidence = text.confidence,
                    ?bbox,
                    "box read under the model's ocr.min_confidence: not a plate"
                );
                not_plates += 1;
                continue;
            }
            let crop =
                image::imageops::crop_imm(img, r.x as u32, r.y as u32, r.w as u32, r.h as u32)
                    .to_image();
            detections.push(Detection { bbox, text, crop });
        }
        let end = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let timings = Timings {
            detect_ms: ms(start, detected),
            ocr_ms: ms(detected, end),
            total_ms: ms(start, end),
        };
        Ok(Recognized {
            detections,
            not_plates,
            timings,
        })
    }

    /// OCR only, on the whole image (a plate crop).
    pub fn read_plate(&self, crop: &RgbImage) -> Result<PlateText, RecognizeError> {
        let mut text = self.ocr.read(crop, preprocess::Rect::whole(crop))?;
        self.formats.apply(&mut text);
        Ok(text)
    }

    /// sha256 of the detector and the OCR model files.
    pub fn model_hashes(&self) -> (String, String) {
        (self.detector.sha256().into(), self.ocr.sha256().into())
    }
}

/// fast-plate-ocr's YAML: configured, else `<model stem>_plate_config.yaml` beside the model
/// (the name its releases use).
fn plate_config_path(mc: &ModelConfig) -> PathBuf {
    mc.config.clone().unwrap_or_else(|| {
        let stem = mc.path.file_stem().unwrap_or_default().to_string_lossy();
        mc.path.with_file_name(format!("{stem}_plate_config.yaml"))
    })
}

/// Where our own models' manifest is looked for, in order.
pub fn manifest_search_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(dir) = std::env::var_os("PLATECAM_MODELS") {
        paths.push(Path::new(&dir).join("manifest.json"));
    }
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        paths.push(bin_dir.join("../share/platecam/models/manifest.json"));
    }
    // The checkout this binary was built from, before the system's copy: a developer's build
    // runs the models of its own tree even where a packaged platecam is installed. On a unit the
    // build machine's path does not exist and the packaged models are used.
    paths.push(concat!(env!("CARGO_MANIFEST_DIR"), "/models/manifest.json").into());
    paths.push("/usr/share/platecam/models/manifest.json".into());
    paths
}

/// The first existing manifest of [`manifest_search_paths`].
pub fn default_manifest_path() -> Result<PathBuf, RecognizeError> {
    let tried = manifest_search_paths();
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(RecognizeError::NoManifest { tried })
}

/// A plate found by the detector, in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlateBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub score: f32,
}

/// One recognised character and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct CharProb {
    pub c: char,
    pub p: f32,
}

/// What the OCR read in one crop.
#[derive(Debug, Clone)]
pub struct PlateText {
    /// The plate with padding removed, e.g. "ABC1234".
    pub text: String,
    /// Product-free summary: the mean of the kept characters' probabilities.
    pub confidence: f32,
    pub chars: Vec<CharProb>,
    /// Per slot, the probability of each alphabet symbol (for voting across frames).
    pub slots: Vec<Vec<f32>>,
    /// Symbols of the OCR model, the padding symbol included.
    pub alphabet: Arc<[char]>,
    pub pad: char,
}

/// A plate in one frame: where, and what it says.
#[derive(Debug, Clone)]
pub struct Detection {
    pub bbox: PlateBox,
    pub text: PlateText,
    /// The crop handed to the OCR (frame pixels, margin included).
    pub crop: image::RgbImage,
}

/// Where the vehicle went while it was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The plate grew (the vehicle came towards the camera).
    Approaching,
    /// The plate shrank.
    Receding,
    Stationary,
    Unknown,
}

/// An alternative reading with its confidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    pub plate: String,
    pub confidence: f32,
}

/// One read per vehicle pass: the tracker's output, before it has an id or a seq.
#[derive(Debug, Clone)]
pub struct PlateRead {
    pub camera: String,
    /// Capture time of the frame the crop comes from.
    pub captured_at: SystemTime,
    /// Whether the wall clock was synchronised when that frame was taken.
    pub clock_synced: bool,
    pub plate: String,
    pub confidence: f32,
    pub chars: Vec<CharProb>,
    /// Best first; the first one is `plate`.
    pub candidates: Vec<Candidate>,
    /// Box of the best frame, frame pixels.
    pub bbox: [u32; 4],
    pub frame_width: u32,
    pub frame_height: u32,
    pub frames_seen: u32,
    pub direction: Direction,
    /// The best frame's plate crop.
    pub crop: image::RgbImage,
}
