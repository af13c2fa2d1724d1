//! Capture: frame sources (V4L2 camera, file replay) and the capture thread.
//!
//! CONTRACT (filled by the capture implementer):
//! - `Frame`: one decoded RGB frame with its camera name, per-camera sequence and capture time.
//! - `FrameSource`: a blocking source of frames; `open_source(&CameraConfig)` picks replay or V4L2
//!   from the `source` URI.
//! - `FrameQueue`: bounded channel between the capture thread and inference. A live source drops the
//!   oldest frame when full (and counts it); a replay source blocks instead (a file can wait).
//! - `spawn_capture(...)`: runs a source on its own named OS thread until cancelled.

use std::time::SystemTime;

/// One decoded frame, always RGB8 whatever the camera delivered.
#[derive(Clone)]
pub struct Frame {
    pub camera: String,
    /// Per-camera frame counter, starting at 0.
    pub seq: u64,
    pub captured_at: SystemTime,
    pub image: image::RgbImage,
}
