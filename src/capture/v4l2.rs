//! V4L2 cameras through the `v4l` crate: single-planar capture with mmap buffers.
//!
//! Format choice: the one named in the config, or with "auto" the cheapest to decode that the
//! camera offers (GREY, then YUYV, then MJPEG). The driver may change size and rate: what it chose
//! is logged, and decoding uses it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use v4l::buffer::{Flags as BufFlags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::traits::CaptureStream;
use v4l::prelude::{Device, MmapStream};
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Format, FourCC, Fraction};

use super::decode::{grey_to_rgb, mjpeg_to_rgb, yuyv_to_rgb};
use super::{CaptureError, Frame, FrameSource};
use crate::config::CameraConfig;

/// Formats we decode, cheapest first (the order "auto" tries them in).
const DECODABLE: [&[u8; 4]; 3] = [b"GREY", b"YUYV", b"MJPG"];
/// How long one dequeue waits, so the capture thread can notice cancellation.
const DEQUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// mmap buffers: enough to absorb a late dequeue without the driver dropping frames.
const BUFFERS: u32 = 4;
/// After this many undecodable frames in a row the camera is treated as failed (and reopened).
const MAX_BAD_FRAMES: u32 = 30;

pub struct V4l2Source {
    device: String,
    camera: String,
    // Declared before `_dev` so the buffers are unmapped before the device closes.
    stream: MmapStream<'static>,
    _dev: Device,
    fourcc: FourCC,
    width: u32,
    height: u32,
    stride: usize,
    seq: u64,
    last_sequence: Option<u32>,
    dropped: u64,
}

fn fourcc_name(f: FourCC) -> String {
    f.str()
        .map(str::to_string)
        .unwrap_or_else(|_| format!("{:?}", f.repr))
}

