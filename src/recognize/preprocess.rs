//! Image -> model input, shared by every detector and OCR format: crop a region, resize it
//! (stretched or letterboxed) with bilinear sampling, convert to grey or RGB, and write it as
//! NCHW or NHWC in f32 (pixel/255) or u8.
//!
//! A direct sampling loop: the detector samples only its input size (e.g. 416x234 of a 1080p
//! frame), so it costs far less than converting or resizing the whole frame first.

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
    // Per target column: the two source columns (as byte offsets) and the weight of the second.
    let cols: Vec<(usize, usize, f32)> = (0..new_w)
        .map(|x| tap(region.x + (x as f32 + 0.5) / sx - 0.5, iw))
        .map(|(a, b, f)| (a * 3, b * 3, f))
        .collect();
    let plane = tw * th;
    for y in 0..new_h {
        let (r0, r1, fy) = tap(region.y + (y as f32 + 0.5) / sy - 0.5, ih);
        let row0 = &raw[r0 * iw * 3..(r0 + 1) * iw * 3];
        let row1 = &raw[r1 * iw * 3..(r1 + 1) * iw * 3];
        let ty = y + off_y;
        for (x, &(c0, c1, fx)) in cols.iter().enumerate() {
            let mut rgb = [0f32; 3];
            for (c, v) in rgb.iter_mut().enumerate() {
                let top = row0[c0 + c] as f32 * (1.0 - fx) + row0[c1 + c] as f32 * fx;
                let bottom = row1[c0 + c] as f32 * (1.0 - fx) + row1[c1 + c] as f32 * fx;
                *v = top * (1.0 - fy) + bottom * fy;
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

/// The two neighbouring source indices of a source coordinate, clamped, and the second's weight.
#[inline]
fn tap(s: f32, len: usize) -> (usize, usize, f32) {
    let s = s.clamp(0.0, (len - 1) as f32);
    let i0 = s.floor() as usize;
    let i1 = (i0 + 1).min(len - 1);
    (i0, i1, s - i0 as f32)
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
}
