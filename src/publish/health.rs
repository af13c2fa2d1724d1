//! The periodic `health` message: rates over the last interval, so it keeps the previous snapshot.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use crate::outbox::OutboxStats;
use crate::telemetry::Metrics;
use crate::wire::{rfc3339_ms, CameraHealth, HealthMessage, PassesDropped};

#[derive(Debug)]
pub(crate) struct HealthSampler {
    at: Instant,
    frames: HashMap<String, u64>,
    inference_us: u64,
    inferences: u64,
}

impl HealthSampler {
    pub(crate) fn new(metrics: &Metrics) -> HealthSampler {
        HealthSampler {
            at: Instant::now(),
            frames: metrics
                .cameras()
                .into_iter()
                .map(|(name, cam)| (name, cam.frames.load(Ordering::Relaxed)))
                .collect(),
            inference_us: metrics.inference_us.load(Ordering::Relaxed),
            inferences: metrics.inferences.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn sample(
        &mut self,
        metrics: &Metrics,
        stats: &OutboxStats,
        disk_free_bytes: Option<u64>,
    ) -> HealthMessage {
        let now = Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        let cameras = metrics
            .cameras()
            .into_iter()
            .map(|(name, cam)| {
                let frames = cam.frames.load(Ordering::Relaxed);
                let before = self.frames.insert(name.clone(), frames).unwrap_or(0);
                let fps = if secs > 0.0 {
                    frames.saturating_sub(before) as f64 / secs
                } else {
                    0.0
                };
                let state = cam.state.lock().map(|s| s.clone()).unwrap_or_default();
                CameraHealth {
                    name,
                    fps,
                    frames_dropped: cam.frames_dropped.load(Ordering::Relaxed),
                    state,
                }
            })
            .collect();
        let us = metrics.inference_us.load(Ordering::Relaxed);
        let n = metrics.inferences.load(Ordering::Relaxed);
        let (d_us, d_n) = (
            us.saturating_sub(self.inference_us),
            n.saturating_sub(self.inferences),
        );
        (self.inference_us, self.inferences) = (us, n);
        let wall = SystemTime::now();
        HealthMessage {
            at: rfc3339_ms(wall),
            uptime_s: metrics.started.elapsed().as_secs(),
            cameras,
            inference_ms: if d_n > 0 {
                d_us as f64 / d_n as f64 / 1000.0
            } else {
                0.0
            },
            reads_total: metrics.reads_total.load(Ordering::Relaxed),
            reads_buffered: stats.count,
            oldest_unsent_age_s: stats.oldest_age.map(|d| d.as_secs_f64()),
            evictions: stats.evictions,
            quarantined: stats.quarantined,
            outbox_bytes: stats.bytes_on_disk,
            disk_free_bytes,
            logs_dropped: metrics.logs_dropped.load(Ordering::Relaxed),
            frames_recognized: n,
            detections: metrics.detections.load(Ordering::Relaxed),
            boxes_not_plates: metrics.boxes_not_plates.load(Ordering::Relaxed),
            passes_dropped: PassesDropped {
                noise: metrics.passes_dropped.noise.load(Ordering::Relaxed),
                low_confidence: metrics
                    .passes_dropped
                    .low_confidence
                    .load(Ordering::Relaxed),
                implausible: metrics.passes_dropped.implausible.load(Ordering::Relaxed),
            },
            reads_lost: metrics.reads_lost.load(Ordering::Relaxed),
            session_takeovers: metrics.session_takeovers.load(Ordering::Relaxed),
            frames_gated: metrics.frames_gated.load(Ordering::Relaxed),
            reads_expired: stats.expired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_interval() {
        let m = Metrics::default();
        let cam = m.camera("north");
        let mut h = HealthSampler::new(&m);
        cam.frames.fetch_add(10, Ordering::Relaxed);
        m.record_inference(std::time::Duration::from_millis(4));
        m.record_inference(std::time::Duration::from_millis(6));
        let stats = OutboxStats {
            count: 3,
            oldest_stored_at: Some(SystemTime::now()),
            oldest_age: Some(std::time::Duration::from_secs(2)),
            ..OutboxStats::default()
        };
        let msg = h.sample(&m, &stats, Some(5));
        assert_eq!(msg.cameras.len(), 1);
        assert!(msg.cameras[0].fps > 0.0);
        assert!((msg.inference_ms - 5.0).abs() < 1e-9);
        assert_eq!(msg.reads_buffered, 3);
        assert!(msg.oldest_unsent_age_s.is_some());
        let again = h.sample(&m, &stats, None);
        assert_eq!(again.cameras[0].fps, 0.0);
        assert_eq!(again.inference_ms, 0.0);
    }
}
