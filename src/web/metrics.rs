//! `/metrics`: the health counters and stage timings in Prometheus' text exposition format.
//!
//! The counters live in `telemetry::Metrics` (atomics the stages already bump); a collector reads
//! them at scrape time, so the frame path knows nothing of Prometheus but the timing histograms.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::outbox::Outbox;
use crate::telemetry::Metrics;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

struct Unit {
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
}

// `Collector` wants Debug; the outbox (sled handles) has none worth printing.
impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("platecam metrics")
    }
}

/// Everything `/metrics` serves, named `platecam_*`.
pub fn registry(metrics: Arc<Metrics>, outbox: Arc<Outbox>) -> Registry {
    let mut registry = Registry::with_prefix("platecam");
    registry.register_collector(Box::new(Unit { metrics, outbox }));
    registry
}

/// The scrape body.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for Unit {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.metrics;
        // Counters (the encoder adds `_total`).
        counter(
            &mut e,
            "reads",
            "Reads accepted (stored durably).",
            m.reads_total.load(Relaxed),
        )?;
        counter(
            &mut e,
            "reads_lost",
            "Reads that could not be stored.",
            m.reads_lost.load(Relaxed),
        )?;
        counter(
            &mut e,
            "frames_recognized",
            "Frames run through detector and OCR.",
            m.inferences.load(Relaxed),
        )?;
        counter(
            &mut e,
            "detections",
            "Plate boxes found and read.",
            m.detections.load(Relaxed),
        )?;
        counter(
            &mut e,
            "boxes_not_plates",
            "Detector boxes read under the model's ocr.min_confidence: not plates.",
            m.boxes_not_plates.load(Relaxed),
        )?;
        counter(
            &mut e,
            "session_takeovers",
            "MQTT sessions taken over by another client with our id.",
            m.session_takeovers.load(Relaxed),
        )?;
        counter(
            &mut e,
            "logs_dropped",
            "Log events not forwarded over MQTT (rate limit or full queue).",
            m.logs_dropped.load(Relaxed),
        )?;
        {
            let d = &m.passes_dropped;
            let mut enc = e.encode_descriptor(
                "passes_dropped",
                "Vehicle passes that ended without a read, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in [
                ("noise", &d.noise),
                ("low_confidence", &d.low_confidence),
                ("implausible", &d.implausible),
            ] {
                ConstCounter::new(v.load(Relaxed))
                    .encode(enc.encode_family(&[("reason", reason)])?)?;
            }
        }
        let cameras = m.cameras();
        {
            let mut enc = e.encode_descriptor(
                "frames",
                "Frames captured, per camera.",
                None,
                MetricType::Counter,
            )?;
            for (name, cam) in &cameras {
                ConstCounter::new(cam.frames.load(Relaxed))
                    .encode(enc.encode_family(&[("camera", name.as_str())])?)?;
            }
        }
        {
            let mut enc = e.encode_descriptor(
                "frames_dropped",
                "Frames dropped because recognition fell behind, per camera.",
                None,
                MetricType::Counter,
            )?;
            for (name, cam) in &cameras {
                ConstCounter::new(cam.frames_dropped.load(Relaxed))
                    .encode(enc.encode_family(&[("camera", name.as_str())])?)?;
            }
        }
        {
            let mut enc = e.encode_descriptor(
                "camera_streaming",
                "1 while the camera delivers frames, else 0 (see the state label).",
                None,
                MetricType::Gauge,
            )?;
            for (name, cam) in &cameras {
                let state = cam.state.lock().map(|s| s.clone()).unwrap_or_default();
                let up = i64::from(state == "streaming");
                ConstGauge::new(up).encode(
                    enc.encode_family(&[("camera", name.as_str()), ("state", state.as_str())])?,
                )?;
            }
        }
        // The outbox.
        let stats = self.outbox.stats();
        counter(
            &mut e,
            "outbox_evictions",
            "Reads or crops evicted by the storage policy since the outbox was created.",
            stats.evictions,
        )?;
        counter(
            &mut e,
            "outbox_quarantined",
            "Stored records set aside because they did not decode.",
            stats.quarantined,
        )?;
        gauge(
            &mut e,
            "outbox_reads",
            "Reads stored and not yet acknowledged by the broker.",
            stats.count as f64,
        )?;
        gauge(
            &mut e,
            "outbox_disk_bytes",
            "Bytes the outbox uses on disk.",
            stats.bytes_on_disk as f64,
        )?;
        let age = stats.oldest_age.map_or(0.0, |d| d.as_secs_f64());
        gauge(
            &mut e,
            "outbox_oldest_age_seconds",
            "Age of the oldest read not yet acknowledged (0: none).",
            age,
        )?;
        if let Some(free) = crate::outbox::disk_free(self.outbox.dir()) {
            gauge(
                &mut e,
                "disk_free_bytes",
                "Free space on the outbox's file system.",
                free as f64,
            )?;
        }
        gauge(
            &mut e,
            "uptime_seconds",
            "Seconds since the daemon started.",
            m.started.elapsed().as_secs_f64(),
        )?;
        // Stage timings.
        let mut enc = e.encode_descriptor(
            "stage_duration_seconds",
            "Time spent per stage: detect, ocr and frame (both) per frame; append per read stored.",
            None,
            MetricType::Histogram,
        )?;
        for (stage, histogram) in m.timings.stages() {
            histogram.encode(enc.encode_family(&[("stage", stage)])?)?;
        }
        Ok(())
    }
}
