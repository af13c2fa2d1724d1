//! `platecam run`: the daemon's process concerns: logging, signals, systemd readiness and
//! watchdog. The stages themselves are wired in `pipeline`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::pipeline;
use crate::telemetry::{stalled_stage, Metrics};

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

/// SIGTERM or SIGINT starts a graceful drain; a second one exits at once. SIGHUP (`systemctl
/// reload`) is only logged here: the hotlist watcher reloads on it, and without a handler its
/// default action would end the process.
async fn stop_on_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    let mut round = 0;
    while round < 2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {
                tracing::info!("SIGHUP: the hotlist, if one is configured, is reloaded; other settings need a restart");
                continue;
            }
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
        round += 1;
    }
}

/// Pets the systemd watchdog only while every stage makes progress (capture, recognition and the
/// publisher; see `telemetry::stalled_stage`): a hung camera ioctl, a stuck inference or a dead or
/// hung publisher stops the pets, and systemd restarts the unit. A publisher that ends with an
/// error also ends `pipeline::run`, so the process exits non-zero without waiting for the watchdog.
async fn feed_watchdog(interval: Duration, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut last = metrics.progress_snapshot();
    let mut tick = tokio::time::interval(interval / 2);
    // The first tick is immediate: nothing can have moved yet.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = metrics.progress_snapshot();
        match stalled_stage(&last, &now) {
            None => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Some(stage) => tracing::warn!(
                %stage,
                "no progress for {:?}; not feeding the watchdog",
                interval / 2
            ),
        }
        last = now;
    }
}
