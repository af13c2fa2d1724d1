//! `platecam outbox stats|list|recover`: look into the buffer of a stopped daemon, or read a
//! moved-aside one back into it. A running daemon's outbox is never touched: the command says so
//! and exits 1. Every failure exits non-zero with its message on stderr.

use std::path::Path;

use serde::Serialize;

use crate::outbox::Outbox;
use crate::wire::rfc3339_ms;

#[derive(Serialize)]
struct StatsJson {
    dir: String,
    count: u64,
    payload_bytes: u64,
    bytes_on_disk: u64,
    evictions: u64,
    quarantined: u64,
    expired: u64,
    next_seq: u64,
    oldest_stored_at: Option<String>,
}

/// Opens the outbox to look into it: never creates or moves anything.
fn open(config: &Path) -> anyhow::Result<Result<Outbox, u8>> {
    let cfg = match super::load_config(config, false) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(Err(code)),
    };
    Ok(Ok(Outbox::inspect_with(&cfg.storage, &cfg.privacy)?))
}

pub fn stats(config: &Path, json: bool) -> anyhow::Result<u8> {
    let outbox = match open(config)? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    let s = outbox.stats();
    let out = StatsJson {
        dir: outbox.dir().display().to_string(),
        count: s.count,
        payload_bytes: s.payload_bytes,
        bytes_on_disk: s.bytes_on_disk,
        evictions: s.evictions,
        quarantined: s.quarantined,
        expired: s.expired,
        next_seq: s.next_seq,
        oldest_stored_at: s.oldest_stored_at.map(rfc3339_ms),
    };
    if json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("outbox:        {}", out.dir);
        println!("reads:         {}", out.count);
        println!("payload bytes: {}", out.payload_bytes);
        println!("disk bytes:    {}", out.bytes_on_disk);
        println!("evictions:     {}", out.evictions);
        println!("quarantined:   {}", out.quarantined);
        println!("expired:       {}", out.expired);
        println!("next seq:      {}", out.next_seq);
        println!(
            "oldest read:   {}",
            out.oldest_stored_at.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}

pub fn list(config: &Path, json: bool) -> anyhow::Result<u8> {
    let outbox = match open(config)? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    let mut after = None;
    loop {
        let page = outbox.pending(after, 1000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for r in &page {
            if json {
                println!("{}", serde_json::to_string(&r.message)?);
            } else {
                println!(
                    "{:>8}  {}  {:<10} {:.2}  {}  stored {}  crop {} bytes",
                    r.seq,
                    r.message.captured_at,
                    r.message.plate,
                    r.message.confidence,
                    r.message.camera,
                    rfc3339_ms(r.stored_at),
                    r.crop.as_ref().map_or(0, |c| c.len())
                );
            }
        }
    }
    Ok(0)
}

/// Exit code of a recovery that left records behind.
const EXIT_PARTIAL: u8 = 2;

/// Reads a moved-aside outbox into the live one (the daemon must be stopped). Exits 0 when every
/// record was read, 2 when some could not be (listed on stderr), 1 on failure.
pub fn recover(config: &Path, aside: &Path) -> anyhow::Result<u8> {
    let cfg = match super::load_config(config, false) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    let (outbox, _) = Outbox::open_with(&cfg.storage, &cfg.privacy)?;
    let report = outbox.recover(aside)?;
    if report.expired > 0 {
        println!(
            "{} reads older than privacy.max_age were not recovered",
            report.expired
        );
    }
    match (report.recovered.first(), report.recovered.last()) {
        (Some(first), Some(last)) => println!(
            "recovered {} reads into {} as seq {first}..={last}",
            report.recovered.len(),
            outbox.dir().display()
        ),
        _ => println!("recovered no reads"),
    }
    if let Some(to) = &report.renamed_to {
        println!("{} renamed to {}", aside.display(), to.display());
    }
    for (seq, reason) in &report.unreadable {
        match seq {
            Some(seq) => eprintln!("platecam: could not read old seq {seq}: {reason}"),
            None => eprintln!("platecam: {reason}"),
        }
    }
    Ok(if report.unreadable.is_empty() {
        0
    } else {
        EXIT_PARTIAL
    })
}
