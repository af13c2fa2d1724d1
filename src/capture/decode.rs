//! Pixel-format conversions to RGB8. Pure functions over borrowed buffers, so they are tested on
//! recorded buffers without a camera. Every size is checked: a short buffer is an error, not a panic.
//!
//! YUV uses BT.601 with limited ("TV") range, what UVC cameras and Y4M files deliver by default.

use std::io::{BufRead, Seek};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use super::CaptureError;

/// Largest frame or photo decoded, in pixels: 4096x2304 holds 4K UHD and DCI 4K. As RGB that is
/// 27 MiB; the service runs under `MemoryMax=300M` with the models and a queue of frames.
pub const MAX_FRAME_PIXELS: u64 = 4096 * 2304;
/// What an image decoder may allocate at once: one frame of `MAX_FRAME_PIXELS` as 8-bit RGBA, with
/// slack (the image crate's default is 512 MiB).
const MAX_DECODE_ALLOC: u64 = 48 * 1024 * 1024;

/// Refuses a frame size over `MAX_FRAME_PIXELS` (or empty), before anything is allocated for it.
pub fn check_frame_size(width: u32, height: u32) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 || pixels > MAX_FRAME_PIXELS {
        return Err(format!(
            "frame size {width}x{height} is empty or over the limit of {MAX_FRAME_PIXELS} pixels \
             (4096x2304)"
        ));
    }
    Ok(())
}

/// Decodes a photo or a JPEG frame within the limits: the size in its header is checked before
/// the pixels are decoded, and the decoder's allocations are capped.
pub fn decode_bounded<R: BufRead + Seek>(mut reader: ImageReader<R>) -> Result<RgbImage, String> {
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions();
    check_frame_size(w, h)?;
    let img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    Ok(img.to_rgb8())
}

/// Fixed-point BT.601 limited-range YUV -> RGB (coefficients scaled by 1024).
#[inline]
pub(crate) fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (i32::from(y) - 16) * 1192;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| ((x + 512) >> 10).clamp(0, 255) as u8;
    [
        clamp(c + 1634 * e),
        clamp(c - 401 * d - 832 * e),
        clamp(c + 2066 * d),
    ]
}

fn check_len(
    format: &'static str,
    buf: &[u8],
    stride: usize,
    row_bytes: usize,
    height: u32,
) -> Result<(), CaptureError> {
    if stride < row_bytes {
        return Err(CaptureError::Decode {
            format,
            reason: format!("stride {stride} is less than a row ({row_bytes} bytes)"),
        });
    }
    // The last row needs no padding after it.
    let expected = match height {
        0 => 0,
        h => stride * (h as usize - 1) + row_bytes,
    };
    if buf.len() < expected {
        return Err(CaptureError::ShortBuffer {
            format,
            expected,
            actual: buf.len(),
        });
    }
    Ok(())
}

