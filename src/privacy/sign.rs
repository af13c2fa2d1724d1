//! Signed reads: each unit signs every read it publishes with its own ed25519 key, so a consumer
//! can tell a genuine read from an edited, swapped or replayed one (docs/wire-format.md, "Signed
//! reads"; `platecam verify`).
//!
//! What is signed is `platecam-read-v1\n` followed by the read's canonical JSON: the JSON as
//! published with the `sig` member removed, object keys sorted by their UTF-8 bytes, no
//! whitespace, numbers as serde_json prints them after parsing. It is computed from the JSON
//! *text*, on both sides, so float formatting cannot make a genuine read fail. The read carries
//! its crop's sha256 (`crop.sha256`), so the signature covers the crop too.

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::keys::{self, KeyError, KeySource};
use crate::wire::{IdentityMessage, ReadMessage};

/// Names the canonical encoding; a new one gets a new name.
pub const CANONICAL: &str = "platecam-read-v1";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    #[error("signing key: the seed is not a usable ed25519 key")]
    Seed,
    #[error("cannot encode the read for signing: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The unit's signing key.
pub struct Signer {
    pair: Ed25519KeyPair,
    device: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("device", &self.device)
            .field("public_key", &self.public_key_hex())
            .finish()
    }
}

impl Signer {
    /// The key `signing` (see `keys::load_or_create`): configured file, credential, or made in
    /// `dir` on first start.
    pub fn load(
        configured: Option<&Path>,
        dir: &Path,
        device: &str,
    ) -> Result<(Signer, KeySource), SignError> {
        let (seed, source) = keys::load_or_create("signing", configured, dir, 32)?;
        Ok((Signer::from_seed(&seed, device)?, source))
    }

    pub fn from_seed(seed: &[u8], device: &str) -> Result<Signer, SignError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| SignError::Seed)?;
        Ok(Signer {
            pair,
            device: device.to_string(),
        })
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// What the unit publishes, retained, on `identity`.
    pub fn identity(&self) -> IdentityMessage {
        IdentityMessage {
            device: self.device.clone(),
            alg: "ed25519".into(),
            public_key: self.public_key_hex(),
            canonical: CANONICAL.into(),
        }
    }

    /// Sets `read.sig` to the signature of the read as it will be published.
    pub fn sign(&self, read: &mut ReadMessage) -> Result<(), SignError> {
        read.sig = None;
        let json = serde_json::to_vec(read)?;
        let message = signed_bytes(&serde_json::from_slice(&json)?);
        read.sig = Some(hex::encode(self.pair.sign(&message).as_ref()));
        Ok(())
    }
}

/// Why a read was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("not a read: {0}")]
    Malformed(String),
    #[error("unsigned")]
    Unsigned,
    #[error("no identity (public key) known for device {0:?}")]
    UnknownDevice(String),
    #[error("the read names device {read:?}, expected {expected:?} (replayed from another unit?)")]
    WrongDevice { expected: String, read: String },
    #[error("bad signature: edited, or not signed by {0:?}'s key")]
    BadSignature(String),
    #[error("crop does not match the signed sha256 (swapped or edited)")]
    CropMismatch,
    #[error("crop advertised but not received")]
    CropMissing,
}

/// A unit's public key, from its identity message or given by hand.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// `None`: the key was given without a device (any device may use it).
    pub device: Option<String>,
    pub key: Vec<u8>,
}

impl PublicKey {
    /// From an identity message's JSON, or a bare hex key.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let text = text.trim();
        if text.starts_with('{') {
            let id: IdentityMessage =
                serde_json::from_str(text).map_err(|e| format!("not an identity message: {e}"))?;
            if id.alg != "ed25519" || id.canonical != CANONICAL {
                return Err(format!(
                    "identity uses {}/{}, this verifier knows ed25519/{CANONICAL}",
                    id.alg, id.canonical
                ));
            }
            let key = hex::decode(&id.public_key).map_err(|e| format!("public_key: {e}"))?;
            return Ok(PublicKey {
                device: Some(id.device),
                key,
            });
        }
        let key = hex::decode(text).map_err(|e| format!("not a hex public key: {e}"))?;
        if key.len() != 32 {
            return Err(format!(
                "an ed25519 public key is 32 bytes, this is {}",
                key.len()
            ));
        }
        Ok(PublicKey { device: None, key })
    }
}

/// Checks one published read (its JSON as received): the signature under `key`, that the read
/// names the device it was published under (`topic_device`, when known) and the key's device,
/// and, when `crop` is `Some`, that the crop is the one signed (`Some(None)`: a crop was
/// expected and none came).
pub fn verify(
    json: &[u8],
    key: &PublicKey,
    topic_device: Option<&str>,
    crop: Option<Option<&[u8]>>,
) -> Result<ReadMessage, Rejected> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| Rejected::Malformed(e.to_string()))?;
    let read: ReadMessage =
        serde_json::from_value(value.clone()).map_err(|e| Rejected::Malformed(e.to_string()))?;
    for claimed in [topic_device, key.device.as_deref()].into_iter().flatten() {
        if claimed != read.device {
            return Err(Rejected::WrongDevice {
                expected: claimed.to_string(),
                read: read.device.clone(),
            });
        }
    }
    let sig = read.sig.as_deref().ok_or(Rejected::Unsigned)?;
    let sig = hex::decode(sig).map_err(|_| Rejected::BadSignature(read.device.clone()))?;
    UnparsedPublicKey::new(&ED25519, &key.key)
        .verify(&signed_bytes(&value), &sig)
        .map_err(|_| Rejected::BadSignature(read.device.clone()))?;
    match (crop, &read.crop) {
        (Some(Some(bytes)), Some(info)) if hex::encode(Sha256::digest(bytes)) != info.sha256 => {
            return Err(Rejected::CropMismatch)
        }
        (Some(None), Some(_)) => return Err(Rejected::CropMissing),
        _ => {}
    }
    Ok(read)
}

/// `platecam-read-v1\n` + the canonical JSON of `read` without its `sig`.
fn signed_bytes(read: &Value) -> Vec<u8> {
    let mut out = format!("{CANONICAL}\n").into_bytes();
    let mut read = read.clone();
    if let Value::Object(map) = &mut read {
        map.remove("sig");
    }
    canonical(&read, &mut out);
    out
}

/// Keys sorted explicitly: serde_json's map keeps insertion order when any crate in the build
/// turns on its `preserve_order` feature.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(&Value::String(k.clone()), out);
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        // Scalars print the same way whatever the map order.
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_drops_sig() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"sig":"x","a":{"d":[2.5,"é"],"c":null}}"#).unwrap();
        let bytes = signed_bytes(&v);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "platecam-read-v1\n{\"a\":{\"c\":null,\"d\":[2.5,\"é\"]},\"b\":1}"
        );
    }
}
