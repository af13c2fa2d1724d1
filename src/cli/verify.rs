//! `platecam verify`: checks signed reads (docs/wire-format.md, "Signed reads") from a file of
//! JSON lines or from a broker, against the units' published identities or a given key. Prints
//! one line per read (its id, never its plate); exit 0 when every read checked is genuine, 1 when
//! any is rejected, 2 when there was nothing to check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::watch::{runtime, subscribe, BrokerAccess, BrokerArgs};
use crate::privacy::sign::{verify, PublicKey, Rejected};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A file of reads, one JSON object per line, as published on `reads` or `alerts`.
    #[arg(conflicts_with = "broker", required_unless_present = "broker")]
    pub file: Option<PathBuf>,
    /// The unit's key: its `identity` message (JSON, binds the device too) or the public key in
    /// hex. Default: the identities the units publish on the broker.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// With FILE: a folder of crops named `<read id>.jpg`, checked against the signed sha256.
    #[arg(long, requires = "file")]
    pub crops: Option<PathBuf>,
    /// Subscribe to a broker instead: every unit's identity, reads, alerts and crops.
    #[arg(long)]
    pub broker: Option<String>,
    #[command(flatten)]
    pub access: BrokerAccess,
    /// With --broker: how long to listen.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// One read to check.
struct Item {
    json: Vec<u8>,
    /// The device level of the topic it came on.
    topic_device: Option<String>,
    /// `None`: crops are not checked; `Some(None)`: checked, and none came.
    crop: Option<Option<Vec<u8>>>,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let given = match &args.key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the key {}", path.display()))?;
            Some(PublicKey::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let (items, identities) = match &args.file {
        Some(file) => (from_file(file, args.crops.as_deref())?, HashMap::new()),
        None => from_broker(&args)?,
    };
    if items.is_empty() {
        eprintln!("platecam: no reads to verify");
        return Ok(2);
    }
    let mut rejected = 0;
    for item in &items {
        let (device, id) = names(&item.json);
        let key = given
            .as_ref()
            .or_else(|| identities.get(item.topic_device.as_deref().unwrap_or(device.as_str())));
        let outcome = match key {
            Some(key) => verify(
                &item.json,
                key,
                item.topic_device.as_deref(),
                item.crop.as_ref().map(|c| c.as_deref()),
            )
            .map(|_| ()),
            None => Err(Rejected::UnknownDevice(device.clone())),
        };
        match outcome {
            Ok(()) => println!("ok {device} {id}"),
            Err(why) => {
                rejected += 1;
                println!("REJECTED {device} {id}: {why}");
            }
        }
    }
    eprintln!(
        "platecam: {} reads, {} genuine, {rejected} rejected",
        items.len(),
        items.len() - rejected
    );
    Ok(if rejected == 0 { 0 } else { 1 })
}

/// The read's device and id, for the report (whatever the read's shape).
fn names(json: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    let field = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("?").to_string();
    (field("device"), field("id"))
}

fn from_file(file: &Path, crops: Option<&Path>) -> anyhow::Result<Vec<Item>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let json = line.as_bytes().to_vec();
            let crop =
                crops.map(|dir| std::fs::read(dir.join(format!("{}.jpg", names(&json).1))).ok());
            Item {
                json,
                topic_device: None,
                crop,
            }
        })
        .collect())
}

type Identities = HashMap<String, PublicKey>;

fn from_broker(args: &VerifyArgs) -> anyhow::Result<(Vec<Item>, Identities)> {
    let broker = BrokerArgs {
        broker: args.broker.clone().unwrap_or_default(),
        access: args.access.clone(),
    };
    let prefix = args.access.prefix.trim_end_matches('/');
    let filters: Vec<String> = ["identity", "reads", "alerts", "crops/+"]
        .iter()
        .map(|t| format!("{prefix}/+/{t}"))
        .collect();
    let messages = runtime()?.block_on(async {
        let mut rx = subscribe(&broker, &filters).await?;
        let mut all = Vec::new();
        let until = tokio::time::Instant::now() + args.wait;
        while let Ok(Some(m)) = tokio::time::timeout_at(until, rx.recv()).await {
            all.push(m);
        }
        anyhow::Ok(all)
    })?;
    let mut identities = Identities::new();
    let mut crops = HashMap::new();
    let mut reads = Vec::new();
    for m in messages {
        let rest = m
            .topic
            .strip_prefix(prefix)
            .unwrap_or(&m.topic)
            .trim_start_matches('/');
        let Some((device, kind)) = rest.split_once('/') else {
            continue;
        };
        match kind {
            "identity" => match PublicKey::parse(&String::from_utf8_lossy(&m.payload)) {
                // An identity must name the unit whose topic it is on.
                Ok(key) if key.device.as_deref() == Some(device) => {
                    identities.insert(device.to_string(), key);
                }
                Ok(_) => eprintln!("platecam: {}: identity of another device, ignored", m.topic),
                Err(e) => eprintln!("platecam: {}: {e}", m.topic),
            },
            "reads" | "alerts" => reads.push((device.to_string(), m.payload)),
            other => {
                if let Some(id) = other.strip_prefix("crops/") {
                    crops.insert(id.to_string(), m.payload);
                }
            }
        }
    }
    let items = reads
        .into_iter()
        .map(|(device, json)| {
            let crop = Some(crops.get(&names(&json).1).cloned());
            Item {
                json,
                topic_device: Some(device),
                crop,
            }
        })
        .collect();
    Ok((items, identities))
}
