//! `platecam policy`: what this unit keeps, for how long, encrypted how, and what it sends where,
//! in plain words or JSON, from its config (the same code that enforces it: `privacy::policy`).

use std::path::Path;

use crate::privacy::policy::Statement;

pub fn run(config: &Path, json: bool) -> anyhow::Result<u8> {
    let cfg = match super::load_config(config, false) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let statement = Statement::of(&cfg);
    if json {
        println!("{}", serde_json::to_string_pretty(&statement)?);
    } else {
        print!("{}", statement.plain());
    }
    Ok(0)
}
