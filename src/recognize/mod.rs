//! Recognition: plate detector, OCR, and the tracker that turns per-frame results into one read per
//! vehicle pass. `engine` is the only module that calls tract.
//!
//! Data types name the stage: `Frame` -> `PlateBox` (detector) -> `PlateText` (OCR) ->
//! `Detection` (both, per frame) -> `PlateRead` (tracker, one per vehicle pass).

use std::sync::Arc;
use std::time::SystemTime;

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