/// Packed YUYV 4:2:2 (Y0 U Y1 V per pixel pair), `stride` bytes per row.
pub fn yuyv_to_rgb(
    buf: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<RgbImage, CaptureError> {
    if !width.is_multiple_of(2) {
        return Err(CaptureError::Decode {
            format: "YUYV",
            reason: format!("odd width {width}"),
        });
    }
    let row_bytes = width as usize * 2;
    check_len("YUYV", buf, stride, row_bytes, height)?;
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for row in 0..height as usize {
        let line = &buf[row * stride..row * stride + row_bytes];
        for px in line.chunks_exact(4) {
            out.extend_from_slice(&yuv_to_rgb(px[0], px[1], px[3]));
            out.extend_from_slice(&yuv_to_rgb(px[2], px[1], px[3]));
        }
    }
    into_image("YUYV", width, height, out)
}

/// 8-bit greyscale, `stride` bytes per row.
pub fn grey_to_rgb(
    buf: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<RgbImage, CaptureError> {
    let row_bytes = width as usize;
    check_len("GREY", buf, stride, row_bytes, height)?;
    let mut out = Vec::with_capacity(row_bytes * height as usize * 3);
    for row in 0..height as usize {
        for &g in &buf[row * stride..row * stride + row_bytes] {
            out.extend_from_slice(&[g, g, g]);
        }
    }
    into_image("GREY", width, height, out)
}

fn into_image(
    format: &'static str,
    width: u32,
    height: u32,
    data: Vec<u8>,
) -> Result<RgbImage, CaptureError> {
    RgbImage::from_raw(width, height, data).ok_or_else(|| CaptureError::Decode {
        format,
        reason: format!("{width}x{height} does not match the converted data"),
    })
}

/// One MJPEG frame (a JPEG, possibly without Huffman tables) to RGB.
pub fn mjpeg_to_rgb(buf: &[u8]) -> Result<RgbImage, CaptureError> {
    let jpeg = with_huffman_tables(buf)?;
    let reader = ImageReader::with_format(std::io::Cursor::new(&jpeg), image::ImageFormat::Jpeg);
    decode_bounded(reader).map_err(mjpeg_err)
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;

fn mjpeg_err(reason: impl Into<String>) -> CaptureError {
    CaptureError::Decode {
        format: "MJPEG",
        reason: reason.into(),
    }
}

/// Checks the frame is a complete JPEG and returns it with the standard Huffman tables inserted
/// before the scan when it has none: many UVC cameras omit them (the AVI1 "MJPEG" convention),
/// and JPEG decoders refuse such frames.
fn with_huffman_tables(buf: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, CaptureError> {
    if buf.len() < 4 || buf[0] != 0xFF || buf[1] != SOI {
        return Err(mjpeg_err("no JPEG start-of-image marker"));
    }
    let mut pos = 2;
    let mut has_dht = false;
    let sos = loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while buf.get(pos) == Some(&0xFF) && buf.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (buf.get(pos), buf.get(pos + 1)) else {
            return Err(mjpeg_err(format!("bad JPEG marker at byte {pos}")));
        };
        if marker == SOS {
            break pos;
        }
        let len_bytes = buf
            .get(pos + 2..pos + 4)
            .ok_or_else(|| mjpeg_err("truncated before the image data"))?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        if len < 2 {
            return Err(mjpeg_err(format!("bad segment length at byte {pos}")));
        }
        has_dht |= marker == DHT;
        pos += 2 + len;
    };
    // Entropy-coded data escapes 0xFF, so an EOI after the scan start means the frame is complete;
    // a camera that loses USB packets sends frames cut short, which decoders paper over silently.
    if !buf[sos..].windows(2).any(|w| w == [0xFF, EOI]) {
        return Err(mjpeg_err("truncated: no end-of-image marker"));
    }
    if has_dht {
        return Ok(std::borrow::Cow::Borrowed(buf));
    }
    let mut fixed = Vec::with_capacity(buf.len() + STD_DHT.len());
    fixed.extend_from_slice(&buf[..sos]);
    fixed.extend_from_slice(&STD_DHT);
    fixed.extend_from_slice(&buf[sos..]);
    Ok(std::borrow::Cow::Owned(fixed))
}

/// The DHT segment with the four example tables of the JPEG standard (ITU T.81, Annex K.3),
/// which MJPEG cameras that omit DHT use (as the AVI1 convention specifies).
const STD_DHT: [u8; 420] = {
    const BITS_DC_LUMA: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    const BITS_DC_CHROMA: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
    const VALS_DC: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const BITS_AC_LUMA: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
    const VALS_AC_LUMA: [u8; 162] = [
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
        0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
        0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
        0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
        0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
        0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
        0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    const BITS_AC_CHROMA: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
    const VALS_AC_CHROMA: [u8; 162] = [
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
        0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33,
        0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18,
        0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4,
        0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
        0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
        0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    let mut out = [0u8; 420];
    // Marker, then the segment length (418 = everything after the marker).
    out[0] = 0xFF;
    out[1] = DHT;
    out[2] = 0x01;
    out[3] = 0xA2;
    let mut pos = 4;
    // (table class << 4 | table id, code-length counts, symbols)
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &BITS_DC_LUMA, &VALS_DC),
        (0x10, &BITS_AC_LUMA, &VALS_AC_LUMA),
        (0x01, &BITS_DC_CHROMA, &VALS_DC),
        (0x11, &BITS_AC_CHROMA, &VALS_AC_CHROMA),
    ];
    let mut t = 0;
    while t < tables.len() {
        let (class_id, bits, vals) = tables[t];
        out[pos] = class_id;
        pos += 1;
        let mut i = 0;
        while i < 16 {
            out[pos] = bits[i];
            pos += 1;
            i += 1;
        }
        let mut i = 0;
        while i < vals.len() {
            out[pos] = vals[i];
            pos += 1;
            i += 1;
        }
        t += 1;
    }
    // Fails the build if the tables do not fill the segment exactly.
    assert!(pos == 420);
    out
};

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::jpeg::JpegEncoder;

    /// A test card: colour bars, a grey ramp and black/white blocks, so every channel varies.
    fn pattern(w: u32, h: u32) -> RgbImage {
        const BARS: [[u8; 3]; 8] = [
            [235, 235, 235],
            [235, 235, 16],
            [16, 235, 235],
            [16, 235, 16],
            [235, 16, 235],
            [235, 16, 16],
            [16, 16, 235],
            [16, 16, 16],
        ];
        RgbImage::from_fn(w, h, |x, y| {
            let v = if y < h / 2 {
                BARS[(x * 8 / w) as usize]
            } else {
                let g = (x * 255 / (w - 1)) as u8;
                [g, g, g]
            };
            image::Rgb(v)
        })
    }

    /// BT.601 limited-range RGB -> YUV, the camera's side of the conversion.
    fn rgb_to_yuv(p: [u8; 3]) -> [u8; 3] {
        let [r, g, b] = p.map(f64::from);
        let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
        let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
        let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
        [y, u, v].map(|c| c.round().clamp(0.0, 255.0) as u8)
    }

    fn yuyv_buffer(img: &RgbImage, stride: usize) -> Vec<u8> {
        let mut buf = vec![0xAB; stride * img.height() as usize];
        for y in 0..img.height() {
            for x in (0..img.width()).step_by(2) {
                let a = rgb_to_yuv(img.get_pixel(x, y).0);
                let b = rgb_to_yuv(img.get_pixel(x + 1, y).0);
                // Chroma is shared by the pair: average it as a camera's subsampler would.
                let u = ((u16::from(a[1]) + u16::from(b[1])) / 2) as u8;
                let v = ((u16::from(a[2]) + u16::from(b[2])) / 2) as u8;
                let o = y as usize * stride + x as usize * 2;
                buf[o..o + 4].copy_from_slice(&[a[0], u, b[0], v]);
            }
        }
        buf
    }

    fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
        assert_eq!(a.dimensions(), b.dimensions());
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    fn mean_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 / a.as_raw().len() as f64
    }

    #[test]
    fn yuyv_decodes_test_pattern_within_tolerance() {
        let img = pattern(64, 16);
        for stride in [128, 160] {
            let buf = yuyv_buffer(&img, stride);
            let out = yuyv_to_rgb(&buf, 64, 16, stride).expect("decodes");
            // Bars are 8 px wide (pairs never straddle a colour edge), so only rounding remains.
            assert!(max_diff(&img, &out) <= 3, "stride {stride}");
        }
    }

    #[test]
    fn grey_decodes_with_stride() {
        let img = pattern(32, 8);
        let stride = 40;
        let mut buf = vec![0u8; stride * 8];
        for (x, y, p) in img.enumerate_pixels() {
            buf[y as usize * stride + x as usize] = p.0[1];
        }
        let out = grey_to_rgb(&buf, 32, 8, stride).expect("decodes");
        for (x, y, p) in out.enumerate_pixels() {
            let g = img.get_pixel(x, y).0[1];
            assert_eq!(p.0, [g, g, g]);
        }
    }

    #[test]
    fn short_and_malformed_raw_buffers_are_errors() {
        let buf = vec![0u8; 64 * 2 * 16 - 1];
        assert!(matches!(
            yuyv_to_rgb(&buf, 64, 16, 128),
            Err(CaptureError::ShortBuffer { format: "YUYV", .. })
        ));
        assert!(yuyv_to_rgb(&buf, 63, 4, 126).is_err(), "odd width");
        assert!(yuyv_to_rgb(&buf, 64, 4, 100).is_err(), "stride below a row");
        assert!(matches!(
            grey_to_rgb(&[0u8; 10], 4, 4, 4),
            Err(CaptureError::ShortBuffer {
                format: "GREY",
                expected: 16,
                actual: 10
            })
        ));
        assert!(grey_to_rgb(&[], 0, 0, 0).is_ok_and(|i| i.is_empty()));
    }

    fn jpeg(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(img)
            .expect("encodes");
        out
    }

    /// Removes every DHT segment, as cameras that rely on the standard tables send their frames.
    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut pos = 2;
        loop {
            let marker = jpeg[pos + 1];
            if marker == SOS {
                out.extend_from_slice(&jpeg[pos..]);
                return out;
            }
            let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
            if marker != DHT {
                out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
            }
            pos += 2 + len;
        }
    }

    #[test]
    fn mjpeg_decodes_encoder_frames() {
        let img = pattern(64, 32);
        let out = mjpeg_to_rgb(&jpeg(&img)).expect("decodes");
        assert!(mean_diff(&img, &out) < 6.0, "{}", mean_diff(&img, &out));
    }

    #[test]
    fn mjpeg_without_dht_gets_standard_tables() {
        let img = pattern(64, 32);
        let full = jpeg(&img);
        let stripped = strip_dht(&full);
        assert!(stripped.len() < full.len(), "the encoder wrote DHT");
        assert!(
            image::load_from_memory_with_format(&stripped, image::ImageFormat::Jpeg).is_err(),
            "a plain decoder refuses a frame without Huffman tables"
        );
        let a = mjpeg_to_rgb(&full).expect("decodes with tables");
        let b = mjpeg_to_rgb(&stripped).expect("decodes without tables");
        assert_eq!(
            a.as_raw(),
            b.as_raw(),
            "the encoder uses the standard tables"
        );
    }

    #[test]
    fn mjpeg_padding_after_eoi_is_accepted() {
        let img = pattern(16, 16);
        let mut buf = jpeg(&img);
        buf.extend_from_slice(&[0u8; 32]);
        assert!(mjpeg_to_rgb(&buf).is_ok());
    }

    #[test]
    fn truncated_and_garbage_mjpeg_are_errors() {
        let full = jpeg(&pattern(64, 32));
        for cut in [0, 1, 3, 10, 100, full.len() / 2, full.len() - 2] {
            assert!(mjpeg_to_rgb(&full[..cut]).is_err(), "cut at {cut}");
        }
        let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(mjpeg_to_rgb(&garbage).is_err());
        let mut bad_len = full.clone();
        bad_len[4] = 0;
        bad_len[5] = 0;
        assert!(mjpeg_to_rgb(&bad_len).is_err());
    }
}
