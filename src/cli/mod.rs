//! Command-line interface: argument definitions and dispatch. Each command lives in its own file.

mod audit;
mod bench;
mod daemon;
mod devices;
mod outbox;
mod policy;
mod recognize;
mod verify;
mod watch;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

pub const DEFAULT_CONFIG: &str = "/etc/platecam/platecam.toml";

/// platecam: reads licence plates from a camera, buffers every read durably, and delivers it over
/// MQTT.
#[derive(Debug, Parser)]
#[command(name = "platecam", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: capture, recognise, buffer and publish until stopped (SIGTERM/SIGINT) or
    /// every replay source has ended. Exit 0 on a clean stop, 78 on bad config or models.
    Run {
        /// Config file (TOML).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a config file and report every problem at once, with key and line. Exit 78 if any.
    CheckConfig {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the default config, every key commented.
    PrintDefaultConfig,
    /// Read the plates in still images (a one-shot check for installers and evaluations).
    Recognize {
        /// Config file whose [recognition] section picks the models (default: our own models)
        /// and whose [tracking] section sets the pass rule each read is judged by.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One JSON object per image and line: {"image","plates":[{"text","confidence",
        /// "bbox":[x,y,w,h],"detector_score","kept","dropped"}],"ms":{...}}; `kept`: whether
        /// the daemon's pass rule ([tracking]) would send the read as a one-frame pass.
        #[arg(long)]
        json: bool,
        /// Treat each image as a plate crop: run only the OCR on the whole image.
        #[arg(long)]
        ocr_only: bool,
        /// Image files (JPEG or PNG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Run the configured cameras (or replays) through the recognition pipeline without
    /// publishing or storing anything, then print frames per second, per-stage p50/p95 ms, CPU
    /// per thread, frames gated and resident memory (see docs/performance.md).
    Bench {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// How long to run; less when every replay source ends before.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// One JSON object instead of the text report.
        #[arg(long)]
        json: bool,
    },
    /// List V4L2 devices: driver, card, pixel formats, frame sizes and rates.
    Devices {
        /// One JSON object per device and line.
        #[arg(long)]
        json: bool,
    },
    /// Print a unit's log events from the broker (the daemon forwards them when logging.mqtt_level
    /// is set). Events are not retained: without --follow, prints what arrives within --wait.
    Logs {
        #[command(flatten)]
        broker: watch::BrokerArgs,
        /// Device id, or + for every unit.
        #[arg(long)]
        device: String,
        /// Keep printing until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Least severe level printed: error, warn, info, debug, trace.
        #[arg(long, default_value = "info")]
        level: String,
        /// The events as JSON lines, as published.
        #[arg(long)]
        json: bool,
        /// Without --follow: how long to listen.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// List the units publishing under a prefix, with their retained status and latest health.
    Fleet {
        #[command(flatten)]
        broker: watch::BrokerArgs,
        #[arg(long)]
        json: bool,
        /// How long to wait for the retained messages.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// Inspect the outbox of a stopped daemon (sled allows one process at a time), or recover a
    /// moved-aside one.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    // privacy-wire
    /// Check signed reads from a file (JSON lines) or a broker: a tampered, swapped or replayed
    /// read is rejected. Exit 0: all genuine; 1: some rejected; 2: nothing to check.
    Verify(verify::VerifyArgs),
    /// What this unit keeps, for how long, encrypted how, and what it sends where.
    Policy {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The unit's tamper-evident audit log (`<storage.dir>/audit.log`).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the hash chain. Exit 0 with the entry count and head hash; 2 naming the first
    /// entry that was removed or edited; 1 when the log cannot be read.
    Verify {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// A log file to check instead of the one under the config's storage.dir.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// Count of buffered reads, bytes, evictions, oldest read.
    Stats {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every buffered read, oldest first (as JSON lines with --json).
    List {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Read what is readable from a moved-aside `outbox.corrupt-*` directory into the outbox (new
    /// seqs, same ids). Exit 0: all read; 2: some records unreadable (listed); 1: failed.
    Recover {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The moved-aside directory.
        dir: PathBuf,
    },
}

/// Runs a command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run { config } => daemon::run(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::PrintDefaultConfig => {
            print!("{}", config::DEFAULT_TOML);
            Ok(0)
        }
        Command::Recognize {
            config,
            json,
            ocr_only,
            images,
        } => recognize::run(config.as_deref(), json, ocr_only, &images),
        Command::Bench {
            config,
            seconds,
            json,
        } => bench::run(&config, seconds, json),
        Command::Devices { json } => devices::run(json),
        Command::Logs {
            broker,
            device,
            follow,
            level,
            json,
            wait,
        } => watch::logs(&broker, &device, follow, &level, json, wait),
        Command::Fleet { broker, json, wait } => watch::fleet(&broker, json, wait),
        Command::Outbox { action } => match action {
            OutboxAction::Stats { config, json } => outbox::stats(&config, json),
            OutboxAction::List { config, json } => outbox::list(&config, json),
            OutboxAction::Recover { config, dir } => outbox::recover(&config, &dir),
        },
        Command::Verify(args) => verify::run(args),
        Command::Policy { config, json } => policy::run(&config, json),
        Command::Audit {
            action: AuditAction::Verify { config, file },
        } => audit::verify(&config, file.as_deref()),
    }
}

fn check_config(path: &Path) -> anyhow::Result<u8> {
    match load_config(path, true) {
        Ok(_) => {
            println!("{}: ok", path.display());
            Ok(0)
        }
        Err(code) => Ok(code),
    }
}

/// Loads a config, printing every problem to stderr. `Err` carries the exit code (78).
pub(crate) fn load_config(path: &Path, for_run: bool) -> Result<Config, u8> {
    let purpose = if for_run {
        config::Purpose::Run
    } else {
        config::Purpose::Models
    };
    let checked = config::load_for(path, purpose);
    checked.map_err(|e| {
        eprintln!("platecam: {e}");
        crate::EXIT_CONFIG as u8
    })
}
