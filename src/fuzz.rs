//! Mutation fuzzing on stable Rust (issue 13 item 2): cargo-fuzz needs a nightly toolchain, the
//! build machines have stable only. Each target takes small seeds built here, mutates them
//! (bit flips, interesting bytes, inserts, deletions, duplications, splices, truncation) and feeds
//! every input to the code that parses it, under `catch_unwind`: a panic is a crash. A crash's
//! input is written to `target/fuzz-crashes/` and the test fails; a crash fixed stays as a
//! regression test beside its target. The outbox record decoder's target is in
//! `outbox::record` (its decoders are private to the outbox).
//!
//! `cargo test --lib fuzz` runs each target for `FUZZ_SECONDS` (default 1); a long run:
//! `FUZZ_SECONDS=600 cargo test --release --lib fuzz -- --test-threads=1 --nocapture`.
//! `FUZZ_SEED` repeats a run.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::capture::FrameSource;

/// Inputs grow to at most this: the parsers bound what they allocate from headers, not from
/// input length, and long inputs only slow the search.
const MAX_LEN: usize = 64 << 10;

fn seconds() -> f64 {
    std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b'"', b'9'];
    for _ in 0..rng.usize(1..=8) {
        let len = input.len();
        match rng.u8(0..8) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                input[i] ^= 1 << rng.u8(0..8);
            }
            1 if len > 0 => {
                let i = rng.usize(..len);
                input[i] = INTERESTING[rng.usize(..INTERESTING.len())];
            }
            2 if len > 0 => input[rng.usize(..len)] = rng.u8(..),
            3 => {
                let at = rng.usize(..=len);
                let n = rng.usize(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                input.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let a = rng.usize(..len);
                let b = rng.usize(a..=len.min(a + 64));
                input.drain(a..b);
            }
            5 if len > 0 => {
                let a = rng.usize(..len);
                let b = rng.usize(a..=len.min(a + 64));
                let copy = input[a..b].to_vec();
                let at = rng.usize(..=input.len());
                input.splice(at..at, copy);
            }
            6 => {
                let other = &seeds[rng.usize(..seeds.len())];
                if !other.is_empty() {
                    let a = rng.usize(..other.len());
                    let b = rng.usize(a..=other.len());
                    let at = rng.usize(..=len);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            7 if len > 0 => input.truncate(rng.usize(..len)),
            _ => {}
        }
    }
    input.truncate(MAX_LEN);
}

/// Runs `target` on mutations of `seeds` for `FUZZ_SECONDS`; fails on the first panic.
pub(crate) fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8])) {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let limit = Duration::from_secs_f64(seconds());
    let started = Instant::now();
    let mut execs = 0u64;
    for s in &seeds {
        target(s);
    }
    let mut input = Vec::new();
    while started.elapsed() < limit {
        // Mostly keep mutating the last input (deeper changes); now and then a fresh seed.
        if input.is_empty() || rng.u8(0..4) == 0 {
            input = seeds[rng.usize(..seeds.len())].clone();
        }
        mutate(&mut rng, &seeds, &mut input);
        execs += 1;
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{name}-{seed}-{execs}.bin"));
            let _ = std::fs::File::create(&path).and_then(|mut f| f.write_all(&input));
            panic!(
                "fuzz {name}: crash after {execs} inputs (FUZZ_SEED={seed}); input in {}",
                path.display()
            );
        }
    }
    eprintln!(
        "fuzz {name}: {execs} inputs in {:.1} s, seed {seed}, no crash",
        started.elapsed().as_secs_f64()
    );
}

/// Writes `bytes` to `name` in a fresh directory and hands the path to `f`.
fn with_file(name: &str, bytes: &[u8], f: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write input");
    f(&path);
}

/// A read as the wire carries it (docs/wire-format.md).
pub(crate) const READ_JSON: &str = r#"{"schema":1,"id":"01937a3c-5b7e-7c4d-9a57-3f1e2d0c9b8a","device":"unit-1",
"camera":"north","seq":1234,"captured_at":"2026-11-26T08:00:00.123Z","clock_synced":true,
"plate":"AB123CD","confidence":0.97,"chars":[{"c":"A","p":0.99},{"c":"B","p":0.9}],
"candidates":[{"plate":"AB123CD","confidence":0.97}],"bbox":[1,2,30,10],
"frame":{"width":1920,"height":1080},"frames_seen":7,"direction":"approaching",
"crop":{"format":"jpeg","bytes":5210,"sha256":"00"},"models":{"detector":"aa","ocr":"bb"}}"#;

pub(crate) fn small_image(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 15, 99]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode seed image");
    out.into_inner()
}

fn y4m_seed() -> Vec<u8> {
    let mut v = b"YUV4MPEG2 W8 H4 F25:1 Ip A1:1 C420jpeg\nFRAME\n".to_vec();
    v.extend(std::iter::repeat_n(128u8, 8 * 4 + 2 * 4 * 2));
    v.extend_from_slice(b"FRAME\n");
    v.extend(std::iter::repeat_n(60u8, 8 * 4 + 2 * 4 * 2));
    v
}

