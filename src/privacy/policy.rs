//! The privacy policy, in one place: enforced on each read before it reaches the disk
//! ([`ReadPolicy`]) and stated for people (`platecam policy`, [`Statement`]), both from the
//! same config, so what the unit says it does is what it does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::hotlist::{hotlist_loaded, Hotlist, HotlistError, SharedHotlist};
use super::keys::{KeyError, KeySource};
use super::pseudonym::Pseudonyms;
use super::sign::{SignError, Signer};
use crate::config::{Config, PrivacyMode};
use crate::recognize::Candidate;
use crate::wire::{rfc3339_ms, CountsMessage, HotlistHit, ReadMessage};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Hotlist(#[from] HotlistError),
    #[error("pseudonyms: {0}")]
    SiteKey(#[from] KeyError),
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// What the pipeline needs to enforce the policy.
#[derive(Debug)]
pub struct Enforced {
    pub reads: Arc<ReadPolicy>,
    pub signer: Arc<Signer>,
    /// The hotlist in force and its file, for the reloader.
    pub hotlist: Option<(SharedHotlist, PathBuf)>,
}

/// Loads the keys and the hotlist the config asks for. Each failure is an error: a unit must not
/// run unsigned, or without the hotlist it was told to alert on.
pub fn enforce(cfg: &Config) -> Result<Enforced, PolicyError> {
    let p = &cfg.privacy;
    let dir = &cfg.storage.dir;
    let (signer, signing_source) =
        Signer::load(p.signing_key_file.as_deref(), dir, &cfg.device_id())?;
    let hotlist = match &p.hotlist {
        Some(path) => {
            let list = Hotlist::load(path)?;
            hotlist_loaded(path, &list);
            Some((SharedHotlist::new(list), path.clone()))
        }
        None => None,
    };
    let pseudonyms = match p.mode {
        PrivacyMode::Pseudonymous => {
            let (ps, source) = Pseudonyms::load(p.site_key_file.as_deref(), dir)?;
            if matches!(source, KeySource::Created(_)) {
                tracing::warn!("a new site key was made for this unit alone: its pseudonyms match no other unit's (provision privacy.site_key_file or the platecam-site credential)");
            }
            Some(ps)
        }
        _ => None,
    };
    policy_in_force(p.mode, &signing_source, &signer);
    Ok(Enforced {
        reads: Arc::new(ReadPolicy {
            mode: p.mode,
            hotlist: hotlist.as_ref().map(|(l, _)| l.clone()),
            pseudonyms,
            counts: Arc::default(),
        }),
        signer: Arc::new(signer),
        hotlist,
    })
}

/// The mode and keys in force at start: logged and recorded in the audit log.
fn policy_in_force(mode: PrivacyMode, signing: &KeySource, signer: &Signer) {
    tracing::info!(
        event = "privacy_mode",
        mode = mode.as_str(),
        signing_key = ?signing,
        public_key = %signer.public_key_hex(),
        "privacy policy in force"
    );
    super::audit::record(
        "privacy_mode",
        serde_json::json!({
            "mode": mode.as_str(),
            "signing_key": format!("{signing:?}"),
            "public_key": signer.public_key_hex(),
        }),
    );
}

/// Decides, per read, what of it may be kept and sent.
#[derive(Debug)]
pub struct ReadPolicy {
    mode: PrivacyMode,
    hotlist: Option<SharedHotlist>,
    pseudonyms: Option<Pseudonyms>,
    pub counts: Arc<HourlyCounts>,
}

/// What may be kept of one read.
#[derive(Debug)]
pub struct Keep {
    pub hit: Option<HotlistHit>,
    pseudonym: Option<String>,
}

impl Keep {
    /// A pseudonymous read keeps no crop: the plate is legible in it.
    pub fn crop(&self) -> bool {
        self.pseudonym.is_none()
    }

    /// Puts the hit and pseudonym into the message and takes the plate text out where the mode
    /// says so.
    pub fn shape(self, message: &mut ReadMessage) {
        message.hit = self.hit;
        if let Some(pseudonym) = self.pseudonym {
            message.pseudonym = Some(pseudonym);
            message.plate.clear();
            message.chars.clear();
            message.candidates.clear();
        }
    }
}

impl ReadPolicy {
    /// `None`: the read is not to be kept at all (mode "hotlist-only", no hit); it is counted.
    pub fn decide(&self, plate: &str, candidates: &[Candidate], now: SystemTime) -> Option<Keep> {
        let hit = self
            .hotlist
            .as_ref()
            .and_then(|l| l.current().check(plate, candidates, now));
        let keep = match (&hit, self.mode, &self.pseudonyms) {
            (Some(_), _, _) | (None, PrivacyMode::All, _) => Some(Keep {
                hit,
                pseudonym: None,
            }),
            (None, PrivacyMode::HotlistOnly, _) => None,
            (None, PrivacyMode::Pseudonymous, ps) => Some(Keep {
                hit: None,
                pseudonym: ps.as_ref().map(|ps| ps.of(plate)),
            }),
        };
        self.counts.record(now, keep.as_ref());
        keep
    }
}

/// Reads per clock hour (UTC), kept in memory: in mode "hotlist-only" the only trace of the
/// reads that matched nothing.
#[derive(Debug, Default)]
pub struct HourlyCounts(Mutex<CountState>);

#[derive(Debug, Default)]
struct CountState {
    current: Option<(u64, CountsMessage)>,
    finished: Vec<CountsMessage>,
}

const HOUR: u64 = 3600;

impl HourlyCounts {
    fn record(&self, now: SystemTime, keep: Option<&Keep>) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let c = s.roll(now);
        c.reads += 1;
        c.hits += u64::from(keep.is_some_and(|k| k.hit.is_some()));
        c.not_kept += u64::from(keep.is_none());
    }

    /// The hours that ended since the last call (complete) and the running one.
    pub fn take(&self, now: SystemTime) -> Vec<CountsMessage> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let current = s.roll(now).clone();
        let mut out = std::mem::take(&mut s.finished);
        out.push(current);
        out
    }
}

