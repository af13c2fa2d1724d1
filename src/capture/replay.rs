//! File replay: a folder of photos, one photo, or a Y4M video, played as if from a camera.
//!
//! Each photo stands for one vehicle pass: it is shown for `hold_frames` frames, then `gap_frames`
//! mid-grey frames follow so the tracker ends the pass. Timestamps follow a synthetic timeline
//! (start + seq / fps), so tracking gives the same result however slow inference is.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use image::{ImageReader, RgbImage};

use super::decode::{check_frame_size, decode_bounded, yuv_to_rgb};
use super::{CaptureError, Frame, FrameSource};
use crate::config::CameraConfig;

/// The timeline's frame rate when `fps` is 0 (no pacing): the config's default rate.
const UNPACED_TIMELINE_FPS: u32 = 10;
/// A wall clock this far from where the monotonic clock puts it was stepped.
const WALL_STEP: Duration = Duration::from_secs(2);

/// Mid-grey: no edges, so the detector sees nothing in the gap frames.
const GAP_GREY: u8 = 128;

pub struct ReplaySource {
    path: PathBuf,
    camera: String,
    kind: Kind,
    repeat: bool,
    fps: u32,
    seq: u64,
    /// Where the synthetic timeline starts, on both clocks.
    start: Instant,
    start_wall: SystemTime,
    last_emit: Option<Instant>,
}

enum Kind {
    Photos(Photos),
    Y4m(Y4m),
}

