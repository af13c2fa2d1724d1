//! Turning `PublishSettings` into rumqttc `MqttOptions`, checked up front: rumqttc's setters assert
//! (keep-alive under 1 s, zero in-flight) and bad TLS files would otherwise only show up as a
//! reconnect loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{PublishError, PublishSettings};
use crate::config::MqttEndpoint;
use crate::wire::StatusMessage;

/// Where the CA bundle is looked for when `mqtt.ca` is unset (Debian's `ca-certificates`).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The MQTT 3.1.1 limit on a packet's remaining length.
const MQTT_MAX_PACKET: u64 = 268_435_455;
/// Below this not even a read's JSON fits.
const MIN_PACKET: u64 = 16 * 1024;

/// The broker's host, port and transport, parsed the same way `check-config` does.
pub(crate) fn parse_url(url: &str) -> Result<MqttEndpoint, PublishError> {
    MqttEndpoint::parse(url).map_err(|reason| PublishError::Url {
        url: url.to_string(),
        reason,
    })
}

fn setting(key: &'static str, value: impl std::fmt::Debug, reason: &str) -> PublishError {
    PublishError::Setting {
        key,
        value: format!("{value:?}"),
        reason: reason.to_string(),
    }
}

/// Checks what rumqttc would assert on or what would make the publisher spin.
pub(crate) fn validate(s: &PublishSettings) -> Result<(), PublishError> {
    let m = &s.mqtt;
    if m.keep_alive < Duration::from_secs(1) || m.keep_alive.as_secs() > u64::from(u16::MAX) {
        return Err(setting(
            "mqtt.keep_alive",
            m.keep_alive,
            "must be between 1 s and 65535 s",
        ));
    }
    if m.inflight == 0 {
        return Err(setting("mqtt.inflight", m.inflight, "must be at least 1"));
    }
    if m.health_interval.is_zero() {
        return Err(setting(
            "mqtt.health_interval",
            m.health_interval,
            "must be positive",
        ));
    }
    let packet = m.max_packet_size.as_u64();
    if !(MIN_PACKET..=MQTT_MAX_PACKET).contains(&packet) {
        return Err(setting(
            "mqtt.max_packet_size",
            m.max_packet_size,
            "must be between 16 KiB and 256 MiB",
        ));
    }
    if s.client_id.is_empty() {
        return Err(setting("mqtt.client_id", &s.client_id, "must not be empty"));
    }
    Ok(())
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, PublishError> {
    std::fs::read(path).map_err(|source| PublishError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Ready-to-clone connection options: built (files read, TLS checked) once per `run`.
/// `will_topic`: where the broker publishes the retained `offline` status if we vanish (`None` for
/// a command-line watcher, which is no device).
pub(crate) fn mqtt_options(
    s: &PublishSettings,
    will_topic: Option<&str>,
) -> Result<MqttOptions, PublishError> {
    validate(s)?;
    let m = &s.mqtt;
    let ep = parse_url(&m.url)?;
    let mut opts = MqttOptions::new(s.client_id.clone(), ep.host.clone(), ep.port);
    opts.set_keep_alive(m.keep_alive);
    // Clean session: the outbox is the source of truth and is re-sent after every ConnAck, so a
    // broker-side session would only add replays that shift the PUBACK correlation.
    opts.set_clean_session(true);
    // Crops are JPEGs far over rumqttc's 10 KiB default.
    let packet = usize::try_from(m.max_packet_size.as_u64()).unwrap_or(usize::MAX);
    opts.set_max_packet_size(packet, packet);
    // A read is up to two publishes, plus status and health: rumqttc's own limit must not be what
    // throttles the read window, and it also bounds the pkid range (keep it small).
    opts.set_inflight(window_publishes(m.inflight));
    if let Some(topic) = will_topic {
        opts.set_last_will(LastWill::new(
            topic,
            offline_payload(),
            QoS::AtLeastOnce,
            true,
        ));
    }
    if m.username.is_some() && !ep.tls {
        // Config validation refuses this too; the watchers (`logs`, `fleet`) come here directly.
        return Err(setting(
            "mqtt.username",
            &m.username,
            "needs an mqtts:// url: over mqtt:// the password crosses the network in clear",
        ));
    }
    if let Some(user) = &m.username {
        let password = match &m.password_file {
            Some(path) => {
                let raw = read_file("mqtt.password_file", path)?;
                let text = String::from_utf8(raw).map_err(|_| PublishError::Setting {
                    key: "mqtt.password_file",
                    value: path.display().to_string(),
                    reason: "the password is not UTF-8".into(),
                })?;
                // Editors and `echo` add a final newline that is not part of the password.
                text.trim_end_matches(['\r', '\n']).to_string()
            }
            None => String::new(),
        };
        opts.set_credentials(user.clone(), password);
    } else if m.password_file.is_some() {
        return Err(setting(
            "mqtt.password_file",
            &m.password_file,
            "set mqtt.username as well",
        ));
    }
    if ep.tls {
        let tls = tls_config(s)?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    } else if m.ca.is_some() || m.cert.is_some() || m.key.is_some() {
        return Err(setting(
            "mqtt.url",
            &m.url,
            "mqtt.ca/cert/key are set but the url is not mqtts://",
        ));
    }
    Ok(opts)
}

/// rumqttc in-flight publishes for a window of `reads` reads (read + crop each, plus control ones).
pub(crate) fn window_publishes(reads: u16) -> u16 {
    reads.saturating_mul(2).saturating_add(2)
}

/// Request channel: everything the window can hand, plus status, health, offline and disconnect,
/// so `try_publish` never finds it full in normal operation.
pub(crate) fn request_capacity(reads: u16) -> usize {
    usize::from(window_publishes(reads)) + 16
}

pub(crate) fn offline_payload() -> Vec<u8> {
    let msg = StatusMessage {
        state: "offline".into(),
        version: None,
        started_at: None,
    };
    // A struct of strings always serialises; the literal is the same bytes.
    serde_json::to_vec(&msg).unwrap_or_else(|_| br#"{"state":"offline"}"#.to_vec())
}

/// rustls with the ring provider named explicitly, so it works whether or not a process default was
/// installed. PEM files are parsed here so a bad file fails `run` at once, with its path.
fn tls_config(s: &PublishSettings) -> Result<rustls::ClientConfig, PublishError> {
    let m = &s.mqtt;
    let url = m.url.clone();
    let tls_err = |what: &'static str, path: &Path, reason: String| PublishError::Tls {
        what,
        path: path.to_path_buf(),
        url: url.clone(),
        reason,
    };
    let ca_path =
        m.ca.clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
    let ca_pem = read_file("mqtt.ca", &ca_path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| tls_err("mqtt.ca", &ca_path, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| tls_err("mqtt.ca", &ca_path, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(tls_err(
            "mqtt.ca",
            &ca_path,
            "no PEM certificate found".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("mqtt.ca", &ca_path, e.to_string()))?
        .with_root_certificates(roots);
    match (&m.cert, &m.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read_file("mqtt.cert", cert_path)?;
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_err("mqtt.cert", cert_path, e.to_string()))?;
            if chain.is_empty() {
                return Err(tls_err(
                    "mqtt.cert",
                    cert_path,
                    "no PEM certificate found".into(),
                ));
            }
            let key_pem = read_file("mqtt.key", key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| tls_err("mqtt.key", key_path, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err("mqtt.cert", cert_path, e.to_string()))
        }
        (Some(_), None) => Err(setting("mqtt.key", "unset", "mqtt.cert needs mqtt.key")),
        (None, Some(_)) => Err(setting("mqtt.cert", "unset", "mqtt.key needs mqtt.cert")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttConfig;
    use crate::publish::Topics;

    fn settings(url: &str) -> PublishSettings {
        PublishSettings {
            mqtt: MqttConfig {
                url: url.into(),
                ..MqttConfig::default()
            },
            device_id: "u1".into(),
            client_id: "platecam-u1".into(),
            version: "0".into(),
            storage_dir: std::env::temp_dir(),
        }
    }

    #[test]
    fn urls() {
        let e = parse_url("mqtt://broker.local").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("broker.local", 1883, false)
        );
        let e = parse_url("mqtts://10.0.0.1:8884/").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("10.0.0.1", 8884, true));
        let e = parse_url("mqtt://[::1]:1999").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 1999));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://u:p@h",
            "mqtt://h/topic",
            "mqtt://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_that_would_make_rumqttc_panic_are_rejected() {
        let topics = Topics::new("p", "u1").unwrap();
        let mut s = settings("mqtt://localhost");
        s.mqtt.keep_alive = Duration::from_millis(500);
        assert!(matches!(
            mqtt_options(&s, Some(&topics.status)),
            Err(PublishError::Setting {
                key: "mqtt.keep_alive",
                ..
            })
        ));
        let mut s = settings("mqtt://localhost");
        s.mqtt.inflight = 0;
        assert!(mqtt_options(&s, Some(&topics.status)).is_err());
        let mut s = settings("mqtt://localhost");
        s.mqtt.health_interval = Duration::ZERO;
        assert!(mqtt_options(&s, Some(&topics.status)).is_err());
        let mut s = settings("mqtt://localhost");
        s.client_id.clear();
        assert!(mqtt_options(&s, Some(&topics.status)).is_err());
        let mut s = settings("mqtt://localhost");
        s.mqtt.username = Some("u".into());
        assert!(matches!(
            mqtt_options(&s, None),
            Err(PublishError::Setting {
                key: "mqtt.username",
                ..
            })
        ));
        let opts = mqtt_options(&settings("mqtt://localhost:1999"), Some(&topics.status)).unwrap();
        assert_eq!(opts.broker_address(), ("localhost".to_string(), 1999));
        assert_eq!(opts.max_packet_size(), 1024 * 1024);
    }

    #[test]
    fn tls_files_are_checked_up_front() {
        let topics = Topics::new("p", "u1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings("mqtts://localhost");
        s.mqtt.ca = Some(dir.path().join("missing.pem"));
        assert!(matches!(
            mqtt_options(&s, Some(&topics.status)),
            Err(PublishError::ReadFile {
                what: "mqtt.ca",
                ..
            })
        ));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        s.mqtt.ca = Some(junk);
        assert!(matches!(
            mqtt_options(&s, Some(&topics.status)),
            Err(PublishError::Tls {
                what: "mqtt.ca",
                ..
            })
        ));
    }
}
