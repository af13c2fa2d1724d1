//! `platecam logs` and `platecam fleet`: a person's view of units over MQTT, without SSH.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use tokio::sync::mpsc;

use crate::config::MqttConfig;
use crate::wire::{HealthMessage, LogMessage, StatusMessage};

/// How to reach the broker the units publish to.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Broker URL, mqtt://host[:port] or mqtts://host[:port].
    #[arg(long)]
    pub broker: String,
    #[command(flatten)]
    pub access: BrokerAccess,
}

/// The broker's topic prefix and credentials (shared by every command that subscribes).
#[derive(Debug, Clone, Args)]
pub struct BrokerAccess {
    /// Topic prefix the units use (their mqtt.prefix).
    #[arg(long, default_value = "platecam")]
    pub prefix: String,
    /// CA bundle for mqtts:// (default: the system's).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the password (never on the command line, where `ps` shows it).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

pub(super) struct Message {
    pub(super) topic: String,
    pub(super) payload: Vec<u8>,
}

/// How long a watcher waits for the broker to accept the connection and the subscription.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects, subscribes to `filters`, and forwards every message. Returns only once the broker
/// acknowledged the subscription, so an unreachable broker is an error (non-zero exit), never an
/// empty result. A connection lost later closes the stream: the caller reports it as an error
/// (a watcher is interactive: no reconnect loop).
pub(super) async fn subscribe(
    broker: &BrokerArgs,
    filters: &[String],
) -> anyhow::Result<mpsc::Receiver<Message>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mqtt = MqttConfig {
        url: broker.broker.clone(),
        ca: broker.access.ca.clone(),
        username: broker.access.username.clone(),
        password_file: broker.access.password_file.clone(),
        ..MqttConfig::default()
    };
    let client_id = format!("platecam-cli-{}", std::process::id());
    let opts = crate::publish::watcher_options(&mqtt, &client_id)?;
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    for filter in filters {
        client.subscribe(filter.as_str(), QoS::AtMostOnce).await?;
    }
    let url = broker.broker.clone();
    let acked = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => return Ok(()),
                Ok(Event::Incoming(Incoming::ConnAck(ack)))
                    if ack.code != rumqttc::ConnectReturnCode::Success =>
                {
                    return Err(anyhow::anyhow!(
                        "the broker refused the connection: {:?}",
                        ack.code
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(anyhow::Error::new(e)),
            }
        }
    })
    .await;
    match acked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => anyhow::bail!("cannot reach the broker {url}: {e:#}"),
        Err(_) => anyhow::bail!(
            "cannot reach the broker {url}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ),
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let msg = Message {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("platecam: broker {url}: {e}");
                    // Dropping `tx` closes the stream: the caller exits non-zero.
                    return;
                }
            }
        }
    });
    Ok(rx)
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Levels from most to least severe, as tracing names them.
const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

fn severity(level: &str) -> usize {
    LEVELS
        .iter()
        .position(|l| l.eq_ignore_ascii_case(level))
        .unwrap_or(LEVELS.len())
}

/// Prints log events of `device` (`+` for every unit). Log events are not retained by the broker:
/// without `follow`, it prints what arrives within `wait`, then exits.
pub fn logs(
    broker: &BrokerArgs,
    device: &str,
    follow: bool,
    level: &str,
    json: bool,
    wait: Duration,
) -> anyhow::Result<u8> {
    if severity(level) == LEVELS.len() {
        anyhow::bail!("--level {level:?}: use one of error, warn, info, debug, trace");
    }
    let topic = format!(
        "{}/{device}/logs",
        broker.access.prefix.trim_end_matches('/')
    );
    runtime()?.block_on(async {
        let mut rx = subscribe(broker, &[topic]).await?;
        loop {
            let next = if follow {
                rx.recv().await
            } else {
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            };
            let Some(msg) = next else {
                anyhow::bail!("lost the connection to the broker {}", broker.broker)
            };
            let Ok(event) = serde_json::from_slice::<LogMessage>(&msg.payload) else {
                eprintln!("platecam: {}: not a log event", msg.topic);
                continue;
            };
            if severity(&event.level) > severity(level) {
                continue;
            }
            if json {
                println!("{}", json_line(&event)?);
            } else {
                let unit = msg.topic.split('/').rev().nth(1).unwrap_or("?");
                let fields: Vec<String> = event
                    .fields
                    .iter()
                    .map(|(k, v)| match v.as_str() {
                        Some(s) => format!("{}={}", printable(k), printable(s)),
                        None => format!("{}={}", printable(k), printable(&v.to_string())),
                    })
                    .collect();
                println!(
                    "{} {} {:>5} {}: {} {}",
                    printable(&event.at),
                    printable(unit),
                    printable(&event.level),
                    printable(&event.target),
                    printable(event.message.trim_end()),
                    fields.join(" ")
                );
                if event.dropped > 0 {
                    println!(
                        "  ({} events dropped by the unit's rate limit so far)",
                        event.dropped
                    );
                }
            }
        }
        Ok(0)
    })
}