impl CountState {
    fn roll(&mut self, now: SystemTime) -> &mut CountsMessage {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let hour = secs - secs % HOUR;
        if self.current.as_ref().is_some_and(|(h, _)| *h != hour) {
            if let Some((_, mut done)) = self.current.take() {
                done.complete = true;
                self.finished.push(done);
            }
        }
        &mut self
            .current
            .get_or_insert_with(|| {
                let start = UNIX_EPOCH + Duration::from_secs(hour);
                (
                    hour,
                    CountsMessage {
                        hour: rfc3339_ms(start),
                        ..CountsMessage::default()
                    },
                )
            })
            .1
    }
}

// ----- the statement: `platecam policy` -----

/// What this unit keeps, for how long, and what it sends where.
#[derive(Debug, Serialize)]
pub struct Statement {
    pub device: String,
    pub mode: &'static str,
    pub keeps: Keeps,
    pub store: StorePolicy,
    pub sends: Sends,
    pub signing: KeyUse,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudonyms: Option<KeyUse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotlist: Option<HotlistUse>,
}

#[derive(Debug, Serialize)]
pub struct Keeps {
    pub dir: PathBuf,
    pub plates: &'static str,
    pub crops: &'static str,
    pub until: String,
    pub max_bytes: u64,
    pub eviction: String,
}

/// How the outbox is protected on disk and how long data may stay there.
#[derive(Debug, Serialize)]
pub struct StorePolicy {
    pub encryption: String,
    pub max_age: Option<String>,
    pub key_period: Option<String>,
}

