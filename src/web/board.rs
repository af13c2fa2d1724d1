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

impl RecentRead {
    pub fn of(seq: u64, message: &ReadMessage, crop: Option<Vec<u8>>) -> RecentRead {
        RecentRead {
            seq,
            id: message.id.clone(),
            camera: message.camera.clone(),
            plate: message.plate.clone(),
            confidence: message.confidence,
            captured_at: message.captured_at.clone(),
            frames_seen: message.frames_seen,
            crop: crop.filter(|c| !c.is_empty()).map(Arc::new),
        }
    }
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

    /// Adds an accepted read to the list the page shows.
    pub fn read(&self, read: RecentRead) {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if reads.len() == RECENT_READS {
            reads.pop_back();
        }
        reads.push_front(read);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(n: u64) -> RecentRead {
        RecentRead {
            seq: n,
            id: format!("id{n}"),
            camera: "lane1".into(),
            plate: "AB123".into(),
            confidence: 0.9,
            captured_at: String::new(),
            frames_seen: 1,
            crop: Some(Arc::new(vec![n as u8; 3])),
        }
    }

    #[test]
    fn frames_replace_each_other_and_never_queue() {
        let board = Board::new(["lane1"]);
        assert!(board.latest("lane1").is_none());
        // Nobody is watching: offering never blocks and keeps only the newest.
        for seq in 0..1000 {
            board.offer("lane1", seq, image::RgbImage::new(4, 4), Vec::new());
        }
        assert_eq!(board.latest("lane1").map(|s| s.seq), Some(999));
        // An unknown camera is ignored.
        board.offer("nope", 1, image::RgbImage::new(4, 4), Vec::new());
        assert!(board.latest("nope").is_none());
    }

    #[test]
    fn the_last_reads_are_kept_newest_first_with_their_crops() {
        let board = Board::new(["lane1"]);
        for n in 0..20 {
            board.read(read(n));
        }
        let recent = board.recent();
        assert_eq!(recent.len(), RECENT_READS);
        assert_eq!(recent[0].id, "id19");
        assert_eq!(board.crop("id19").as_deref(), Some(&vec![19u8; 3]));
        assert!(board.crop("id0").is_none(), "fell off the list");
    }
}
