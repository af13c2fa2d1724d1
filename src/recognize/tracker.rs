//! Per-frame detections -> one read per vehicle pass.
//!
//! A track collects the boxes of one plate across frames; when it has been unseen for longer than
//! `max_gap` it ends and its frames vote on the text, slot by slot (fixed-slot OCR models align
//! plates to the left, so slot i means the same character in every frame).

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::TrackingConfig;

use super::detector::iou;
use super::ocr::{argmax, mean};
use super::{Candidate, CharProb, Detection, Direction, PlateBox, PlateRead};

/// A box that overlaps no track still joins one whose last box centre is within this many plate
/// widths: at low frame rates a moving plate need not overlap itself between frames.
const MAX_CENTRE_DISTANCE: f32 = 1.5;
/// Area change (either way) that counts as moving towards or away from the camera.
const AREA_TREND: f32 = 1.15;
/// Symbols per slot the candidate search considers.
const ALTERNATIVES_PER_SLOT: usize = 3;

#[derive(Debug)]
pub struct Tracker {
    cfg: TrackingConfig,
    tracks: Vec<Track>,
}

#[derive(Debug)]
struct Track {
    camera: String,
    last_box: PlateBox,
    last_seen: SystemTime,
    areas: Vec<f32>,
    /// Per slot, the score-weighted sum of the OCR probabilities.
    votes: Vec<Vec<f32>>,
    alphabet: Arc<[char]>,
    pad: char,
    best: Best,
}

/// The frame whose OCR was most confident: it supplies the crop, box and time of the read.
#[derive(Debug)]
struct Best {
    confidence: f32,
    captured_at: SystemTime,
    bbox: PlateBox,
    frame_w: u32,
    frame_h: u32,
    crop: image::RgbImage,
}

impl Tracker {
    pub fn new(cfg: TrackingConfig) -> Tracker {
        Tracker {
            cfg,
            tracks: Vec::new(),
        }
    }

    /// Adds one frame's detections; returns the reads of the tracks that this frame's time ends.
    pub fn push(
        &mut self,
        camera: &str,
        captured_at: SystemTime,
        frame_w: u32,
        frame_h: u32,
        detections: Vec<Detection>,
    ) -> Vec<PlateRead> {
        let max_gap = self.cfg.max_gap;
        let (ended, open): (Vec<Track>, Vec<Track>) =
            std::mem::take(&mut self.tracks).into_iter().partition(|t| {
                captured_at
                    .duration_since(t.last_seen)
                    .is_ok_and(|gap| gap > max_gap)
            });
        self.tracks = open;

        // Candidate pairs: overlapping ones first (best IoU first), then near ones (closest first).
        let mut pairs: Vec<(u8, f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            if t.camera != camera {
                continue;
            }
            for (di, d) in detections.iter().enumerate() {
                let overlap = iou(&t.last_box, &d.bbox);
                if overlap >= self.cfg.iou_match && overlap > 0.0 {
                    pairs.push((0, -overlap, ti, di));
                } else {
                    let dist = centre_distance(&t.last_box, &d.bbox);
                    if dist <= MAX_CENTRE_DISTANCE {
                        pairs.push((1, dist, ti, di));
                    }
                }
            }
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut assigned: Vec<Option<usize>> = vec![None; detections.len()];
        let mut track_taken = vec![false; self.tracks.len()];
        for (_, _, ti, di) in pairs {
            if assigned[di].is_none() && !track_taken[ti] {
                assigned[di] = Some(ti);
                track_taken[ti] = true;
            }
        }
        for (d, slot) in detections.into_iter().zip(assigned) {
            match slot {
                Some(ti) => self.tracks[ti].add(d, captured_at, frame_w, frame_h),
                None => self
                    .tracks
                    .push(Track::new(camera, d, captured_at, frame_w, frame_h)),
            }
        }
        self.finish(ended)
    }

    /// Ends every open track (shutdown, end of a replay).
    pub fn flush(&mut self) -> Vec<PlateRead> {
        let all = std::mem::take(&mut self.tracks);
        self.finish(all)
    }

    fn finish(&self, tracks: Vec<Track>) -> Vec<PlateRead> {
        tracks
            .into_iter()
            .filter(|t| t.areas.len() as u32 >= self.cfg.min_frames)
            .filter_map(|t| t.into_read(self.cfg.candidates))
            .filter(|r| self.plausible(r))
            .collect()
    }

    /// Whether a voted read looks like a plate rather than other text (see `TrackingConfig`).
    fn plausible(&self, read: &PlateRead) -> bool {
        read.confidence >= self.cfg.min_confidence
            && read.plate.chars().count() >= self.cfg.min_chars
            && (!self.cfg.require_digit || read.plate.chars().any(|c| c.is_ascii_digit()))
    }
}

/// Distance between box centres, in widths of the wider box.
fn centre_distance(a: &PlateBox, b: &PlateBox) -> f32 {
    let dx = (a.x + a.w / 2.0) - (b.x + b.w / 2.0);
    let dy = (a.y + a.h / 2.0) - (b.y + b.h / 2.0);
    let scale = a.w.max(b.w).max(1.0);
    (dx * dx + dy * dy).sqrt() / scale
}

impl Track {
    fn new(camera: &str, d: Detection, at: SystemTime, fw: u32, fh: u32) -> Track {
        let mut t = Track {
            camera: camera.into(),
            last_box: d.bbox,
            last_seen: at,
            areas: Vec::new(),
            votes: Vec::new(),
            alphabet: d.text.alphabet.clone(),
            pad: d.text.pad,
            best: Best {
                confidence: f32::NEG_INFINITY,
                captured_at: at,
                bbox: d.bbox,
                frame_w: fw,
                frame_h: fh,
                crop: image::RgbImage::new(0, 0),
            },
        };
        t.add(d, at, fw, fh);
        t
    }

