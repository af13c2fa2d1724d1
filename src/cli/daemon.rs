//! `platecam run`: the daemon's process concerns: logging, signals, systemd readiness and
//! watchdog. The stages themselves are wired in `pipeline`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::pipeline;
use crate::telemetry::Metrics;

pub fn run(config: &Path) -> anyhow::Result<u8> {
    let cfg = match super::load_config(config, true) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let logs = crate::telemetry::init_logging(&cfg.logging);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.display(),
        device = %cfg.device_id(),
        "platecam starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("platecam-io")
        .enable_all()
        .build()?;
    let code = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signals(shutdown.clone()));
        let ready = {
            let shutdown = shutdown.clone();
            move |progress: Arc<Metrics>| {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                tracing::info!("ready");
                if let Some(interval) = sd_notify::watchdog_enabled() {
                    tokio::spawn(feed_watchdog(interval, progress, shutdown));
                }
            }
        };
        match pipeline::run(cfg, logs, shutdown, ready).await {
            Ok(summary) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                tracing::info!(
                    accepted = summary.reads_accepted,
                    unsent = summary.reads_unsent,
                    "platecam stopped"
                );
                0
            }
            Err(e) => {
                tracing::error!(error = %e, "platecam cannot run");
                e.exit_code()
            }
        }
    });
    Ok(u8::try_from(code).unwrap_or(1))
}

/// SIGTERM or SIGINT starts a graceful drain; a second one exits at once.
async fn stop_on_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if round == 0 {
            tracing::info!("signal received: draining (send again to stop at once)");
            shutdown.cancel();
        } else {
            tracing::warn!(
                "second signal: exiting without draining; buffered reads stay in the outbox"
            );
            std::process::exit(1);
        }
    }
}

/// Pets the systemd watchdog only while the pipeline makes progress: a stuck inference or
/// publisher loop stops the pets, and systemd restarts the unit.
async fn feed_watchdog(interval: Duration, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut last = metrics.progress.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = metrics.progress.load(Ordering::Relaxed);
        if now != last {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            last = now;
        } else {
            tracing::warn!(
                "pipeline made no progress for {:?}; not feeding the watchdog",
                interval / 2
            );
        }
    }
}
