//! Publish: MQTT delivery of reads, crops, status and health (rumqttc on tokio).
//!
//! # Delivery contract
//! Every read in the outbox is published QoS 1, in `seq` order: its JSON on `reads`, then its JPEG on
//! `crops/<id>`. A record is removed from the outbox only once the broker has sent the PUBACK of
//! *every* publish of that record. The outbox, not rumqttc, is the source of truth: after any
//! reconnect everything still stored is handed again (at-least-once; consumers de-duplicate on `id`).
//!
//! # PUBACK correlation
//! rumqttc's `publish()` only queues a request; it never tells which packet id (pkid) the publish got.
//! The pkid shows up later as `Event::Outgoing(Outgoing::Publish(pkid))`, emitted when the packet is
//! written, in the order the requests were queued; the ack shows up as
//! `Event::Incoming(Incoming::PubAck { pkid })`. So [`ledger::Ledger`] keeps:
//! - a FIFO of the parts handed to the client (`(seq, part)` for reads and crops, and a control entry
//!   for every status/health publish, which go through the same client and would otherwise shift the
//!   mapping);
//! - on `Outgoing::Publish(pkid)`: a pkid already mapped is a retransmit (nothing is popped); pkid 0
//!   is a QoS 0 publish (popped and done at once); any other pkid takes the next FIFO entry;
//! - on `PubAck { pkid }`: that part is acked; when the last part of a `seq` is acked, the publisher
//!   calls `outbox.remove(seq)`.
//!
//! At most `mqtt.inflight` reads are handed and unacknowledged at a time (the window); new reads are
//! noticed through the `new_reads` [`tokio::sync::Notify`] and a periodic re-scan.
//!
//! # Connections
//! We connect with a clean session, so the broker never replays an old session and rumqttc drops
//! everything it held on each ConnAck (`session_present == false`). The publisher therefore clears the
//! ledger on every ConnAck and starts over from the oldest stored read. After any `poll()` error the
//! client and event loop are dropped and rebuilt after a capped, jittered exponential backoff: their
//! state is worthless after an error with a clean session, and a fresh pair cannot hit rumqttc's
//! reconnect bugs (#1014 repeated CollisionTimeout, #1056 livelock after a lost session).
//! The event loop runs in its own task and forwards events over a channel, so the publisher never
//! cancels `poll()` half-way through a write (which would lose a request and shift the FIFO).

mod connect;
pub(crate) mod health;
mod ledger;
mod mqtt;

use std::path::PathBuf;

use thiserror::Error;

use crate::config::{Config, MqttConfig};
use crate::outbox::OutboxError;

pub use mqtt::{run, run_with, PrivacyLinks};

/// Everything the publisher needs besides the shared handles.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    pub mqtt: MqttConfig,
    pub device_id: String,
    pub client_id: String,
    /// Reported in the retained `online` status.
    pub version: String,
    /// The storage directory: `health` reports the free space of its file system.
    pub storage_dir: PathBuf,
}

impl PublishSettings {
    pub fn new(config: &Config, version: &str) -> PublishSettings {
        PublishSettings {
            mqtt: config.mqtt.clone(),
            device_id: config.device_id(),
            client_id: config.client_id(),
            version: version.to_string(),
            storage_dir: config.storage.dir.clone(),
        }
    }
}

/// What a publisher run did, returned on shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Read and crop publishes written to the broker (re-sends after a reconnect count again).
    pub published: u64,
    /// Reads whose every publish was acknowledged and which were removed from the outbox.
    pub acked: u64,
    /// Successful connections (ConnAcks).
    pub connects: u64,
    /// Connections lost or attempts failed.
    pub connection_errors: u64,
    /// Reads handed but not acknowledged when the drain timeout ran out (they stay in the outbox).
    pub unacked_at_shutdown: u64,
}

/// MQTT topics of one device: `<prefix>/<device>/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub reads: String,
    pub status: String,
    pub health: String,
    pub logs: String,
    /// privacy-wire: the signing key (retained), hotlist hits, reads per hour.
    pub identity: String,
    pub alerts: String,
    pub counts: String,
    /// The audit log's entries as they are made (`privacy::audit`).
    pub audit: String,
    /// `<prefix>/<device>/crops/`; a crop goes to this plus the read id.
    crops_base: String,
}

