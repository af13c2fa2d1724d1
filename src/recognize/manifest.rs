//! Descriptions of model files: our own `manifest.json`, and fast-plate-ocr's plate config YAML.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::engine::{Expected, ModelFile};
use super::RecognizeError;

/// `manifest.json` of the project's own models; file names are relative to its folder.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub version: String,
    pub detector: DetectorEntry,
    pub ocr: OcrEntry,
    /// How the models were made; kept opaque.
    #[serde(default)]
    pub provenance: serde_json::Value,
    /// The folder holding the manifest (not in the file).
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct InputSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputSpec {
    /// Our models take `[1, C, H, W]` float input.
    pub fn target(&self) -> super::preprocess::Target {
        super::preprocess::Target {
            width: self.width,
            height: self.height,
            channels: self.channels,
            layout: super::preprocess::Layout::Nchw,
            // trained on PIL-resized images
            antialias: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DetectorEntry {
    pub file: PathBuf,
    pub sha256: String,
    pub input: InputSpec,
    /// Fill value of the letterbox, on the model's 0..1 input scale.
    pub pad: f32,
    pub stride: u32,
    pub score_threshold: f32,
    pub nms_iou: f32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OcrEntry {
    pub file: PathBuf,
    pub sha256: String,
    pub input: InputSpec,
    pub alphabet: String,
    pub pad_char: char,
    pub slots: usize,
    /// Fraction of the box width/height added on each side before cropping.
    pub crop_margin: f32,
    /// A detector box whose read has a lower confidence (mean character probability) is no
    /// plate: calibrated with the detector's `score_threshold` on synthetic scenes
    /// (models/train/calibrate.py). 0 (absent): every box is kept.
    #[serde(default)]
    pub min_confidence: f32,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, RecognizeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecognizeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut m: Manifest =
            serde_json::from_str(&text).map_err(|e| RecognizeError::Manifest {
                path: path.to_path_buf(),
                key: e.to_string(),
                reason: "invalid manifest JSON".into(),
            })?;
        m.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let bad = |key: &str, reason: String| RecognizeError::Manifest {
            path: path.to_path_buf(),
            key: key.into(),
            reason,
        };
        // A manifest names files beside it: an absolute path or `..` would let one (from a
        // package, a download) point the daemon at any file on the unit.
        for (key, file) in [
            ("detector.file", &m.detector.file),
            ("ocr.file", &m.ocr.file),
        ] {
            let inside = file.components().next().is_some()
                && file
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside {
                return Err(bad(
                    key,
                    format!(
                        "{} must be a path inside the manifest's folder (relative, without `..`)",
                        file.display()
                    ),
                ));
            }
        }
        for (key, input) in [
            ("detector.input", m.detector.input),
            ("ocr.input", m.ocr.input),
        ] {
            if !matches!(input.channels, 1 | 3) || input.width == 0 || input.height == 0 {
                return Err(bad(key, format!("unsupported input {input:?}")));
            }
        }
        let stride = m.detector.stride as usize;
        if stride == 0
            || !m.detector.input.width.is_multiple_of(stride)
            || !m.detector.input.height.is_multiple_of(stride)
        {
            return Err(bad(
                "detector.stride",
                format!("{stride} does not divide the input size"),
            ));
        }
        if !m.ocr.alphabet.contains(m.ocr.pad_char) {
            return Err(bad("ocr.pad_char", "not in the alphabet".into()));
        }
        if m.ocr.slots == 0 {
            return Err(bad("ocr.slots", "must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&m.ocr.min_confidence) {
            return Err(bad(
                "ocr.min_confidence",
                format!("{} is outside 0..1", m.ocr.min_confidence),
            ));
        }
        Ok(m)
    }

    /// The detector file, with the sha256 it must have (checked when it is loaded).
    pub fn detector_file(&self) -> ModelFile {
        self.model_file(
            "detector.sha256",
            &self.detector.file,
            &self.detector.sha256,
        )
    }

    /// The OCR file, with the sha256 it must have (checked when it is loaded).
    pub fn ocr_file(&self) -> ModelFile {
        self.model_file("ocr.sha256", &self.ocr.file, &self.ocr.sha256)
    }

    fn model_file(&self, key: &'static str, file: &Path, sha256: &str) -> ModelFile {
        ModelFile {
            path: self.dir.join(file),
            expected: Some(Expected {
                key,
                sha256: sha256.to_string(),
            }),
        }
    }
}

/// fast-plate-ocr's plate config (`*_plate_config.yaml`); unknown keys (e.g. regions) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct PlateConfig {
    pub max_plate_slots: usize,
    pub alphabet: String,
    pub pad_char: char,
    pub img_height: usize,
    pub img_width: usize,
    #[serde(default)]
    pub keep_aspect_ratio: bool,
    #[serde(default = "rgb")]
    pub image_color_mode: String,
}

fn rgb() -> String {
    "rgb".into()
}

impl PlateConfig {
    pub fn load(path: &Path) -> Result<PlateConfig, RecognizeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecognizeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let c: PlateConfig = serde_yaml::from_str(&text).map_err(|e| RecognizeError::Manifest {
            path: path.to_path_buf(),
            key: e.to_string(),
            reason: "invalid plate config YAML".into(),
        })?;
        let bad = |key: &str, reason: &str| RecognizeError::Manifest {
            path: path.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        };
        if !c.alphabet.contains(c.pad_char) {
            return Err(bad("pad_char", "not in the alphabet"));
        }
        if c.max_plate_slots == 0 || c.img_height == 0 || c.img_width == 0 {
            return Err(bad(
                "max_plate_slots/img_height/img_width",
                "must be positive",
            ));
        }
        if c.channels().is_none() {
            return Err(bad("image_color_mode", "expected 'rgb' or 'grayscale'"));
        }
        Ok(c)
    }

    pub fn channels(&self) -> Option<usize> {
        match self.image_color_mode.as_str() {
            "rgb" => Some(3),
            "grayscale" => Some(1),
            _ => None,
        }
    }
}
