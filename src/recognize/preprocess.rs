//! Image -> model input, shared by every detector and OCR format: crop a region, resize it
//! (stretched or letterboxed) with bilinear sampling, convert to grey or RGB, and write it as
//! NCHW or NHWC in f32 (pixel/255) or u8.
//!
//! A direct, separable sampling loop over only the pixels the target needs, so it costs far less
//! than converting or resizing the whole frame first. A model is fed the way it was trained:
//! plain 2-tap bilinear (OpenCV's `INTER_LINEAR`, the community models) or, with `antialias`,
//! a triangle filter widened to the source footprint when shrinking (PIL's `BILINEAR`, ours);
//! shrinking a 1080p frame 3x without it aliases plate characters the model never saw.

use image::RgbImage;

/// A region of the source image, in source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    pub fn whole(img: &RgbImage) -> Rect {
        Rect {
            x: 0.0,
            y: 0.0,
            w: img.width() as f32,
            h: img.height() as f32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Shape and layout of a model input (batch 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub layout: Layout,
    /// Average over the source footprint when shrinking (see the module comment).
    pub antialias: bool,
}

impl Target {
    pub fn shape(&self) -> Vec<usize> {
        match self.layout {
            Layout::Nchw => vec![1, self.channels, self.height, self.width],
            Layout::Nhwc => vec![1, self.height, self.width, self.channels],
        }
    }

    pub fn len(&self) -> usize {
        self.width * self.height * self.channels
    }
}

/// How the region is fitted into the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fit {
    /// Resize to the full target, ignoring aspect ratio.
    Stretch,
    /// Keep aspect ratio; place the image top-left or centred; fill the rest with `pad`
    /// (on the 0..255 scale).
    Letterbox { centred: bool, pad: f32 },
}

/// Where the region landed in the target: `target = (source - region origin) * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub origin_x: f32,
    pub origin_y: f32,
    pub scale_x: f32,
    pub scale_y: f32,
    pub off_x: f32,
    pub off_y: f32,
}

impl Placement {
    /// Maps a point of the model input back to source pixels.
    pub fn source_point(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.off_x) / self.scale_x + self.origin_x,
            (y - self.off_y) / self.scale_y + self.origin_y,
        )
    }
}

/// An element type a model takes; values arrive on the 0..255 scale.
pub trait Sample: Copy + Default {
    fn from_255(v: f32) -> Self;
}

impl Sample for f32 {
    #[inline]
    fn from_255(v: f32) -> f32 {
        v * (1.0 / 255.0)
    }
}

impl Sample for u8 {
    #[inline]
    fn from_255(v: f32) -> u8 {
        v.round().clamp(0.0, 255.0) as u8
    }
}

/// Samples `region` of `img` into `out` (resized to the target's length, reusing its capacity).
pub fn fill<T: Sample>(
    img: &RgbImage,
    region: Rect,
    target: &Target,
    fit: Fit,
    out: &mut Vec<T>,
) -> Placement {
    let (tw, th) = (target.width, target.height);
    let region = Rect {
        w: region.w.max(1.0),
        h: region.h.max(1.0),
        ..region
    };
    let (sx, sy, new_w, new_h, off_x, off_y, pad) = match fit {
        Fit::Stretch => (
            tw as f32 / region.w,
            th as f32 / region.h,
            tw,
            th,
            0,
            0,
            0.0,
        ),
        Fit::Letterbox { centred, pad } => {
            let s = (tw as f32 / region.w).min(th as f32 / region.h);
            let nw = ((region.w * s).round() as usize).clamp(1, tw);
            let nh = ((region.h * s).round() as usize).clamp(1, th);
            let (ox, oy) = if centred {
                ((tw - nw) / 2, (th - nh) / 2)
            } else {
                (0, 0)
            };
            (s, s, nw, nh, ox, oy, pad)
        }
    };
    out.clear();
    out.resize(target.len(), T::from_255(pad));

    let (iw, ih) = (img.width() as usize, img.height() as usize);
    if iw == 0 || ih == 0 {
        return placement(region, sx, sy, off_x, off_y);
    }
    let raw = img.as_raw();
    let cols = taps(region.x, sx, new_w, iw, target.antialias);
    let rows = taps(region.y, sy, new_h, ih, target.antialias);
    // The source columns any target column reads, and one source-width line of RGB reused per row.
    let c_lo = cols.iter().flatten().map(|&(i, _)| i).min().unwrap_or(0);
    let c_hi = cols.iter().flatten().map(|&(i, _)| i).max().unwrap_or(0);
    let mut line = vec![0f32; (c_hi + 1 - c_lo) * 3];
    let plane = tw * th;
    for (y, row_taps) in rows.iter().enumerate() {
        // vertical pass: blend the source rows of this target row
        line.iter_mut().for_each(|v| *v = 0.0);
        for &(r, wy) in row_taps {
            let src = &raw[(r * iw + c_lo) * 3..(r * iw + c_hi + 1) * 3];
            for (l, &p) in line.iter_mut().zip(src) {
                *l += wy * p as f32;
            }
        }
        // horizontal pass
        let ty = y + off_y;
        for (x, col_taps) in cols.iter().enumerate() {
            let mut rgb = [0f32; 3];
            for &(c, wx) in col_taps {
                let o = (c - c_lo) * 3;
                for (v, &l) in rgb.iter_mut().zip(&line[o..o + 3]) {
                    *v += wx * l;
                }
            }
            let pixel = ty * tw + x + off_x;
            match (target.channels, target.layout) {
                (1, _) => {
                    out[pixel] = T::from_255(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]);
                }
                (_, Layout::Nchw) => {
                    for (c, v) in rgb.iter().enumerate() {
                        out[c * plane + pixel] = T::from_255(*v);
                    }
                }
                (_, Layout::Nhwc) => {
                    for (c, v) in rgb.iter().enumerate() {
                        out[pixel * 3 + c] = T::from_255(*v);
                    }
                }
            }
        }
    }
    placement(region, sx, sy, off_x, off_y)
}