/// Pulls at most a few frames out of a replay file (every frame is decoded when pulled).
fn replay(ext: &str, bytes: &[u8]) {
    with_file(&format!("in.{ext}"), bytes, |path| {
        let cfg = crate::config::CameraConfig {
            name: "fuzz".into(),
            fps: 0, // unpaced
            source: format!("replay://{}", path.display()),
            ..crate::config::CameraConfig::default()
        };
        if let Ok(mut src) = crate::capture::ReplaySource::open(path, &cfg) {
            for _ in 0..3 {
                if !matches!(src.next_frame(), Ok(Some(_))) {
                    break;
                }
            }
        }
    });
}

/// Frame geometry from the first bytes, the pixels from the rest: small frames, odd strides.
fn geometry(data: &[u8]) -> Option<(u32, u32, usize, &[u8])> {
    let [a, b, c, rest @ ..] = data else {
        return None;
    };
    let (w, h) = (u32::from(*a % 64) + 1, u32::from(*b % 64) + 1);
    Some((w, h, usize::from(*c), rest))
}

#[test]
fn fuzz_config() {
    let seeds = vec![
        include_bytes!("config/default.toml").to_vec(),
        b"[[camera]]\nname = \"a\"\nsource = \"replay:///x\"\n[mqtt]\nurl = \"mqtts://h:8883\"\n[storage]\nmax_bytes = \"1 GiB\"\n[privacy]\nmode = \"hotlist-only\"\n".to_vec(),
    ];
    fuzz("config", seeds, |data| {
        let text = String::from_utf8_lossy(data);
        let _ = crate::config::load_text(&text, "fuzz").map(|l| {
            let problems = l.check_for_run();
            l.into_result(problems)
        });
    });
}

#[test]
fn fuzz_yuyv_grey() {
    let seeds = vec![
        vec![8, 4, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        [3, 3, 0].into_iter().chain([7; 40]).collect(),
    ];
    fuzz("yuyv-grey", seeds, |data| {
        if let Some((w, h, stride_extra, px)) = geometry(data) {
            let _ =
                crate::capture::decode::yuyv_to_rgb(px, w * 2, h, (w as usize) * 4 + stride_extra);
            let _ = crate::capture::decode::yuyv_to_rgb(px, w, h, stride_extra);
            let _ = crate::capture::decode::grey_to_rgb(px, w, h, w as usize + stride_extra);
            let _ = crate::capture::decode::grey_to_rgb(px, w, h, stride_extra);
        }
    });
}

/// A JPEG without its Huffman tables (DHT segments), as UVC cameras send MJPEG.
fn without_dht(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut pos = 2;
    while pos + 4 <= jpeg.len() && jpeg[pos] == 0xFF && jpeg[pos + 1] != 0xDA {
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        if jpeg[pos + 1] != 0xC4 {
            out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
        }
        pos += 2 + len;
    }
    out.extend_from_slice(&jpeg[pos..]);
    out
}

#[test]
fn fuzz_mjpeg() {
    let jpeg = small_image(image::ImageFormat::Jpeg);
    let bare = without_dht(&jpeg);
    assert!(bare.len() < jpeg.len(), "the seed lost its Huffman tables");
    fuzz("mjpeg", vec![jpeg, bare], |data| {
        let _ = crate::capture::decode::mjpeg_to_rgb(data);
    });
}

#[test]
fn fuzz_replay_files() {
    let seeds = vec![
        small_image(image::ImageFormat::Jpeg),
        small_image(image::ImageFormat::Png),
        y4m_seed(),
    ];
    fuzz("replay", seeds, |data| {
        for ext in ["jpg", "png", "y4m"] {
            replay(ext, data);
        }
    });
}

#[test]
fn fuzz_model_manifest_and_plate_config() {
    let seeds = vec![
        include_bytes!("../models/manifest.json").to_vec(),
        b"max_plate_slots: 9\nalphabet: '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_'\npad_char: '_'\nimg_height: 64\nimg_width: 128\nkeep_aspect_ratio: false\nimage_color_mode: rgb\n".to_vec(),
    ];
    fuzz("manifest", seeds, |data| {
        with_file("manifest.json", data, |p| {
            let _ = crate::recognize::Manifest::load(p);
        });
        with_file("plate_config.yaml", data, |p| {
            let _ = crate::recognize::manifest::PlateConfig::load(p);
        });
    });
}

#[test]
fn fuzz_hotlist() {
    let seeds = vec![
        b"# plate, reason, note\nAB123CD, stolen, 2026-11-01\nXY-99-ZZ,wanted\n\n  b0b , x \n"
            .to_vec(),
    ];
    fuzz("hotlist", seeds, |data| {
        let list = crate::privacy::hotlist::Hotlist::parse(&String::from_utf8_lossy(data));
        let _ = list.len();
    });
}

/// What `platecam verify --broker` reads from the broker: a read's JSON, checked against a key.
#[test]
fn fuzz_read_from_broker() {
    let json = READ_JSON.as_bytes().to_vec();
    let key_seed = b"42b079a8dc5cc8b422442db78595fe8d55bc7325c34ca009dbb7fe489d8c63a7".to_vec();
    let key = crate::privacy::sign::PublicKey::parse(&String::from_utf8_lossy(&key_seed)).ok();
    fuzz("broker-read", vec![json, key_seed], |data| {
        let _ = serde_json::from_slice::<crate::wire::ReadMessage>(data);
        let _ = crate::privacy::sign::PublicKey::parse(&String::from_utf8_lossy(data));
        if let Some(key) = &key {
            let _ = crate::privacy::sign::verify(data, key, Some("unit-1"), Some(Some(data)));
        }
    });
}
