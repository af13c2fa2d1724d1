//! Plate detectors: our own centre-grid detector, and YOLO with NMS in the graph.

use std::path::Path;
use std::sync::Mutex;

use image::RgbImage;

use super::engine::{Input, InputType, ModelFile, OnnxModel, Output, Quantized};
use super::manifest::Manifest;
use super::preprocess::{fill, Fit, Layout, Placement, Rect, Target};
use super::{PlateBox, RecognizeError};

/// How the detector's output is decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decoder {
    /// Ours: a [1,5,H/stride,W/stride] map of centre probability, offset and log size.
    Grid { stride: u32, nms_iou: f32 },
    /// open-image-models YOLO end2end: rows `[batch, x1, y1, x2, y2, class, score]`.
    YoloEnd2end,
}

#[derive(Debug)]
pub struct Detector {
    model: OnnxModel,
    target: Target,
    fit: Fit,
    decoder: Decoder,
    score_threshold: f32,
    /// Input buffer reused across frames (the detector runs on every frame).
    buf: Mutex<Vec<f32>>,
}

impl Detector {
    pub fn platecam(
        m: &Manifest,
        score_threshold: Option<f32>,
        q: Quantized,
    ) -> Result<Detector, RecognizeError> {
        let d = &m.detector;
        let target = d.input.target();
        Detector::new(
            &m.detector_file(),
            target,
            Fit::Letterbox {
                centred: false,
                pad: d.pad * 255.0,
            },
            Decoder::Grid {
                stride: d.stride,
                nms_iou: d.nms_iou,
            },
            score_threshold.unwrap_or(d.score_threshold),
            q,
        )
    }

    /// YOLO end2end at 416x416, letterboxed centred with grey 114 as in its training.
    pub fn yolo_end2end(
        path: &Path,
        score_threshold: Option<f32>,
        q: Quantized,
    ) -> Result<Detector, RecognizeError> {
        let target = Target {
            width: 416,
            height: 416,
            channels: 3,
            layout: Layout::Nchw,
            antialias: false,
        };
        let fit = Fit::Letterbox {
            centred: true,
            pad: 114.0,
        };
        // 0.4: fast-alpr's default confidence for this detector.
        let threshold = score_threshold.unwrap_or(0.4);
        Detector::new(
            &ModelFile::unchecked(path),
            target,
            fit,
            Decoder::YoloEnd2end,
            threshold,
            q,
        )
    }

    fn new(
        file: &ModelFile,
        target: Target,
        fit: Fit,
        decoder: Decoder,
        score_threshold: f32,
        q: Quantized,
    ) -> Result<Detector, RecognizeError> {
        let model = OnnxModel::load(file, &target.shape(), InputType::F32, q)?;
        Ok(Detector {
            model,
            target,
            fit,
            decoder,
            score_threshold,
            buf: Mutex::new(Vec::with_capacity(target.len())),
        })
    }

    pub fn sha256(&self) -> &str {
        self.model.sha256()
    }

