//! Per-frame detections -> one read per vehicle pass.
//!
//! A track collects the boxes of one plate across frames; when it has been unseen for longer than
//! `max_gap` it ends and its frames vote on the text, slot by slot (fixed-slot OCR models align
//! plates to the left, so slot i means the same character in every frame).
//!
//! A box joins a track only if it could be the same plate: near the track's last box, of a similar
//! size, and reading the same text. Two cars close behind each other in one lane put their plates
//! in the same place a moment apart; without the text check their frames would vote on one mixed
//! read (lost under `min_confidence`, or worse, one plate passing as the other).
//!
//! Time is the frame's monotonic instant (a replay's synthetic timeline), never the wall clock,
//! which may jump when NTP first synchronises it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::TrackingConfig;
use crate::telemetry::Metrics;

use super::detector::iou;
use super::ocr::{argmax, mean};
use super::{Candidate, CharProb, Detection, Direction, PlateBox, PlateRead};

/// A box that overlaps no track still joins one whose last box centre is within this many plate
/// widths: at low frame rates a moving plate need not overlap itself between frames.
const MAX_CENTRE_DISTANCE: f32 = 1.5;
/// A box more than this many times wider or narrower than the track's last box is another plate:
/// an approaching plate grows by a few per cent a frame.
const MAX_SIZE_JUMP: f32 = 2.0;
/// Text disagreement (see [`Track::disagreement`]) above which a box does not join a track that
/// missed the previous frame: about one character read confidently different. A plate that
/// reappears after a gap with another text is the next vehicle.
const REACQUIRE_DISAGREEMENT: f32 = 0.5;
/// The same for a track seen in the previous frame: a plate does not jump between consecutive
/// frames, so only a mostly different text (not one blurred frame) means another plate.
const CONTINUOUS_DISAGREEMENT: f32 = 2.5;
/// Area change (either way) that counts as moving towards or away from the camera.
const AREA_TREND: f32 = 1.15;
/// Symbols per slot the candidate search considers.
const ALTERNATIVES_PER_SLOT: usize = 3;

/// One frame as the tracker sees it.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo<'a> {
    pub camera: &'a str,
    /// Monotonic capture time: gaps are measured on it.
    pub at: Instant,
    /// Wall-clock capture time, reported with the read.
    pub captured_at: SystemTime,
    pub clock_synced: bool,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug)]
pub struct Tracker {
    cfg: TrackingConfig,
    tracks: Vec<Track>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Track {
    camera: String,
    last_box: PlateBox,
    last_seen: Instant,
    /// Frames of this camera since the track was last matched (0: seen in the previous frame).
    missed: u32,
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
    clock_synced: bool,
    bbox: PlateBox,
    frame_w: u32,
    frame_h: u32,
    crop: image::RgbImage,
}

/// Why a pass ended without a read (counted in `Metrics::passes_dropped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Noise,
    LowConfidence,
    Implausible,
}

impl DropReason {
    /// What the log and `platecam recognize` say about it.
    pub fn describe(self) -> &'static str {
        match self {
            DropReason::Noise => "noise: seen on fewer than tracking.min_frames",
            DropReason::LowConfidence => "voted confidence under tracking.min_confidence",
            DropReason::Implausible => "not plate-like: too few characters or no digit",
        }
    }
}

/// The pass rule: whether a (voted) read looks like a plate rather than other text, per
/// `TrackingConfig`. The tracker applies it to every pass; `platecam recognize` to each read of
/// a still photo, so both say the same about a read.
pub fn plausible(cfg: &TrackingConfig, plate: &str, confidence: f32) -> Result<(), DropReason> {
    if confidence < cfg.min_confidence {
        Err(DropReason::LowConfidence)
    } else if plate.chars().count() < cfg.min_chars
        || (cfg.require_digit && !plate.chars().any(|c| c.is_ascii_digit()))
    {
        Err(DropReason::Implausible)
    } else {
        Ok(())
    }
}

impl Tracker {
    pub fn new(cfg: TrackingConfig, metrics: Arc<Metrics>) -> Tracker {
        Tracker {
            cfg,
            tracks: Vec::new(),
            metrics,
        }
    }

