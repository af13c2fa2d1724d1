//! What the page shows, shared between the recognize threads (writers) and the listener (reader).
//!
//! Each camera has a single-slot `watch` channel: a recognize thread replaces the latest frame and
//! never waits, so a slow or absent viewer costs nothing but the move of a frame it already owned.
//! Frames nobody looked at are dropped, never queued.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::recognize::Detection;
use crate::wire::ReadMessage;

/// Reads the page lists, newest first.
const RECENT_READS: usize = 12;

/// The latest recognised frame of a camera, with what was found on it.
#[derive(Debug)]
pub struct Snapshot {
    pub seq: u64,
    pub image: image::RgbImage,
    pub boxes: Vec<BoxView>,
}

/// A plate box as the page draws it, in frame pixels, with its OCR text on that frame.
#[derive(Debug, Clone, Serialize)]
pub struct BoxView {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub score: f32,
    pub text: String,
    pub confidence: f32,
}

impl BoxView {
    pub fn of(detections: &[Detection]) -> Vec<BoxView> {
        detections
            .iter()
            .map(|d| BoxView {
                x: d.bbox.x,
                y: d.bbox.y,
                w: d.bbox.w,
                h: d.bbox.h,
                score: d.bbox.score,
                text: d.text.text.clone(),
                confidence: d.text.confidence,
            })
            .collect()
    }
}

/// A read the unit accepted, as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentRead {
    pub seq: u64,
    pub id: String,
    pub camera: String,
    pub plate: String,
    pub confidence: f32,
    pub captured_at: String,
    pub frames_seen: u32,
    #[serde(skip)]
    pub crop: Option<Arc<Vec<u8>>>,
}

#[derive(Debug)]
pub struct Board {
    frames: BTreeMap<String, watch::Sender<Option<Arc<Snapshot>>>>,
    reads: Mutex<VecDeque<RecentRead>>,
}

impl Board {
    pub fn new<'a>(cameras: impl IntoIterator<Item = &'a str>) -> Board {
        Board {
            frames: cameras
                .into_iter()
                .map(|name| (name.to_string(), watch::Sender::new(None)))
                .collect(),
            reads: Mutex::default(),
        }
    }

    /// Replaces the camera's latest frame. Never blocks.
    pub fn offer(&self, camera: &str, seq: u64, image: image::RgbImage, boxes: Vec<BoxView>) {
        if let Some(tx) = self.frames.get(camera) {
            tx.send_replace(Some(Arc::new(Snapshot { seq, image, boxes })));
        }
    }

    pub fn latest(&self, camera: &str) -> Option<Arc<Snapshot>> {
        self.frames.get(camera).and_then(|tx| tx.borrow().clone())
    }

    pub fn cameras(&self) -> impl Iterator<Item = &str> {
        self.frames.keys().map(String::as_str)
    }

    /// Adds an accepted read (and its crop) to the list the page shows.
    pub fn read(&self, seq: u64, message: &ReadMessage, crop: Option<Vec<u8>>) {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if reads.len() == RECENT_READS {
            reads.pop_back();
        }
        reads.push_front(RecentRead {
            seq,
            id: message.id.clone(),
            camera: message.camera.clone(),
            plate: message.plate.clone(),
            confidence: message.confidence,
            captured_at: message.captured_at.clone(),
            frames_seen: message.frames_seen,
            crop: crop.filter(|c| !c.is_empty()).map(Arc::new),
        });
    }

    pub fn recent(&self) -> Vec<RecentRead> {
        let reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        reads.iter().cloned().collect()
    }

    pub fn crop(&self, id: &str) -> Option<Arc<Vec<u8>>> {
        let reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        reads
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.crop.clone())
    }
}
