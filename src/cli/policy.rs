//! `platecam policy`: what this unit keeps, for how long, encrypted how, and what it sends where,
//! in plain words or JSON, from its config (the same code that enforces it: `privacy::policy`).

use std::path::Path;

use crate::privacy::policy::Statement;

pub fn run(config: &Path, json: bool) -> anyhow::Result<u8> {
    // Static checks only: the statement can be made on any machine, not just the unit.
    let cfg = match crate::config::load(config) {
        Ok(loaded) => loaded.config,
        Err(e) => {
            eprintln!("platecam: {e}");
            return Ok(crate::EXIT_CONFIG as u8);
        }
    };
    let statement = Statement::of(&cfg);
    if json {
        println!("{}", serde_json::to_string_pretty(&statement)?);
    } else {
        print!("{}", statement.plain());
    }
    Ok(0)
}