    /// Every plate in the frame, in frame pixels, best first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<PlateBox>, RecognizeError> {
        let outputs;
        let placement;
        {
            // A poisoned lock only means another frame panicked mid-fill; the buffer is refilled.
            let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
            placement = fill(img, Rect::whole(img), &self.target, self.fit, &mut buf);
            outputs = self.model.run(Input::F32(&buf))?;
        }
        let (fw, fh) = (img.width() as f32, img.height() as f32);
        let first = outputs
            .first()
            .ok_or_else(|| self.shape_err("an output", "none"))?;
        let boxes = match self.decoder {
            Decoder::Grid { stride, nms_iou } => {
                let (gh, gw) = (
                    self.target.height / stride as usize,
                    self.target.width / stride as usize,
                );
                if first.shape != [1, 5, gh, gw] {
                    return Err(self.shape_err(
                        &format!("[1, 5, {gh}, {gw}]"),
                        &format!("{:?}", first.shape),
                    ));
                }
                let raw = decode_grid(&first.data, gw, gh, stride as f32, self.score_threshold);
                let boxes = raw
                    .into_iter()
                    .map(|b| unplace(b, &placement, fw, fh))
                    .collect();
                nms(boxes, nms_iou)
            }
            Decoder::YoloEnd2end => self.decode_yolo(first, &placement, fw, fh)?,
        };
        Ok(boxes
            .into_iter()
            .filter(|b| b.w >= 1.0 && b.h >= 1.0)
            .collect())
    }

    fn decode_yolo(
        &self,
        out: &Output,
        placement: &Placement,
        fw: f32,
        fh: f32,
    ) -> Result<Vec<PlateBox>, RecognizeError> {
        // Rows of 7, whatever the leading dims ([n, 7] in the published export).
        if out.shape.last() != Some(&7) {
            return Err(self.shape_err("[n, 7]", &format!("{:?}", out.shape)));
        }
        let mut boxes: Vec<PlateBox> = out
            .data
            .chunks_exact(7)
            .filter(|r| r[6] >= self.score_threshold)
            .map(|r| {
                let b = PlateBox {
                    x: r[1],
                    y: r[2],
                    w: r[3] - r[1],
                    h: r[4] - r[2],
                    score: r[6],
                };
                unplace(b, placement, fw, fh)
            })
            .collect();
        boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(boxes)
    }

    fn shape_err(&self, expected: &str, actual: &str) -> RecognizeError {
        RecognizeError::Shape {
            path: self.model.path().to_path_buf(),
            what: "detector output",
            expected: expected.into(),
            actual: actual.into(),
        }
    }
}

/// Model-input box -> frame box, clipped to the frame.
fn unplace(b: PlateBox, p: &Placement, fw: f32, fh: f32) -> PlateBox {
    let (x0, y0) = p.source_point(b.x, b.y);
    let (x1, y1) = p.source_point(b.x + b.w, b.y + b.h);
    let (x0, y0) = (x0.clamp(0.0, fw), y0.clamp(0.0, fh));
    let (x1, y1) = (x1.clamp(0.0, fw), y1.clamp(0.0, fh));
    PlateBox {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
        score: b.score,
    }
}

/// Decodes our grid output (`data` = [5, gh, gw]) into boxes in model-input pixels.
/// A cell counts when its probability reaches `threshold` and is the maximum of its 3x3
/// neighbourhood, so one plate spanning neighbouring cells gives one box.
pub fn decode_grid(
    data: &[f32],
    gw: usize,
    gh: usize,
    stride: f32,
    threshold: f32,
) -> Vec<PlateBox> {
    let plane = gw * gh;
    let at = |c: usize, y: usize, x: usize| data[c * plane + y * gw + x];
    let mut boxes = Vec::new();
    for gy in 0..gh {
        for gx in 0..gw {
            let p = at(0, gy, gx);
            if p < threshold || p.is_nan() {
                continue;
            }
            let is_peak = (gy.saturating_sub(1)..(gy + 2).min(gh))
                .flat_map(|y| (gx.saturating_sub(1)..(gx + 2).min(gw)).map(move |x| (y, x)))
                .all(|(y, x)| at(0, y, x) <= p);
            if !is_peak {
                continue;
            }
            let cx = (gx as f32 + at(1, gy, gx)) * stride;
            let cy = (gy as f32 + at(2, gy, gx)) * stride;
            let w = at(3, gy, gx).exp() * stride;
            let h = at(4, gy, gx).exp() * stride;
            boxes.push(PlateBox {
                x: cx - w / 2.0,
                y: cy - h / 2.0,
                w,
                h,
                score: p,
            });
        }
    }
    boxes
}