    /// Adds one frame's detections; returns the reads of the tracks that this frame's time ends.
    pub fn push(&mut self, frame: FrameInfo<'_>, detections: Vec<Detection>) -> Vec<PlateRead> {
        let max_gap = self.cfg.max_gap;
        let (ended, open): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.tracks)
            .into_iter()
            .partition(|t| frame.at.saturating_duration_since(t.last_seen) > max_gap);
        self.tracks = open;

        // Candidate pairs: overlapping ones first (best IoU first), then near ones (closest first).
        let mut pairs: Vec<(u8, f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            if t.camera != frame.camera {
                continue;
            }
            for (di, d) in detections.iter().enumerate() {
                if !t.may_be(d) {
                    continue;
                }
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
        for (t, taken) in self.tracks.iter_mut().zip(&track_taken) {
            if t.camera == frame.camera && !taken {
                t.missed = t.missed.saturating_add(1);
            }
        }
        for (d, slot) in detections.into_iter().zip(assigned) {
            match slot {
                Some(ti) => self.tracks[ti].add(d, &frame),
                None => self.tracks.push(Track::new(d, &frame)),
            }
        }
        self.finish(ended)
    }

    /// Ends every open track (shutdown, end of a replay).
    pub fn flush(&mut self) -> Vec<PlateRead> {
        let all = std::mem::take(&mut self.tracks);
        self.finish(all)
    }

    /// Turns ended tracks into reads; every pass that gives none is logged (debug) and counted.
    fn finish(&self, tracks: Vec<Track>) -> Vec<PlateRead> {
        let mut reads = Vec::new();
        for t in tracks {
            let camera = t.camera.clone();
            let frames = t.areas.len() as u32;
            let outcome = if frames < self.cfg.min_frames {
                Err((DropReason::Noise, None))
            } else {
                match t.into_read(self.cfg.candidates) {
                    None => Err((DropReason::Implausible, None)),
                    Some(r) => match plausible(&self.cfg, &r.plate, r.confidence) {
                        Ok(()) => Ok(r),
                        Err(why) => Err((why, Some(r))),
                    },
                }
            };
            let (why, read) = match outcome {
                Ok(r) => {
                    reads.push(r);
                    continue;
                }
                Err(e) => e,
            };
            let drops = &self.metrics.passes_dropped;
            let counter = match why {
                DropReason::Noise => &drops.noise,
                DropReason::LowConfidence => &drops.low_confidence,
                DropReason::Implausible => &drops.implausible,
            };
            counter.fetch_add(1, Relaxed);
            let reason = why.describe();
            tracing::debug!(
                %camera,
                frames,
                plate = read.as_ref().map_or("", |r| r.plate.as_str()),
                confidence = read.as_ref().map_or(0.0, |r| r.confidence),
                reason,
                "pass dropped"
            );
        }
        reads
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
    fn new(d: Detection, frame: &FrameInfo<'_>) -> Track {
        let mut t = Track {
            camera: frame.camera.into(),
            last_box: d.bbox,
            last_seen: frame.at,
            missed: 0,
            areas: Vec::new(),
            votes: Vec::new(),
            alphabet: d.text.alphabet.clone(),
            pad: d.text.pad,
            best: Best {
                confidence: f32::NEG_INFINITY,
                captured_at: frame.captured_at,
                clock_synced: frame.clock_synced,
                bbox: d.bbox,
                frame_w: frame.width,
                frame_h: frame.height,
                crop: image::RgbImage::new(0, 0),
            },
        };
        t.add(d, frame);
        t
    }

    /// Whether `d` could be this track's plate: of a similar size and reading the same text.
    fn may_be(&self, d: &Detection) -> bool {
        let (a, b) = (self.last_box.w.max(1.0), d.bbox.w.max(1.0));
        if a.max(b) > MAX_SIZE_JUMP * a.min(b) {
            return false;
        }
        let limit = if self.missed == 0 {
            CONTINUOUS_DISAGREEMENT
        } else {
            REACQUIRE_DISAGREEMENT
        };
        self.disagreement(d) <= limit
    }

    /// How confidently `d` reads another text than the track's vote so far: over the slots where
    /// the two disagree, the sum of the lower of their two probabilities. One character read
    /// differently with confidence ~0.9 on both sides gives ~0.9; a blurred character, ~0.
    fn disagreement(&self, d: &Detection) -> f32 {
        if self.alphabet != d.text.alphabet {
            return f32::INFINITY;
        }
        self.votes
            .iter()
            .zip(&d.text.slots)
            .filter_map(|(votes, probs)| {
                let sum: f32 = votes.iter().sum();
                let (ti, tv) = argmax(votes)?;
                let (di, dp) = argmax(probs)?;
                let tp = if sum > 0.0 { tv / sum } else { 0.0 };
                (ti != di).then_some(tp.min(dp))
            })
            .sum()
    }

    fn add(&mut self, d: Detection, frame: &FrameInfo<'_>) {
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
        self.last_seen = frame.at;
        self.missed = 0;
        if d.text.confidence > self.best.confidence {
            self.best = Best {
                confidence: d.text.confidence,
                captured_at: frame.captured_at,
                clock_synced: frame.clock_synced,
                bbox: d.bbox,
                frame_w: frame.width,
                frame_h: frame.height,
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
            clock_synced: b.clock_synced,
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

    fn wall(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms)
    }

    /// A 1920x1080 frame of camera "cam", `ms` into the test's timeline.
    fn at(ms: u64) -> FrameInfo<'static> {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        FrameInfo {
            camera: "cam",
            at: *START.get_or_init(Instant::now) + Duration::from_millis(ms),
            captured_at: wall(ms),
            clock_synced: true,
            width: 1920,
            height: 1080,
        }
    }

    /// A tracker without the confidence floor: these tests vote with made-up probabilities.
    fn tracker() -> Tracker {
        Tracker::new(
            TrackingConfig {
                min_confidence: 0.0,
                ..TrackingConfig::default()
            },
            Arc::default(),
        )
    }

    #[test]
    fn votes_over_a_noisy_frame() {
        let mut t = tracker();
        let texts = ["AB123CD", "AB123CD", "A8I23C", "AB123CD", "AB123CD"];
        for (i, text) in texts.iter().enumerate() {
            let p = if i == 2 { 0.95 } else { 0.7 };
            let reads = t.push(
                at(i as u64 * 100),
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
        assert_eq!(r.captured_at, wall(200));
        assert!(r.clock_synced);
        assert_eq!(r.direction, Direction::Stationary);
    }

    #[test]
    fn the_read_says_whether_the_clock_of_its_best_frame_was_synced() {
        let mut t = tracker();
        let unsynced = FrameInfo {
            clock_synced: false,
            ..at(0)
        };
        t.push(unsynced, vec![det("AB123CD", 0.95, 500.0, 100.0)]);
        t.push(at(100), vec![det("AB123CD", 0.7, 500.0, 100.0)]);
        let reads = t.flush();
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].captured_at, wall(0));
        assert!(!reads[0].clock_synced);
    }

    #[test]
    fn a_wall_clock_jump_neither_ends_nor_stretches_a_pass() {
        // NTP sets a clock that booted in 1970: years forward between two frames 100 ms apart.
        let mut t = tracker();
        let set = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let frames = [
            at(0),
            at(100),
            FrameInfo {
                captured_at: set,
                ..at(200)
            },
        ];
        for f in frames {
            assert!(t
                .push(f, vec![det("AB123CD", 0.9, 500.0, 100.0)])
                .is_empty());
        }
        // ... and back again: the monotonic gap (200 ms) is what counts, not the wall's.
        let back = FrameInfo {
            captured_at: wall(0),
            ..at(300)
        };
        assert!(t.push(back, vec![]).is_empty());
        let reads = t.flush();
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].frames_seen, 3);
    }

