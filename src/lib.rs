//! platecam: a licence-plate-reading camera daemon.
//!
//! Data flows through the stages in this order, one folder each:
//! `capture` (frames) -> `recognize` (boxes, text, tracks -> one read per pass)
//! -> `outbox` (durable sled buffer) -> `publish` (MQTT). `pipeline` is the only
//! place that wires the stages together and owns the shutdown order.

pub mod capture;
pub mod cli;
pub mod config;
pub mod outbox;
pub mod pipeline;
pub mod privacy;
pub mod publish;
pub mod recognize;
pub mod telemetry;
pub mod web;
pub mod wire;

// Stable-Rust mutation fuzzing of everything parsed from outside (issue 13).
#[cfg(test)]
mod fuzz;

/// Exit code for bad configuration or unusable model files (sysexits `EX_CONFIG`).
/// systemd's `RestartPreventExitStatus=78` stops a restart loop on it.
pub const EXIT_CONFIG: i32 = 78;
