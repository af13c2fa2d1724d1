//! Drain of a backlog of buffered reads to a local mosquitto (the brief's bar: 100,000 in under a
//! minute). One timed drain per run, printed as reads/s: a drain empties the outbox, so it cannot be
//! repeated in place, and 100,000 appends (each synced to disk) cost more than the drain itself.
//!
//! `DRAIN_READS` (default 100000), `DRAIN_CROP_BYTES` (2048), `DRAIN_INFLIGHT` (the config default).
//! Run: `cargo bench --bench drain` (or `--profile dev`, whose dependencies are optimised too).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use platecam::config::{MqttConfig, StorageConfig};
use platecam::outbox::Outbox;
use platecam::publish::{run, PublishSettings};
use platecam::telemetry::Metrics;
use support::mosquitto::Mosquitto;
use support::{fake_crop, sample_read};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // RUST_LOG=platecam=debug shows the publisher's view.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let reads = env_num("DRAIN_READS", 100_000);
    let crop_bytes = env_num("DRAIN_CROP_BYTES", 2048) as usize;
    let inflight = env_num("DRAIN_INFLIGHT", u64::from(MqttConfig::default().inflight)) as u16;

    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = StorageConfig {
        dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let (outbox, _) = Outbox::open(&storage).expect("open outbox");
    let outbox = Arc::new(outbox);
    let t = Instant::now();
    for i in 0..reads {
        outbox
            .append(sample_read("bench", "ABC1234"), fake_crop(i, crop_bytes))
            .expect("append");
    }
    let fill = t.elapsed();
    println!(
        "filled {reads} reads ({crop_bytes} B crops) in {:.1} s ({:.0} appends/s)",
        fill.as_secs_f64(),
        reads as f64 / fill.as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let settings = PublishSettings {
            mqtt: MqttConfig {
                url: broker.url(),
                prefix: "bench".into(),
                inflight,
                ..MqttConfig::default()
            },
            device_id: "bench".into(),
            client_id: "platecam-bench".into(),
            version: "bench".into(),
            storage_dir: dir.path().to_path_buf(),
        };
        let shutdown = CancellationToken::new();
        let t = Instant::now();
        let task = tokio::spawn(run(
            settings,
            outbox.clone(),
            Arc::new(Notify::new()),
            Arc::new(Metrics::default()),
            None,
            shutdown.clone(),
        ));
        let limit = Duration::from_secs(600);
        while outbox.stats().count > 0 && t.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let drain = t.elapsed();
        shutdown.cancel();
        let report = task.await.expect("publisher task").expect("publisher");
        let left = outbox.stats().count;
        println!(
            "drained {} reads (inflight window {inflight}) in {:.2} s: {:.0} reads/s; {left} left; {report:?}",
            report.acked,
            drain.as_secs_f64(),
            report.acked as f64 / drain.as_secs_f64()
        );
    });
}