    fn add(&mut self, d: Detection, at: SystemTime, fw: u32, fh: u32) {
        let weight = d.bbox.score.max(1e-6);
        for (i, probs) in d.text.slots.iter().enumerate() {
            if self.votes.len() <= i {
                self.votes.push(vec![0.0; self.alphabet.len()]);
            }
            for (v, p) in self.votes[i].iter_mut().zip(probs) {
                *v += weight * p;
            }
        }
        self.areas.push(d.bbox.w * d.bbox.h);
        self.last_box = d.bbox;
        self.last_seen = at;
        if d.text.confidence > self.best.confidence {
            self.best = Best {
                confidence: d.text.confidence,
                captured_at: at,
                bbox: d.bbox,
                frame_w: fw,
                frame_h: fh,
                crop: d.crop,
            };
        }
    }

    fn direction(&self) -> Direction {
        let n = self.areas.len();
        if n < 2 {
            return Direction::Unknown;
        }
        // Mean of the first and last thirds: robust to one jittery box.
        let k = (n / 3).max(1);
        let first = mean(self.areas[..k].iter().copied());
        let last = mean(self.areas[n - k..].iter().copied());
        if last > first * AREA_TREND {
            Direction::Approaching
        } else if last * AREA_TREND < first {
            Direction::Receding
        } else {
            Direction::Stationary
        }
    }