/// Encryption at rest and retention (`[privacy] master_key_file`, `max_age`, `key_period`).
fn store_policy(cfg: &Config) -> StorePolicy {
    let p = &cfg.privacy;
    let dir = &cfg.storage.dir;
    let human = |d: std::time::Duration| humantime::format_duration(d).to_string();
    StorePolicy {
        encryption: format!(
            "every read and crop sealed with ChaCha20-Poly1305 under a data key per period, \
             the data keys wrapped by the master key ({}); an expired period's key is destroyed",
            key_origin("master", p.master_key_file.as_deref(), dir)
        ),
        max_age: p.max_age.map(human),
        key_period: Some(human(p.key_period)),
    }
}

#[derive(Debug, Serialize)]
pub struct Sends {
    pub broker: String,
    pub tls: bool,
    pub client_certificate: bool,
    pub topics: Vec<TopicUse>,
}

#[derive(Debug, Serialize)]
pub struct TopicUse {
    pub topic: String,
    pub what: &'static str,
    pub qos: u8,
    pub retained: bool,
}

#[derive(Debug, Serialize)]
pub struct KeyUse {
    pub key: String,
}

#[derive(Debug, Serialize)]
pub struct HotlistUse {
    pub file: PathBuf,
    /// `None` when the file cannot be read here.
    pub entries: Option<usize>,
    pub sha256: Option<String>,
}

/// Where key `name` comes from, without loading or making it.
fn key_origin(name: &str, configured: Option<&Path>, dir: &Path) -> String {
    match configured {
        Some(path) => format!("the file {}", path.display()),
        None => format!(
            "the systemd credential platecam-{name} where the service has one, else {} (made on first start)",
            dir.join(format!("{name}.key")).display()
        ),
    }
}

impl Statement {
    pub fn of(cfg: &Config) -> Statement {
        let p = &cfg.privacy;
        // Not `device_id()`: without a configured id it would make one here, on whatever
        // machine states the policy.
        let device = if cfg.device.id.is_empty() {
            "<device id>".to_string()
        } else {
            cfg.device.id.clone()
        };
        let base = {
            let prefix = cfg.mqtt.prefix.trim_end_matches('/');
            if prefix.is_empty() {
                format!("{device}/")
            } else {
                format!("{prefix}/{device}/")
            }
        };
        let (plates, crops) = match p.mode {
            PrivacyMode::All => ("every read, plate text in clear", "kept and sent with each read"),
            PrivacyMode::HotlistOnly => (
                "only reads that match the hotlist; other reads never reach the disk and only their number per hour is sent",
                "kept and sent for hotlist hits only",
            ),
            PrivacyMode::Pseudonymous => (
                "hotlist hits in clear; every other plate only as an HMAC-SHA256 pseudonym under the site key",
                "kept and sent for hotlist hits only",
            ),
        };
        let topic = |name: &str, what, qos, retained| TopicUse {
            topic: format!("{base}{name}"),
            what,
            qos,
            retained,
        };
        let mut topics = vec![
            topic("reads", "the reads kept (signed JSON)", 1, false),
            topic(
                "crops/<read id>",
                "the crop of each read kept (JPEG)",
                1,
                false,
            ),
            topic("alerts", "hotlist hits, at once (signed JSON)", 1, false),
            topic("identity", "the unit's public signing key", 1, true),
            topic("status", "online/offline", 1, true),
            topic("health", "counters, no plates", 0, true),
            topic(
                "audit",
                "the audit log's entries (policy events, counts; no plates)",
                1,
                false,
            ),
        ];
        if p.mode == PrivacyMode::HotlistOnly {
            topics.push(topic("counts", "reads per hour, no plates", 1, true));
        }
        if cfg.logging.mqtt_level != "off" {
            topics.push(topic(
                "logs",
                "log events (no plate text at info and above)",
                0,
                false,
            ));
        }
        let dir = &cfg.storage.dir;
        Statement {
            device,
            mode: p.mode.as_str(),
            keeps: Keeps {
                dir: dir.join("outbox"),
                plates,
                crops,
                until: "delivered (acknowledged by the broker) or evicted when the disk quota is reached".into(),
                max_bytes: cfg.storage.max_bytes.as_u64(),
                eviction: format!("{:?}", cfg.storage.eviction),
            },
            store: store_policy(cfg),
            sends: Sends {
                broker: cfg.mqtt.url.clone(),
                tls: cfg.mqtt.url.starts_with("mqtts://"),
                client_certificate: cfg.mqtt.cert.is_some(),
                topics,
            },
            signing: KeyUse {
                key: key_origin("signing", p.signing_key_file.as_deref(), dir),
            },
            pseudonyms: (p.mode == PrivacyMode::Pseudonymous).then(|| KeyUse {
                key: key_origin("site", p.site_key_file.as_deref(), dir),
            }),
            hotlist: p.hotlist.as_ref().map(|file| {
                let list = Hotlist::load(file).ok();
                HotlistUse {
                    file: file.clone(),
                    entries: list.as_ref().map(Hotlist::len),
                    sha256: list.map(|l| l.sha256),
                }
            }),
        }
    }

