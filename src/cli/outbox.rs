//! `platecam outbox stats|list`: look into the buffer of a stopped daemon.

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
    next_seq: u64,
    oldest_stored_at: Option<String>,
}

fn open(config: &Path) -> anyhow::Result<Result<Outbox, u8>> {
    let cfg = match super::load_config(config, false) {
        Ok(cfg) => cfg,
        Err(code) => return Ok(Err(code)),
    };
    let (outbox, _) = Outbox::open(&cfg.storage).map_err(|e| {
        anyhow::anyhow!(
            "{e} (is a platecam daemon running on this outbox? sled allows one process)"
        )
    })?;
    Ok(Ok(outbox))
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