impl ReplaySource {
    pub fn open(path: &Path, cfg: &CameraConfig) -> Result<ReplaySource, CaptureError> {
        let io_err = |source| CaptureError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        let kind = if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(io_err)? {
                let p = entry.map_err(io_err)?.path();
                if is_photo(&p) {
                    files.push(p);
                }
            }
            if files.is_empty() {
                return Err(CaptureError::EmptyReplay {
                    path: path.to_path_buf(),
                });
            }
            files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
            Kind::Photos(Photos::new(files, cfg))
        } else if is_photo(path) {
            Kind::Photos(Photos::new(vec![path.to_path_buf()], cfg))
        } else if has_extension(path, &["y4m"]) {
            Kind::Y4m(Y4m::open(path)?)
        } else {
            return Err(CaptureError::UnsupportedFile {
                path: path.to_path_buf(),
            });
        };
        Ok(ReplaySource {
            path: path.to_path_buf(),
            camera: cfg.name.clone(),
            kind,
            repeat: cfg.repeat,
            fps: cfg.fps,
            seq: 0,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            last_emit: None,
        })
    }

    /// Sleeps so frames come at most `fps` per second.
    fn pace(&mut self) {
        if self.fps > 0 {
            if let Some(last) = self.last_emit {
                let due = last + Duration::from_secs(1) / self.fps;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        }
        self.last_emit = Some(Instant::now());
    }

    /// Moves the timeline's wall-clock base with a step of the wall clock (NTP setting a clock
    /// that booted in 1970, or moving it back), so `captured_at` stays the wall time it would be
    /// read at; the monotonic side (`at`, what tracking measures) is untouched. A drift of up to
    /// `WALL_STEP` is slewing or scheduling, not a step.
    fn follow_wall_clock(&mut self) {
        let since = self.start.elapsed();
        let wall = SystemTime::now();
        let drift = match self.start_wall.checked_add(since) {
            Some(expected) => match wall.duration_since(expected) {
                Ok(ahead) => ahead,
                Err(behind) => behind.duration(),
            },
            None => Duration::MAX,
        };
        if drift > WALL_STEP {
            self.start_wall = wall.checked_sub(since).unwrap_or(wall);
        }
    }

    /// Offset of frame `seq` on the timeline.
    fn timeline(&self, seq: u64) -> Duration {
        let fps = if self.fps == 0 {
            UNPACED_TIMELINE_FPS
        } else {
            self.fps
        };
        let nanos = u128::from(seq) * 1_000_000_000 / u128::from(fps);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let image = match &mut self.kind {
            Kind::Photos(p) => p.next(self.repeat),
            Kind::Y4m(v) => v.next(self.repeat)?,
        };
        let Some(image) = image else {
            return Ok(None);
        };
        self.pace();
        self.follow_wall_clock();
        let seq = self.seq;
        self.seq += 1;
        let offset = self.timeline(seq);
        Ok(Some(Frame {
            camera: self.camera.clone(),
            seq,
            at: self.start + offset,
            captured_at: self.start_wall + offset,
            clock_synced: false,
            image,
        }))
    }

    fn is_live(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        match &self.kind {
            Kind::Photos(p) => format!(
                "replay of {} photo(s) in {}",
                p.files.len(),
                self.path.display()
            ),
            Kind::Y4m(v) => format!(
                "replay of Y4M {} ({}x{} {})",
                self.path.display(),
                v.width,
                v.height,
                v.chroma.name()
            ),
        }
    }
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn is_photo(path: &Path) -> bool {
    has_extension(path, &["jpg", "jpeg", "png"])
}

/// Photos played in order, each held then followed by a gap.
struct Photos {
    files: Vec<PathBuf>,
    hold: u32,
    gap: u32,
    /// Index of the next photo to load.
    next: usize,
    current: Option<RgbImage>,
    /// Frames left of the current photo, then of its gap.
    hold_left: u32,
    gap_left: u32,
    /// Whether any photo decoded during this pass, so a folder of only corrupt files cannot loop forever.
    any_ok: bool,
}

impl Photos {
    fn new(files: Vec<PathBuf>, cfg: &CameraConfig) -> Photos {
        Photos {
            files,
            // A photo held for zero frames would never be seen (and a looping replay would spin).
            hold: cfg.hold_frames.max(1),
            gap: cfg.gap_frames,
            next: 0,
            current: None,
            hold_left: 0,
            gap_left: 0,
            any_ok: false,
        }
    }

    fn next(&mut self, repeat: bool) -> Option<RgbImage> {
        loop {
            if let Some(img) = &self.current {
                if self.hold_left > 0 {
                    self.hold_left -= 1;
                    return Some(img.clone());
                }
                if self.gap_left > 0 {
                    self.gap_left -= 1;
                    return Some(RgbImage::from_pixel(
                        img.width(),
                        img.height(),
                        image::Rgb([GAP_GREY; 3]),
                    ));
                }
                self.current = None;
            }
            if self.next >= self.files.len() {
                if !repeat || !self.any_ok {
                    return None;
                }
                self.next = 0;
                self.any_ok = false;
            }
            let path = &self.files[self.next];
            self.next += 1;
            match ImageReader::open(path)
                .map_err(|e| e.to_string())
                .and_then(decode_bounded)
            {
                Ok(img) => {
                    self.any_ok = true;
                    self.current = Some(img);
                    self.hold_left = self.hold;
                    self.gap_left = self.gap;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable photo");
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chroma {
    /// 4:2:0 (any siting: jpeg, mpeg2, paldv).
    C420,
    C422,
    C444,
    Mono,
}

impl Chroma {
    fn parse(tag: &str) -> Option<Chroma> {
        match tag {
            "420" | "420jpeg" | "420mpeg2" | "420paldv" => Some(Chroma::C420),
            "422" => Some(Chroma::C422),
            "444" => Some(Chroma::C444),
            "mono" => Some(Chroma::Mono),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Chroma::C420 => "4:2:0",
            Chroma::C422 => "4:2:2",
            Chroma::C444 => "4:4:4",
            Chroma::Mono => "mono",
        }
    }

    /// Chroma plane size for a `w`x`h` luma plane (rounded up, as Y4M writers do).
    fn chroma_dims(self, w: usize, h: usize) -> (usize, usize) {
        match self {
            Chroma::C420 => (w.div_ceil(2), h.div_ceil(2)),
            Chroma::C422 => (w.div_ceil(2), h),
            Chroma::C444 => (w, h),
            Chroma::Mono => (0, 0),
        }
    }
}

/// A Y4M (YUV4MPEG2) reader: a text header line, then `FRAME` lines each followed by raw planes.
struct Y4m {
    path: PathBuf,
    reader: BufReader<File>,
    /// Where the first frame starts, to loop.
    data_start: u64,
    width: u32,
    height: u32,
    chroma: Chroma,
    buf: Vec<u8>,
}

/// Header and frame lines are short; a longer one means the file is not Y4M.
const Y4M_MAX_LINE: u64 = 1024;

impl Y4m {
    fn open(path: &Path) -> Result<Y4m, CaptureError> {
        let bad = |reason: String| CaptureError::Y4m {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|source| CaptureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let header = read_line(&mut reader).map_err(|e| bad(format!("header: {e}")))?;
        let header = header.ok_or_else(|| bad("empty file".into()))?;
        let mut fields = header.split(' ');
        if fields.next() != Some("YUV4MPEG2") {
            return Err(bad("missing YUV4MPEG2 signature".into()));
        }
        let (mut width, mut height, mut chroma) = (0u32, 0u32, Chroma::C420);
        for field in fields.filter(|f| !f.is_empty()) {
            // Each field is a one-letter tag and its value; `split_at_checked` refuses non-ASCII.
            let Some((tag, value)) = field.split_at_checked(1) else {
                return Err(bad(format!("bad header field {field:?}")));
            };
            match tag {
                "W" => {
                    width = value
                        .parse()
                        .map_err(|_| bad(format!("bad width {value:?}")))?
                }
                "H" => {
                    height = value
                        .parse()
                        .map_err(|_| bad(format!("bad height {value:?}")))?
                }
                "C" => {
                    chroma = Chroma::parse(value).ok_or_else(|| {
                        bad(format!(
                            "colour space C{value} not supported (use 420, 422, 444 or mono, 8-bit)"
                        ))
                    })?
                }
                "I" if value != "p" && value != "?" => {
                    return Err(bad(format!("interlaced video (I{value}) not supported")))
                }
                // Frame rate, aspect ratio and extensions do not change decoding.
                _ => {}
            }
        }
        // The frame buffer is sized from the header: bound it before reading a frame.
        check_frame_size(width, height).map_err(bad)?;
        let data_start = header.len() as u64 + 1;
        Ok(Y4m {
            path: path.to_path_buf(),
            reader,
            data_start,
            width,
            height,
            chroma,
            buf: Vec::new(),
        })
    }

    fn frame_bytes(&self) -> usize {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.chroma.chroma_dims(w, h);
        w * h + 2 * cw * ch
    }

    fn next(&mut self, repeat: bool) -> Result<Option<RgbImage>, CaptureError> {
        let bad = |path: &Path, reason: String| CaptureError::Y4m {
            path: path.to_path_buf(),
            reason,
        };
        let mut line = read_line(&mut self.reader).map_err(|e| bad(&self.path, e))?;
        if line.is_none() && repeat {
            self.reader
                .seek(SeekFrom::Start(self.data_start))
                .map_err(|e| bad(&self.path, format!("rewinding: {e}")))?;
            line = read_line(&mut self.reader).map_err(|e| bad(&self.path, e))?;
        }
        let Some(line) = line else {
            return Ok(None);
        };
        if !line.starts_with("FRAME") {
            return Err(bad(&self.path, format!("expected FRAME, found {line:?}")));
        }
        self.buf.resize(self.frame_bytes(), 0);
        if let Err(e) = self.reader.read_exact(&mut self.buf) {
            // A recording cut short (the recorder was killed) still plays up to its last whole frame.
            tracing::warn!(file = %self.path.display(), error = %e, "Y4M ends inside a frame; stopping there");
            return Ok(None);
        }
        Ok(Some(self.to_rgb()))
    }

    fn to_rgb(&self) -> RgbImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.chroma.chroma_dims(w, h);
        let (luma, chroma) = self.buf.split_at(w * h);
        let (u_plane, v_plane) = chroma.split_at(cw * ch);
        let (sx, sy) = match self.chroma {
            Chroma::C420 => (2, 2),
            Chroma::C422 => (2, 1),
            Chroma::C444 | Chroma::Mono => (1, 1),
        };
        RgbImage::from_fn(self.width, self.height, |x, y| {
            let (x, y) = (x as usize, y as usize);
            let l = luma[y * w + x];
            if self.chroma == Chroma::Mono {
                // Y4M mono carries plain grey levels, so no range expansion.
                return image::Rgb([l; 3]);
            }
            let c = (y / sy) * cw + x / sx;
            image::Rgb(yuv_to_rgb(l, u_plane[c], v_plane[c]))
        })
    }
}

/// One `\n`-terminated ASCII line without its terminator; `None` at a clean end of file.
fn read_line(reader: &mut BufReader<File>) -> Result<Option<String>, String> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(Y4M_MAX_LINE)
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err("line too long or cut short".into());
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| "line is not ASCII".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    fn cfg(source: &Path, fps: u32, hold: u32, gap: u32) -> CameraConfig {
        CameraConfig {
            name: "replay-test".into(),
            source: format!("replay://{}", source.display()),
            fps,
            hold_frames: hold,
            gap_frames: gap,
            ..CameraConfig::default()
        }
    }

    /// Collects log output so tests can check what was warned about.
    #[derive(Clone, Default)]
    struct LogBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for LogBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LogBuf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
        }
    }

    fn drain(src: &mut ReplaySource) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = src.next_frame().expect("no error") {
            frames.push(f);
            assert!(frames.len() < 1000, "replay does not end");
        }
        frames
    }

    #[test]
    fn photo_folder_holds_each_photo_then_gaps_and_skips_corrupt_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let red = RgbImage::from_pixel(8, 6, image::Rgb([200, 10, 10]));
        let blue = RgbImage::from_pixel(10, 4, image::Rgb([10, 10, 200]));
        red.save(dir.path().join("a.png")).expect("save");
        std::fs::write(dir.path().join("b.jpg"), b"not a jpeg at all").expect("write");
        blue.save(dir.path().join("c.PNG")).expect("save");
        std::fs::write(dir.path().join("notes.txt"), b"ignored").expect("write");

        let logs = LogBuf::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let frames = tracing::subscriber::with_default(subscriber, || {
            let mut src = ReplaySource::open(dir.path(), &cfg(dir.path(), 0, 3, 2)).expect("opens");
            assert!(!src.is_live());
            drain(&mut src)
        });

        let grey = image::Rgb([GAP_GREY; 3]);
        assert_eq!(frames.len(), 2 * (3 + 2));
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.seq, i as u64);
            assert_eq!(f.camera, "replay-test");
            let (photo, want) = if i < 5 {
                (&red, red.get_pixel(0, 0))
            } else {
                (&blue, blue.get_pixel(0, 0))
            };
            assert_eq!(f.image.dimensions(), photo.dimensions(), "frame {i}");
            let expect = if i % 5 < 3 { want } else { &grey };
            assert_eq!(f.image.get_pixel(1, 1), expect, "frame {i}");
        }
        // Synthetic timeline at the unpaced rate (fps 0 -> 10 fps): 100 ms apart exactly.
        for w in frames.windows(2) {
            let d = w[1]
                .captured_at
                .duration_since(w[0].captured_at)
                .expect("ordered");
            assert_eq!(d, Duration::from_millis(100));
        }
        let text = logs.text();
        assert!(
            text.contains("WARN") && text.contains("b.jpg"),
            "logs: {text}"
        );
    }

    /// A small JPEG whose header claims `w`x`h` (the pixels are never there).
    fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9])))
            .expect("encode");
        let sof = jpeg
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("SOF0");
        jpeg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        jpeg
    }

    #[test]
    fn photos_and_y4m_frames_over_the_size_limit_are_refused_before_decoding() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 30000x30000 would be 2.5 GiB as RGB: far over MemoryMax.
        std::fs::write(dir.path().join("a-huge.jpg"), jpeg_claiming(30000, 30000)).expect("write");
        RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]))
            .save(dir.path().join("b-ok.png"))
            .expect("save");
        let logs = LogBuf::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let frames = tracing::subscriber::with_default(subscriber, || {
            let mut src = ReplaySource::open(dir.path(), &cfg(dir.path(), 0, 1, 0)).expect("opens");
            drain(&mut src)
        });
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].image.dimensions(), (4, 4));
        let text = logs.text();
        assert!(
            text.contains("a-huge.jpg") && text.contains("30000x30000") && text.contains("limit"),
            "logs: {text}"
        );

        let y4m = dir.path().join("big.y4m");
        std::fs::write(&y4m, b"YUV4MPEG2 W8192 H8192 C420jpeg\nFRAME\n").expect("write");
        let err = ReplaySource::open(&y4m, &cfg(&y4m, 0, 1, 1))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("8192x8192"), "{err}");
        // A camera's MJPEG frame goes through the same limit.
        let err =
            super::super::decode::mjpeg_to_rgb(&jpeg_claiming(30000, 30000)).expect_err("refused");
        assert!(err.to_string().contains("limit"), "{err}");
        // The largest size allowed still opens.
        let ok = dir.path().join("uhd.y4m");
        std::fs::write(&ok, b"YUV4MPEG2 W4096 H2304 C420jpeg\n").expect("write");
        assert!(ReplaySource::open(&ok, &cfg(&ok, 0, 1, 1)).is_ok());
    }

    #[test]
    fn paced_replay_timeline_is_seq_over_fps_and_loops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("one.png");
        RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]))
            .save(&path)
            .expect("save");
        let mut c = cfg(&path, 50, 1, 1);
        c.repeat = true;
        let mut src = ReplaySource::open(&path, &c).expect("opens");
        let started = Instant::now();
        let frames: Vec<Frame> = (0..6)
            .map(|_| src.next_frame().ok().flatten().expect("frame"))
            .collect();
        // Five intervals at 50 fps: at least 100 ms of pacing.
        assert!(started.elapsed() >= Duration::from_millis(95));
        for (i, f) in frames.iter().enumerate() {
            let at = f
                .captured_at
                .duration_since(frames[0].captured_at)
                .expect("ordered");
            assert_eq!(at, Duration::from_millis(20 * i as u64));
            let want = if i % 2 == 0 { [1, 2, 3] } else { [GAP_GREY; 3] };
            assert_eq!(f.image.get_pixel(0, 0).0, want, "frame {i}");
        }
    }

    #[test]
    fn folder_of_only_corrupt_photos_ends_even_when_looping() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("x.jpg"), b"\xFF\xD8garbage").expect("write");
        let mut c = cfg(dir.path(), 0, 2, 2);
        c.repeat = true;
        let mut src = ReplaySource::open(dir.path(), &c).expect("opens");
        assert!(src.next_frame().expect("no error").is_none());
    }

    #[test]
    fn zero_hold_still_shows_each_photo_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.png");
        RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]))
            .save(&path)
            .expect("save");
        let mut c = cfg(&path, 0, 0, 0);
        c.repeat = true;
        let mut src = ReplaySource::open(&path, &c).expect("opens");
        for _ in 0..3 {
            let f = src.next_frame().ok().flatten().expect("frame");
            assert_eq!(f.image.get_pixel(0, 0).0, [9, 9, 9]);
        }
    }

    #[test]
    fn empty_folder_missing_path_and_unknown_file_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path(), 0, 1, 1);
        assert!(matches!(
            ReplaySource::open(dir.path(), &c),
            Err(CaptureError::EmptyReplay { .. })
        ));
        let missing = dir.path().join("nope");
        let err = ReplaySource::open(&missing, &c).err().expect("error");
        assert!(err.to_string().contains("nope"), "{err}");
        let txt = dir.path().join("a.txt");
        std::fs::write(&txt, b"x").expect("write");
        assert!(matches!(
            ReplaySource::open(&txt, &c),
            Err(CaptureError::UnsupportedFile { .. })
        ));
    }

    /// A 4x2 Y4M with two frames: left half one colour, right half another.
    fn write_y4m(path: &Path, chroma: &str) {
        let mut f = File::create(path).expect("create");
        writeln!(f, "YUV4MPEG2 W4 H2 F25:1 Ip A1:1 {chroma} XYSCSS=420JPEG").expect("write");
        for frame in 0..2u8 {
            f.write_all(b"FRAME\n").expect("write");
            let y = 100 + frame * 50;
            f.write_all(&[y; 8]).expect("write");
            match chroma {
                // Chroma 2x1: left pixels (U,V)=(90,240) (reddish), right (128,128) (neutral).
                "C420jpeg" => f.write_all(&[90, 128, 240, 128]).expect("write"),
                "C444" => f
                    .write_all(&[
                        90, 90, 128, 128, 90, 90, 128, 128, 240, 240, 128, 128, 240, 240, 128, 128,
                    ])
                    .expect("write"),
                _ => {}
            }
        }
    }

    #[test]
    fn y4m_frames_convert_to_rgb_and_loop() {
        let dir = tempfile::tempdir().expect("tempdir");
        for chroma in ["C420jpeg", "C444"] {
            let path = dir.path().join(format!("v-{chroma}.y4m"));
            write_y4m(&path, chroma);
            let mut src = ReplaySource::open(&path, &cfg(&path, 0, 9, 9)).expect("opens");
            assert!(src.describe().contains("4x2"));
            let frames = drain(&mut src);
            assert_eq!(
                frames.len(),
                2,
                "{chroma}: each video frame once, no hold or gap"
            );
            let f = &frames[0].image;
            assert_eq!(f.dimensions(), (4, 2));
            assert_eq!(f.get_pixel(0, 0).0, yuv_to_rgb(100, 90, 240), "{chroma}");
            assert_eq!(f.get_pixel(3, 1).0, yuv_to_rgb(100, 128, 128), "{chroma}");
            assert!(
                f.get_pixel(0, 0).0[0] > f.get_pixel(0, 0).0[2],
                "left is red"
            );
            assert_eq!(frames[1].image.get_pixel(3, 0).0, yuv_to_rgb(150, 128, 128));

            let mut c = cfg(&path, 0, 1, 1);
            c.repeat = true;
            let mut looping = ReplaySource::open(&path, &c).expect("opens");
            let seqs: Vec<u64> = (0..5)
                .map(|_| {
                    looping
                        .next_frame()
                        .ok()
                        .flatten()
                        .map(|f| f.seq)
                        .expect("loops")
                })
                .collect();
            assert_eq!(seqs, [0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn y4m_mono_and_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.y4m");
        write_y4m(&path, "Cmono");
        let frames = drain(&mut ReplaySource::open(&path, &cfg(&path, 0, 1, 1)).expect("opens"));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].image.get_pixel(2, 1).0, [150; 3]);

        let c = cfg(&path, 0, 1, 1);
        for (name, content) in [
            ("sig.y4m", &b"RIFF W4 H2\nFRAME\n"[..]),
            ("size.y4m", b"YUV4MPEG2 W0 H2\n"),
            ("cs.y4m", b"YUV4MPEG2 W4 H2 C420p10\n"),
            ("noline.y4m", b"YUV4MPEG2 W4 H2"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, content).expect("write");
            let err = ReplaySource::open(&p, &c).err().expect(name);
            assert!(err.to_string().contains(name), "{err}");
        }
        // Cut inside the second frame: the whole first frame still plays.
        let full = std::fs::read(&path).expect("read");
        let cut = dir.path().join("cut.y4m");
        std::fs::write(&cut, &full[..full.len() - 3]).expect("write");
        let frames = drain(&mut ReplaySource::open(&cut, &c).expect("opens"));
        assert_eq!(frames.len(), 1);
    }
}