    fn into_read(self, n_candidates: usize) -> Option<PlateRead> {
        // Normalised votes: each slot a probability distribution again.
        let slots: Vec<Vec<f32>> = self
            .votes
            .iter()
            .map(|v| {
                let sum: f32 = v.iter().sum();
                v.iter()
                    .map(|p| if sum > 0.0 { p / sum } else { 0.0 })
                    .collect()
            })
            .collect();
        let chars: Vec<CharProb> = slots
            .iter()
            .filter_map(|s| {
                let (i, p) = argmax(s)?;
                let c = *self.alphabet.get(i)?;
                (c != self.pad).then_some(CharProb { c, p })
            })
            .collect();
        let plate: String = chars.iter().map(|c| c.c).collect();
        if plate.is_empty() {
            return None;
        }
        let confidence = mean(chars.iter().map(|c| c.p));
        let candidates = candidates(&slots, &self.alphabet, self.pad, confidence, n_candidates);
        let direction = self.direction();
        let b = &self.best;
        let bbox = [
            b.bbox.x.round() as u32,
            b.bbox.y.round() as u32,
            b.bbox.w.round() as u32,
            b.bbox.h.round() as u32,
        ];
        Some(PlateRead {
            camera: self.camera,
            captured_at: b.captured_at,
            plate,
            confidence,
            chars,
            candidates,
            bbox,
            frame_width: b.frame_w,
            frame_height: b.frame_h,
            frames_seen: self.areas.len() as u32,
            direction,
            crop: self.best.crop,
        })
    }
}

/// The `n` most likely plates under the voted slots, best first: a beam search over each slot's
/// top symbols (padding included, so a dropped or extra character is an alternative too).
/// Confidence of an alternative: the best's, scaled by its likelihood relative to the best.
fn candidates(
    slots: &[Vec<f32>],
    alphabet: &[char],
    pad: char,
    best_confidence: f32,
    n: usize,
) -> Vec<Candidate> {
    if n == 0 {
        return Vec::new();
    }
    // Wider than n: different paths can spell the same plate (padding in different slots).
    let width = n * 2;
    let mut beam: Vec<(f32, String)> = vec![(0.0, String::new())];
    for slot in slots {
        let mut options: Vec<(usize, f32)> = slot.iter().copied().enumerate().collect();
        options.sort_by(|a, b| b.1.total_cmp(&a.1));
        options.truncate(ALTERNATIVES_PER_SLOT);
        let mut next: Vec<(f32, String)> = Vec::with_capacity(beam.len() * options.len());
        for (logp, text) in &beam {
            for &(i, p) in &options {
                let Some(&c) = alphabet.get(i) else { continue };
                let mut t = text.clone();
                if c != pad {
                    t.push(c);
                }
                next.push((logp + p.max(1e-9).ln(), t));
            }
        }
        next.sort_by(|a, b| b.0.total_cmp(&a.0));
        next.truncate(width);
        beam = next;
    }
    let best_logp = beam.first().map_or(0.0, |b| b.0);
    let mut out: Vec<Candidate> = Vec::with_capacity(n);
    for (logp, plate) in beam {
        if plate.is_empty() || out.iter().any(|c| c.plate == plate) {
            continue;
        }
        out.push(Candidate {
            plate,
            confidence: best_confidence * (logp - best_logp).exp(),
        });
        if out.len() == n {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::recognize::ocr::decode_slots;

    const ALPHABET: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_";

    /// A detection reading `text` (left-aligned in 9 slots) with probability `p` per character.
    fn det(text: &str, p: f32, x: f32, w: f32) -> Detection {
        let alphabet: Arc<[char]> = ALPHABET.chars().collect();
        let padded: Vec<char> = text.chars().chain(std::iter::repeat('_')).take(9).collect();
        let slots = padded
            .iter()
            .map(|c| {
                let rest = (1.0 - p) / (alphabet.len() - 1) as f32;
                alphabet
                    .iter()
                    .map(|a| if a == c { p } else { rest })
                    .collect()
            })
            .collect();
        Detection {
            bbox: PlateBox {
                x,
                y: 100.0,
                w,
                h: w / 4.0,
                score: 0.9,
            },
            text: decode_slots(slots, alphabet, '_'),
            crop: image::RgbImage::new(4, 1),
        }
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms)
    }

    /// A tracker without the confidence floor: these tests vote with made-up probabilities.
    fn tracker() -> Tracker {
        Tracker::new(TrackingConfig {
            min_confidence: 0.0,
            ..TrackingConfig::default()
        })
    }

    #[test]
    fn votes_over_a_noisy_frame() {
        let mut t = tracker();
        let texts = ["AB123CD", "AB123CD", "A8I23C", "AB123CD", "AB123CD"];
        for (i, text) in texts.iter().enumerate() {
            let p = if i == 2 { 0.95 } else { 0.7 };
            let reads = t.push(
                "cam",
                at(i as u64 * 100),
                1920,
                1080,
                vec![det(text, p, 500.0 + 20.0 * i as f32, 100.0)],
            );
            assert!(reads.is_empty());
        }
        let reads = t.flush();
        assert_eq!(reads.len(), 1);
        let r = &reads[0];
        assert_eq!(r.plate, "AB123CD");
        assert_eq!(r.frames_seen, 5);
        assert_eq!(r.candidates[0].plate, "AB123CD");
        assert_eq!(r.candidates[0].confidence, r.confidence);
        assert!(r.candidates.len() > 1 && r.candidates.len() <= 5);
        assert!(r
            .candidates
            .windows(2)
            .all(|w| w[0].confidence >= w[1].confidence));
        assert_eq!(r.chars.len(), 7);
        // The crop time is that of the most confident frame (the noisy one, p = 0.95).
        assert_eq!(r.captured_at, at(200));
        assert_eq!(r.direction, Direction::Stationary);
    }

    #[test]
    fn two_plates_in_the_same_frames_give_two_reads() {
        let mut t = tracker();
        for i in 0..4u64 {
            let dx = 15.0 * i as f32;
            t.push(
                "cam",
                at(i * 100),
                1920,
                1080,
                vec![
                    det("AAA111", 0.9, 100.0 + dx, 100.0),
                    det("BBB222", 0.9, 1200.0 - dx, 100.0),
                ],
            );
        }
        let mut plates: Vec<String> = t.flush().into_iter().map(|r| r.plate).collect();
        plates.sort();
        assert_eq!(plates, vec!["AAA111", "BBB222"]);
    }

    #[test]
    fn a_gap_ends_the_track() {
        let mut t = tracker();
        assert!(t
            .push(
                "cam",
                at(0),
                1920,
                1080,
                vec![det("AAA111", 0.9, 100.0, 100.0)]
            )
            .is_empty());
        assert!(t
            .push(
                "cam",
                at(100),
                1920,
                1080,
                vec![det("AAA111", 0.9, 110.0, 100.0)]
            )
            .is_empty());
        // Within max_gap (700 ms): nothing yet.
        assert!(t.push("cam", at(700), 1920, 1080, vec![]).is_empty());
        let reads = t.push(
            "cam",
            at(900),
            1920,
            1080,
            vec![det("CCC333", 0.9, 110.0, 100.0)],
        );
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].plate, "AAA111");
        assert_eq!(reads[0].frames_seen, 2);
        let rest = t.flush();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].plate, "CCC333");
    }

    #[test]
    fn direction_follows_box_area() {
        let run = |widths: &[f32]| {
            let mut t = tracker();
            for (i, w) in widths.iter().enumerate() {
                t.push(
                    "cam",
                    at(i as u64 * 100),
                    1920,
                    1080,
                    vec![det("AAA111", 0.9, 500.0, *w)],
                );
            }
            t.flush()[0].direction
        };
        assert_eq!(
            run(&[80.0, 90.0, 100.0, 110.0, 120.0]),
            Direction::Approaching
        );
        assert_eq!(run(&[120.0, 110.0, 100.0, 90.0]), Direction::Receding);
        assert_eq!(run(&[100.0, 101.0, 99.0, 100.0]), Direction::Stationary);
        assert_eq!(run(&[100.0]), Direction::Unknown);
    }

    #[test]
    fn short_or_unsure_tracks_are_dropped() {
        let cfg = TrackingConfig {
            min_frames: 2,
            ..TrackingConfig::default()
        };
        let strict = TrackingConfig {
            min_confidence: 0.95,
            ..TrackingConfig::default()
        };
        for cfg in [cfg, strict] {
            let mut t = Tracker::new(cfg);
            t.push(
                "cam",
                at(0),
                1920,
                1080,
                vec![det("AAA111", 0.9, 100.0, 100.0)],
            );
            assert!(t.flush().is_empty());
        }
        let mut t = tracker();
        t.push("cam", at(0), 1920, 1080, vec![det("", 0.9, 100.0, 100.0)]);
        assert!(t.flush().is_empty());
        // Sign text: no digit, or too short.
        for text in ["ARKANSAS", "K9V"] {
            let mut t = tracker();
            t.push(
                "cam",
                at(0),
                1920,
                1080,
                vec![det(text, 0.99, 100.0, 100.0)],
            );
            assert!(t.flush().is_empty(), "{text} is not a plausible plate");
        }
    }
}