impl Topics {
    /// Checks both parts, because a wildcard or an empty level in them would make every topic
    /// unpublishable (the broker disconnects us) or collide with another device's.
    pub fn new(prefix: &str, device_id: &str) -> Result<Topics, PublishError> {
        let bad = |key: &'static str, value: &str, reason: &str| PublishError::Setting {
            key,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if prefix.contains(['+', '#', '\0']) {
            return Err(bad(
                "mqtt.prefix",
                prefix,
                "must not contain '+', '#' or NUL",
            ));
        }
        if device_id.is_empty() || device_id.contains(['+', '#', '/', '\0']) {
            return Err(bad(
                "device.id",
                device_id,
                "must be non-empty without '+', '#', '/' or NUL",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        let base = if prefix.is_empty() {
            format!("{device_id}/")
        } else {
            format!("{prefix}/{device_id}/")
        };
        Ok(Topics {
            reads: format!("{base}reads"),
            status: format!("{base}status"),
            health: format!("{base}health"),
            logs: format!("{base}logs"),
            identity: format!("{base}identity"),
            alerts: format!("{base}alerts"),
            counts: format!("{base}counts"),
            audit: format!("{base}audit"),
            crops_base: format!("{base}crops/"),
        })
    }

    /// `<prefix>/<device>/crops/<read id>`.
    pub fn crop(&self, read_id: &str) -> String {
        format!("{}{read_id}", self.crops_base)
    }
}

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("invalid setting {key} = {value:?}: {reason}")]
    Setting {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid MQTT broker url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unusable {what} {path} for {url}: {reason}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        url: String,
        reason: String,
    },
    #[error("outbox {op} failed while publishing to {url}: {source}")]
    Outbox {
        op: &'static str,
        url: String,
        #[source]
        source: OutboxError,
    },
    #[error("outbox {op} did not complete (worker thread: {reason})")]
    Worker { op: &'static str, reason: String },
    #[error("cannot sign the read with seq {seq}: {source}")]
    Sign {
        seq: u64,
        #[source]
        source: crate::privacy::sign::SignError,
    },
    #[error("cannot encode the read with seq {seq} for topic {topic}: {source}")]
    Encode {
        seq: u64,
        topic: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Connection options for a command-line watcher (`platecam logs`, `platecam fleet`): the same
/// URL, TLS and credential handling as the daemon, with no last will (a watcher is no device).
pub fn watcher_options(
    mqtt: &MqttConfig,
    client_id: &str,
) -> Result<rumqttc::MqttOptions, PublishError> {
    let settings = PublishSettings {
        mqtt: mqtt.clone(),
        device_id: client_id.to_string(),
        client_id: client_id.to_string(),
        version: String::new(),
        storage_dir: PathBuf::new(),
    };
    connect::mqtt_options(&settings, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_wire_format() {
        let t = Topics::new("platecam/", "unit-0042").unwrap();
        assert_eq!(t.reads, "platecam/unit-0042/reads");
        assert_eq!(t.status, "platecam/unit-0042/status");
        assert_eq!(t.health, "platecam/unit-0042/health");
        assert_eq!(t.logs, "platecam/unit-0042/logs");
        assert_eq!(t.identity, "platecam/unit-0042/identity");
        assert_eq!(t.alerts, "platecam/unit-0042/alerts");
        assert_eq!(t.counts, "platecam/unit-0042/counts");
        assert_eq!(t.crop("abc"), "platecam/unit-0042/crops/abc");
        assert_eq!(Topics::new("", "u").unwrap().reads, "u/reads");
    }

    #[test]
    fn topics_reject_wildcards() {
        assert!(Topics::new("plate#", "u").is_err());
        assert!(Topics::new("p", "a/b").is_err());
        assert!(Topics::new("p", "").is_err());
        assert!(Topics::new("p", "+").is_err());
    }
}
