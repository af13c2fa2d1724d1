//! `platecam devices`: the V4L2 devices this machine has, with what each can deliver.

use crate::capture::{list_devices, DeviceInfo};

/// Prints every `/dev/video*` node (a table, or one JSON object per line). Exit 0 even when there
/// are none, so installers can run it before plugging the camera in.
pub fn run(json: bool) -> anyhow::Result<u8> {
    let devices = list_devices();
    if json {
        for d in &devices {
            println!("{}", serde_json::to_string(d)?);
        }
        return Ok(0);
    }
    if devices.is_empty() {
        println!("no V4L2 devices (/dev/video*)");
        return Ok(0);
    }
    for d in &devices {
        print!("{}", render(d));
    }
    Ok(0)
}

fn fmt_fps(fps: &[f64]) -> String {
    if fps.is_empty() {
        return "fps ?".into();
    }
    let rates: Vec<String> = fps
        .iter()
        .map(|f| {
            let r = (f * 100.0).round() / 100.0;
            format!("{r}")
        })
        .collect();
    format!("{} fps", rates.join("/"))
}

fn render(d: &DeviceInfo) -> String {
    let mut out = format!("{}\n", d.path.display());
    if !d.driver.is_empty() {
        out += &format!("  driver: {}  card: {}  bus: {}\n", d.driver, d.card, d.bus);
    }
    if let Some(e) = &d.error {
        out += &format!("  error: {e}\n");
    }
    if !d.capture {
        if d.error.is_none() {
            out += "  (not a video capture node)\n";
        }
        return out;
    }
    for f in &d.formats {
        out += &format!("  {:<4}  {}\n", f.fourcc, f.description);
        for s in &f.sizes {
            out += &format!(
                "        {:>5}x{:<5} {}\n",
                s.width,
                s.height,
                fmt_fps(&s.fps)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{FormatInfo, FrameSizeInfo};

    #[test]
    fn renders_formats_sizes_and_rates() {
        let d = DeviceInfo {
            path: "/dev/video0".into(),
            driver: "vivid".into(),
            card: "vivid".into(),
            bus: "platform:vivid-000".into(),
            capture: true,
            formats: vec![FormatInfo {
                fourcc: "YUYV".into(),
                description: "YUYV 4:2:2".into(),
                sizes: vec![FrameSizeInfo {
                    width: 640,
                    height: 480,
                    fps: vec![59.94005994],
                }],
            }],
            error: None,
        };
        let text = render(&d);
        assert!(text.contains("driver: vivid"), "{text}");
        assert!(text.contains("YUYV"), "{text}");
        assert!(text.contains("640x480"), "{text}");
        assert!(text.contains("59.94 fps"), "{text}");
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"fourcc\":\"YUYV\""), "{json}");
    }
}