    /// The statement in plain words, for the operator to hand on.
    pub fn plain(&self) -> String {
        let mut s = format!(
            "Privacy policy of platecam unit {} (mode \"{}\")\n\n",
            self.device, self.mode
        );
        let k = &self.keeps;
        s += &format!(
            "Keeps: {}.\nCrops: {}.\nWhere: {} (at most {} bytes; when full, evicts {}).\nFor how long: until {}",
            k.plates, k.crops, k.dir.display(), k.max_bytes, k.eviction, k.until
        );
        match &self.store.max_age {
            Some(age) => s += &format!(", and never longer than {age}.\n"),
            None => s += ".\n",
        }
        s += &format!("Encrypted on disk: {}", self.store.encryption);
        if let Some(period) = &self.store.key_period {
            s += &format!(" (a new data key every {period})");
        }
        s += ".\n\n";
        let tls = if self.sends.tls {
            "over TLS"
        } else {
            "WITHOUT TLS (anyone on the path can read it)"
        };
        s += &format!("Sends to {} {tls}", self.sends.broker);
        if self.sends.client_certificate {
            s += ", authenticated with a client certificate";
        }
        s += ":\n";
        for t in &self.sends.topics {
            s += &format!(
                "  {} (QoS {}{}): {}\n",
                t.topic,
                t.qos,
                if t.retained { ", retained" } else { "" },
                t.what
            );
        }
        s += &format!(
            "\nEvery read is signed (ed25519) with the key from {}.\n",
            self.signing.key
        );
        if let Some(ps) = &self.pseudonyms {
            s += &format!("Pseudonyms use the site key from {}.\n", ps.key);
        }
        if let Some(h) = &self.hotlist {
            match (h.entries, &h.sha256) {
                (Some(n), Some(sha)) => {
                    s += &format!(
                        "Hotlist: {} ({n} entries, sha256 {sha}).\n",
                        h.file.display()
                    )
                }
                _ => s += &format!("Hotlist: {} (not readable here).\n", h.file.display()),
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_roll_over_each_hour() {
        let counts = HourlyCounts::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(10 * HOUR + 5);
        let keep = Keep {
            hit: None,
            pseudonym: None,
        };
        counts.record(t0, None);
        counts.record(t0, Some(&keep));
        let now = counts.take(t0);
        assert_eq!((now.len(), now[0].reads, now[0].not_kept), (1, 2, 1));
        assert!(!now[0].complete);
        counts.record(t0 + Duration::from_secs(HOUR), None);
        let later = counts.take(t0 + Duration::from_secs(HOUR));
        assert_eq!(later.len(), 2);
        assert!(later[0].complete && !later[1].complete);
        assert_eq!((later[0].reads, later[1].reads), (2, 1));
        assert_eq!(later[1].hour, "1970-01-01T11:00:00.000Z");
    }
}