pub fn iou(a: &PlateBox, b: &PlateBox) -> f32 {
    let ix = ((a.x + a.w).min(b.x + b.w) - a.x.max(b.x)).max(0.0);
    let iy = ((a.y + a.h).min(b.y + b.h) - a.y.max(b.y)).max(0.0);
    let inter = ix * iy;
    let union = a.w * a.h + b.w * b.h - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Greedy non-maximum suppression: best first, drop boxes overlapping a kept one above `max_iou`.
pub fn nms(mut boxes: Vec<PlateBox>, max_iou: f32) -> Vec<PlateBox> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<PlateBox> = Vec::with_capacity(boxes.len());
    for b in boxes {
        if kept.iter().all(|k| iou(k, &b) <= max_iou) {
            kept.push(b);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A [5, gh, gw] map with plates at the given (gx, gy, p, dx, dy, w, h) cells.
    fn grid(
        gw: usize,
        gh: usize,
        stride: f32,
        plates: &[(usize, usize, f32, f32, f32, f32, f32)],
    ) -> Vec<f32> {
        let plane = gw * gh;
        let mut d = vec![0.0; 5 * plane];
        for &(gx, gy, p, dx, dy, w, h) in plates {
            let i = gy * gw + gx;
            d[i] = p;
            d[plane + i] = dx;
            d[2 * plane + i] = dy;
            d[3 * plane + i] = (w / stride).ln();
            d[4 * plane + i] = (h / stride).ln();
        }
        d
    }

    #[test]
    fn grid_decodes_centre_and_size() {
        let d = grid(8, 6, 8.0, &[(3, 2, 0.9, 0.5, 0.25, 40.0, 10.0)]);
        let b = decode_grid(&d, 8, 6, 8.0, 0.5);
        assert_eq!(b.len(), 1);
        let b = b[0];
        assert!((b.x + b.w / 2.0 - 28.0).abs() < 1e-4);
        assert!((b.y + b.h / 2.0 - 18.0).abs() < 1e-4);
        assert!((b.w - 40.0).abs() < 1e-3 && (b.h - 10.0).abs() < 1e-3);
        assert_eq!(b.score, 0.9);
    }

    #[test]
    fn grid_keeps_only_local_maxima_above_threshold() {
        let d = grid(
            8,
            6,
            8.0,
            &[
                (3, 2, 0.9, 0.5, 0.5, 40.0, 10.0),
                (4, 2, 0.7, 0.5, 0.5, 40.0, 10.0), // neighbour of a stronger peak
                (7, 5, 0.8, 0.5, 0.5, 16.0, 8.0),  // a second plate
                (0, 5, 0.3, 0.5, 0.5, 16.0, 8.0),  // below threshold
            ],
        );
        let b = decode_grid(&d, 8, 6, 8.0, 0.5);
        let scores: Vec<f32> = b.iter().map(|b| b.score).collect();
        assert_eq!(scores, vec![0.9, 0.8]);
    }

    #[test]
    fn nms_drops_overlaps_and_keeps_separate_boxes() {
        let b = |x: f32, s: f32| PlateBox {
            x,
            y: 0.0,
            w: 10.0,
            h: 10.0,
            score: s,
        };
        let kept = nms(vec![b(0.0, 0.6), b(1.0, 0.9), b(50.0, 0.5)], 0.5);
        let xs: Vec<f32> = kept.iter().map(|b| b.x).collect();
        assert_eq!(xs, vec![1.0, 50.0]);
    }

    #[test]
    fn unplace_undoes_top_left_letterbox_and_clips() {
        let p = Placement {
            origin_x: 0.0,
            origin_y: 0.0,
            scale_x: 0.5,
            scale_y: 0.5,
            off_x: 0.0,
            off_y: 0.0,
        };
        let b = PlateBox {
            x: 10.0,
            y: 10.0,
            w: 500.0,
            h: 20.0,
            score: 1.0,
        };
        let f = unplace(b, &p, 600.0, 400.0);
        assert_eq!((f.x, f.y, f.w, f.h), (20.0, 20.0, 580.0, 40.0));
    }
}
