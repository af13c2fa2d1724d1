//! Motion gate: on a live camera most frames show an empty road, and the detector is by far the
//! most expensive stage. The gate compares a coarse luma grid of each frame with the grid of the
//! last frame the detector ran on; when no cell changed, the frame is "the same scene" and the
//! detector's last result stands for it. A full run every `full_every` (on the frames' own
//! timeline) re-reads a scene that changed too slowly to notice, and keeps a parked car read.
//!
//! Cheap by construction: a fixed grid of at most `GRID_W` cells across, each cell's mean taken
//! from every `STEP`-th pixel in both directions (about 130,000 pixel reads at 1080p).

use std::time::{Duration, Instant};

use image::RgbImage;

/// Cells across the frame; rows follow the aspect ratio.
const GRID_W: u32 = 64;
/// Pixels sampled in each direction inside a cell.
const STEP: u32 = 4;
/// A cell whose mean luma moved by more than this (of 255) is a change. Sensor noise averaged
/// over a cell stays far below it; a car, even a small one far away, moves several cells by more.
const CELL_THRESHOLD: u16 = 8;

/// The coarse luma of one frame.
#[derive(Debug, Clone, PartialEq)]
struct Grid {
    w: u32,
    h: u32,
    cells: Vec<u16>,
}

impl Grid {
    fn of(img: &RgbImage) -> Grid {
        let (width, height) = img.dimensions();
        let cell = (width / GRID_W).max(1);
        let (w, h) = (width.div_ceil(cell), height.div_ceil(cell));
        let mut sums = vec![0u32; (w * h) as usize];
        let mut counts = vec![0u32; (w * h) as usize];
        let raw = img.as_raw();
        for y in (0..height).step_by(STEP as usize) {
            let row = (y / cell) * w;
            let line = (y * width * 3) as usize;
            for x in (0..width).step_by(STEP as usize) {
                let p = line + (x * 3) as usize;
                // BT.601 luma in integers (weights sum to 256).
                let luma = (77 * u32::from(raw[p])
                    + 150 * u32::from(raw[p + 1])
                    + 29 * u32::from(raw[p + 2]))
                    >> 8;
                let i = (row + x / cell) as usize;
                sums[i] += luma;
                counts[i] += 1;
            }
        }
        let cells = sums
            .iter()
            .zip(&counts)
            .map(|(&s, &n)| (s / n.max(1)) as u16)
            .collect();
        Grid { w, h, cells }
    }

    fn differs(&self, other: &Grid) -> bool {
        (self.w, self.h) != (other.w, other.h)
            || self
                .cells
                .iter()
                .zip(&other.cells)
                .any(|(a, b)| a.abs_diff(*b) > CELL_THRESHOLD)
    }
}

/// Per camera, in frame order: whether the detector must run on a frame.
#[derive(Debug)]
pub struct MotionGate {
    enabled: bool,
    full_every: Duration,
    /// The grid of the last frame the detector ran on, and when that frame was taken.
    reference: Option<(Grid, Instant)>,
}

impl MotionGate {
    /// `enabled = false` runs the detector on every frame.
    pub fn new(enabled: bool, full_every: Duration) -> MotionGate {
        MotionGate {
            enabled,
            full_every,
            reference: None,
        }
    }

    /// True when the detector must run on this frame (taken at `at`); false when the scene is
    /// the one the detector last saw, so its result still holds.
    pub fn must_run(&mut self, img: &RgbImage, at: Instant) -> bool {
        if !self.enabled {
            return true;
        }
        let grid = Grid::of(img);
        let run = match &self.reference {
            None => true,
            Some((reference, ran_at)) => {
                at.saturating_duration_since(*ran_at) >= self.full_every || grid.differs(reference)
            }
        };
        if run {
            self.reference = Some((grid, at));
        }
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 200) as u8, (y % 150) as u8, 90])
        })
    }

    #[test]
    fn static_scene_is_gated_until_the_full_check() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(true, Duration::from_secs(2));
        let img = scene(1920, 1080);
        assert!(gate.must_run(&img, t0), "the first frame always runs");
        for i in 1..20 {
            let at = t0 + Duration::from_millis(100 * i);
            assert!(!gate.must_run(&img, at), "frame {i} of a static scene ran");
        }
        assert!(
            gate.must_run(&img, t0 + Duration::from_secs(2)),
            "no full check"
        );
        assert!(!gate.must_run(&img, t0 + Duration::from_millis(2100)));
    }

    #[test]
    fn a_small_object_entering_runs_the_detector() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(true, Duration::from_secs(60));
        let mut img = scene(1280, 720);
        assert!(gate.must_run(&img, t0));
        // A 40x20 plate-sized patch, far smaller than a car.
        for y in 300..320 {
            for x in 600..640 {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        assert!(gate.must_run(&img, t0 + Duration::from_millis(100)));
        // Noise of +-2 levels everywhere is not a change.
        let noisy = RgbImage::from_fn(1280, 720, |x, y| {
            let p = img.get_pixel(x, y).0;
            let noise = ((x * 7 + y * 3) % 5) as i16 - 2;
            let n = |c: u8| (i16::from(c) + noise).clamp(0, 255) as u8;
            image::Rgb([n(p[0]), n(p[1]), n(p[2])])
        });
        assert!(!gate.must_run(&noisy, t0 + Duration::from_millis(200)));
    }

    #[test]
    fn disabled_gate_always_runs() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(false, Duration::from_secs(2));
        let img = scene(64, 48);
        assert!(gate.must_run(&img, t0));
        assert!(gate.must_run(&img, t0));
    }
}
