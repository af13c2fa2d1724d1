use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_malloc();
    let cli = platecam::cli::Cli::parse();
    match platecam::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("platecam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc keeps freed tract buffers (a few MB each, per frame) in its heap: its mmap threshold
/// grows to 32 MB once such a block is freed, and each worker thread gets its own arena. A fixed
/// 256 KiB threshold returns them to the kernel on free, and one arena is enough for our few
/// threads (the big blocks bypass it): resident memory on a busy 1080p replay drops by about a
/// third (docs/performance.md).
/// `MALLOC_MMAP_THRESHOLD_` / `MALLOC_ARENA_MAX` in the environment still win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    for (var, param, value) in [
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 256 << 10),
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
    ] {
        if std::env::var_os(var).is_none() {
            // SAFETY: called first thing in main, before any other thread exists.
            unsafe { libc::mallopt(param, value) };
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
