use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = platecam::cli::Cli::parse();
    match platecam::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("platecam: {e:#}");
            ExitCode::FAILURE
        }
    }
}