/// Characters a terminal may act on rather than show: C0/C1 controls (escape sequences can
/// retitle the window, rewrite the screen or worse) and the bidi overrides that reorder text.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A string from the broker (any client may publish under the prefix), made safe to print: one
/// line, with every unsafe character shown escaped (`\n`, `\u{1b}`).
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A message as one JSON line, safe for a terminal: serde_json escapes C0 controls but passes
/// DEL, C1 and bidi characters through; those are written as `\uXXXX` (still valid JSON).
fn json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    let text = serde_json::to_string(value)?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[derive(Default, serde::Serialize)]
struct Unit {
    device: String,
    status: Option<StatusMessage>,
    health: Option<HealthMessage>,
}

/// Lists the units that have a retained status or health under the prefix.
pub fn fleet(broker: &BrokerArgs, json: bool, wait: Duration) -> anyhow::Result<u8> {
    let prefix = broker.access.prefix.trim_end_matches('/');
    let filters = [format!("{prefix}/+/status"), format!("{prefix}/+/health")];
    let units = runtime()?.block_on(async {
        let mut rx = subscribe(broker, &filters).await?;
        let mut units: BTreeMap<String, Unit> = BTreeMap::new();
        // Retained messages arrive right after the subscription: stop once the burst is over.
        while let Ok(next) = tokio::time::timeout(wait, rx.recv()).await {
            let Some(msg) = next else {
                anyhow::bail!("lost the connection to the broker {}", broker.broker)
            };
            let mut parts = msg.topic.rsplit('/');
            let (Some(kind), Some(device)) = (parts.next(), parts.next()) else {
                continue;
            };
            let unit = units.entry(device.to_string()).or_insert_with(|| Unit {
                device: device.to_string(),
                ..Unit::default()
            });
            match kind {
                "status" => unit.status = serde_json::from_slice(&msg.payload).ok(),
                _ => unit.health = serde_json::from_slice(&msg.payload).ok(),
            }
        }
        anyhow::Ok(units)
    })?;
    if json {
        for unit in units.values() {
            println!("{}", json_line(unit)?);
        }
        return Ok(0);
    }
    println!(
        "{:<20} {:<8} {:<9} {:>8} {:>7} {:>9} {:>10} {:>9} {:>10}  last health",
        "device", "state", "version", "uptime", "fps", "buffered", "oldest", "evicted", "disk free"
    );
    for u in units.values() {
        let device = printable(&u.device);
        let state = printable(u.status.as_ref().map_or("?", |s| s.state.as_str()));
        let version = printable(
            u.status
                .as_ref()
                .and_then(|s| s.version.as_deref())
                .unwrap_or("-"),
        );
        match &u.health {
            Some(h) => {
                let fps: f64 = h.cameras.iter().map(|c| c.fps).sum();
                println!(
                    "{:<20} {:<8} {:<9} {:>7}s {:>7.1} {:>9} {:>10} {:>9} {:>10}  {}",
                    device,
                    state,
                    version,
                    h.uptime_s,
                    fps,
                    h.reads_buffered,
                    h.oldest_unsent_age_s
                        .map_or("-".into(), |a| format!("{a:.0}")),
                    h.evictions,
                    h.disk_free_bytes
                        .map_or("-".into(), |b| (b >> 20).to_string()),
                    printable(&h.at)
                );
            }
            None => println!(
                "{:<20} {:<8} {:<9}  (no health yet)",
                device, state, version
            ),
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_strings_are_printed_escaped() {
        assert_eq!(printable("unit-1 ok"), "unit-1 ok");
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable("\u{1b}]0;pwned\u{7}"), "\\u{1b}]0;pwned\\u{7}");
        assert_eq!(printable("\u{9b}2J\u{202e}"), "\\u{9b}2J\\u{202e}");
        let line = json_line(&serde_json::json!({"v": "\u{1b}[2J\u{9b}\u{202e}"})).unwrap();
        assert!(!line.chars().any(is_unsafe), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["v"], "\u{1b}[2J\u{9b}\u{202e}");
    }
}
