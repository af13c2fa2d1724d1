//! Fixed-slot plate OCR: our own, and fast-plate-ocr. Both output [1, slots, alphabet]
//! probabilities, read per slot by argmax with the padding symbol dropped.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;

use super::engine::{Input, InputType, ModelFile, OnnxModel, Quantized};
use super::manifest::{Manifest, PlateConfig};
use super::preprocess::{fill, Fit, Layout, Rect, Target};
use super::{CharProb, PlateBox, PlateText, RecognizeError};

#[derive(Debug)]
pub struct Ocr {
    model: OnnxModel,
    target: Target,
    input_type: InputType,
    fit: Fit,
    alphabet: Arc<[char]>,
    pad: char,
    slots: usize,
    crop_margin: f32,
    /// Reads under this confidence are no plate (our manifest's `ocr.min_confidence`).
    min_confidence: f32,
}

impl Ocr {
    pub fn platecam(m: &Manifest, q: Quantized) -> Result<Ocr, RecognizeError> {
        let o = &m.ocr;
        let target = o.input.target();
        let model = OnnxModel::load(&m.ocr_file(), &target.shape(), InputType::F32, q)?;
        Ok(Ocr {
            model,
            target,
            input_type: InputType::F32,
            fit: Fit::Stretch,
            alphabet: o.alphabet.chars().collect(),
            pad: o.pad_char,
            slots: o.slots,
            crop_margin: o.crop_margin,
            min_confidence: o.min_confidence,
        })
    }

    /// fast-plate-ocr: u8 NHWC input (the model rescales inside), geometry from its YAML.
    pub fn fast_plate_ocr(path: &Path, config: &Path, q: Quantized) -> Result<Ocr, RecognizeError> {
        let c = PlateConfig::load(config)?;
        let target = Target {
            width: c.img_width,
            height: c.img_height,
            channels: c.channels().unwrap_or(3),
            layout: Layout::Nhwc,
            antialias: false,
        };
        let fit = if c.keep_aspect_ratio {
            Fit::Letterbox {
                centred: true,
                pad: 114.0,
            }
        } else {
            Fit::Stretch
        };
        let model = OnnxModel::load(
            &ModelFile::unchecked(path),
            &target.shape(),
            InputType::U8,
            q,
        )?;
        Ok(Ocr {
            model,
            target,
            input_type: InputType::U8,
            fit,
            alphabet: c.alphabet.chars().collect(),
            pad: c.pad_char,
            slots: c.max_plate_slots,
            // fast-alpr feeds the detector's box as is.
            crop_margin: 0.0,
            min_confidence: 0.0,
        })
    }

    pub fn sha256(&self) -> &str {
        self.model.sha256()
    }

    /// The region the OCR reads for a detector box: the box plus the margin, clipped to the
    /// frame, on whole pixels (so it is also the stored crop).
    pub fn crop_rect(&self, b: &PlateBox, fw: u32, fh: u32) -> Rect {
        let (mx, my) = (b.w * self.crop_margin, b.h * self.crop_margin);
        let x0 = (b.x - mx).floor().clamp(0.0, fw as f32);
        let y0 = (b.y - my).floor().clamp(0.0, fh as f32);
        let x1 = (b.x + b.w + mx).ceil().clamp(0.0, fw as f32);
        let y1 = (b.y + b.h + my).ceil().clamp(0.0, fh as f32);
        Rect {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
        }
    }

    /// Whether a detector box read as `t` counts as a plate (the model's confidence floor).
    pub fn is_plate(&self, t: &PlateText) -> bool {
        t.confidence >= self.min_confidence
    }

    /// Reads `region` of `img`.
    pub fn read(&self, img: &RgbImage, region: Rect) -> Result<PlateText, RecognizeError> {
        let outputs = match self.input_type {
            InputType::F32 => {
                let mut buf = Vec::<f32>::new();
                fill(img, region, &self.target, self.fit, &mut buf);
                self.model.run(Input::F32(&buf))?
            }
            InputType::U8 => {
                let mut buf = Vec::<u8>::new();
                fill(img, region, &self.target, self.fit, &mut buf);
                self.model.run(Input::U8(&buf))?
            }
        };
        let want = [1, self.slots, self.alphabet.len()];
        // fast-plate-ocr v2 has a second output (`region`): take the one shaped like plates.
        let out =
            outputs
                .iter()
                .find(|o| o.shape == want)
                .ok_or_else(|| RecognizeError::Shape {
                    path: self.model.path().to_path_buf(),
                    what: "OCR output",
                    expected: format!("{want:?}"),
                    actual: format!("{:?}", outputs.iter().map(|o| &o.shape).collect::<Vec<_>>()),
                })?;
        let slots = out
            .data
            .chunks_exact(self.alphabet.len())
            .map(<[f32]>::to_vec)
            .collect();
        Ok(decode_slots(slots, self.alphabet.clone(), self.pad))
    }
}

/// Per slot argmax; padding dropped; confidence = mean probability of the kept characters.
pub fn decode_slots(slots: Vec<Vec<f32>>, alphabet: Arc<[char]>, pad: char) -> PlateText {
    let chars: Vec<CharProb> = slots
        .iter()
        .filter_map(|s| {
            let (i, p) = argmax(s)?;
            let c = *alphabet.get(i)?;
            (c != pad).then_some(CharProb { c, p })
        })
        .collect();
    let confidence = mean(chars.iter().map(|c| c.p));
    PlateText {
        text: chars.iter().map(|c| c.c).collect(),
        confidence,
        chars,
        slots,
        alphabet,
        pad,
    }
}

pub(crate) fn argmax(v: &[f32]) -> Option<(usize, f32)> {
    v.iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Mean, 0 for no values.
pub(crate) fn mean(values: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_drops_pad_and_averages_kept() {
        let alphabet: Arc<[char]> = "AB_".chars().collect();
        let t = decode_slots(
            vec![
                vec![0.8, 0.1, 0.1],
                vec![0.1, 0.6, 0.3],
                vec![0.0, 0.1, 0.9],
            ],
            alphabet,
            '_',
        );
        assert_eq!(t.text, "AB");
        assert!((t.confidence - 0.7).abs() < 1e-6);
        assert_eq!(t.chars.len(), 2);
    }
}