fn placement(region: Rect, sx: f32, sy: f32, off_x: usize, off_y: usize) -> Placement {
    Placement {
        origin_x: region.x,
        origin_y: region.y,
        scale_x: sx,
        scale_y: sy,
        off_x: off_x as f32,
        off_y: off_y as f32,
    }
}

/// Per target index along one axis: the source indices it reads and their weights (summing to 1).
/// A triangle filter of radius 1 source pixel (bilinear), or 1/scale when shrinking with
/// `antialias`; source indices are clamped to the image.
fn taps(origin: f32, scale: f32, n: usize, len: usize, antialias: bool) -> Vec<Vec<(usize, f32)>> {
    let radius = if antialias {
        (1.0 / scale).max(1.0)
    } else {
        1.0
    };
    (0..n)
        .map(|t| {
            // source coordinate of the target pixel's centre, in pixel-centre units
            let c = (origin + (t as f32 + 0.5) / scale - 0.5).clamp(0.0, (len - 1) as f32);
            let lo = (c - radius).ceil().max(0.0) as usize;
            let hi = ((c + radius).floor() as usize).min(len - 1);
            let mut w: Vec<(usize, f32)> = (lo..=hi)
                .map(|i| (i, 1.0 - (i as f32 - c).abs() / radius))
                .filter(|&(_, w)| w > 0.0)
                .collect();
            // the index nearest to c weighs at least 1/2, so the sum is never 0
            let sum: f32 = w.iter().map(|&(_, w)| w).sum();
            w.iter_mut().for_each(|(_, v)| *v /= sum);
            w
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_top_left_pads_and_maps_back() {
        let img = RgbImage::from_pixel(200, 100, image::Rgb([255, 0, 0]));
        let t = Target {
            width: 100,
            height: 100,
            channels: 3,
            layout: Layout::Nchw,
            antialias: false,
        };
        let mut out = Vec::<f32>::new();
        let fit = Fit::Letterbox {
            centred: false,
            pad: 127.5,
        };
        let p = fill(&img, Rect::whole(&img), &t, fit, &mut out);
        assert_eq!(out.len(), 30000);
        assert!((out[0] - 1.0).abs() < 1e-6); // red, inside
        assert!((out[10000] - 0.0).abs() < 1e-6); // green plane, inside
        assert!((out[99 * 100] - 0.5).abs() < 1e-6); // bottom row: padding
        assert_eq!(p.source_point(50.0, 25.0), (100.0, 50.0));
    }

    #[test]
    fn centred_grey_u8_nhwc() {
        let img = RgbImage::from_pixel(10, 40, image::Rgb([100, 100, 100]));
        let t = Target {
            width: 40,
            height: 40,
            channels: 1,
            layout: Layout::Nhwc,
            antialias: false,
        };
        let mut out = Vec::<u8>::new();
        let fit = Fit::Letterbox {
            centred: true,
            pad: 114.0,
        };
        let p = fill(&img, Rect::whole(&img), &t, fit, &mut out);
        assert_eq!(p.off_x, 15.0);
        assert_eq!(out[0], 114);
        assert_eq!(out[20], 100);
    }

    #[test]
    fn antialias_averages_stripes_that_plain_bilinear_aliases() {
        // 1-pixel black/white columns shrunk 3x: plain bilinear lands on single columns
        let img = RgbImage::from_fn(300, 4, |x, _| {
            image::Rgb([if x % 2 == 0 { 0 } else { 255 }; 3])
        });
        let shrink = |antialias| {
            let t = Target {
                width: 100,
                height: 4,
                channels: 1,
                layout: Layout::Nchw,
                antialias,
            };
            let mut out = Vec::<u8>::new();
            fill(&img, Rect::whole(&img), &t, Fit::Stretch, &mut out);
            out
        };
        assert!(shrink(false).iter().all(|&v| v == 0 || v == 255));
        assert!(shrink(true).iter().all(|&v| (100..=155).contains(&v)));
    }
}
