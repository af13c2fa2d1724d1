//! `platecam audit verify`: checks the audit log's hash chain.

use std::path::Path;

use crate::privacy::audit::{self, AuditError};

/// Exit 0 when the chain holds, 2 naming the first bad entry, 1 when the log cannot be read.
pub fn verify(config: &Path, file: Option<&Path>) -> anyhow::Result<u8> {
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => match super::load_config(config, false) {
            Ok(cfg) => cfg.storage.dir.join(audit::FILE),
            Err(code) => return Ok(code),
        },
    };
    match audit::verify(&path) {
        Ok(v) => {
            println!(
                "{}: {} entries (from entry {}, in {} file(s) with the rotated ones), chain intact; head {}",
                path.display(),
                v.entries,
                v.first,
                v.files,
                v.head
            );
            Ok(0)
        }
        Err(e @ AuditError::Broken { .. }) => {
            eprintln!("platecam: {e}");
            Ok(2)
        }
        Err(e) => Err(e.into()),
    }
}