    #[test]
    fn two_plates_in_the_same_frames_give_two_reads() {
        let mut t = tracker();
        for i in 0..4u64 {
            let dx = 15.0 * i as f32;
            t.push(
                at(i * 100),
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
            .push(at(0), vec![det("AAA111", 0.9, 100.0, 100.0)])
            .is_empty());
        assert!(t
            .push(at(100), vec![det("AAA111", 0.9, 110.0, 100.0)])
            .is_empty());
        // Within max_gap (700 ms): nothing yet.
        assert!(t.push(at(700), vec![]).is_empty());
        let reads = t.push(at(900), vec![det("CCC333", 0.9, 110.0, 100.0)]);
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].plate, "AAA111");
        assert_eq!(reads[0].frames_seen, 2);
        let rest = t.flush();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].plate, "CCC333");
    }

    /// Plates shown `hold` frames each at the same place, with `gap` empty frames between them
    /// (100 ms apart, so every gap is well within `max_gap`), then flushed.
    fn in_a_row(t: &mut Tracker, plates: &[(&str, f32)], hold: u64, gap: u64) -> Vec<PlateRead> {
        let mut reads = Vec::new();
        let mut ms = 0;
        for (plate, width) in plates {
            for _ in 0..hold {
                reads.extend(t.push(at(ms), vec![det(plate, 0.92, 500.0, *width)]));
                ms += 100;
            }
            for _ in 0..gap {
                reads.extend(t.push(at(ms), vec![]));
                ms += 100;
            }
        }
        reads.extend(t.flush());
        reads
    }

    #[test]
    fn similar_plates_in_a_row_at_one_place_give_one_read_each() {
        let metrics = Arc::new(Metrics::default());
        // The default config, confidence floor included.
        let mut t = Tracker::new(TrackingConfig::default(), metrics.clone());
        let plates = [("AB123CD", 100.0), ("AB128CD", 100.0), ("XY555ZZ", 100.0)];
        let reads = in_a_row(&mut t, &plates, 4, 4);
        let got: Vec<&str> = reads.iter().map(|r| r.plate.as_str()).collect();
        assert_eq!(got, ["AB123CD", "AB128CD", "XY555ZZ"]);
        assert!(reads
            .iter()
            .all(|r| r.frames_seen == 4 && r.confidence > 0.9));
        let drops = &metrics.passes_dropped;
        assert_eq!(drops.low_confidence.load(Relaxed), 0);

        // Back to back, no empty frame between: a wholly different plate is still another pass.
        let mut t = Tracker::new(TrackingConfig::default(), Arc::default());
        let reads = in_a_row(&mut t, &[("AB123CD", 100.0), ("XY555ZZ", 100.0)], 3, 0);
        let got: Vec<&str> = reads.iter().map(|r| r.plate.as_str()).collect();
        assert_eq!(got, ["AB123CD", "XY555ZZ"]);
    }

    #[test]
    fn a_box_size_jump_starts_another_pass() {
        let mut t = tracker();
        let reads = in_a_row(&mut t, &[("AB123CD", 100.0), ("AB123CD", 260.0)], 2, 0);
        assert_eq!(reads.len(), 2, "{reads:?}");
        // An approaching plate grows a little each frame: one pass.
        let mut t = tracker();
        let widths = [100.0, 110.0, 121.0, 133.0, 146.0, 160.0];
        for (i, w) in widths.iter().enumerate() {
            t.push(at(i as u64 * 100), vec![det("AB123CD", 0.9, 500.0, *w)]);
        }
        assert_eq!(t.flush().len(), 1);
    }

    #[test]
    fn direction_follows_box_area() {
        let run = |widths: &[f32]| {
            let mut t = tracker();
            for (i, w) in widths.iter().enumerate() {
                t.push(at(i as u64 * 100), vec![det("AAA111", 0.9, 500.0, *w)]);
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
        let metrics = Arc::new(Metrics::default());
        for cfg in [cfg, strict] {
            let mut t = Tracker::new(cfg, metrics.clone());
            t.push(at(0), vec![det("AAA111", 0.9, 100.0, 100.0)]);
            assert!(t.flush().is_empty());
        }
        let drops = &metrics.passes_dropped;
        assert_eq!(drops.noise.load(Relaxed), 1);
        assert_eq!(drops.low_confidence.load(Relaxed), 1);
        let lenient = TrackingConfig {
            min_confidence: 0.0,
            ..TrackingConfig::default()
        };
        let mut t = Tracker::new(lenient.clone(), metrics.clone());
        t.push(at(0), vec![det("", 0.9, 100.0, 100.0)]);
        assert!(t.flush().is_empty());
        // Sign text: no digit, or too short.
        for text in ["ARKANSAS", "K9V"] {
            let mut t = Tracker::new(lenient.clone(), metrics.clone());
            t.push(at(0), vec![det(text, 0.99, 100.0, 100.0)]);
            assert!(t.flush().is_empty(), "{text} is not a plausible plate");
        }
        assert_eq!(drops.implausible.load(Relaxed), 3);
    }
}
