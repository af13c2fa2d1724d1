//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod daemon;
pub mod mosquitto;

use platecam::recognize::{Candidate, Direction};
use platecam::wire::{FrameSize, ModelHashes, ReadMessage, WireChar, SCHEMA};

/// A plausible read; the outbox assigns `id`, `seq` and `crop`.
pub fn sample_read(device: &str, plate: &str) -> ReadMessage {
    ReadMessage {
        schema: SCHEMA,
        id: String::new(),
        device: device.to_string(),
        camera: "cam0".into(),
        seq: 0,
        captured_at: platecam::wire::rfc3339_ms(std::time::SystemTime::now()),
        clock_synced: true,
        plate: plate.to_string(),
        confidence: 0.97,
        chars: plate.chars().map(|c| WireChar { c, p: 0.99 }).collect(),
        candidates: vec![Candidate {
            plate: plate.to_string(),
            confidence: 0.97,
        }],
        bbox: [10, 20, 120, 40],
        frame: FrameSize {
            width: 1920,
            height: 1080,
        },
        frames_seen: 5,
        direction: Direction::Approaching,
        crop: None,
        models: ModelHashes::default(),
        location: None,
        pseudonym: None,
        hit: None,
        sig: None,
    }
}

/// Fake JPEG bytes of `len`, different for each `n`.
pub fn fake_crop(n: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    v.extend((0..len.saturating_sub(2)).map(|i| (i as u64 ^ n.wrapping_mul(2654435761)) as u8));
    v
}

/// A plate as the scoring compares it: upper case, letters and digits only.
pub fn normalise(plate: &str) -> String {
    plate
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// A 4 MiB tmpfs mounted for one test (needs root), unmounted on drop: a disk to fill.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test needs a 4 MiB tmpfs: `mount -t tmpfs` failed (run the tests as root)"
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes `name` on the disk until it is full; returns its path.
    pub fn fill(&self, name: &str) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join(name);
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8; 512]);
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}