impl V4l2Source {
    pub fn open(path: &Path, cfg: &CameraConfig) -> Result<V4l2Source, CaptureError> {
        let device = path.display().to_string();
        let dev_err = |op: &'static str| {
            let device = device.clone();
            move |source: std::io::Error| CaptureError::Device { device, op, source }
        };
        let dev = Device::with_path(path).map_err(dev_err("open"))?;
        let caps = dev.query_caps().map_err(dev_err("VIDIOC_QUERYCAP"))?;
        if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
            return Err(CaptureError::DeviceUnusable {
                device,
                reason: format!(
                    "{} ({}) is not a single-planar video capture device (capabilities: {})",
                    caps.card, caps.driver, caps.capabilities
                ),
            });
        }
        if !caps.capabilities.contains(CapFlags::STREAMING) {
            return Err(CaptureError::DeviceUnusable {
                device,
                reason: format!(
                    "{} ({}) does not support streaming I/O",
                    caps.card, caps.driver
                ),
            });
        }
        let offered: Vec<FourCC> = dev
            .enum_formats()
            .map_err(dev_err("VIDIOC_ENUM_FMT"))?
            .into_iter()
            .map(|d| d.fourcc)
            .collect();
        let fourcc = choose_format(&cfg.format, &offered).map_err(|requested| {
            CaptureError::UnsupportedFormat {
                device: device.clone(),
                requested,
                available: offered
                    .iter()
                    .map(|f| fourcc_name(*f))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?;

        let chosen = dev
            .set_format(&Format::new(cfg.width, cfg.height, fourcc))
            .map_err(dev_err("VIDIOC_S_FMT"))?;
        if chosen.fourcc != fourcc {
            return Err(CaptureError::UnsupportedFormat {
                device,
                requested: fourcc_name(fourcc),
                available: format!("driver switched to {}", fourcc_name(chosen.fourcc)),
            });
        }
        if (chosen.width, chosen.height) != (cfg.width, cfg.height) {
            tracing::warn!(device = %device, asked = %format!("{}x{}", cfg.width, cfg.height),
                got = %format!("{}x{}", chosen.width, chosen.height), "camera chose another frame size");
        }
        tracing::info!(device = %device, card = %caps.card, driver = %caps.driver,
            format = %fourcc_name(chosen.fourcc), width = chosen.width, height = chosen.height,
            stride = chosen.stride, "camera format set");
        set_frame_rate(&dev, &device, cfg.fps);

        let mut stream = MmapStream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
            .map_err(dev_err("VIDIOC_REQBUFS/mmap"))?;
        stream.set_timeout(DEQUEUE_TIMEOUT);
        // Compressed formats report no stride; a zero stride means rows are packed.
        let stride = match chosen.stride as usize {
            0 => chosen.width as usize * bytes_per_pixel(chosen.fourcc),
            s => s,
        };
        Ok(V4l2Source {
            device,
            camera: cfg.name.clone(),
            stream,
            _dev: dev,
            fourcc: chosen.fourcc,
            width: chosen.width,
            height: chosen.height,
            stride,
            seq: 0,
            last_sequence: None,
            dropped: 0,
        })
    }
}

/// Decodes one buffer of a format chosen by `choose_format` (so only GREY, YUYV or MJPG).
fn decode(
    fourcc: FourCC,
    width: u32,
    height: u32,
    stride: usize,
    data: &[u8],
) -> Result<image::RgbImage, CaptureError> {
    match &fourcc.repr {
        b"GREY" => grey_to_rgb(data, width, height, stride),
        b"YUYV" => yuyv_to_rgb(data, width, height, stride),
        _ => mjpeg_to_rgb(data),
    }
}

fn bytes_per_pixel(f: FourCC) -> usize {
    match &f.repr {
        b"YUYV" => 2,
        _ => 1,
    }
}

/// The fourcc to ask for, or the (normalised) requested name when the camera cannot give it.
fn choose_format(requested: &str, offered: &[FourCC]) -> Result<FourCC, String> {
    let want = requested.trim().to_ascii_uppercase();
    let candidates: Vec<&[u8; 4]> = match want.as_str() {
        "AUTO" | "" => DECODABLE.to_vec(),
        "GREY" | "GRAY" => vec![b"GREY"],
        "YUYV" => vec![b"YUYV"],
        "MJPG" | "MJPEG" => vec![b"MJPG"],
        _ => return Err(want),
    };
    candidates
        .into_iter()
        .map(FourCC::new)
        .find(|c| offered.contains(c))
        .ok_or(want)
}

/// Asks for `fps` where the driver supports frame intervals; a camera that cannot is still usable.
fn set_frame_rate(dev: &Device, device: &str, fps: u32) {
    if fps == 0 {
        return;
    }
    match dev.params() {
        Ok(p)
            if p.capabilities
                .contains(v4l::parameters::Capabilities::TIME_PER_FRAME) =>
        {
            match dev.set_params(&Parameters::with_fps(fps)) {
                Ok(got) => {
                    tracing::info!(device = %device, asked = fps, got = %fps_of(got.interval), "frame rate set")
                }
                Err(e) => tracing::warn!(device = %device, error = %e, "cannot set the frame rate"),
            }
        }
        Ok(_) => tracing::info!(device = %device, "camera has a fixed frame rate"),
        Err(e) => tracing::warn!(device = %device, error = %e, "cannot read stream parameters"),
    }
}

fn fps_of(interval: Fraction) -> f64 {
    if interval.numerator == 0 {
        0.0
    } else {
        f64::from(interval.denominator) / f64::from(interval.numerator)
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let mut bad_frames = 0;
        loop {
            let (buf, meta) = match self.stream.next() {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(CaptureError::Timeout {
                        device: self.device.clone(),
                        waited: DEQUEUE_TIMEOUT,
                    })
                }
                Err(source) => {
                    return Err(CaptureError::Device {
                        device: self.device.clone(),
                        op: "VIDIOC_DQBUF",
                        source,
                    })
                }
            };
            // The driver numbers every frame it captured; a jump means frames it had to drop.
            if let Some(last) = self.last_sequence {
                let gap = meta.sequence.wrapping_sub(last).saturating_sub(1);
                self.dropped += u64::from(gap);
            }
            self.last_sequence = Some(meta.sequence);
            // The mmap buffer is padded past the frame: decoders must see only `bytesused`.
            let used = (meta.bytesused as usize).min(buf.len());
            let decoded = if meta.flags.contains(BufFlags::ERROR) {
                Err(CaptureError::Decode {
                    format: "V4L2",
                    reason: "driver flagged the buffer as corrupt".into(),
                })
            } else {
                decode(
                    self.fourcc,
                    self.width,
                    self.height,
                    self.stride,
                    &buf[..used],
                )
            };
            match decoded {
                Ok(image) => {
                    let seq = self.seq;
                    self.seq += 1;
                    return Ok(Some(Frame {
                        camera: self.camera.clone(),
                        seq,
                        at: Instant::now(),
                        captured_at: SystemTime::now(),
                        clock_synced: false,
                        image,
                    }));
                }
                Err(e) => {
                    self.dropped += 1;
                    bad_frames += 1;
                    tracing::debug!(device = %self.device, error = %e, "dropping undecodable frame");
                    if bad_frames >= MAX_BAD_FRAMES {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn is_live(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "{} {} {}x{}",
            self.device,
            fourcc_name(self.fourcc),
            self.width,
            self.height
        )
    }

    fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

/// A V4L2 device node as `platecam devices` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// Single-planar video capture (what platecam can use); UVC also creates metadata nodes.
    pub capture: bool,
    pub formats: Vec<FormatInfo>,
    /// Why the device could not be opened or queried; the other fields are then partial.
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FormatInfo {
    pub fourcc: String,
    pub description: String,
    pub sizes: Vec<FrameSizeInfo>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameSizeInfo {
    pub width: u32,
    pub height: u32,
    /// Frame rates offered at this size; a stepwise range is given by its two ends.
    pub fps: Vec<f64>,
}

/// Every `/dev/video*` node, in numeric order. Devices that fail to open are listed with the error.
pub fn list_devices() -> Vec<DeviceInfo> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir("/dev") {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("video"))
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list /dev");
            Vec::new()
        }
    };
    paths.sort_by_key(|p| {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        (n.len(), n.to_string())
    });
    paths.into_iter().map(|p| describe_device(&p)).collect()
}

fn describe_device(path: &Path) -> DeviceInfo {
    let mut info = DeviceInfo {
        path: path.to_path_buf(),
        driver: String::new(),
        card: String::new(),
        bus: String::new(),
        capture: false,
        formats: Vec::new(),
        error: None,
    };
    let dev = match Device::with_path(path) {
        Ok(d) => d,
        Err(e) => {
            info.error = Some(format!("open: {e}"));
            return info;
        }
    };
    match dev.query_caps() {
        Ok(caps) => {
            info.capture = caps.capabilities.contains(CapFlags::VIDEO_CAPTURE);
            info.driver = caps.driver;
            info.card = caps.card;
            info.bus = caps.bus;
        }
        Err(e) => {
            info.error = Some(format!("VIDIOC_QUERYCAP: {e}"));
            return info;
        }
    }
    if !info.capture {
        return info;
    }
    match dev.enum_formats() {
        Ok(descs) => {
            info.formats = descs
                .into_iter()
                .map(|d| FormatInfo {
                    fourcc: fourcc_name(d.fourcc),
                    description: d.description,
                    sizes: frame_sizes(&dev, d.fourcc),
                })
                .collect()
        }
        Err(e) => info.error = Some(format!("VIDIOC_ENUM_FMT: {e}")),
    }
    info
}

fn frame_sizes(dev: &Device, fourcc: FourCC) -> Vec<FrameSizeInfo> {
    let sizes = dev.enum_framesizes(fourcc).unwrap_or_default();
    let mut out = Vec::new();
    for size in sizes {
        // A stepwise range can hold thousands of sizes: show its smallest and largest only.
        let dims = match size.size {
            FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
            FrameSizeEnum::Stepwise(s) => {
                vec![(s.min_width, s.min_height), (s.max_width, s.max_height)]
            }
        };
        for (width, height) in dims {
            let fps = dev
                .enum_frameintervals(fourcc, width, height)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|i| match i.interval {
                    FrameIntervalEnum::Discrete(f) => vec![fps_of(f)],
                    // Shortest interval = highest rate.
                    FrameIntervalEnum::Stepwise(s) => vec![fps_of(s.max), fps_of(s.min)],
                })
                .collect();
            out.push(FrameSizeInfo { width, height, fps });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_cheapest_offered_format() {
        let offered = [FourCC::new(b"MJPG"), FourCC::new(b"YUYV")];
        assert_eq!(choose_format("auto", &offered), Ok(FourCC::new(b"YUYV")));
        assert_eq!(choose_format("mjpeg", &offered), Ok(FourCC::new(b"MJPG")));
        assert_eq!(choose_format("GREY", &offered), Err("GREY".into()));
        assert_eq!(choose_format("H264", &offered), Err("H264".into()));
        assert_eq!(
            choose_format("auto", &[FourCC::new(b"H264")]),
            Err("AUTO".into())
        );
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let cfg = CameraConfig::default();
        let err = V4l2Source::open(Path::new("/dev/video-platecam-none"), &cfg)
            .err()
            .expect("no such device");
        let msg = err.to_string();
        assert!(
            msg.contains("/dev/video-platecam-none") && msg.contains("open"),
            "{msg}"
        );
    }

    #[test]
    fn list_devices_does_not_panic_without_cameras() {
        for d in list_devices() {
            assert!(d.path.starts_with("/dev"));
        }
    }
}
